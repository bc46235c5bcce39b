"""How the Fine-tune and Paper pages show runs: the runs table with readable numbers (no
"None"), curves against each run's share of its tokens, and the time estimate calibrated on
runs finished here (qvka_core.jobs.estimate.calibrated_estimate)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from qvka_core import jobs, runview
from qvka_core.jobs.estimate import calibrated_estimate, count_label

MISSING = "—"  # a value not known (yet): queued runs have no loss, fresh ones no speed
_FORMATS = {
    "params": count_label,
    "KV bytes/token": lambda v: f"{v:,.0f} B",
    "step": lambda v: f"{int(v):,}", "steps": lambda v: f"{int(v):,}",
    "final val loss": lambda v: f"{v:.3f}", "vs original": lambda v: f"{v:.3f}",
    "tokens/s": lambda v: f"{v:,.0f}", "wall s": lambda v: f"{v:,.1f}",
}


def _shown(value: Any, fmt: Any = str) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value == "":
        return MISSING
    return fmt(value)


def runs_table(statuses: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run, every cell text: counts as "134.5 M", losses to 3 decimals, "—"
    where a value is not known."""
    rows = [runview.run_row(s) for s in statuses]
    return pd.DataFrame([{k: _shown(v, _FORMATS.get(k, str)) for k, v in row.items()}
                         for row in rows])


X_AXES = {"step": "steps", "share": "share of each run's tokens"}


def with_share(frame: pd.DataFrame, statuses: list[dict[str, Any]]) -> pd.DataFrame:
    """`frame` (from app_runs.metrics_frame) plus "share": tokens / the run's total tokens
    (its planned steps x tokens per step; the last logged tokens if the plan is unknown), so
    runs of very different lengths can be drawn on one 0-1 axis."""
    planned = {s["id"]: s.get("total_steps") for s in statuses}
    totals = {}
    for run, part in frame.groupby("run"):
        logged = part[part["step"] > 0]
        per_step = float((logged["tokens"] / logged["step"]).max()) if len(logged) else 0.0
        plan = planned.get(run)
        totals[run] = plan * per_step if plan and per_step else float(part["tokens"].max())
    share = [t / totals[r] if totals[r] else 0.0 for r, t in zip(frame["run"], frame["tokens"],
                                                                    strict=True)]
    return frame.assign(share=share)


def estimate_caption(train: Any, device: str, n_gpus: int = 1) -> tuple[float, str]:
    """(seconds, "calibrated on ... " or "uncalibrated: ...") for one run (its TrainArgs, a
    dict of its fields, or argv)."""
    est = calibrated_estimate(train, root=jobs.runs_root(), device=device, n_gpus=n_gpus)
    return est["calibrated_seconds"] or est["seconds"], est["basis"]
