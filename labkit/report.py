"""`labkit report`: every experiment of every completed run, with its n and 95 % interval over independent seeds,
the paired difference to its baseline, and the paper's number where the setting is the same.

A runs folder holds `<notebook>/<preset>/seed-<k>/metrics.json` (see `labkit.repro`). Runs of different notebook
seeds deploy on disjoint students (`seeds.deployment_seeds`), so their per-seed values pool into one estimate:
n counts deployment students, and the row says over how many runs (teachers) they come.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

from . import papers, stats
from .repro import METRICS, METRICS_FILE, FAILED_SUFFIX, is_complete
from .trace import atomic_write_bytes

HEADER = ["notebook", "preset", "experiment", "metric", "method", "measured: mean ± 95 % interval (n)",
          "paired − baseline (better on)", "paper's number (same setting)", "gap (measured − paper)"]


def gather(out: str | Path) -> dict[tuple[str, str], list[dict]]:
    """(notebook stem, preset) -> the metrics.json dicts of its complete runs, in seed order."""
    runs: dict[tuple[str, str], list[dict]] = {}
    for path in sorted(Path(out).glob(f"*/*/seed-*/{METRICS_FILE}")):
        directory = path.parent
        stem, preset = directory.parent.parent.name, directory.parent.name
        if is_complete(directory, stem):
            runs.setdefault((stem, preset), []).append(json.loads(path.read_text()))
    return runs


def pooled(runs: list[dict]) -> dict[str, dict]:
    """experiment name -> one `stats.summarize` result over the seeds of every run that has it (metadata from
    the first), plus "runs": how many runs (teachers) the seeds come from."""
    out: dict[str, dict] = {}
    for name in dict.fromkeys(n for m in runs for n in m.get("experiments", {})):
        exps = [m["experiments"][name] for m in runs if name in m.get("experiments", {})]
        first = exps[0]
        methods = [k for k in first["methods"] if all(k in e["methods"] for e in exps)]
        values = {k: [v for e in exps for v in e["methods"][k]["values"]] for k in methods}
        seeds = [s for e in exps for s in e["seeds"]]
        summary = stats.summarize(values, seeds, baseline=first["baseline"], higher_is_better=first["higher_is_better"],
                                  missing=first.get("missing", "diverged"))
        out[name] = dict(first, **summary, runs=len(exps))
    return out


def _scale(metric: str) -> tuple[float, str, int]:
    """How a metric is written in a table: fractions as %, counts and perplexities as they are."""
    return (100.0, " %", 2) if METRICS[metric][0] == "fraction" else (1.0, "", 1)


def experiment_rows(stem: str, preset: str, name: str, exp: dict) -> list[list[str]]:
    """Table rows of one pooled experiment: one per method."""
    scale, unit, digits = _scale(exp["metric"])
    paper_rows = {r["method"]: r for r in papers.beside(exp)}
    rows = []
    for method, m in exp["methods"].items():
        est = stats.Estimate(**m["estimate"])
        measured = est.format(digits, scale, unit, exp.get("missing", "diverged")) + \
            (f", {exp['runs']} runs" if exp["runs"] > 1 else "")
        if m["paired"] is None:
            diff = "(baseline)"
        else:
            d = stats.Estimate(**m["paired"]["difference"])
            mark = " helps" if m["paired"]["helps"] else " hurts" if m["paired"]["hurts"] else ""
            diff = f"{d.format(digits, scale, unit.strip() and ' points')}{mark} ({m['paired']['wins']} of {d.n})"
        r = paper_rows.get(method)
        reported = r["reported"] if r else "—"
        gap = f"{r['gap'] * scale:+.{digits}f}{unit and ' points'}" if r and r["gap"] is not None else "—"
        rows.append([stem, preset, name, exp["metric"], method, measured, diff, reported, gap])
    return rows


def rows(out: str | Path) -> list[list[str]]:
    table = []
    for (stem, preset), runs in sorted(gather(out).items()):
        for name, exp in pooled(runs).items():
            table.extend(experiment_rows(stem, preset, name, exp))
    return table


def _failures(out: str | Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in Path(out).glob(f"*/*/seed-*/*{FAILED_SUFFIX}"))


INTRO = ("Measured in `{out}`: per method, the mean with its 95 % t-interval over independent deployment seeds "
         "(n; seeds of several runs pooled, each run with its own teacher), the paired difference to the "
         "experiment's baseline on the same seeds (\"helps\"/\"hurts\" only where the interval excludes 0) and, "
         "only where the paper reports the same dataset, student and method, the paper's number with its "
         "provenance. Budgets differ from the papers' unless the preset is `paper`.")


def report_markdown(out: str | Path) -> str:
    table = rows(out)
    lines = ["# labkit reproductions", "", INTRO.format(out=out), ""]
    lines.append(stats.markdown_table(HEADER, table) if table else "No complete runs yet: run `labkit reproduce`.")
    failed = _failures(out)
    if failed:
        lines += ["", "Failed runs (executed notebook stopped at the error): " + ", ".join(failed)]
    return "\n".join(lines) + "\n"


def report_html(out: str | Path) -> str:
    out = Path(out)
    table = rows(out)
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in HEADER)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in table)
    pages = sorted(p for p in out.glob("*/*/seed-*/*.html") if not p.name.endswith(FAILED_SUFFIX))
    links = "".join(f'<li><a href="{esc(str(p.relative_to(out)))}">{esc(str(p.relative_to(out)))}</a></li>'
                    for p in pages)
    failed = "".join(f"<li>{esc(f)}</li>" for f in _failures(out))
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>labkit reproductions</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f4f4f4}</style></head><body>"
            f"<h1>labkit reproductions</h1><p>{esc(INTRO.format(out=out))}</p>"
            + (f"<table><tr>{head}</tr>{body}</table>" if table else "<p>No complete runs yet.</p>")
            + (f"<h2>Failed runs</h2><ul>{failed}</ul>" if failed else "")
            + f"<h2>Executed notebooks (open offline)</h2><ul>{links}</ul></body></html>\n")


def report(out: str | Path = "runs") -> str:
    """Write out/report.md and out/report.html; return the Markdown."""
    out = Path(out)
    if not out.is_dir():
        raise ValueError(f"out={str(out)!r} is not a folder: run `labkit reproduce --out {out}` first")
    text = report_markdown(out)
    atomic_write_bytes(out / "report.md", text.encode())
    atomic_write_bytes(out / "report.html", report_html(out).encode())
    return text
