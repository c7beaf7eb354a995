"""Views of the arena (labkit.arena): the scenario × method grid of paired gains, and gain against cost."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .common import PALETTE


def _accuracy_experiments(experiments: dict[str, dict]) -> dict[str, dict]:
    return {k: v for k, v in experiments.items() if not k.endswith("/steps")}


def arena_grid(experiments: dict[str, dict], *, title: str = "Paired test-accuracy gain over cross-entropy "
               "(points, mean ± 95 % interval)") -> go.Figure:
    """Scenario (rows) × method (columns): the mean paired gain over cross-entropy in accuracy points, its
    interval written in the cell; a cell is coloured only where the interval excludes 0 (grey: no separation)."""
    exps = _accuracy_experiments(experiments)
    scenarios = list(exps)
    methods = list(dict.fromkeys(m for e in exps.values() for m in e["methods"] if e["methods"][m]["paired"]))
    z = np.full((len(scenarios), len(methods)), np.nan)
    text = np.full(z.shape, "", dtype=object)
    for i, s in enumerate(scenarios):
        for j, m in enumerate(methods):
            p = exps[s]["methods"].get(m, {}).get("paired")
            if p is None:
                text[i, j] = "—"
                continue
            d = p["difference"]
            if d["n"] == 0:
                text[i, j] = "no value"
                continue
            text[i, j] = f"{100 * d['mean']:+.2f}<br>± {100 * d['half_width']:.2f}" if d["n"] > 1 else \
                f"{100 * d['mean']:+.2f}"
            if p["helps"] or p["hurts"]:
                z[i, j] = 100 * d["mean"]
    bound = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    fig = go.Figure(go.Heatmap(z=np.nan_to_num(z, nan=0.0), x=methods, y=scenarios, text=text,
                               texttemplate="%{text}", colorscale="RdBu", zmid=0, zmin=-bound, zmax=bound,
                               colorbar=dict(title="points"), hoverinfo="skip"))
    fig.update_layout(title=title, template="plotly_white", xaxis=dict(type="category", side="top"),
                      yaxis=dict(type="category", autorange="reversed"), height=120 + 70 * len(scenarios))
    return fig


def arena_gain_vs_cost(experiments: dict[str, dict], costs: dict[str, dict], *,
                       cost: str = "time_ratio", title: str = "Gain against cost") -> go.Figure:
    """One point per (scenario, method): the paired gain over cross-entropy (points, with its 95 % interval)
    against the cost as a multiple of cross-entropy's (`cost`: "time_ratio" or "passes_ratio"; log scale)."""
    fig = go.Figure()
    exps = _accuracy_experiments(experiments)
    for k, (scenario, exp) in enumerate(exps.items()):
        xs, ys, err, names = [], [], [], []
        for method, m in exp["methods"].items():
            if m["paired"] is None or m["paired"]["difference"]["n"] == 0:
                continue
            d = m["paired"]["difference"]
            xs.append(costs[scenario][method][cost])
            ys.append(100 * d["mean"])
            err.append(100 * d["half_width"] if d["n"] > 1 else 0.0)
            names.append(method)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers+text", text=names, textposition="top center",
                                 name=scenario, marker=dict(size=10, color=PALETTE[k % len(PALETTE)]),
                                 error_y=dict(type="data", array=err, visible=True)))
    fig.add_hline(y=0, line=dict(color="#888", dash="dot"))
    label = {"time_ratio": "wall time (teacher + deployment) / cross-entropy's",
             "passes_ratio": "student forward + backward passes / cross-entropy's"}.get(cost, cost)
    fig.update_layout(title=title, template="plotly_white", xaxis=dict(type="log", title=label),
                      yaxis_title="paired gain over cross-entropy (points)")
    return fig
