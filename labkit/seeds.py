"""The seed contract: every random stream of a run is derived from (seed, role) here, and only here.

`seed` is one independent repetition. A stream is named by its role, a path of words and numbers:

    derive(3, "deploy", "init")              # the initial weights of deployment student 3
    derive(3, "deploy", "batches")           # its batch order
    derive(0, "teach", "episode", 17, "init")  # a student the teacher trained on, never a deployment one

Two different roles give unrelated 63-bit seeds (a hash), so a teacher's training students and its
deployment students never share a stream, whatever their integer seeds are. No function here (or anywhere
in labkit) touches the global random state: randomness goes through `torch.Generator`s made by `generator`.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# Roles that mark who a student is. A method adds its own words after them ("teach", "episode", 17).
DEPLOY, TEACH, TUNE = "deploy", "teach", "tune"
# A run of seed k deploys on k * SEED_BLOCK + 0, 1, ..., n - 1: runs of different seeds never share a student.
SEED_BLOCK = 1000


def check_seed(name: str, value) -> int:
    """A seed is an integer >= 0 (not a bool, not a float); the ValueError names the parameter."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name}={value!r} is not allowed: a seed is an integer >= 0")
    return value


def derive(seed: int, *role) -> int:
    """The 63-bit seed of the stream `role` of repetition `seed` (a pure function of both)."""
    check_seed("seed", seed)
    text = "/".join([str(seed), *(str(r) for r in role)])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def generator(seed: int, *role, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh `torch.Generator` on `device` seeded with `derive(seed, *role)`."""
    import torch  # here, not at the top: the runner's process checks seeds and never needs torch

    return torch.Generator(device=device).manual_seed(derive(seed, *role))


def deployment_seeds(seed: int, n: int) -> list[int]:
    """The `n` deployment seeds of the run with seed `seed`: [seed·1000, …, seed·1000 + n − 1].

    Runs of different seeds get disjoint lists, so `labkit reproduce --seeds 3` makes three independent runs.
    """
    check_seed("seed", seed)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= SEED_BLOCK:
        raise ValueError(f"n={n!r} is not allowed: the number of deployment seeds is an integer in [1, {SEED_BLOCK}]")
    return [seed * SEED_BLOCK + i for i in range(n)]


def check_seeds(name: str, seeds, distinct: bool = True) -> list[int]:
    """`seeds` is always a non-empty list (or tuple) of seeds, distinct unless distinct=False; returns a list."""
    if isinstance(seeds, (int, str)) or not hasattr(seeds, "__iter__"):
        raise ValueError(f"{name}={seeds!r} is not allowed: give a list of seeds, e.g. [0, 1, 2]")
    seeds = list(seeds)
    if not seeds:
        raise ValueError(f"{name}=[] is not allowed: give at least one seed")
    for s in seeds:
        check_seed(name, s)
    if distinct and len(set(seeds)) != len(seeds):
        raise ValueError(f"{name}={seeds!r} is not allowed: the seeds must be distinct")
    return seeds
