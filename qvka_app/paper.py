"""App-layer glue for the Paper page: the paper-mini results (live runs, else the committed
results.json), their tables and learning curves, and launching the grid through the queue.
The statistics and verdicts live in qvka_core.paper and qvka_core.stats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from qvka_core import jobs, paper
from qvka_core.paths import ASSETS, PROJECT_ROOT

PAPER_COMMITTED = ASSETS / "paper_mini" / "results.json"
PAPER_COMMAND = ("python -m qvka_core train --grid paper-mini --out runs-paper --threads 1 "
                 "--shard 0/2 & python -m qvka_core train --grid paper-mini --out runs-paper "
                 "--threads 1 --shard 1/2; python -m qvka_core paper summary --runs runs-paper "
                 "--out assets/paper_mini/results.json")


@st.cache_data(ttl=10, show_spinner=False)
def paper_results(root: str) -> dict[str, Any]:
    """Our paper-mini summary over `root`, else the committed results.json (if present)."""
    live = paper.aggregate(root)
    if live["cells"] or not PAPER_COMMITTED.exists():
        return {**live, "claims": paper.claims(live), "comparisons": paper.comparisons(live),
                "from": f"runs under {root}"}
    return {**json.loads(PAPER_COMMITTED.read_text(encoding="utf-8")),
            "from": _shown_path(PAPER_COMMITTED)}


def _shown_path(path: Path) -> str:
    """The path relative to the checkout when it lies in one (assets/...), else in full."""
    try:
        return str(path.relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def launch_grid(steps_mult: float, seeds: int, device: str, *,
                qvka_both: bool = False) -> tuple[list[str], list[str]]:
    """Queue the paper-mini grid through the job queue; runs that already exist are skipped
    (a second press does not duplicate them). Returns (queued ids, skipped names)."""
    root = jobs.runs_root()
    queued, skipped = [], []
    for r in paper.grid_runs(seeds=list(range(seeds)), steps_mult=steps_mult,
                             qvka_both=qvka_both):
        if (root / r["name"]).exists():
            skipped.append(r["name"])
            continue
        tags = {"grid": paper.GRID_NAME, "cell": r["cell"], "position": r["position"],
                "seed": r["seed"]}
        queued.append(jobs.submit(r["train"], name=r["name"], device=device, root=root,
                                  tags=tags)["id"])
    return queued, skipped


def ours_table(results: dict[str, Any]) -> pd.DataFrame:
    """Our cells: mean ± sd over seeds (val loss in nats, next-token accuracy in %) and how
    far each is below its bigram and unigram baselines on the same windows."""
    def pm(mean: float, sd: float | None, digits: int) -> str:
        return f"{mean:.{digits}f} ± {sd:.{digits}f}" if sd is not None else f"{mean:.{digits}f}"

    def below(c: dict[str, Any], key: str) -> str:
        base = c.get(key)
        return "-" if base is None else f"{base - c['val_loss_mean']:+.3f}"

    return pd.DataFrame([{"cell": c["label"], "position": c["position"], "n": c["n"],
                          "val loss (nats)": pm(c["val_loss_mean"], c["val_loss_sd"], 3),
                          "val acc %": pm(c["val_acc_mean"], c["val_acc_sd"], 2),
                          "below bigram": below(c, "bigram_loss"),
                          "below unigram": below(c, "unigram_loss")}
                         for c in results.get("cells", {}).values()])


def comparisons_table(results: dict[str, Any]) -> pd.DataFrame:
    """Every paired comparison: mean difference of val loss (a − b) with its 95 % t interval."""
    rows = []
    for c in results.get("comparisons") or []:
        p = c["loss"]
        rows.append({"a − b": f"{c['a']} − {c['b']}", "seeds": p["n"],
                     "Δ loss (nats)": f"{p['mean']:+.3f}",
                     "95 % CI": f"{p['lo']:+.3f} .. {p['hi']:+.3f}",
                     "Δ acc (points)": "-" if c["acc_points"] is None
                     else f"{c['acc_points']:+.2f}"})
    return pd.DataFrame(rows)


def curves_chart(results: dict[str, Any]) -> Any:
    """Validation loss against tokens per cell (mean line, min-max band over seeds), with the
    bigram and unigram baselines as rules: does QV-Ka converge faster early (paper Fig. 7)?"""
    import altair as alt

    rows = [{"cell": f"{c['label']} · {c['position']}", **point}
            for c in results.get("cells", {}).values() for point in c.get("curve") or []
            if point["tokens"] > 0]
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    x = alt.X("tokens:Q", title="training tokens", axis=alt.Axis(format="~s"))
    y = alt.Y("mean:Q", title="validation loss (nats/token)", scale=alt.Scale(zero=False))
    band = alt.Chart(frame).mark_area(opacity=0.15).encode(x=x, y="min:Q", y2="max:Q",
                                                           color="cell:N")
    lines = alt.Chart(frame).mark_line(point=True).encode(
        x=x, y=y, color=alt.Color("cell:N", title="cell"),
        tooltip=["cell", "tokens", "mean", "min", "max"])
    layers = [band, lines]
    cells = list(results.get("cells", {}).values())
    for key, label in (("bigram_loss", "bigram"), ("unigram_loss", "unigram")):
        values = [c[key] for c in cells if c.get(key) is not None]
        if values:
            rule = pd.DataFrame({"loss": [sum(values) / len(values)], "baseline": [label]})
            layers.append(alt.Chart(rule).mark_rule(strokeDash=[6, 4], color="#555").encode(
                y="loss:Q", tooltip=["baseline", "loss"]))
    return alt.layer(*layers).properties(height=360)
