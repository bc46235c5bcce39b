"""Time estimates calibrated on runs finished on this machine (issue 11): synthetic run
folders with hand-chosen timings, and the expected seconds worked out by hand."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest

from qvka_core.jobs.store import atomic_write_json

est_mod = importlib.import_module("qvka_core.jobs.estimate")  # the module (jobs.estimate is
# also the name of its function)

SMALL = ["--preset", "austen", "--variant", "mha", "--batch", "4", "--seq-len", "64",
         "--eval-every", "1000", "--eval-batches", "1"]
BIG = [*SMALL, "--n-layers", "16"]


def write_run(root: Path, name: str, argv: list[str], *, tokens: int, first_s: float,
              loop_s: float, wall_s: float | None = None, state: str = "completed",
              device: str = "cpu") -> None:
    """A finished run folder as the trainer and the queue leave it (only the fields read)."""
    args = est_mod.args_from_argv(argv)
    d = root / name
    d.mkdir(parents=True)
    atomic_write_json(d / "status.json", {"state": state})
    atomic_write_json(d / "config.json", {
        "train": {"seq_len": args.seq_len, "batch": args.batch, "device": device,
                  "distill": "none", "init": None},
        "model": est_mod._model_config(args).to_dict()})
    records = [{"step": 0, "tokens": 0, "elapsed_s": first_s},
               {"step": 10, "tokens": tokens, "tokens_per_s": 999.0, "elapsed_s": loop_s}]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if wall_s is not None:
        job: dict[str, Any] = {"started_at": "2026-12-01T10:00:00Z",
                               "finished_at": f"2026-12-01T10:{int(wall_s) // 60:02d}:"
                                              f"{int(wall_s) % 60:02d}Z",
                               "assigned": ["cuda:0"] if device == "cuda" else ["cpu"]}
        atomic_write_json(d / "job.json", job)


def steps(argv: list[str], n: int) -> list[str]:
    return [*argv, "--steps", str(n)]


def test_nothing_measured_falls_back_to_flops_labelled_uncalibrated(tmp_path: Path) -> None:
    est = est_mod.calibrated_estimate(steps(SMALL, 10), root=tmp_path)
    assert est["calibrated"] is False and est["calibrated_seconds"] is None
    assert est["basis"].startswith("uncalibrated") and est["seconds"] > 0


def test_same_config_scales_its_measured_time_by_tokens(tmp_path: Path) -> None:
    # 10 steps x 4 x 64 = 2,560 tokens: step-0 eval 10 s, loop 100 s, job clock 150 s
    write_run(tmp_path, "past", steps(SMALL, 10), tokens=2560, first_s=10.0, loop_s=100.0,
              wall_s=150.0)
    est = est_mod.calibrated_estimate(steps(SMALL, 30), root=tmp_path)  # 3x the tokens
    # start-up 150 - 100 = 50 s, + 10 s first eval, + 3 x (100 - 10) s of loop = 330 s
    assert est["calibrated"] is True
    assert est["calibrated_seconds"] == pytest.approx(50 + 10 + 3 * 90)
    assert "past" in est["basis"] and est["basis"].startswith("calibrated")
    assert est["calibrated_seconds"] > 3 * est["seconds"]  # FLOPs alone were far too hopeful


def test_without_a_job_clock_start_up_is_the_default(tmp_path: Path) -> None:
    write_run(tmp_path, "direct", steps(SMALL, 10), tokens=2560, first_s=0.0, loop_s=40.0)
    est = est_mod.calibrated_estimate(steps(SMALL, 20), root=tmp_path)
    assert est["calibrated_seconds"] == pytest.approx(est_mod.STARTUP_S + 2 * 40)


def test_the_closest_model_size_is_used_and_others_ignored(tmp_path: Path) -> None:
    write_run(tmp_path, "small", steps(SMALL, 10), tokens=2560, first_s=0.0, loop_s=20.0,
              wall_s=30.0)
    write_run(tmp_path, "big", steps(BIG, 10), tokens=2560, first_s=0.0, loop_s=500.0,
              wall_s=530.0)
    write_run(tmp_path, "failed", steps(SMALL, 10), tokens=2560, first_s=0.0, loop_s=1.0,
              wall_s=2.0, state="failed")
    write_run(tmp_path, "gpu", steps(SMALL, 10), tokens=2560, first_s=0.0, loop_s=1.0,
              wall_s=2.0, device="cuda")
    small = est_mod.calibrated_estimate(steps(SMALL, 10), root=tmp_path)
    assert [r["run"] for r in small["neighbours"]] == ["small"]
    assert small["calibrated_seconds"] == pytest.approx(30.0)  # the same run again
    big = est_mod.calibrated_estimate(steps(BIG, 10), root=tmp_path)
    assert [r["run"] for r in big["neighbours"]] == ["big"]
    assert big["calibrated_seconds"] == pytest.approx(530.0)
    gpu = est_mod.calibrated_estimate(steps(SMALL, 10), root=tmp_path, device="cuda")
    assert [r["run"] for r in gpu["neighbours"]] == ["gpu"]


def test_a_different_size_scales_by_training_flops_per_token(tmp_path: Path) -> None:
    write_run(tmp_path, "small", steps(SMALL, 10), tokens=2560, first_s=0.0, loop_s=20.0,
              wall_s=30.0)
    est = est_mod.calibrated_estimate(steps(BIG, 10), root=tmp_path)
    from qvka_core.accounting import flops_breakdown

    def per_token(argv: list[str]) -> float:
        cfg = est_mod._model_config(est_mod.args_from_argv(argv))
        return flops_breakdown(cfg, seq_len=64)["training_per_token"]

    ratio = per_token(BIG) / per_token(SMALL)
    assert ratio > 2  # 16 layers against the preset's few
    assert est["calibrated_seconds"] == pytest.approx(10.0 + 20.0 * ratio)
    assert "rough" in est["basis"]


@pytest.mark.parametrize(("n", "text"), [(134_515_008, "134.5 M"), (910_600, "910.6 k"),
                                        (512, "512"), (1_700_000_000, "1.7 B")])
def test_count_label(n: int, text: str) -> None:
    assert est_mod.count_label(n) == text
