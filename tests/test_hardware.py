"""Decode roofline: hand-computed bytes and FLOPs for Llama-3-8B, bound switching."""

from __future__ import annotations

import pytest

from qvka_core.config import ConfigError
from qvka_core.hardware import GPUS, decode_roofline, gpu_names
from qvka_core.presets import get_preset, recost


def test_llama3_batch1_is_bandwidth_bound() -> None:
    cfg = get_preset("llama3-8b")
    r = decode_roofline(cfg, "H100 SXM", context_len=4096, batch=1)
    # weights streamed: every parameter but the 128256 x 4096 input embedding, bf16
    weights = (8_030_261_248 - 128_256 * 4096) * 2
    kv = 131_072 * 4096
    assert r["weight_bytes_per_step"] == weights
    assert r["kv_bytes_per_step"] == kv
    assert r["bound"] == "bandwidth"
    assert r["tokens_per_s"] == pytest.approx(3.35e12 / (weights + kv))
    assert 150 < r["tokens_per_s"] < 250  # the familiar ~200 tok/s upper bound
    assert r["fits_in_memory"]


def test_large_batch_short_context_turns_compute_bound() -> None:
    cfg = get_preset("llama3-8b")
    r = decode_roofline(cfg, "H100 SXM", context_len=16, batch=2048)
    assert r["bound"] == "compute"
    assert r["tokens_per_s"] == pytest.approx(r["tokens_per_s_compute_bound"])
    assert r["step_intensity"] > r["ridge_intensity"]


def test_smaller_cache_decodes_faster_at_long_context() -> None:
    cfg = get_preset("llama3-8b")
    mha = decode_roofline(recost(cfg, "mha"), "H200", context_len=32768, batch=8)
    qv = decode_roofline(recost(cfg, "qv"), "H200", context_len=32768, batch=8)
    assert qv["kv_bytes_per_step"] * 8 == mha["kv_bytes_per_step"]  # V only, 8 of 32 heads
    assert qv["tokens_per_s"] > mha["tokens_per_s"]


def test_table_and_errors() -> None:
    assert set(gpu_names()) == {"H100 SXM", "H200", "A100 80GB SXM", "RTX 4090"}
    assert all(g.source and g.bandwidth > 0 and g.peak_flops > 0 for g in GPUS.values())
    with pytest.raises(ConfigError, match="valid gpus"):
        decode_roofline(get_preset("tiny"), "TPU", context_len=8)
    with pytest.raises(ConfigError, match="context_len"):
        decode_roofline(get_preset("tiny"), "H200", context_len=0)
