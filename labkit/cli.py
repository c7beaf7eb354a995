"""`labkit reproduce` and `labkit report` (see labkit.repro); `labkit exercises` and `labkit course` (labkit.exercises,
labkit.course)."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence


def _parser() -> argparse.ArgumentParser:
    from . import repro

    parser = argparse.ArgumentParser(prog="labkit", description="Reproduce the lab's notebooks and report them "
                                     "against the papers' numbers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{reproduce,report,exercises,course}")

    p = sub.add_parser("reproduce", help="run notebooks with papermill for each seed (resumable; Dask for many)",
                       description="Execute each named notebook (all in notebooks/ by default) with papermill for "
                       "seeds 0..N-1, writing the executed notebook, its offline HTML page, its Trace and "
                       "metrics.json under OUT/<notebook>/<preset>/seed-<k>/. Runs already complete are skipped, "
                       "so after an interruption the same command finishes only the missing runs. A failing "
                       "notebook is reported with its error cell and the others go on. Each (notebook, seed) run is "
                       "one task: one after another in this process (default), on a Dask LocalCluster (--workers N) "
                       "or on a Dask cluster (--scheduler ADDRESS). A run locked by another labkit reproduce on the "
                       "same OUT is waited for, not run twice. Exit status 0 only if every run passed.")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="notebooks to run: a stem (00_tour), the name after the number (tour) or a unique prefix "
                        "(00); default: all")
    p.add_argument("--preset", default="cpu", help="smoke (< 60 s each, CI), cpu (< 15 min each on 2 cores, the "
                   "teaching default) or paper (the paper's settings, GPU); default: cpu")
    p.add_argument("--seeds", type=int, default=2, help="number of independent runs of each notebook, with seeds "
                   "0..N-1 (default: 2); each deploys on its own students (seeds.deployment_seeds)")
    p.add_argument("--out", default="runs", help="runs folder (default: runs)")
    p.add_argument("--notebooks", default=str(repro.NOTEBOOK_DIR), help="notebook folder (default: %(default)s)")
    p.add_argument("--kernel", default="python3", help="Jupyter kernel (default: python3)")
    p.add_argument("--no-html", action="store_true", help="skip the offline HTML export")
    p.add_argument("--retrain", action="store_true", help="train every teacher even where a card holds it (and write "
                   "the new cards); on this machine and a --workers cluster (it sets LABKIT_RETRAIN=1)")
    d = p.add_argument_group("where the runs go (labkit.dispatch)")
    d.add_argument("--workers", type=int, default=1, help="N > 1: a Dask LocalCluster of N worker processes on this "
                   "machine, one run each at a time (default: 1, every run in this process, no Dask)")
    d.add_argument("--scheduler", metavar="ADDRESS", help="send the runs to the Dask scheduler at ADDRESS "
                   "(tcp://host:8786), e.g. of a dask-jobqueue SLURMCluster; see docs/reproduce.md")
    d.add_argument("--threads", type=int, help="torch threads per run (each kernel's OMP_NUM_THREADS; default: "
                   "this machine's cores // --workers; on a --scheduler cluster, a worker's cores // the runs it "
                   "holds at once). "
                   "Numbers are identical across --workers at equal --threads")
    d.add_argument("--gpus", type=int, help="GPUs per run, asked for as the Dask resource GPU (default: 1 for the "
                   "paper preset, else 0; cluster workers declare theirs with --resources GPU=1)")

    r = sub.add_parser("report", help="table of measured results beside the papers' numbers",
                       description="Gather OUT/*/*/seed-*/metrics.json of complete runs into one table: per "
                       "experiment and method, the mean with its 95 % t-interval over deployment seeds, the paired "
                       "difference to the baseline, and the paper's number (with its provenance) where the setting "
                       "is the paper's. "
                       "Writes OUT/report.md and OUT/report.html and prints the Markdown.")
    r.add_argument("out", nargs="?", default="runs", help="runs folder (default: runs)")
    r.add_argument("--figures", metavar="DIR", help="also write each run's headline figures to DIR as PNG and SVG, for "
                   "slides (plotly's kaleido driving Chromium: BROWSER_PATH, else /usr/bin/chromium)")
    _course_parsers(sub)
    return parser


def _course_parsers(sub) -> None:
    """`labkit exercises` and `labkit course` (labkit.exercises, labkit.course)."""
    e = sub.add_parser("exercises", help="write the student versions of the notebooks (solutions removed)",
                       description="Write each notebook with its exercises' solutions removed (every '# BEGIN "
                       "SOLUTION: placeholder' ... '# END SOLUTION' block becomes its placeholder line) and its "
                       "outputs cleared, to OUT_DIR/<notebook>.ipynb. The notebooks in notebooks/ are the solution "
                       "versions; the checks report an unsolved exercise as unsolved.")
    e.add_argument("out_dir", metavar="OUT_DIR", help="folder for the student versions")
    e.add_argument("names", nargs="*", metavar="NAME", help="notebooks (as for reproduce; default: all)")
    e.add_argument("--notebooks", help="notebook folder (default: the repository's notebooks/)")
    c = sub.add_parser("course", help="the Colab badge and install cell of every notebook (labkit.course)")
    c.add_argument("action", choices=["badges", "site"], help="badges: write the badge and the install cell, from "
                   "labkit.course.REPOSITORY; site: build the static site (the student versions executed with "
                   "--preset, Sphinx + MyST-NB) into --out")
    c.add_argument("names", nargs="*", metavar="NAME", help="notebooks (default: all)")
    c.add_argument("--notebooks", help="notebook folder (default: the repository's notebooks/)")
    c.add_argument("--check", action="store_true", help="badges: write nothing; exit 1 if a notebook is missing them "
                   "or stale")
    c.add_argument("--preset", default="cpu", help="site: the preset the notebooks run with (default: cpu)")
    c.add_argument("--out", default="build/site", help="site: the output folder (default: build/site)")
    c.add_argument("--force", action="store_true", help="site: execute every notebook again")


def _course(args) -> int:
    if args.command == "exercises":
        from .course import write_student_versions

        for path, blocks in write_student_versions(args.out_dir, args.names, args.notebooks).items():
            print(f"{path}: {blocks} solution block(s) removed")
        return 0
    from .course import badges, build_site

    if args.action == "site":
        print(f"site: {build_site(args.out, args.preset, args.names, force=args.force)}")
        return 0
    changed = badges(args.names, args.notebooks, check=args.check)
    for path in changed:
        print(f"{path.name}: {'stale or missing' if args.check else 'written'}")
    return 1 if args.check and changed else 0


def main(argv: Sequence[str] | None = None) -> int:
    from . import repro
    from .dispatch import Dispatch

    args = _parser().parse_args(argv)
    try:
        if args.command == "reproduce":
            if args.seeds < 1:
                raise ValueError(f"--seeds {args.seeds} is not allowed: give a whole number >= 1")
            if args.retrain:
                import os

                from .cards import RETRAIN_ENV

                os.environ[RETRAIN_ENV] = "1"   # inherited by every kernel (and by LocalCluster workers)
            dispatch = Dispatch(workers=args.workers, scheduler=args.scheduler, threads=args.threads, gpus=args.gpus)
            summary = repro.reproduce(args.names, preset=args.preset, seeds=list(range(args.seeds)), out=args.out,
                                      notebook_dir=args.notebooks, kernel=args.kernel, html=not args.no_html,
                                      dispatch=dispatch)
            for r in summary.failed:
                print(f"FAILED {r.notebook} {r.preset} seed {r.seed}: {r.error}", file=sys.stderr)
            return 0 if summary.ok else 1
        if args.command in ("exercises", "course"):
            return _course(args)
        from .report import report

        print(report(args.out))
        if args.figures:
            from .report import figures

            for path in figures(args.out, args.figures):
                print(f"figure: {path}")
        return 0
    except ValueError as exc:
        print(f"labkit {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
