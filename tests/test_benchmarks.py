"""The GPU check that a session lent a GPU runs once (benchmarks/gpu_check.py), smoke-run on
the CPU so that it has not rotted by the time a GPU is available."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_cpu_smoke_runs_every_step(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--cpu-smoke", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((tmp_path / "gpu_check.json").read_text(encoding="utf-8"))
    assert any("MFU" in line for line in summary["mfu_eager"]["output"])
    for name in ("finetune_auto", "heal_auto"):
        assert summary[name]["state"] == "completed" and summary[name]["assigned"] == ["cpu"]
    # the healing job scored its teacher (the unconverted model) on its own windows
    assert summary["heal_auto"]["ref_val_loss"] > 0
    assert summary["finetune_2gpu"].startswith("not run")
