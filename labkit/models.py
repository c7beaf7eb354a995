"""The student zoo. Every model is a plain `nn.Module` that works under `torch.func.functional_call`.

| name        | what                                                              | used by          |
|-------------|-------------------------------------------------------------------|------------------|
| mlp         | 784-500-10 with tanh                                              | L2T, L2T-DLF     |
| lenet       | conv 20@5x5, pool, tanh, conv 50@5x5, pool, tanh, fc 500, tanh, fc | L2T-DLF demo     |
| resnet8/20/32/56 | He et al. 2016's CIFAR ResNets (3 stages, 16/32/64 channels, option-A shortcuts) | L2T-DLF, L2T-DLN |
| preresnet20/56/110 | pre-activation ResNets as in the LoT code (basic blocks < 44 layers, bottlenecks above) | LoT |
| lstm_lm     | word-level LSTM language model (embedding, LSTM, tied-free decoder) | LoT on PTB       |

`population(name, ..., seeds=[s_1, ..., s_S])` builds S students as one model, whose forward maps a batch per
member [S, B, ...] (or one batch shared by all, [B, ...]) to logits [S, B, C]: `mlp` with stacked weights
(`torch.baddbmm`), `lenet` with grouped convolutions, any other model one member after another (`Looped`). Member i
starts from exactly the weights `build(name, ..., seed=s_i)` gives, and trains to the same numbers, to float
rounding, as it would alone.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """[B, *in_shape] -> logits [B, C]: flatten, then hidden layers with tanh."""

    def __init__(self, in_features: int, num_classes: int, hidden: tuple[int, ...] = (500,)):
        super().__init__()
        sizes = (in_features, *hidden)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(sizes[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.hidden:
            x = torch.tanh(layer(x))
        return self.out(x)


class LeNet(nn.Module):
    """The L2T-DLF demo's LeNet (Theano tutorial): [B, C, 28, 28] -> logits [B, classes]."""

    def __init__(self, in_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        channels, height, width = self.in_shape = tuple(in_shape)
        self.conv1 = nn.Conv2d(channels, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        h, w = ((height - 4) // 2 - 4) // 2, ((width - 4) // 2 - 4) // 2
        self.fc = nn.Linear(50 * h * w, 500)
        self.out = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(F.max_pool2d(self.conv1(x), 2))
        x = torch.tanh(F.max_pool2d(self.conv2(x), 2))
        return self.out(torch.tanh(self.fc(x.flatten(1))))


class BasicBlock(nn.Module):
    """He et al.'s CIFAR block; option-A shortcut (subsample and zero-pad channels), no extra parameters."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride, self.extra = stride, planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
        if self.extra:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return F.relu(out + shortcut)


class ResNet(nn.Module):
    """CIFAR ResNet-(6n+2): [B, 3, 32, 32] -> logits [B, C]."""

    def __init__(self, depth: int, in_channels: int, num_classes: int):
        super().__init__()
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        blocks, planes = [], 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                blocks.append(BasicBlock(planes, width, stride if i == 0 else 1))
                planes = width
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu(self.bn(self.conv(x))))
        return self.out(x.mean((2, 3)))


class PreActBlock(nn.Module):
    """Pre-activation block (BN-ReLU-conv) x2, or the bottleneck (x3, 4x expansion), bearpaw style."""

    def __init__(self, in_planes: int, planes: int, stride: int, bottleneck: bool):
        super().__init__()
        out_planes = planes * (4 if bottleneck else 1)
        shapes = ([(in_planes, planes, 1, 1), (planes, planes, 3, stride), (planes, out_planes, 1, 1)] if bottleneck
                  else [(in_planes, planes, 3, stride), (planes, planes, 3, 1)])
        self.bns = nn.ModuleList(nn.BatchNorm2d(i) for i, _, _, _ in shapes)
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, s, k // 2, bias=False) for i, o, k, s in shapes)
        self.shortcut = (nn.Conv2d(in_planes, out_planes, 1, stride, bias=False)
                         if stride != 1 or in_planes != out_planes else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bns[0](x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.convs[0](out)
        for bn, conv in zip(self.bns[1:], self.convs[1:]):
            out = conv(F.relu(bn(out)))
        return out + shortcut


class PreResNet(nn.Module):
    """Pre-activation CIFAR ResNet as in the LoT code: basic blocks for depth < 44 (6n+2), bottlenecks above (9n+2)."""

    def __init__(self, depth: int, in_channels: int, num_classes: int):
        super().__init__()
        bottleneck = depth >= 44
        n = (depth - 2) // (9 if bottleneck else 6)
        self.conv = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        blocks, planes = [], 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                blocks.append(PreActBlock(planes, width, stride if i == 0 else 1, bottleneck))
                planes = width * (4 if bottleneck else 1)
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(planes)
        self.out = nn.Linear(planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.blocks(self.conv(x))))
        return self.out(x.mean((2, 3)))


class LSTMLM(nn.Module):
    """Word-level LSTM language model: tokens [L, B] (+ state) -> (logits [L, B, V], state)."""

    stateful = True  # the engine carries its (h, c) state from one bptt window to the next

    def __init__(self, num_tokens: int, emb: int = 200, hidden: int = 200, layers: int = 2, dropout: float = 0.2):
        super().__init__()
        self.embed = nn.Embedding(num_tokens, emb)
        self.lstm = nn.LSTM(emb, hidden, layers, dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, num_tokens)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        nn.init.uniform_(self.out.weight, -0.1, 0.1)
        nn.init.zeros_(self.out.bias)

    def forward(self, tokens: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        h, state = self.lstm(self.drop(self.embed(tokens)), state)
        return self.out(self.drop(h)), state


RESNET_DEPTHS = (8, 20, 32, 56)
PRERESNET_DEPTHS = (20, 56, 110)
KNOWN_MODELS = ("mlp", "lenet", *(f"resnet{d}" for d in RESNET_DEPTHS),
                *(f"preresnet{d}" for d in PRERESNET_DEPTHS), "lstm_lm")
BATCHED = ("mlp", "lenet")  # built as one batched model by `population`; the others are `Looped`


def _check_build(name: str, in_shape, num_classes) -> None:
    if name not in KNOWN_MODELS:
        raise ValueError(f"name={name!r} is not a known model: choose one of {', '.join(KNOWN_MODELS)}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r} is not allowed: it must be an integer >= 2")
    if name == "lstm_lm":
        return
    if in_shape is None or len(in_shape) == 0:
        raise ValueError(f"in_shape={in_shape!r} is not allowed: give one example's shape, e.g. (1, 28, 28)")
    if name == "lenet" or name.startswith(("resnet", "preresnet")):
        if len(in_shape) != 3:
            raise ValueError(f"in_shape={tuple(in_shape)!r} is not allowed for {name}: it needs an image shape "
                             f"(C, H, W); flat features suit 'mlp'")
    if name == "lenet" and min(in_shape[1:]) < 16:
        raise ValueError(f"in_shape={tuple(in_shape)!r} is not allowed for lenet: its two 5x5 convolutions and 2x2 "
                         f"poolings need images of at least 16x16 pixels; use 'mlp' for smaller inputs")


def build(name: str, in_shape: tuple[int, ...] | None = None, num_classes: int | None = None, *,
          seed: int = 0, device: str | torch.device = "cpu", **kwargs) -> nn.Module:
    """Build a student by name (one of `KNOWN_MODELS`), on `device`.

    in_shape: one example's shape, e.g. (1, 28, 28); num_classes: C (for `lstm_lm`: the vocabulary size).
    seed: the initial weights are a pure function of it (drawn from a forked generator: the global random
    state is left as it was). kwargs go to the model (`hidden` for mlp; `emb`, `hidden`, `layers`, `dropout`
    for lstm_lm).
    """
    _check_build(name, in_shape, num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "mlp":
            model = MLP(math.prod(in_shape), num_classes, **kwargs)
        elif name == "lenet":
            model = LeNet(tuple(in_shape), num_classes)
        elif name.startswith("resnet"):
            model = ResNet(int(name[6:]), in_shape[0], num_classes)
        elif name.startswith("preresnet"):
            model = PreResNet(int(name[9:]), in_shape[0], num_classes)
        else:
            model = LSTMLM(num_classes, **kwargs)
    return cpu_layout(model.to(device), name)


def cpu_layout(model: nn.Module, name: str) -> nn.Module:
    """A LeNet on a CPU with its convolution weights in channels-last memory order (the same values). Why: oneDNN's
    convolutions and max-pooling then run in that order; LeNet at batch 32 took 7.2-9.7 ms a training step against
    10.0-13.2 ms, and 69-80 against 144-160 ms to classify 1000 images (2 cores, torch 2.14, four runs of
    benchmarks/bench_population.py, its CPU choices). Results agree to float rounding."""
    on_cpu = next(model.parameters()).device.type == "cpu"
    return model.to(memory_format=torch.channels_last) if name == "lenet" and on_cpu else model
