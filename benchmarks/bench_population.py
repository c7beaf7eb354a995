"""A population of S students as one batched model against S students trained one after another.

For the MNIST MLP (784-500-10, tanh) at batch 20 and 128, and LeNet at batch 64, with S = 1, 4, 8, 16: training
samples per second of
- `sequential`: a plain PyTorch loop (model, torch.optim.SGD with momentum, randperm batches, cross-entropy),
  run S times one after another,
- `engine S=1`: labkit's engine with one student, S times one after another (the engine's own overhead),
- `population`: labkit's engine with the S students as one batched model (`labkit.population`),
all in one run, rounds interleaved so that background load hurts every variant alike (the best round counts).
Prints samples/s and the ratio population / sequential. Set the thread count with --threads (default: torch's).

    python benchmarks/bench_population.py [--steps 200] [--rounds 2] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

from labkit import data, engine, models
from labkit.student import StudentConfig


def plain(splits, model_name: str, kwargs: dict, batch: int, steps: int, seed: int) -> None:
    """What one would write by hand: one model, SGD with momentum, a randperm per epoch."""
    model = models.build(model_name, splits.in_shape, splits.num_classes, seed=seed, **kwargs)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    x, y = splits.train.x, splits.train.y
    order, pos = torch.randperm(len(y), generator=g), 0
    for _ in range(steps):
        if pos + batch > len(y):
            order, pos = torch.randperm(len(y), generator=g), 0
        idx = order[pos:pos + batch]
        pos += batch
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def engine_run(splits, cfg: StudentConfig, seeds: list[int]) -> None:
    engine.train(engine.Run(splits, cfg, seeds), progress_bar=False)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(splits, model_name: str, kwargs: dict, batch: int, sizes: list[int], steps: int, rounds: int) -> list[dict]:
    # evaluation only at the end, on the shortest dev/test the engine allows: we time training
    cfg = StudentConfig(model=model_name, model_kwargs=kwargs, steps=steps, batch_size=batch, lr=0.05, momentum=0.9,
                        eval_every=0)
    rows = []
    for S in sizes:
        seeds = list(range(S))
        variants = {
            "sequential": lambda: [plain(splits, model_name, kwargs, batch, steps, s) for s in seeds],
            "engine S=1": lambda: [engine_run(splits, cfg, [s]) for s in seeds],
            "population": lambda: engine_run(splits, cfg, seeds),
        }
        best = {name: float("inf") for name in variants}
        for _ in range(rounds):
            for name, fn in variants.items():
                best[name] = min(best[name], timed(fn))
        samples = S * steps * batch
        row = dict(model=model_name, batch=batch, S=S, **{f"{k} samples/s": samples / v for k, v in best.items()})
        row["population / sequential"] = best["sequential"] / best["population"]
        row["engine S=1 / sequential"] = best["sequential"] / best["engine S=1"]
        rows.append(row)
        print(f"{model_name:5s} batch {batch:3d} S {S:2d}: " + "  ".join(
            f"{k} {v:9.0f}" if "samples" in k else f"{k} {v:5.2f}x" for k, v in row.items()
            if k not in ("model", "batch", "S")), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps per student")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best counts")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # the final evaluation reads dev and test: keep them small, the benchmark is about training
    full = data.load("mnist", dev_size=1000, seed=0)
    splits = data.Splits(full.train, full.dev, full.test[:1000], full.name, full.in_shape, full.num_classes,
                         full.classes)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores; "
          f"{args.steps} steps per student, best of {args.rounds} rounds")
    for model_name, kwargs, batch in (("mlp", {"hidden": (500,)}, 20), ("mlp", {"hidden": (500,)}, 128),
                                      ("lenet", {}, 64)):
        bench(splits, model_name, kwargs, batch, args.sizes, args.steps, args.rounds)


if __name__ == "__main__":
    main()
