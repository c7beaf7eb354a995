"""labkit.fit against a plain PyTorch loop and a torchvision DataLoader loop, on the MNIST MLP.

All three train the same model (784-500-10 tanh) with the same optimizer (SGD, lr 0.1, momentum 0.9),
batch size and number of steps. The rounds alternate between the loops and the best round of each counts,
so background load hurts all three alike. Each evaluates dev and test once at the end, as fit does.
Prints samples/s (training samples over the whole run's time) and the ratios.

    python benchmarks/bench_fit.py [--steps 1500] [--rounds 3] [--workers 2]
"""
from __future__ import annotations

import argparse
import itertools
import time

import torch
import torch.nn.functional as F

import labkit


def sgd_loop(model, batches, steps, splits):
    """`steps` SGD steps over an endless iterator of (x, y) batches, then the final evaluation fit also does."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for x, y in itertools.islice(batches, steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    final_eval(model, splits)


def in_memory_batches(splits, batch_size, seed):
    """What one would write by hand: tensors in memory, a randperm per epoch."""
    g = torch.Generator().manual_seed(seed)
    x, y = splits.train.x, splits.train.y
    while True:
        for idx in torch.randperm(len(y), generator=g).split(batch_size):
            yield x[idx], y[idx]


def final_eval(model, splits):
    """Dev and test accuracy at the end, as fit reports them (the same forward passes)."""
    with torch.no_grad():
        model.eval()
        for split in (splits.dev, splits.test):
            torch.cat([model(x) for x in split.x.split(4096)]).argmax(1).eq(split.y).float().mean().item()


def make_loader(batch_size, workers):
    """The torchvision tutorial way: the MNIST Dataset with ToTensor + Normalize, read through a DataLoader."""
    from torchvision import transforms

    from labkit.data import _torchvision_images, data_root

    train_set, _ = _torchvision_images("mnist", data_root(), download=True)  # the same files labkit reads
    train_set.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    return torch.utils.data.DataLoader(train_set, batch_size=batch_size, shuffle=True, num_workers=workers,
                                       persistent_workers=workers > 0, drop_last=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    args = parser.parse_args()

    splits = labkit.data.load("mnist", dev_size=5000, seed=0, device="cpu")
    loader = make_loader(args.batch_size, args.workers)
    build = lambda: labkit.models.build("mlp", splits.in_shape, splits.num_classes, seed=0)
    runs = {
        # all three evaluate dev and test once at the end (fit: eval_every=0)
        "labkit.fit": lambda: labkit.fit(build(), splits, steps=args.steps, batch_size=args.batch_size, lr=0.1,
                                         momentum=0.9, seed=0, eval_every=0, progress_bar=False),
        "plain loop": lambda: sgd_loop(build(), in_memory_batches(splits, args.batch_size, 0), args.steps, splits),
        "DataLoader loop": lambda: sgd_loop(build(), itertools.chain.from_iterable(itertools.repeat(loader)),
                                            args.steps, splits),
    }
    best = {name: float("inf") for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    rate = {name: args.steps * args.batch_size / seconds for name, seconds in best.items()}
    print(f"MNIST MLP 784-500-10, {args.steps} steps of batch {args.batch_size}, best of {args.rounds} rounds, "
          f"{torch.get_num_threads()} threads, DataLoader workers {args.workers}")
    for name in runs:
        print(f"  {name:16s} {rate[name]:10.0f} samples/s")
    print(f"labkit.fit / plain loop      = {rate['labkit.fit'] / rate['plain loop']:.3f}x   (bar: >= 0.95x)")
    print(f"labkit.fit / DataLoader loop = {rate['labkit.fit'] / rate['DataLoader loop']:.3f}x   (bar: >= 2x)")


if __name__ == "__main__":
    main()
