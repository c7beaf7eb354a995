"""`labkit reproduce` and `labkit report` (see labkit.repro)."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence


def _parser() -> argparse.ArgumentParser:
    from . import repro

    parser = argparse.ArgumentParser(prog="labkit", description="Reproduce the lab's notebooks and report them "
                                     "against the papers' numbers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{reproduce,report}")

    p = sub.add_parser("reproduce", help="run notebooks with papermill for each seed (resumable)",
                       description="Execute each named notebook (all in notebooks/ by default) with papermill for "
                       "seeds 0..N-1, writing the executed notebook, its offline HTML page, its Trace and "
                       "metrics.json under OUT/<notebook>/<preset>/seed-<k>/. Runs already complete are skipped, "
                       "so after an interruption the same command finishes only the missing runs. A failing "
                       "notebook is reported with its error cell and the others go on. Exit status 0 only if "
                       "every run passed.")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="notebooks to run: a stem (00_tour), the name after the number (tour) or a unique prefix "
                        "(00); default: all")
    p.add_argument("--preset", default="cpu", help="smoke (< 60 s each, CI), cpu (< 15 min each on 2 cores, the "
                   "teaching default) or paper (the paper's settings, GPU); default: cpu")
    p.add_argument("--seeds", type=int, default=2, help="number of independent runs of each notebook, with seeds 0..N-1 (default: 2); "
                   "each deploys on its own students (seeds.deployment_seeds)")
    p.add_argument("--out", default="runs", help="runs folder (default: runs)")
    p.add_argument("--notebooks", default=str(repro.NOTEBOOK_DIR), help="notebook folder (default: %(default)s)")
    p.add_argument("--kernel", default="python3", help="Jupyter kernel (default: python3)")
    p.add_argument("--no-html", action="store_true", help="skip the offline HTML export")

    r = sub.add_parser("report", help="table of measured results beside the papers' numbers",
                       description="Gather OUT/*/*/seed-*/metrics.json of complete runs into one table: mean ± std "
                       "over seeds with the preset, beside each paper's number, its provenance and the gap. "
                       "Writes OUT/report.md and OUT/report.html and prints the Markdown.")
    r.add_argument("out", nargs="?", default="runs", help="runs folder (default: runs)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from . import repro

    args = _parser().parse_args(argv)
    try:
        if args.command == "reproduce":
            if args.seeds < 1:
                raise ValueError(f"--seeds {args.seeds} is not allowed: give a whole number >= 1")
            summary = repro.reproduce(args.names, preset=args.preset, seeds=list(range(args.seeds)), out=args.out,
                                      notebook_dir=args.notebooks, kernel=args.kernel, html=not args.no_html)
            for r in summary.failed:
                print(f"FAILED {r.notebook} {r.preset} seed {r.seed}: {r.error}", file=sys.stderr)
            return 0 if summary.ok else 1
        from .report import report

        print(report(args.out))
        return 0
    except ValueError as exc:
        print(f"labkit {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
