"""`variants` and `costs` in-process through qvka_core.cli.main, plus one real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qvka_core.cli import main
from qvka_core.variants import available_variants

ROOT = Path(__file__).resolve().parents[1]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        rc = main(list(argv))
    except SystemExit as exc:  # argparse errors exit from inside parse_args
        rc = int(exc.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def test_variants_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(capsys, "variants")
    assert rc == 0
    names = [line.split()[0] for line in out.strip().splitlines()]
    assert names == available_variants()
    rc, out, _ = _run(capsys, "variants", "--json")
    rows = json.loads(out)
    assert [r["name"] for r in rows] == available_variants()
    assert {r["family"] for r in rows} >= {"kv-sharing", "latent", "keyless"}
    assert all(r["description"] for r in rows)


def test_costs_json_all_variants(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(capsys, "costs", "--preset", "gpt2", "--json", "--seq-len", "1024")
    assert rc == 0
    rows = json.loads(out)
    assert [r["variant"] for r in rows] == available_variants()
    mha = rows[0]
    assert mha["params_total"] == 124_439_808
    # GPT-2: 12 layers x (K + V) x 768 x 2 bytes (bf16) per token
    assert mha["kv_cache_bytes_per_token"] == 12 * 2 * 768 * 2
    assert mha["kv_cache_bytes"] == mha["kv_cache_bytes_per_token"] * 1024
    qv = next(r for r in rows if r["variant"] == "qv")
    assert qv["kv_cache_bytes_per_token"] * 2 == mha["kv_cache_bytes_per_token"]
    assert "macs" not in mha


def test_costs_table_and_flags(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(capsys, "costs", "--preset", "llama3-8b", "--variant", "gqa",
                      "--variant", "qv")
    assert rc == 0
    for row in ("params total", "attention params", "KV bytes/token", "fwd FLOPs/token",
                "train FLOPs/token", "decode FLOP/byte KV"):
        assert row in out
    assert "8,030,261,248" in out and "131,072" in out
    rc, out, _ = _run(capsys, "costs", "--preset", "tiny", "--variant", "mha", "--json",
                      "--macs")
    (row,) = json.loads(out)
    assert row["macs"]["forward_per_step"] * 2 == row["flops"]["forward_per_step"]
    _, out2, _ = _run(capsys, "costs", "--preset", "tiny", "--variant", "mha", "--json",
                      "--no-causal-halving")
    (full,) = json.loads(out2)
    assert full["causal_halving"] is False
    assert full["flops"]["attention_scores"] > row["flops"]["attention_scores"]
    rc, out, _ = _run(capsys, "costs", "--preset", "tiny", "--macs")
    assert rc == 0 and "fwd MACs/token" in out


def test_costs_custom_dims_and_knobs(capsys: pytest.CaptureFixture[str]) -> None:
    paper = ("costs", "--d-model", "1024", "--n-layers", "1", "--n-heads", "16")
    rc, out, _ = _run(capsys, *paper, "--variant", "qvka", "--d-ctx", "128", "--json")
    assert rc == 0
    (qvka,) = json.loads(out)
    assert qvka["attention_params"] == 3_473_408  # notes/paper.md §6
    rc, out, _ = _run(capsys, *paper, "--variant", "gqa", "--variant", "qv", "--n-kv-heads",
                      "8", "--json", "--dtype", "fp32")
    gqa, qv = json.loads(out)  # --n-kv-heads applies to every variant that shares KV heads
    assert gqa["attention_params"] == 3_145_728
    assert gqa["kv_cache_bytes_per_token"] == 2 * 8 * 64 * 4
    assert qv["kv_cache_bytes_per_token"] == 8 * 64 * 4  # GQA-QvVv: V only, 8 heads
    rc, out, _ = _run(capsys, "costs", "--preset", "llama3-8b", "--variant", "qvka",
                      "--d-ctx", "256", "--json")
    (row,) = json.loads(out)
    assert row["params"]["attention/ctx_proj"] == 32 * 4096 * 256


BAD = {
    "indivisible kv heads": (["--d-model", "64", "--n-layers", "2", "--n-heads", "8",
                              "--n-kv-heads", "3"], "n_kv_heads"),
    "zero d_model": (["--d-model", "0", "--n-layers", "2", "--n-heads", "4"], "d_model"),
    "negative layers": (["--d-model", "64", "--n-layers", "-1", "--n-heads", "4"], "n_layers"),
    "zero kv heads": (["--preset", "tiny", "--n-kv-heads", "0"], "n_kv_heads"),
    "zero seq_len": (["--preset", "tiny", "--seq-len", "0"], "seq_len"),
    "zero batch": (["--preset", "tiny", "--batch", "0"], "batch"),
    "unknown variant": (["--preset", "tiny", "--variant", "xqa"], "valid variants: mha"),
    "unknown preset": (["--preset", "gpt-9"], "valid presets: gpt2"),
    "d_ctx too big": (["--preset", "tiny", "--d-ctx", "65"], "d_ctx"),
    "d_ctx zero": (["--preset", "tiny", "--d-ctx", "0"], "d_ctx"),
    "latent rank too big": (["--preset", "tiny", "--kv-lora-rank", "65"], "kv_lora_rank"),
    "q rank too big": (["--preset", "tiny", "--q-lora-rank", "1000"], "q_lora_rank"),
    "odd rope": (["--preset", "tiny", "--qk-rope-head-dim", "3"], "qk_rope_head_dim"),
    "preset plus dims": (["--preset", "gpt2", "--d-model", "512"], "--d-model"),
    "missing dims": (["--d-model", "64"], "--n-layers"),
    "bad dtype": (["--preset", "tiny", "--dtype", "int8"], "--dtype"),
    "not an int": (["--preset", "tiny", "--seq-len", "lots"], "--seq-len"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_costs_bad_input_one_line(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv, field = BAD[case]
    rc, out, err = _run(capsys, "costs", *argv)
    assert rc == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert field in lines[0]
    assert "Traceback" not in err


def test_unknown_variant_caught_before_building(capsys: pytest.CaptureFixture[str]) -> None:
    # The dims are invalid too, but the unknown variant is reported first.
    rc, _, err = _run(capsys, "costs", "--d-model", "0", "--n-layers", "1", "--n-heads", "1",
                      "--variant", "nope")
    assert rc == 2 and "unknown variant 'nope'" in err


def test_subprocess_costs_json() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "qvka_core", "costs", "--preset", "gpt2", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) == len(available_variants())
    for row in rows:
        assert isinstance(row["variant"], str)
        assert isinstance(row["params_total"], int)
        assert isinstance(row["kv_cache_bytes_per_token"], int)
        assert isinstance(row["kv_cache_bytes"], int)
        assert isinstance(row["arithmetic_intensity"], float)
        assert all(isinstance(v, int) for v in row["params"].values())
        for key in ("forward_per_token", "training_per_token", "forward_per_step",
                    "training_per_step", "attention_scores", "attention_values",
                    "projections", "mlp", "lm_head"):
            assert isinstance(row["flops"][key], (int, float)), key
        assert row["dtype"] == "bf16" and row["seq_len"] == 2048 and row["batch"] == 1
        assert row["notes"]
    bad = subprocess.run(
        [sys.executable, "-m", "qvka_core", "costs", "--preset", "nope"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error:")
    assert "Traceback" not in bad.stderr


def test_output_piped_into_a_closed_reader_ends_quietly() -> None:
    """`python -m qvka_core costs ... | head` used to end in a BrokenPipeError traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "qvka_core", "costs", "--preset", "gpt2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=Path(__file__).resolve().parents[1])
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and "Traceback" not in err, err


def test_qvka_app_passes_streamlit_flags_through_and_reads_the_shipped_settings() -> None:
    from qvka_core.cli import _passthrough
    from qvka_core.cli.app import settings_flags

    assert _passthrough(["app", "--server.port", "8502"]) == ["app", "--", "--server.port",
                                                             "8502"]
    assert _passthrough(["app", "--help"]) == ["app", "--help"]  # our own help stays ours
    assert _passthrough(["costs", "--json"]) == ["costs", "--json"]
    flags = settings_flags(ROOT / ".streamlit" / "config.toml")
    pairs = dict(zip(flags[::2], flags[1::2], strict=True))
    assert pairs["--server.headless"] == "true"  # TOML booleans as streamlit spells them
    assert pairs["--server.address"] == "127.0.0.1" and pairs["--theme.base"] == "light"
