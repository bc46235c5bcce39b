"""The Fine-tune runs table reads (no "None", counts as "134.5 M") and curves of runs of very
different lengths can be drawn against each run's share of its tokens (issue 11)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

import qvka_app.runs_view
from qvka_core.accounting import param_breakdown
from qvka_core.jobs.store import atomic_write_json
from qvka_core.presets import get_preset


def status(tmp_path: Path, rid: str, **extra: Any) -> dict[str, Any]:
    """A job status as jobs.list_jobs gives it, for a run folder with only its config."""
    d = tmp_path / rid
    d.mkdir()
    atomic_write_json(d / "config.json", {"model": get_preset("smollm2-135m").to_dict(),
                                          "train": {"preset": "austen"}})
    return {"id": rid, "run_dir": str(d), "state": "queued", "argv": ["--variant", "qv"],
            **extra}


def test_runs_table_has_no_none_and_readable_counts(tmp_path: Path) -> None:
    queued = status(tmp_path, "q")  # nothing measured yet: no loss, speed, wall time, message
    done = status(tmp_path, "d", state="completed", step=30, total_steps=30,
                  last_metrics={"tokens_per_s": 1234.6, "elapsed_s": 191.96},
                  last_val={"val_loss": 3.14159}, ref_val_loss=2.0, message="30 steps")
    table = qvka_app.runs_view.runs_table([queued, done]).set_index("run")
    cells = table.to_numpy().ravel().tolist()
    assert all(isinstance(c, str) for c in cells)
    assert not any(c in ("None", "nan", "NaN", "") for c in cells)
    params = sum(param_breakdown(get_preset("smollm2-135m")).values())
    assert 100e6 < params < 200e6
    assert table.loc["d", "params"] == f"{params / 1e6:.1f} M"
    assert table.loc["d", "val loss"] == "3.142"
    assert table.loc["d", "vs orig."] == "1.571"
    assert table.loc["d", "tok/s"] == "1,235" and table.loc["d", "step"] == "30 / 30"
    assert table.loc["q", "val loss"] == qvka_app.runs_view.MISSING
    assert table.loc["q", "step"] == qvka_app.runs_view.MISSING


def test_runs_table_is_narrow_and_the_rest_is_the_detail_line(tmp_path: Path) -> None:
    """One column per fact (no id beside an identical name), no free text in the table: the
    Fine-tune table fits a 1280-pixel screen; message, wall time and device move to the
    picked run's detail line."""
    renamed = status(tmp_path, "ft-qv", name="best-qv", state="failed", step=3, total_steps=30,
                     message="out of memory at step 3", device="cuda",
                     last_metrics={"elapsed_s": 12.34})
    plain = status(tmp_path, "ft-mha", name="ft-mha")
    table = qvka_app.runs_view.runs_table([renamed, plain])
    assert table["run"].tolist() == ["best-qv", "ft-mha"]  # the display name, once
    assert table.columns.is_unique and len(table.columns) <= 10
    assert not {"name", "message", "device", "wall s"} & set(table.columns)
    assert table.loc[0, "step"] == "3 / 30"
    detail = qvka_app.runs_view.run_detail(renamed)
    assert detail.startswith("best-qv · ft-qv: failed (out of memory at step 3)")
    assert "wall 12.3 s" in detail and "device cuda" in detail
    assert qvka_app.runs_view.run_detail(plain).startswith("ft-mha: queued · wall — ·")


def test_share_puts_runs_of_different_lengths_on_one_axis() -> None:
    # run "long": 1000 planned steps of 8 tokens, logged to step 500 (half way, still running);
    # run "short": 10 steps of 8 tokens, finished
    frame = pd.DataFrame({
        "run": ["long", "long", "long", "short", "short"],
        "step": [0, 250, 500, 5, 10], "tokens": [0, 2000, 4000, 40, 80],
        "split": ["validation", "train", "train", "train", "train"],
        "loss": [9.0, 5.0, 4.0, 6.0, 5.5]})
    statuses = [{"id": "long", "total_steps": 1000}, {"id": "short", "total_steps": 10}]
    shared = qvka_app.runs_view.with_share(frame, statuses)
    assert shared["share"].tolist() == [0.0, 0.25, 0.5, 0.5, 1.0]
    unplanned = qvka_app.runs_view.with_share(frame, [])  # no plan: the last logged tokens
    assert unplanned["share"].tolist() == [0.0, 0.5, 1.0, 0.5, 1.0]
    spec = qvka_app.runs_view.loss_chart(shared, "share").to_dict()
    assert spec["encoding"]["x"]["field"] == "share"
    assert spec["encoding"]["x"]["axis"]["format"] == ".0%"
    assert qvka_app.runs_view.loss_chart(frame).to_dict()["encoding"]["x"]["field"] == "step"
