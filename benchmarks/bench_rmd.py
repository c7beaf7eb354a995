"""Cost of one L2T-DLF teacher update (exact RMD through K student steps) against K plain SGD steps.

For K = 10, 50, 200 (default) and the modes of `labkit.meta.sgd_meta_grad` ("unroll", "snapshot", and
"snap+act" = snapshot with keep_activations=True, which keeps each step's forward graph instead of recomputing it):
- time: one teacher update (K differentiable or snapshotted steps + the dev surrogate + the reverse sweep),
  as a ratio to K plain `torch.optim.SGD` cross-entropy steps of the same student on the same batches: medians
  of --repeats interleaved rounds after one warm-up, timed without the memory hooks below (their Python calls
  would inflate the update's time);
- memory: the peak bytes of tensors that autograd keeps for backward, measured live with
  `torch.autograd.graph.saved_tensors_hooks` (a storage counted once while any saved reference to it lives),
  plus, for "snapshot", the K stored weight vectors w_t (K·P·4 bytes, counted exactly), in one separate run. tracemalloc does not
  see torch's CPU allocations, so it is not used. On CUDA, torch.cuda.max_memory_allocated is printed too.

Run: python benchmarks/bench_rmd.py [--ks 10 50 200] [--model mlp] [--batch 64] [--device cpu]
The student is the MNIST MLP 784-500-10 on random MNIST-shaped inputs (timing does not depend on the data).
On a shared CPU the times are inflated by other processes; the ratios are what to read.
"""
from __future__ import annotations

import argparse
import statistics
import time
import weakref
from functools import partial

import torch
import torch.nn.functional as F
from torch.func import functional_call

from labkit import dlf, meta
from labkit.models import build


class _Live:
    """Live bytes of tensors saved for backward (deduplicated by storage), and their peak."""

    def __init__(self):
        self.refs: dict[int, list[int]] = {}  # storage ptr -> [bytes, count]
        self.live = self.peak = 0

    def pack(self, t: torch.Tensor):
        key, nbytes = t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()
        entry = self.refs.setdefault(key, [nbytes, 0])
        if entry[1] == 0:
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        entry[1] += 1
        holder = _Holder(t)
        weakref.finalize(holder, self._release, key)
        return holder

    def _release(self, key: int) -> None:
        entry = self.refs[key]
        entry[1] -= 1
        if entry[1] == 0:
            self.live -= entry[0]
            del self.refs[key]

    @staticmethod
    def unpack(holder):
        return holder.t


class _Holder:
    __slots__ = ("t", "__weakref__")

    def __init__(self, t):
        self.t = t


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(device, fn, *args) -> float:
    """Seconds that fn(*args) takes, the device's queued work included."""
    _sync(device)
    t0 = time.perf_counter()
    fn(*args)
    _sync(device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ks", type=int, nargs="+", default=[10, 50, 200])
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--dev", type=int, default=1000, help="dev examples in the surrogate")
    ap.add_argument("--repeats", type=int, default=9, help="interleaved timing rounds (medians)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    C, shape = 10, (1, 28, 28)
    net = build(args.model, shape, C, seed=0, device=device)
    P = sum(p.numel() for p in net.parameters())
    teacher = dlf.DLFTeacher(C, 4 + C, gate="state", seed=0).to(device)
    theta = list(teacher.parameters())
    dev_x, dev_y = torch.randn(args.dev, *shape, device=device), torch.randint(0, C, (args.dev,), device=device)
    print(f"student {args.model}: P = {P} parameters; batch {args.batch}; dev {args.dev}; device {device}; "
          f"torch threads {torch.get_num_threads()}")
    print("memory = peak live bytes saved for backward (saved_tensors_hooks) [+ K·P·4 snapshot bytes]")
    print(f"{'K':>5} {'SGD K steps s':>14} {'mode':>9} {'update s':>9} {'ratio':>6} {'saved MB':>9} "
          f"{'snap MB':>8} {'total MB':>9}")
    for K in args.ks:
        batches = [(torch.randn(args.batch, *shape, device=device), torch.randint(0, C, (args.batch,), device=device))
                   for _ in range(K)]
        states = [torch.rand(1, 4 + C, device=device) for _ in range(K)]

        def loss_fn(logits, y, k):  # the cpu preset's loss: α·CE + (1 − α)·l_Φt with α = 0.5
            phi, b, _ = teacher(states[k])
            return dlf.student_loss(logits, y, phi[0], b[0], alpha=0.5).mean()

        def dev_fn(w):
            return dlf.smooth_error(functional_call(net, w, (dev_x,)), dev_y)

        model = build(args.model, shape, C, seed=0, device=device)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

        def plain_sgd():  # the baseline: K plain SGD (momentum) cross-entropy steps, as a training loop runs them
            for x, y in batches:
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        def update(mode, keep):
            meta.sgd_meta_grad(net, meta.params_of(net, requires_grad=False), batches, loss_fn, theta, dev_fn,
                               lr=0.05, momentum=0.9, mode=mode, keep_activations=keep)

        modes = (("unroll", False), ("snapshot", False), ("snapshot", True))
        # interleaved rounds (baseline, then each mode), timed without the memory hooks (their Python calls cost
        # time); medians over the rounds, so that a slow spell of a shared machine hits all of them alike
        times: dict = {"base": []} | {m: [] for m in modes}
        timed = partial(_timed, device)
        plain_sgd()  # warm-up: first-call allocations (the momentum buffers, ...) are not a step's cost
        for m in modes:
            update(*m)
        for _ in range(args.repeats):
            times["base"].append(timed(plain_sgd))
            for m in modes:
                times[m].append(timed(update, *m))
        base = statistics.median(times["base"])
        for mode, keep in modes:
            median = statistics.median(times[(mode, keep)])
            live = _Live()  # one more, untimed run measures the memory
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            with torch.autograd.graph.saved_tensors_hooks(live.pack, live.unpack):
                update(mode, keep)
            peak = live.peak
            snap = K * P * 4 if mode == "snapshot" else 0
            extra = f"  cuda max allocated {torch.cuda.max_memory_allocated() / 2**20:.0f} MB" if device.type == "cuda" else ""
            label = "snap+act" if keep else mode
            print(f"{K:>5} {base:>14.3f} {label:>9} {median:>9.3f} {median / base:>6.2f} {peak / 2**20:>9.1f} "
                  f"{snap / 2**20:>8.1f} {(peak + snap) / 2**20:>9.1f}{extra}", flush=True)


if __name__ == "__main__":
    main()
