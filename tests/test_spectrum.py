"""One answer per model: the spectrum on Home, the Costs page's configs, the `costs` CLI and
what Convert builds agree for the key-less variants (they keep the model's KV grouping)."""

from __future__ import annotations

import json

import pytest
import torch

from qvka_app import costs_view
from qvka_core.accounting import costs, kv_cache_bytes_per_token, param_breakdown
from qvka_core.cli import main
from qvka_core.config import AttentionConfig, ModelConfig
from qvka_core.convert import convert
from qvka_core.model import Transformer
from qvka_core.presets import get_preset, recost


def _gqa_model() -> Transformer:
    torch.manual_seed(0)
    cfg = ModelConfig(attention=AttentionConfig.make(kind="gqa", d_model=32, n_heads=4,
                                                n_kv_heads=2), n_layers=2, vocab_size=64,
                      ffn_dim=64, max_seq_len=64)
    return Transformer(cfg).eval()


@pytest.mark.parametrize("variant", ["qv", "qvka"])
def test_costs_equal_what_convert_builds(variant: str) -> None:
    model = _gqa_model()
    built = convert(model, variant, max_eval_tokens=32, max_calib_tokens=256).model.cfg
    costed = recost(model.cfg, variant)
    assert built.attention.n_kv_heads == costed.attention.n_kv_heads == 2
    assert param_breakdown(built) == param_breakdown(costed)
    assert kv_cache_bytes_per_token(built) == kv_cache_bytes_per_token(costed)


def test_llama3_as_qv_on_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's own check: 8 V heads, W_K dropped, 65,536 B/token in bf16."""
    assert main(["costs", "--preset", "llama3-8b", "--variant", "gqa", "--variant", "qv",
                 "--json"]) == 0
    gqa, qv = json.loads(capsys.readouterr().out)
    assert qv["kv_cache_bytes_per_token"] == 65_536 == gqa["kv_cache_bytes_per_token"] // 2
    assert gqa["params_total"] - qv["params_total"] == 32 * 4096 * 1024


def test_cli_n_kv_heads_applies_to_the_keyless_variants(capsys) -> None:
    assert main(["costs", "--preset", "llama3-8b", "--variant", "qv", "--variant", "qvka",
                 "--n-kv-heads", "32", "--json"]) == 0
    qv, qvka = json.loads(capsys.readouterr().out)
    assert qv["kv_cache_bytes_per_token"] == 32 * 128 * 32 * 2  # one V head per query head
    assert qvka["kv_cache_bytes_per_token"] == 2 * qv["kv_cache_bytes_per_token"]


def test_qvka_vg_cache_is_costed_with_its_recompute(capsys) -> None:
    assert main(["costs", "--preset", "smollm2-135m", "--variant", "qvka", "--json"]) == 0
    kv = json.loads(capsys.readouterr().out)[0]
    assert main(["costs", "--preset", "smollm2-135m", "--variant", "qvka", "--qvka-cache",
                 "vg", "--json"]) == 0
    vg = json.loads(capsys.readouterr().out)[0]
    # 30 layers x (3 V heads x 64 + d_ctx 64) x 2 bytes, against K and V of 3 heads each
    assert vg["kv_cache_bytes_per_token"] == 30 * (3 * 64 + 64) * 2
    assert kv["kv_cache_bytes_per_token"] == 30 * 2 * 3 * 64 * 2
    assert vg["decode_flops_per_token"] > kv["decode_flops_per_token"]  # K is recomputed
    assert vg["params_total"] == kv["params_total"]


def test_home_spectrum_shows_qv_below_gqa_for_smollm2() -> None:
    table = costs_view.spectrum(get_preset("smollm2-135m")).set_index("variant")
    kv = table["KV bytes / token (bf16)"]
    assert kv["qv"] < kv["gqa"]
    assert kv["qv"] == 11_520  # what Convert builds from SmolLM2 (30 x 3 x 64 x 2 bytes)


def test_spectrum_lists_every_registered_variant_and_marks_the_native_one() -> None:
    from qvka_core.variants import available_variants

    table = costs_view.spectrum(get_preset("smollm2-135m"))
    assert list(table["variant"]) == available_variants()
    assert table.set_index("variant")["native"].to_dict()["gqa"] is True
    assert table["native"].sum() == 1


def test_costs_page_configs_keep_the_grouping() -> None:
    cfgs = costs_view.variant_configs(get_preset("llama3-8b"), ["gqa", "qv", "qvka"],
                                      causal=True)
    assert {v: c.attention.n_kv_heads for v, c in cfgs.items()} == {"gqa": 8, "qv": 8,
                                                                     "qvka": 8}
    one_per_head = costs_view.variant_configs(get_preset("llama3-8b"), ["qv"], causal=True,
                                              n_kv_heads=32)
    assert one_per_head["qv"].attention.n_kv_heads == 32
    vg = costs_view.variant_configs(get_preset("llama3-8b"), ["qvka"], causal=True,
                                    options={"qvka_cache": "vg"})
    assert costs(vg["qvka"]).kv_cache_elems_per_token.keys() == {"v", "g"}
