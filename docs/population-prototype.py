"""How fast could an MLP population step be on this CPU? A micro-benchmark behind README's benchmark notes.

S = 8 students of an MLP 784-500-10 (tanh), batch 20, SGD lr 0.05 momentum 0.9, 100 steps each, on random
MNIST-shaped data, timed in interleaved rounds (the best counts):
- plain: 8 nn.Sequential models with torch.optim.SGD, one after another (what one would write by hand),
- stacked (foreach / fused SGD): stacked weights [S, in, out] with torch.baddbmm, autograd, torch.optim.SGD,
- manual: the same stacked step written by hand, without autograd: softmax-CE gradient, the weight gradients summed
  straight into the momentum buffers (baddbmm_ with beta = momentum), one foreach update. labkit does not do this:
  the engine's objectives (dynamic losses, per-example weights) need autograd.
Prints seconds and plain / variant. Run: python docs/population-prototype.py [rounds]
"""
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

torch.set_num_threads(2)
S, B, H, STEPS, N = 8, 20, 500, 100, 60000
X, Y = torch.randn(N, 784), torch.randint(0, 10, (N,))


def plain():
    for s in range(S):
        torch.manual_seed(s)
        model = nn.Sequential(nn.Linear(784, H), nn.Tanh(), nn.Linear(H, 10))
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        order = torch.randperm(N, generator=torch.Generator().manual_seed(s))
        for t in range(STEPS):
            idx = order[t * B:(t + 1) * B]
            loss = F.cross_entropy(model(X[idx]), Y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def stacked(fused=None):
    w1, b1 = (torch.randn(S, 784, H) * 0.03).requires_grad_(), torch.zeros(S, H, requires_grad=True)
    w2, b2 = (torch.randn(S, H, 10) * 0.03).requires_grad_(), torch.zeros(S, 10, requires_grad=True)
    opt = torch.optim.SGD([w1, b1, w2, b2], lr=0.05, momentum=0.9, fused=fused)
    order = torch.stack([torch.randperm(N) for _ in range(S)])
    for t in range(STEPS):
        idx = order[:, t * B:(t + 1) * B]
        h = torch.tanh(torch.baddbmm(b1.unsqueeze(1), X[idx], w1))
        logits = torch.baddbmm(b2.unsqueeze(1), h, w2)
        loss = F.cross_entropy(logits.reshape(-1, 10), Y[idx].reshape(-1), reduction="sum") / B
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def manual():
    params = [torch.randn(S, 784, H) * 0.03, torch.zeros(S, H), torch.randn(S, H, 10) * 0.03, torch.zeros(S, 10)]
    w1, b1, w2, b2 = params
    bufs = [torch.zeros_like(p) for p in params]
    order = torch.stack([torch.randperm(N) for _ in range(S)])
    for t in range(STEPS):
        idx = order[:, t * B:(t + 1) * B]
        x, y = X[idx], Y[idx]
        h = torch.tanh(torch.baddbmm(b1.unsqueeze(1), x, w1))
        p = torch.baddbmm(b2.unsqueeze(1), h, w2).softmax(-1)
        p[torch.arange(S)[:, None], torch.arange(B)[None], y] -= 1
        g_out = p / B                                                 # d mean CE / d logits, [S, B, 10]
        g_h = torch.bmm(g_out, w2.transpose(1, 2)) * (1 - h * h)     # back through tanh, [S, B, H]
        bufs[2].baddbmm_(h.transpose(1, 2), g_out, beta=0.9)
        bufs[3].mul_(0.9).add_(g_out.sum(1))
        bufs[0].baddbmm_(x.transpose(1, 2), g_h, beta=0.9)
        bufs[1].mul_(0.9).add_(g_h.sum(1))
        torch._foreach_add_(params, bufs, alpha=-0.05)


def main() -> None:
    variants = {"plain": plain, "stacked foreach SGD": stacked, "stacked fused SGD": lambda: stacked(True),
                "manual": manual}
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 5):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    for name, seconds in best.items():
        print(f"{name:20s} {seconds:6.3f} s   plain / this {best['plain'] / seconds:5.2f}x")


if __name__ == "__main__":
    main()
