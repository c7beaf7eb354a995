"""A population: S students trained as one model.

Small students on a CPU are overhead-bound, so S of them in one batched model train much faster than S one
after another. Every population maps a batch per member, x [S, B, ...], or one batch shared by all members,
x [B, ...], to logits [S, B, C]; `forward(x, members=...)` computes only the members listed (logits [k, B, C], in
that order; x per member is still [S, B, ...]): an evaluation skips the members that have stopped.

| class          | how                                               | for                     |
|----------------|---------------------------------------------------|-------------------------|
| `StackedMLP`   | weights stacked [S, in, out], `torch.baddbmm`     | `mlp`                   |
| `GroupedLeNet` | grouped convolutions (groups = S), stacked fc     | `lenet`                 |
| `Vmapped`      | `torch.func.vmap` over `functional_call`          | the ResNets on CUDA     |
| `Looped`       | one member after another                          | every model (the fallback) |

Member i starts from the weights `models.build(name, ..., seed=seeds[i])` gives, and its parameters get exactly
the gradient it would get alone (the members share no weight and the loss is a sum over members), so an
elementwise optimizer (SGD, momentum, weight decay, Adam) trains each member as it would train alone: the same
numbers up to float rounding (the batched kernels add in another order).
"""
from __future__ import annotations

import contextlib
import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .models import BATCHED, LeNet, MLP, build, cpu_layout


class Population(nn.Module):
    """Base: `size` members; forward(x [S, B, ...] or [B, ...], members=None) -> logits [S, B, C] (members given:
    [len(members), B, C])."""

    size: int
    stateful = False
    example_dims: int  # dimensions of one example (3 for [C, H, W]); per-member batches have two more

    def member(self, i: int) -> nn.Module:
        """A plain model holding member i's current weights (for a stacked population: a copy)."""
        raise NotImplementedError

    def clip_grad_norms_(self, max_norm: float) -> torch.Tensor:
        """Clip each member's gradient to norm `max_norm` (as `nn.utils.clip_grad_norm_` would alone); returns the
        norms before clipping [S]."""
        norms = self.grad_norms()
        coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        self._scale_grads(coef)
        return norms

    def _which(self, members: Sequence[int] | None) -> list[int]:
        """The member indices a forward computes (None: all), checked."""
        if members is None:
            return list(range(self.size))
        bad = [i for i in members if not 0 <= i < self.size]
        if bad or not members:
            raise ValueError(f"members={list(members)!r} is not allowed: give a non-empty list of indices in "
                             f"[0, {self.size})")
        return list(members)

    def _per_member(self, x: torch.Tensor) -> bool:
        """True when x carries a member dimension ([S, B, ...]), False when it is shared ([B, ...])."""
        batch_dims = 2 if self.stateful else 1  # a text batch is [L, B] tokens
        if x.dim() == self.example_dims + batch_dims + 1:
            if x.shape[0] != self.size:
                raise ValueError(f"x has {x.shape[0]} member batches for a population of {self.size}")
            return True
        if x.dim() != self.example_dims + batch_dims:
            raise ValueError(f"x has shape {tuple(x.shape)}: give [S, B, ...] or [B, ...] with examples of "
                             f"{self.example_dims} dimensions")
        return False


class Looped(Population):
    """Any models as a population: members run one after another. Stateful members (`lstm_lm`) keep their
    recurrent state from call to call (reset per member by `restart` [S] bool, detached every call); members with
    dropout draw it from `dropout_seeds[i]` inside a forked generator (the global random state is left alone)."""

    def __init__(self, members: Sequence[nn.Module], example_dims: int):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.size, self.example_dims = len(self.members), example_dims
        self.stateful = bool(getattr(self.members[0], "stateful", False))
        self.states: list = [None] * self.size

    def member(self, i: int) -> nn.Module:
        return self.members[i]

    def forward(self, x: torch.Tensor, restart: torch.Tensor | None = None,
                dropout_seeds: Sequence[int] | None = None, members: Sequence[int] | None = None) -> torch.Tensor:
        """x [S, B, ...] or [B, ...] (stateful: tokens [S, L, B] or [L, B]) -> [S, B, C] (stateful: [S, L·B, V])."""
        per_member = self._per_member(x)
        outs = []
        for i in self._which(members):
            m, xi = self.members[i], x[i] if per_member else x
            context = _dropout_seed(dropout_seeds[i], xi.device) if dropout_seeds else contextlib.nullcontext()
            with context:
                if self.stateful:
                    state = None if (restart is not None and bool(restart[i])) else self.states[i]
                    logits, state = m(xi, None if state is None else tuple(s.detach() for s in state))
                    self.states[i] = state
                    outs.append(logits.reshape(-1, logits.shape[-1]))
                else:
                    outs.append(m(xi))
        return torch.stack(outs)

    def grad_norms(self) -> torch.Tensor:
        return torch.stack([_norm([p.grad for p in m.parameters() if p.grad is not None]) for m in self.members])

    def _scale_grads(self, coef: torch.Tensor) -> None:
        for c, m in zip(coef, self.members):
            for p in m.parameters():
                if p.grad is not None:
                    p.grad.mul_(c)

    def get_extra_state(self):
        return {"states": [None if s is None else tuple(t.detach() for t in s) for s in self.states]}

    def set_extra_state(self, state) -> None:
        self.states = list(state["states"])


def _norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.sqrt(sum(t.pow(2).sum() for t in tensors)) if tensors else torch.tensor(0.0)


@contextlib.contextmanager
def _dropout_seed(seed: int, device: torch.device):
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class _Stacked(Population):
    """Shared code of the batched populations: every parameter holds the members' blocks one after another along
    its first dimension ([S, ...] stacked, or [S·k, ...] for a grouped convolution), so splitting that dimension,
    `unflatten(0, (S, -1))`, gives each member's block (a view, whatever the memory order of the other dimensions:
    a LeNet's convolutions are channels-last on a CPU)."""

    def _blocks(self, t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(0, (self.size, -1))

    def grad_norms(self) -> torch.Tensor:
        sq = [(g := self._blocks(p.grad)).pow(2).sum(tuple(range(1, g.dim())))
              for p in self.parameters() if p.grad is not None]
        return torch.stack(sq).sum(0).sqrt() if sq else torch.zeros(self.size)

    def _scale_grads(self, coef: torch.Tensor) -> None:
        for p in self.parameters():
            if p.grad is not None:
                self._blocks(p.grad).mul_(coef.view(-1, *[1] * p.grad.dim()))


class StackedMLP(_Stacked):
    """S `MLP`s as one: layer l holds weights [S, in, out] and biases [S, out]."""

    def __init__(self, members: Sequence[MLP], example_dims: int):
        super().__init__()
        self.size, self.example_dims = len(members), example_dims
        first = members[0]
        self.in_features = first.hidden[0].in_features if len(first.hidden) else first.out.in_features
        self.hidden_sizes = tuple(layer.out_features for layer in first.hidden)
        self.num_classes = first.out.out_features
        layers = [*(lambda m, l=l: m.hidden[l] for l in range(len(first.hidden))), lambda m: m.out]
        self.weights = nn.ParameterList(nn.Parameter(torch.stack([get(m).weight.detach().t() for m in members]))
                                        for get in layers)
        self.biases = nn.ParameterList(nn.Parameter(torch.stack([get(m).bias.detach() for m in members]))
                                       for get in layers)

    def forward(self, x: torch.Tensor, members: Sequence[int] | None = None) -> torch.Tensor:
        """x [S, B, ...] or [B, ...] -> logits [S, B, C]; the example is flattened, as `MLP` does."""
        which = None if members is None else torch.tensor(self._which(members), device=x.device)
        if self._per_member(x):
            h = x.flatten(2) if which is None else x[which].flatten(2)
        else:
            h = x.flatten(1).expand(self.size if which is None else len(which), -1, -1)
        last = len(self.weights) - 1
        for l, (w, b) in enumerate(zip(self.weights, self.biases)):
            if which is not None:
                w, b = w[which], b[which]
            h = torch.baddbmm(b.unsqueeze(1), h, w)
            if l < last:
                h = torch.tanh(h)
        return h

    def member(self, i: int) -> MLP:
        m = MLP(self.in_features, self.num_classes, self.hidden_sizes).to(self.weights[0].device)
        layers = [*m.hidden, m.out]
        with torch.no_grad():
            for layer, w, b in zip(layers, self.weights, self.biases):
                layer.weight.copy_(w[i].t())
                layer.bias.copy_(b[i])
        return m


class GroupedLeNet(_Stacked):
    """S `LeNet`s as one: the convolutions grouped (groups = S), the fully connected layers stacked."""

    example_dims = 3

    def __init__(self, members: Sequence[LeNet]):
        super().__init__()
        self.size = S = len(members)
        first = members[0]
        self.in_channels = first.conv1.in_channels
        self.conv1 = nn.Conv2d(S * self.in_channels, S * 20, 5, groups=S)
        self.conv2 = nn.Conv2d(S * 20, S * 50, 5, groups=S)
        with torch.no_grad():
            for conv, name in ((self.conv1, "conv1"), (self.conv2, "conv2")):
                conv.weight.copy_(torch.cat([getattr(m, name).weight for m in members]))
                conv.bias.copy_(torch.cat([getattr(m, name).bias for m in members]))
        self.fc_weight = nn.Parameter(torch.stack([m.fc.weight.detach().t() for m in members]))
        self.fc_bias = nn.Parameter(torch.stack([m.fc.bias.detach() for m in members]))
        self.out_weight = nn.Parameter(torch.stack([m.out.weight.detach().t() for m in members]))
        self.out_bias = nn.Parameter(torch.stack([m.out.bias.detach() for m in members]))
        self.in_shape, self.num_classes = first.in_shape, first.out.out_features
        object.__setattr__(self, "_template", LeNet(self.in_shape, self.num_classes).to("meta"))  # not a submodule

    def forward(self, x: torch.Tensor, members: Sequence[int] | None = None) -> torch.Tensor:
        """x [S, B, C, H, W] or [B, C, H, W] -> logits [S, B, classes]."""
        S, per_member, which = self.size, self._per_member(x), self._which(members)
        if not self.training and x.device.type == "cpu" and x.shape[int(per_member)] > 128:
            # Why: on a CPU, oneDNN's grouped convolutions fall behind S plain ones as the batch grows; 4 members
            # in eval mode took 8.8-10.9 ms grouped against 10.7-13.3 ms one by one at batch 32, about the same at
            # 128, 193-234 against 106-124 ms at 512 (2 cores, torch 2.14, four runs of
            # benchmarks/bench_population.py, its CPU choices).
            return torch.stack([self._member_logits(i, x[i] if per_member else x) for i in which])
        if members is not None:
            return self(x)[which]
        if per_member:
            b = x.shape[1]
            x = x.transpose(0, 1).reshape(b, S * x.shape[2], *x.shape[3:])
        else:
            b = x.shape[0]
            x = x.repeat(1, S, 1, 1)
        x = torch.tanh(F.max_pool2d(self.conv1(x), 2))
        x = torch.tanh(F.max_pool2d(self.conv2(x), 2))          # [B, S·50, h', w']
        x = x.reshape(b, S, -1).transpose(0, 1)                   # [S, B, 50·h'·w'], LeNet's flatten order
        x = torch.tanh(torch.baddbmm(self.fc_bias.unsqueeze(1), x, self.fc_weight))
        return torch.baddbmm(self.out_bias.unsqueeze(1), x, self.out_weight)

    def _member_state(self, i: int) -> dict[str, torch.Tensor]:
        """Member i's parameters under `LeNet`'s names: views into the population's (its block of the grouped
        convolutions' channels, its slice of the stacked weights)."""
        c1, c2 = (slice(i * k, (i + 1) * k) for k in (self.conv1.out_channels // self.size,
                                                       self.conv2.out_channels // self.size))
        return {"conv1.weight": self.conv1.weight[c1], "conv1.bias": self.conv1.bias[c1],
                "conv2.weight": self.conv2.weight[c2], "conv2.bias": self.conv2.bias[c2],
                "fc.weight": self.fc_weight[i].t(), "fc.bias": self.fc_bias[i],
                "out.weight": self.out_weight[i].t(), "out.bias": self.out_bias[i]}

    def _member_logits(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Member i alone on x [B, C, H, W] -> logits [B, classes]: `LeNet.forward` on its parameters."""
        from torch.func import functional_call

        return functional_call(self._template, self._member_state(i), (x,))

    def member(self, i: int) -> LeNet:
        m = LeNet(self.in_shape, self.num_classes).to(self.fc_weight.device)
        with torch.no_grad():
            m.load_state_dict(self._member_state(i))
        return m


class Vmapped(_Stacked):
    """S copies of any module without dropout or recurrent state as one: parameters and buffers stacked
    (`torch.func.stack_module_state`), the forward `vmap`ped over `functional_call`. BatchNorm's running statistics
    are stacked buffers, updated in place per member. On a GPU this runs the members' kernels as one batch; on a CPU
    it gains little over `Looped` (tests use it there for its numbers)."""

    def __init__(self, members: Sequence[nn.Module], example_dims: int):
        super().__init__()
        from torch.func import stack_module_state

        self.size, self.example_dims = len(members), example_dims
        params, buffers = stack_module_state(list(members))
        self.names, self.buffer_names = list(params), list(buffers)
        self.stacked = nn.ParameterList(nn.Parameter(params[n].detach()) for n in self.names)
        for i, n in enumerate(self.buffer_names):
            self.register_buffer(f"buffer_{i}", buffers[n].detach().clone())
        object.__setattr__(self, "_template", copy.deepcopy(members[0]).to("meta"))  # not a submodule

    def _state(self) -> tuple[dict, dict]:
        return (dict(zip(self.names, self.stacked)),
                {n: getattr(self, f"buffer_{i}") for i, n in enumerate(self.buffer_names)})

    def forward(self, x: torch.Tensor, members: Sequence[int] | None = None) -> torch.Tensor:
        """x [S, B, ...] or [B, ...] -> logits [S, B, C]."""
        from torch.func import functional_call, vmap

        if members is not None:
            return self(x)[self._which(members)]
        template = self._template.train(self.training)
        params, buffers = self._state()
        x_dim = 0 if self._per_member(x) else None
        return vmap(lambda p, b, xi: functional_call(template, (p, b), (xi,)), in_dims=(0, 0, x_dim))(params, buffers, x)

    def member(self, i: int) -> nn.Module:
        m = copy.deepcopy(self._template).to_empty(device=self.stacked[0].device)
        params, buffers = self._state()
        with torch.no_grad():
            m.load_state_dict({n: t[i] for n, t in {**params, **buffers}.items()})
        return m


def population(name: str, in_shape: tuple[int, ...] | None, num_classes: int, seeds: Sequence[int], *,
               device: str | torch.device = "cpu", batched: bool | None = None, **kwargs) -> Population:
    """S = len(seeds) students of model `name` as one Population; member i's initial weights are
    `build(name, in_shape, num_classes, seed=seeds[i], **kwargs)`'s.

    batched: None (default) stacks `mlp` and `lenet` when S >= 2, vmaps the other models (not `lstm_lm`) when
    S >= 2 on CUDA, and loops otherwise; True batches whenever it can (vmap on the CPU too); False always loops.
    """
    members = [build(name, in_shape, num_classes, seed=s, device=device, **kwargs) for s in seeds]
    if not members:
        raise ValueError("seeds=[] is not allowed: a population needs at least one member")
    example_dims = 0 if name == "lstm_lm" else len(in_shape)
    many, cuda = len(members) >= 2, torch.device(device).type == "cuda"
    if batched is False or name == "lstm_lm" or not (many or batched):
        return Looped(members, example_dims)
    if name in BATCHED:
        return (StackedMLP(members, example_dims) if name == "mlp" else
                cpu_layout(GroupedLeNet(members).to(device), name))
    return Vmapped(members, example_dims).to(device) if (batched or cuda) else Looped(members, example_dims)
