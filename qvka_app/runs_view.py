"""How the Fine-tune and Paper pages show runs (no streamlit): the runs table with readable
numbers (no "None"), loss curves (also against each run's share of its tokens), the
recovery of converted models, and the time estimate calibrated on runs finished here
(qvka_core.jobs.estimate.calibrated_estimate)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from qvka_app import runinfo
from qvka_core import jobs
from qvka_core.jobs.estimate import calibrated_estimate, count_label

MISSING = "—"  # a value not known (yet): queued runs have no loss, fresh ones no speed
# The table's columns: header -> (run_row field, format). Short headers and no long text, so
# that it fits the main column of a 1280-pixel screen; the run's id (when renamed), message,
# wall time and device are its detail line (`run_detail`).
COLUMNS: dict[str, tuple[str, Any]] = {
    "run": ("name", str), "state": ("state", str), "variant": ("variant", str),
    "base": ("base", str), "params": ("params", count_label),
    "KV/token": ("KV bytes/token", lambda v: f"{v:,.0f} B"),
    "step": ("step", lambda v: f"{int(v):,}"),
    "val loss": ("final val loss", lambda v: f"{v:.3f}"),
    "vs orig.": ("vs original", lambda v: f"{v:.3f}"),
    "tok/s": ("tokens/s", lambda v: f"{v:,.0f}"),
}

# Names can be long (a 40-character prefix, "run: ..." bases): capped in pixels, the rest of a
# name is cut with "…" in its cell and read in full in the detail line. The step grows while
# a run trains ("—", then "450 / 3,000"), and the grid sizes a column once, on first draw.
COLUMN_WIDTHS: dict[str, dict[str, Any]] = {"run": {"width": 150}, "base": {"width": 115},
                                            "step": {"width": 95}}


def _shown(value: Any, fmt: Any = str) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value == "":
        return MISSING
    return fmt(value)


def runs_table(statuses: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run, every cell text: the run's display name, counts as "134.5 M",
    losses to 3 decimals, the step as "12 / 30", "—" where a value is not known."""
    out = []
    for s in statuses:
        row = runinfo.run_row(s)
        row["name"] = row["name"] or row["run"]
        cells = {header: _shown(row[field], fmt) for header, (field, fmt) in COLUMNS.items()}
        if row["steps"] and cells["step"] != MISSING:
            cells["step"] += f" / {row['steps']:,}"
        out.append(cells)
    return pd.DataFrame(out, columns=list(COLUMNS))


def run_detail(status: dict[str, Any]) -> str:
    """What the table leaves out, for one run: "[name ·] id: state (message) · wall time ·
    device"."""
    row = runinfo.run_row(status)
    parts = [f"{row['run']}: {row['state']}" + (f" ({row['message']})" if row["message"] else ""),
             f"wall {_shown(row['wall s'], lambda v: f'{v:,.1f} s')}",
             f"device {_shown(row['device'])}"]
    if row["name"] and row["name"] != row["run"]:
        parts.insert(0, row["name"])
    return " · ".join(parts)


X_AXES = {"step": "steps", "share": "share of each run's tokens"}


def with_share(frame: pd.DataFrame, statuses: list[dict[str, Any]]) -> pd.DataFrame:
    """`frame` (from `metrics_frame`) plus "share": tokens / the run's total tokens
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


def metrics_frame(run_ids: list[str]) -> pd.DataFrame:
    """Long table run, step, tokens, split, loss for overlaid curves. The train split is the
    cross-entropy (`ce`) when distilling, not the distillation objective, so that it reads on
    the validation loss's scale; "original" is the unconverted source's validation loss on
    the run's own windows (`ref_val_loss`), drawn flat across the run."""
    rows = []
    for rid, recs in jobs.compare(run_ids, root=jobs.runs_root()).items():
        for r in recs:
            train = r.get("ce", r.get("loss"))
            for split, value in (("train", train), ("validation", r.get("val_loss"))):
                if value is not None:
                    rows.append({"run": rid, "step": r["step"], "tokens": r.get("tokens", 0),
                                 "split": split, "loss": float(value)})
        ref = next((r["ref_val_loss"] for r in recs if r.get("ref_val_loss") is not None), None)
        if ref is not None and recs:
            rows += [{"run": rid, "step": r["step"], "tokens": r.get("tokens", 0),
                      "split": "original", "loss": float(ref)} for r in (recs[0], recs[-1])]
    return pd.DataFrame(rows, columns=["run", "step", "tokens", "split", "loss"])


def recovery_frame(statuses: list[dict[str, Any]]) -> tuple[pd.DataFrame, list[str]]:
    """(run, tokens, share of the original's loss) for converted-model runs and their
    controls (the original fine-tuned under the same budget: its own step-0 loss is the
    original's), and notes."""
    rows, notes = [], []
    for s in statuses:
        train = runinfo.train_record(s)
        init, variant = train.get("init"), train.get("variant")
        metrics = jobs.read_metrics(s["run_dir"])
        control = (init is not None and train.get("reference") == init
                   and runinfo.unconverted_source(init, variant) is None)  # not converted
        if control:
            original = next((r["ref_val_loss"] for r in metrics
                             if r.get("ref_val_loss") is not None), None)
            how = f"{init} on its own windows (control: the original fine-tuned)"
        else:
            original, how = runinfo.original_loss(init, variant, metrics)
        if init is None or original is None:
            continue
        label = f"{s['id']} (control)" if control else s["id"]
        notes.append(f"{label}: {how} = {original:.3f}")
        rows += [{"run": label, **r} for r in runinfo.recovery(metrics, original)]
    return pd.DataFrame(rows, columns=["run", "tokens", "share"]), notes


def loss_chart(frame: pd.DataFrame, x: str = "step") -> Any:
    """Loss against step (or, with x="share", against each run's share of its tokens, see
    with_share), one legend entry (colour) per run and split, dashed by split.

    (A dash or shape legend for the split does not render under Streamlit's Vega theme with
    point overlays, so run and split share the colour legend.)"""
    import altair as alt

    frame = frame.assign(series=frame["run"] + " · " + frame["split"])
    axis = (alt.X("share:Q", title="share of the run's tokens",
                  axis=alt.Axis(format=".0%", values=[0, 0.25, 0.5, 0.75, 1]),
                  scale=alt.Scale(domain=[0, 1]))
            if x == "share" else alt.X("step:Q", axis=alt.Axis(tickMinStep=1, format="d")))
    return alt.Chart(frame).mark_line(point=True).encode(
        x=axis,
        y=alt.Y("loss:Q", scale=alt.Scale(zero=False), title="loss (nats/token)"),
        color=alt.Color("series:N", title="run · split", legend=alt.Legend(labelLimit=400)),
        strokeDash=alt.StrokeDash("split:N", legend=None),
        tooltip=["run", "split", "step", "tokens", "loss"]).properties(
        usermeta={"embedOptions": {"renderer": "svg"}})


def recovery_chart(frame: pd.DataFrame) -> Any:
    """Validation loss as a share of the original's against tokens seen, one line per run."""
    import altair as alt

    return alt.Chart(frame).mark_line(point=True).encode(
        x=alt.X("tokens:Q", title="tokens seen", axis=alt.Axis(tickMinStep=1, format=",d")),
        y=alt.Y("share:Q", scale=alt.Scale(zero=False), title="val loss / original's"),
        color="run:N", tooltip=list(frame.columns))
