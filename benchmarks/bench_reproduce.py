"""`labkit reproduce --workers 1` against `--workers 2` on the smoke preset: wall time and identical numbers.

Runs `labkit reproduce --preset smoke` (every notebook, or those named) twice back to back, each into its own
fresh runs folder, as the user would from a shell: first `--workers 1` (every run in one process), then
`--workers 2` (a Dask LocalCluster of 2 worker processes). Both at the same torch threads per run (--threads,
default 1), because a run is a pure function of its parameters and seed only at a given thread count. Prints the
wall time of each (startup of the cluster included), their ratio (the bar: at most 0.7 on 2 cores), and whether
every completed run's numbers (metrics.json's experiments, and its extras but timings) are identical. A run that
fails in either is listed, not compared. With --default-threads, each call keeps its own default instead
(--workers 1: all cores per run; --workers 2: cores // 2), and the numbers are compared all the same (they may
differ in the last bits: said so when they do).

    python benchmarks/bench_reproduce.py [NAME ...] [--seeds 1] [--threads 1 | --default-threads] [--keep DIR]

Measure on an idle machine: the ratio means nothing while other processes compete for the cores.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# what measures the machine (clock, memory), not the method: dropped at any depth before comparing
MACHINE = re.compile(r"time|seconds|wall|peak_mb|memory", re.IGNORECASE)


def numbers(value):
    """What must be identical between two runs of one notebook, preset and seed: metrics.json without the keys that
    measure the clock or the memory (the arena's cost table too), NaN made comparable (NaN != NaN)."""
    if isinstance(value, dict):
        return {k: numbers(v) for k, v in value.items() if not MACHINE.search(k)}
    if isinstance(value, list):
        return [numbers(v) for v in value]
    return "nan" if isinstance(value, float) and value != value else value


def run(workers: int, out: Path, names: list[str], seeds: int, threads: int | None) -> tuple[float, int, str]:
    cmd = [sys.executable, "-m", "labkit.cli", "reproduce", *names, "--preset", "smoke", "--seeds", str(seeds),
           "--out", str(out), "--workers", str(workers)] + (["--threads", str(threads)] if threads else [])
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, CI="1"))
    return time.perf_counter() - start, done.returncode, done.stderr


def compare(one: Path, two: Path) -> tuple[list[str], list[str], list[str]]:
    """(identical, different, incomplete) run folders, relative to the runs folder."""
    same, differ, missing = [], [], []
    for path in sorted(one.glob("*/smoke/seed-*/metrics.json")):
        rel = path.relative_to(one)
        other = two / rel
        stem = rel.parts[0]
        if not ((path.parent / f"{stem}.ipynb").is_file() and (other.parent / f"{stem}.ipynb").is_file()):
            missing.append(str(rel.parent))
            continue
        a, b = (numbers(json.loads(p.read_text())) for p in (path, other))
        (same if a == b else differ).append(str(rel.parent))
    return same, differ, missing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebooks (default: all)")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run in both calls (default: 1)")
    parser.add_argument("--default-threads", action="store_true", help="each call's own default thread count")
    parser.add_argument("--keep", help="keep both runs folders under this folder")
    args = parser.parse_args()
    threads = None if args.default_threads else args.threads
    root = Path(args.keep or tempfile.mkdtemp(prefix="bench-reproduce-"))
    times = {}
    for workers in (1, 2):
        out = root / f"workers-{workers}"
        shutil.rmtree(out, ignore_errors=True)
        seconds, rc, err = run(workers, out, args.names, args.seeds, threads)
        times[workers] = seconds
        print(f"--workers {workers}: {seconds:.1f} s, exit {rc}; " + (err.strip().splitlines() or [""])[-1])
        for line in err.splitlines():
            if line.startswith("FAIL "):
                print("   ", line[:300])
    same, differ, missing = compare(root / "workers-1", root / "workers-2")
    print(f"threads per run: {threads or 'each call its default'}; cores: {os.cpu_count()}")
    print(f"wall time --workers 2 / --workers 1: {times[2] / times[1]:.2f} (bar: <= 0.70)")
    print(f"numbers: {len(same)} runs identical, {len(differ)} different {differ}, {len(missing)} not complete in "
          f"both {missing}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if not differ and same else 1


if __name__ == "__main__":
    sys.exit(main())
