"""`labkit report`: every experiment of every completed run, with its n and 95 % interval over independent seeds,
the paired difference to its baseline, and the paper's number where the setting is the same.

A runs folder holds `<notebook>/<preset>/seed-<k>/metrics.json` (see `labkit.repro`). Runs of different notebook
seeds deploy on disjoint students (`seeds.deployment_seeds`), so their per-seed values pool into one estimate:
n counts deployment students, and the row says over how many runs (teachers) they come.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np

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
        est, missing = stats.Estimate(**m["estimate"]), exp.get("missing", "diverged")
        measured = est.format(digits, scale, unit, missing) + \
            (f", {exp['runs']} runs" if exp["runs"] > 1 else "")
        if m["paired"] is None:
            diff = "(baseline)"
        else:
            d = stats.Estimate(**m["paired"]["difference"])
            mark = " helps" if m["paired"]["helps"] else " hurts" if m["paired"]["hurts"] else ""
            diff = f"{d.format(digits, scale, unit.strip() and ' points', missing)}{mark} ({m['paired']['wins']} of {d.n})"
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


# ---------------------------------------------------------------- figures for slides (`labkit report --figures DIR`)

CHROMIUM = "/usr/bin/chromium"   # Debian's Chromium: kaleido (>= 1) drives it, found through BROWSER_PATH


def _still(fig):
    """An animated scrubber as one still (its shown frame, the last step): no frames, Play button or slider."""
    fig.frames, fig.layout.updatemenus, fig.layout.sliders = (), (), ()
    return fig.update_layout(margin=dict(b=60))


def signature_figures(trace, teacher=None) -> dict:
    """name -> plotly Figure: the method's own picture of one saved deployment Trace, chosen by what it holds (Φ_t:
    L2T-DLF; the loss surface: L2T-DLN; imitation KL: LoT; keep decisions: L2T; the dev confusion: the tour). A
    diverged run gives none (it is not data). teacher: the DLF teacher's Trace, whose init_scale gives Φ_0 = c·I."""
    from . import plots

    if trace.diverged:
        return {}
    out = {}
    if "phi" in trace.arrays:
        C = trace.stack("phi")[1].shape[-1]
        classes, scale = [str(c) for c in range(C)], teacher.config.get("init_scale") if teacher is not None else None
        if scale is None:   # without the teacher's Trace Φ_0 is unknown: show what changes over the run instead
            fig = plots.dlf_phi_scrubber(trace, classes, np.zeros((C, C)), reference="mean")
        else:
            fig = plots.dlf_phi_scrubber(trace, classes, scale * np.eye(C), title="Φ_T − Φ_0 at the end of training")
        out["phi"] = _still(fig)
    elif "loss_surface" in trace.arrays:
        out["loss_surface"] = _still(plots.dln_surface_scrubber(trace, title="The learned loss at the last window"))
    elif any(name.startswith("kl_test") for name in trace.scalars):   # kl_test/<imitator k>
        out["kl_curves"] = plots.lot_kl_curves({"LoT": [trace]}, title="Imitation KL of the LoT model's students")
    elif "keep_mask" in trace.arrays:
        seen = int(max(np.max(v) for v in trace.arrays["labels"]["value"])) + 1 if "labels" in trace.arrays else 10
        classes = {"mnist": 10, "cifar10": 10, "cifar100": 100}.get(trace.config.get("dataset"), seen)
        out["keep_rates"] = plots.l2t_keep_rate_by_class(trace, classes)
    elif "reward" in trace.scalars:   # an L2T teacher's training: the reward per episode
        out["reward"] = plots.l2t_reward_curve(trace)
    elif "confusion" in trace.arrays:
        steps, confusion = trace.stack("confusion")
        out["confusion"] = _still(plots.confusion_scrubber(steps, confusion, [str(c) for c in range(confusion.shape[-1])]))
    if "dev_acc" in trace.scalars:
        out["dev_acc"] = plots.curves(trace, ["dev_acc"], title="Dev accuracy of the deployed student",
                                      y_title="accuracy")
    return out


def _figures_of(runs_dir: Path, stem: str, preset: str, runs: list[dict]) -> dict:
    """name -> Figure for one (notebook, preset): every pooled experiment's bars, the first run's signature."""
    from . import plots
    from .trace import Trace

    out = {}
    for name, exp in pooled(runs).items():
        scale, unit, _ = _scale(exp["metric"])
        n = exp["methods"][exp["baseline"]]["estimate"]["n"]
        out[name if exp["metric"] in name else f"{name}-{exp['metric']}"] = plots.interval_bars(
            exp, scale=scale, title=f"{stem} · {name}: mean with its 95 % interval over {n} seeds",
            y_title=exp["metric"] + unit)
    first = sorted((d for d in (runs_dir / stem / preset).glob("seed-*") if (d / "trace.npz").is_file()),
                   key=lambda d: int(d.name.split("-")[1]))
    if first:
        teacher = Trace.load(first[0] / "teacher") if (first[0] / "teacher" / "trace.npz").is_file() else None
        out.update(signature_figures(Trace.load(first[0]), teacher))
    return out


def figures(out: str | Path, target: str | Path, *, formats: tuple[str, ...] = ("png", "svg"), width: int = 960,
            height: int = 540) -> list[Path]:
    """Write the headline figures of every complete run in `out` to target/<notebook>/<preset>/<name>.<format>
    (16:9 for slides; PNG at twice the pixels), rebuilt from metrics.json and the saved Traces; returns the paths.
    Needs plotly's kaleido and a Chromium: BROWSER_PATH, else /usr/bin/chromium."""
    import os

    import plotly.io as pio

    try:
        import kaleido  # noqa: F401  (plotly.io uses it; named here for a clear error)
    except ImportError as exc:
        raise ValueError("--figures needs kaleido: pip install 'labkit[figures]' (and a Chromium)") from exc
    if "BROWSER_PATH" not in os.environ and Path(CHROMIUM).exists():
        os.environ["BROWSER_PATH"] = CHROMIUM
    out, target = Path(out), Path(target)
    figs, paths = [], []
    for (stem, preset), runs in sorted(gather(out).items()):
        for name, fig in _figures_of(out, stem, preset, runs).items():
            for fmt in formats:
                figs.append(fig)
                paths.append(target / stem / preset / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.{fmt}")
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
    if figs:
        pio.write_images(figs, [str(p) for p in paths], scale=2, width=width, height=height)   # one browser for all of them
    return paths
