"""Configs are validated once; every error names the field and the rule."""

from __future__ import annotations

import re

import pytest
import torch

from qvka_core import (
    AttentionConfig,
    ConfigError,
    ModelConfig,
    Transformer,
    available_variants,
    get_variant,
)
from qvka_core.variants import variant_options


def attn(**kw) -> AttentionConfig:
    kw.setdefault("d_model", 64)
    kw.setdefault("n_heads", 8)
    return AttentionConfig.make(**kw)


def test_registry_lists_variants_in_spectrum_order():
    names = available_variants()
    ranks = [get_variant(n).spectrum_rank for n in names]
    assert ranks == sorted(ranks) and len(set(names)) == len(names)
    paper = ["mha", "gqa", "mqa", "mla", "qvka", "qv"]  # the paper's spectrum (notes §4)
    assert [n for n in names if n in paper] == paper


def test_variants_force_their_kv_heads():
    assert attn(kind="mha", n_kv_heads=2).n_kv_heads == 8
    assert attn(kind="mqa", n_kv_heads=4).n_kv_heads == 1
    assert attn(kind="gqa", n_kv_heads=2).n_kv_heads == 2
    assert attn(kind="gqa").n_kv_heads == 8


def test_defaults_derive_from_head_dim():
    a = attn(kind="qvka")
    assert a.head_dim == 8 and a.option("d_ctx") == 8
    m = attn(kind="mla")
    widths = ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
    assert tuple(map(m.option, widths)) == (32, 8, 4, 8)


@pytest.mark.parametrize(
    "kw,pattern",
    [
        ({"kind": "gqa", "n_kv_heads": 3}, r"n_heads \(8\) must be divisible by n_kv_heads \(3\)"),
        ({"kind": "gqa", "d_model": 0}, r"d_model must be a positive integer"),
        ({"kind": "gqa", "n_heads": -2}, r"n_heads must be a positive integer"),
        ({"kind": "gqa", "d_model": 60, "n_heads": 8}, r"d_model \(60\) must be divisible"),
        ({"kind": "gqa", "n_kv_heads": 0}, r"n_kv_heads must be a positive integer"),
        ({"kind": "flash"}, "unknown variant 'flash'; valid variants: "
                            + re.escape(", ".join(available_variants())) + "$"),
        ({"kind": "qvka", "d_ctx": 0}, r"d_ctx must be an integer in 1..d_model \(64\)"),
        ({"kind": "qvka", "d_ctx": 65}, r"d_ctx must be an integer in 1..d_model"),
        ({"kind": "mla", "kv_lora_rank": 100}, r"kv_lora_rank \(100\) must be at most d_model"),
        ({"kind": "mla", "qk_rope_head_dim": 3}, r"qk_rope_head_dim must be even"),
        ({"kind": "mla", "q_lora_rank": 0}, r"q_lora_rank must be None or in 1..d_model"),
        ({"kind": "mha", "position": "xpos"}, r"position must be one of rope, sinusoidal"),
        ({"kind": "mha", "dropout": 1.5}, r"dropout must be in \[0, 1\)"),
    ],
)
def test_bad_attention_configs_name_field_and_rule(kw, pattern):
    with pytest.raises(ConfigError, match=pattern):
        attn(**kw)


def test_model_config_rules_and_round_trip():
    a = attn(kind="qvka", d_ctx=16, position="agf")
    with pytest.raises(ConfigError, match="n_layers must be a positive integer"):
        ModelConfig(attention=a, n_layers=0, vocab_size=10, ffn_dim=8)
    with pytest.raises(ConfigError, match="tie_embeddings needs lm_head"):
        ModelConfig(attention=a, n_layers=1, vocab_size=10, ffn_dim=8, lm_head=False)
    cfg = ModelConfig(attention=a, n_layers=2, vocab_size=10, ffn_dim=8)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown config field"):
        ModelConfig.from_dict({**cfg.to_dict(), "n_experts": 4})


def test_with_variant_keeps_dims_and_revalidates():
    cfg = ModelConfig(attention=attn(kind="gqa", n_kv_heads=2), n_layers=2, vocab_size=10,
                      ffn_dim=8)
    assert cfg.with_variant("mha").attention.n_kv_heads == 8
    assert cfg.with_variant("qv").attention.n_kv_heads == 2  # QV in groups ("GQA-QvVv")
    assert cfg.with_variant("qvka").d_model == 64
    with pytest.raises(ConfigError):
        cfg.with_variant("gqa", n_kv_heads=5)


def test_configs_are_frozen_and_hashable():
    a = attn(kind="mla")
    with pytest.raises(AttributeError):
        a.n_heads = 4  # type: ignore[misc]
    assert hash(a) == hash(attn(kind="mla"))


def test_sequence_longer_than_max_is_a_clear_error():
    cfg = ModelConfig(attention=attn(kind="mha", position="learned"), n_layers=1,
                      vocab_size=10, ffn_dim=8, max_seq_len=8)
    with pytest.raises(ConfigError, match=r"sequence of 9 tokens exceeds max_seq_len \(8\)"):
        Transformer(cfg)(torch.zeros(1, 9, dtype=torch.long))


def test_variant_knobs_are_options_not_fields() -> None:
    import dataclasses

    fields = {f.name for f in dataclasses.fields(AttentionConfig)}
    every_option = {o.name for o in variant_options(scope="model")}
    # Each knob lives in `options` only; n_kv_heads is the one shared field that GQA and the
    # key-less variants also declare as an option (its flag and bounds).
    assert every_option and fields & every_option == {"n_kv_heads"}
    q = AttentionConfig.make(kind="qvka", d_model=64, n_heads=8, d_ctx=16, qvka_cache="vg")
    assert dict(q.options) == {"d_ctx": 16, "qvka_cache": "vg"}
    assert q == AttentionConfig(kind="qvka", d_model=64, n_heads=8,
                                options={"d_ctx": 16, "qvka_cache": "vg"})
    with pytest.raises(ConfigError, match="d_ctx do not apply to mha"):
        AttentionConfig.make(kind="mha", d_model=64, n_heads=8, d_ctx=16)
    with pytest.raises(ConfigError, match="unknown attention field"):
        AttentionConfig.make(kind="mha", d_model=64, n_heads=8, d_ctxx=16)
    assert q.option("kv_lora_rank") is None  # another variant's option: not set here
    with pytest.raises(ConfigError, match="unknown variant option 'd_ctxx'"):
        q.option("d_ctxx")  # a typo must not read as "not set"


def test_a_flat_config_json_lifts_its_own_knobs_and_refuses_a_foreign_one() -> None:
    base = {"kind": "mla", "d_model": 64, "n_heads": 8, "kv_lora_rank": 24, "d_ctx": None,
            "qvka_cache": "kv", "norm_eps": 1e-3}
    data = {"attention": base, "n_layers": 1, "vocab_size": 10, "ffn_dim": 8}
    a = ModelConfig.from_dict(data).attention
    assert tuple(map(a.option, ('kv_lora_rank', 'latent_norm_eps'))) == (24, 1e-3)
    assert a.option("qvka_cache") is None  # QV-Ka's filler on an MLA config is dropped
    with pytest.raises(ConfigError, match="d_ctx does not apply to 'mla'"):
        ModelConfig.from_dict({**data, "attention": {**base, "d_ctx": 8}})
    with pytest.raises(ConfigError, match="disagrees with its options entry"):
        ModelConfig.from_dict({**data, "attention": {**base, "options": {"kv_lora_rank": 8}}})
