"""A population of S students as one batched model against S students trained one after another.

For the MNIST MLP (784-500-10, tanh) at batch 20 and 128, and LeNet at batch 64, with S = 1, 4, 8, 16: training
samples per second of
- `sequential`: a plain PyTorch loop (model, torch.optim.SGD with momentum, randperm batches, cross-entropy),
  run S times one after another,
- `engine S=1`: labkit's engine with one student, S times one after another (the engine's own overhead),
- `population`: labkit's engine with the S students as one batched model (`labkit.population`),
- `floor` (MLP, S > 1): only the work no MLP population step can skip (`floor`), so sequential / floor is the
  ceiling of population / sequential on this machine,
all in one run, rounds interleaved so that background load hurts every variant alike (the best round counts).
Prints samples/s and the ratio population / sequential. Set the thread count with --threads (default: torch's).

    python benchmarks/bench_population.py [--steps 200] [--rounds 2] [--threads 2] [--cpu-choices]

First, the measurements behind labkit's CPU choices, each against its alternative (`bench_cpu_choices`;
--cpu-choices: only those): a LeNet's channels-last weights, a LeNet population's evaluation member by member above
batch 128, predict's chunks of 512.
"""
from __future__ import annotations

import argparse
import os
import time
from functools import partial

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


def floor(splits, hidden: int, batch: int, steps: int, S: int) -> None:
    """What no implementation of an MLP population step can skip: gather each member's batch, the first layer's
    batched products (forward x·W1, and the weight gradient xᵀ·g [S, 784, hidden] summed straight into the momentum
    buffer) and W1's update. The other layers, the loss, autograd and the optimizer's bookkeeping are left out, so
    the time of this loop bounds a population's speed from above: sequential / floor is the most any batched MLP
    population could reach on this machine."""
    x_all = splits.train.x.flatten(1)
    w = torch.randn(S, x_all.shape[1], hidden) * 0.01
    buf, b = torch.zeros_like(w), torch.zeros(S, 1, hidden)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = x_all[torch.randint(len(x_all), (S, batch), generator=g)]
        h = torch.baddbmm(b, x, w)
        buf.baddbmm_(x.transpose(1, 2), h, beta=0.9)  # the gradient (h stands in) summed into the momentum
        w.add_(buf, alpha=-0.05)


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
        if model_name == "mlp" and S > 1:
            variants["floor"] = lambda: floor(splits, kwargs["hidden"][0], batch, steps, S)
        best = {name: float("inf") for name in variants}
        for _ in range(rounds):
            for name, fn in variants.items():
                best[name] = min(best[name], timed(fn))
        samples = S * steps * batch
        row = dict(model=model_name, batch=batch, S=S, **{f"{k} samples/s": samples / v for k, v in best.items()})
        row["population / sequential"] = best["sequential"] / best["population"]
        row["engine S=1 / sequential"] = best["sequential"] / best["engine S=1"]
        if "floor" in best:
            row["ceiling (sequential / floor)"] = best["sequential"] / best.pop("floor")
            del row["floor samples/s"]
        rows.append(row)
        print(f"{model_name:5s} batch {batch:3d} S {S:2d}: " + "  ".join(
            f"{k} {v:9.0f}" if "samples" in k else f"{k} {v:5.2f}x" for k, v in row.items()
            if k not in ("model", "batch", "S")), flush=True)
    return rows


def best_ms(variants: dict, rounds: int, calls: int = 10) -> dict[str, float]:
    """Milliseconds per call of each variant: the best of `rounds` interleaved rounds of `calls` calls."""
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(rounds):
        for name, fn in variants.items():
            best[name] = min(best[name], timed(lambda: [fn() for _ in range(calls)]) / calls * 1e3)
    return best


def show(what: str, best: dict[str, float]) -> None:
    print(f"{what}: " + "  ".join(f"{k} {v:7.2f} ms" for k, v in best.items()), flush=True)


def bench_cpu_choices(splits, rounds: int) -> None:
    """The measurements behind three CPU choices of labkit, each against its alternative:
    - `models.cpu_layout`: a LeNet's convolution weights channels-last, against contiguous (a training step at batch
      32, SGD with momentum; classifying 1000 images);
    - `GroupedLeNet.forward` in eval mode: 4 LeNets on one batch as grouped convolutions, against member by member;
    - `student.predict` on a CPU: chunks of 512 examples, against 4096 (8 MLPs 784-500-10 on 2503 images, 4 LeNets
      on 1000)."""
    from labkit.population import population
    from labkit.student import predict

    x, y = splits.dev.x, splits.dev.y
    nets = {"contiguous": models.LeNet(splits.in_shape, splits.num_classes),
            "channels-last": models.build("lenet", splits.in_shape, splits.num_classes)}
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for k, m in nets.items()}

    def step(name):
        loss = F.cross_entropy(nets[name](x[:32]), y[:32])
        opts[name].zero_grad(set_to_none=True)
        loss.backward()
        opts[name].step()

    show("lenet training step, batch 32", best_ms({k: partial(step, k) for k in nets}, rounds))
    show("lenet, 1000 images", best_ms({k: partial(predict, m, x[:1000], 1000) for k, m in nets.items()}, rounds))
    pop = population("lenet", splits.in_shape, splits.num_classes, list(range(4)))

    def grouped(batch):
        with torch.no_grad():
            return pop.train()(x[:batch])   # train mode: the grouped path (a LeNet has no dropout or batch norm)

    def one_by_one(batch):
        with torch.no_grad():
            return torch.stack([pop._member_logits(i, x[:batch]) for i in range(4)])

    for batch in (32, 128, 512):
        show(f"4 lenets, eval, batch {batch}", best_ms({"grouped": partial(grouped, batch),
                                                      "member by member": partial(one_by_one, batch)}, rounds))
    mlps = population("mlp", splits.in_shape, splits.num_classes, list(range(8)), hidden=(500,))
    for what, model, n in (("8 mlps 784-500-10", mlps, 2503), ("4 lenets", pop, 1000)):
        show(f"predict, {what}, {n} images", best_ms({f"chunks of {c}": partial(predict, model, x[:n], c)
                                                      for c in (512, 4096)}, rounds, calls=3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps per student")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best counts")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--cpu-choices", action="store_true", help="only the measurements behind labkit's CPU "
                        "choices (LeNet layout, a LeNet population's evaluation, predict's chunks)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # the final evaluation reads dev and test: keep them small, the benchmark is about training
    full = data.load("mnist", dev_size=1000, seed=0)
    splits = data.Splits(full.train, full.dev, full.test[:1000], full.name, full.in_shape, full.num_classes,
                         full.classes)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores; "
          f"{args.steps} steps per student, best of {args.rounds} rounds")
    bench_cpu_choices(splits, max(args.rounds, 3))
    if args.cpu_choices:
        return
    for model_name, kwargs, batch in (("mlp", {"hidden": (500,)}, 20), ("mlp", {"hidden": (500,)}, 128),
                                      ("lenet", {}, 64)):
        bench(splits, model_name, kwargs, batch, args.sizes, args.steps, args.rounds)


if __name__ == "__main__":
    main()
