"""The GPU check: one script, under 5 minutes on one GPU. Prints ratios; writes them to --out as JSON.

1. every notebook's smoke preset under papermill with device="cuda" (each must run to the end);
2. `labkit.fit` against a plain PyTorch loop on CUDA (MNIST MLP, and a ResNet-20 on CIFAR-shaped data), samples/s;
3. bf16 autocast against float32 for the ResNet-20 (`StudentConfig(bf16=True)`), samples/s;
4. a population of S = 8 against 8 students one after another (MLP stacked, LeNet grouped, ResNet-20 vmapped), and
   that a population's member ends with the weights it ends with alone (max abs difference).

The data: MNIST from LABKIT_DATA (carry the bundle into the repository for a device machine, e.g. `.gpudata/`);
the ResNet runs use random CIFAR-shaped tensors (speed does not depend on the pixels). Run it on a machine with a
GPU; `--device cpu --quick` only checks that the script itself works.

    python benchmarks/gpu_check.py [--out gpu_check.json] [--device cuda] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from labkit import data, engine, models
from labkit.student import StudentConfig

ROOT = Path(__file__).resolve().parent.parent


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(device: torch.device, fn) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def plain_loop(splits, model_name: str, steps: int, batch: int, kwargs: dict, bf16: bool = False) -> None:
    """The baseline: one model, SGD with momentum, random batches drawn on the device, cross-entropy."""
    device = splits.device
    model = models.build(model_name, splits.in_shape, splits.num_classes, seed=0, device=device, **kwargs)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator(device=device).manual_seed(0)
    x, y = splits.train.x, splits.train.y
    for _ in range(steps):
        idx = torch.randint(len(y), (batch,), generator=g, device=device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def engine_run(splits, cfg: StudentConfig, seeds: list[int]) -> engine.Run:
    run = engine.Run(splits, cfg, seeds)
    engine.train(run, progress_bar=False)
    return run


def cifar_like(device, n: int = 6000) -> data.Splits:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, 32, 32, generator=g), torch.randint(10, (n,), generator=g)
    # no augmentation: the plain loop does none either, and the comparison is of the loops
    return data.from_tensors(x[:-1000], y[:-1000], dev_size=500, test=(x[-1000:], y[-1000:]), device=device)


def fit_vs_plain(rows: list, splits, model: str, kwargs: dict, steps: int, batch: int, bf16: bool = False) -> None:
    cfg = StudentConfig(model=model, model_kwargs=kwargs, steps=steps, batch_size=batch, lr=0.05, eval_every=0,
                        bf16=bf16)
    device = splits.device
    plain_loop(splits, model, 5, batch, kwargs, bf16)  # warm-up (cuDNN autotuning, allocations)
    t_plain = timed(device, lambda: plain_loop(splits, model, steps, batch, kwargs, bf16))
    t_fit = timed(device, lambda: engine_run(splits, cfg, [0]))
    rows.append(dict(check=f"fit vs plain loop: {model} batch {batch}" + (" bf16" if bf16 else ""),
                     plain_samples_s=steps * batch / t_plain, fit_samples_s=steps * batch / t_fit,
                     ratio=t_plain / t_fit))


def population_vs_sequential(rows: list, splits, model: str, kwargs: dict, steps: int, batch: int, S: int = 8) -> None:
    cfg = StudentConfig(model=model, model_kwargs=kwargs, steps=steps, batch_size=batch, lr=0.05, eval_every=0)
    device, seeds = splits.device, list(range(S))
    engine_run(splits, replace(cfg, steps=3), seeds)  # warm-up
    runs = {}
    t_pop = timed(device, lambda: runs.setdefault("pop", engine_run(splits, cfg, seeds)))
    t_seq = timed(device, lambda: runs.setdefault("seq", [engine_run(splits, cfg, [s]) for s in seeds]))
    a, b = runs["pop"].students.member(S - 1).state_dict(), runs["seq"][-1].students.member(0).state_dict()
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    # after 5 steps too: float rounding (batched vs single kernels) grows over a long chaotic run; a real mismatch
    # (initial weights, batches) shows at once
    short = replace(cfg, steps=5)
    a = engine_run(splits, short, seeds).students.member(S - 1).state_dict()
    b = engine_run(splits, short, [S - 1]).students.member(0).state_dict()
    diff5 = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    rows.append(dict(check=f"population of {S} vs one after another: {model} batch {batch} "
                           f"({type(runs['pop'].students).__name__})",
                     sequential_samples_s=S * steps * batch / t_seq, population_samples_s=S * steps * batch / t_pop,
                     ratio=t_seq / t_pop, member_max_abs_diff=diff, member_max_abs_diff_5_steps=diff5))


def notebooks(rows: list, device: str, timeout: int) -> None:
    env = dict(os.environ, LABKIT_STATIC="1", CI="true", LABKIT_CARDS=str(ROOT / "build" / "gpu-cards"))
    for nb in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")):
        out = ROOT / "build" / "gpu-check" / nb.stem
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "papermill", str(nb), str(out / nb.name), "-k", "python3",
                               "-p", "preset", "smoke", "-p", "device", device, "-p", "out_dir", str(out)],
                              cwd=nb.parent, env=env, capture_output=True, text=True, timeout=timeout)
        rows.append(dict(check=f"notebook {nb.stem} smoke on {device}", ok=proc.returncode == 0,
                         seconds=time.perf_counter() - start,
                         error="" if proc.returncode == 0 else "\n".join(
                             line for line in proc.stderr.splitlines() if "cell/s]" not in line)[-1500:]))
        print(rows[-1], flush=True)


def benchmarks(rows: list, device: torch.device, steps: int) -> None:
    """Checks 2-4: fit against a plain loop (and bf16 on CUDA), populations against one after another."""
    mnist = data.load("mnist", dev_size=1000, seed=0, device=device)
    cifar = cifar_like(device, 2000 if steps < 100 else 6000)
    fit_vs_plain(rows, mnist, "mlp", {}, steps * 2, 128)
    fit_vs_plain(rows, cifar, "resnet20", {}, steps, 128)
    if device.type == "cuda":
        fit_vs_plain(rows, cifar, "resnet20", {}, steps, 128, bf16=True)
    for model, split, kwargs, batch in (("mlp", mnist, {}, 20), ("mlp", mnist, {}, 128), ("lenet", mnist, {}, 64),
                                        ("resnet20", cifar, {}, 128)):
        population_vs_sequential(rows, split, model, kwargs, steps, batch)
        print(rows[-1], flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="gpu_check.json")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a check of the script itself)")
    ap.add_argument("--skip-notebooks", action="store_true")
    ap.add_argument("--only-notebooks", action="store_true", help="check 1 alone")
    args = ap.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, device {device} ({name})", flush=True)
    rows: list[dict] = []
    if not args.only_notebooks:
        benchmarks(rows, device, steps=20 if args.quick else 300)
        Path(args.out).write_text(json.dumps(rows, indent=2))   # kept even if a notebook below hangs
    if not args.skip_notebooks:
        notebooks(rows, args.device, timeout=600)
        Path(args.out).write_text(json.dumps(rows, indent=2))
    print("\n".join(" | ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items())
                    for r in rows))


if __name__ == "__main__":
    main()
