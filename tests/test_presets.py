"""Presets against the real Hugging Face model classes (meta device, no download) and the
widely published parameter totals; recost defaults."""

from __future__ import annotations

import pytest
import torch

from qvka_core.accounting import param_breakdown
from qvka_core.config import ConfigError
from qvka_core.model import Transformer
from qvka_core.presets import get_preset, preset_names, recost
from qvka_core.variants import available_variants

transformers = pytest.importorskip("transformers")


def _hf_numel(model_cls: type, config: object) -> int:
    with torch.device("meta"):
        model = model_cls.from_config(config)
    return sum(p.numel() for p in model.parameters())  # tied weights counted once


def _hf_configs() -> dict[str, tuple[object, type, int]]:
    t = transformers
    llama = dict(hidden_act="silu")
    return {
        # name: (HF config, Auto class, published total)
        "gpt2": (t.GPT2Config(), t.AutoModel, 124_439_808),
        "bert-base": (t.BertConfig(), t.AutoModel, 109_482_240),
        "minilm-l6": (t.BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                   intermediate_size=1536), t.AutoModel, 22_713_216),
        "smollm2-135m": (t.LlamaConfig(hidden_size=576, intermediate_size=1536,
                                       num_hidden_layers=30, num_attention_heads=9,
                                       num_key_value_heads=3, vocab_size=49152,
                                       tie_word_embeddings=True, **llama),
                         t.AutoModelForCausalLM, 134_515_008),
        "qwen2.5-0.5b": (t.Qwen2Config(hidden_size=896, intermediate_size=4864,
                                       num_hidden_layers=24, num_attention_heads=14,
                                       num_key_value_heads=2, vocab_size=151936,
                                       tie_word_embeddings=True),
                         t.AutoModelForCausalLM, 494_032_768),
        "llama3-8b": (t.LlamaConfig(hidden_size=4096, intermediate_size=14336,
                                    num_hidden_layers=32, num_attention_heads=32,
                                    num_key_value_heads=8, vocab_size=128256,
                                    tie_word_embeddings=False, **llama),
                      t.AutoModelForCausalLM, 8_030_261_248),
        "mistral-7b": (t.MistralConfig(hidden_size=4096, intermediate_size=14336,
                                       num_hidden_layers=32, num_attention_heads=32,
                                       num_key_value_heads=8, vocab_size=32000,
                                       tie_word_embeddings=False),
                       t.AutoModelForCausalLM, 7_241_732_096),
    }


@pytest.mark.parametrize("name", list(_hf_configs()))
def test_published_totals_match_hf(name: str) -> None:
    config, auto, published = _hf_configs()[name]
    ours = sum(param_breakdown(get_preset(name)).values())
    assert _hf_numel(auto, config) == published  # the external fact, via HF's own classes
    assert ours == published


def test_deepseek_v2_lite_dense_equivalent_matches_hf() -> None:
    """HF DeepseekV2 with every layer dense at the active FFN width: same MLA, same total."""
    if not hasattr(transformers, "DeepseekV2Config"):
        pytest.skip("transformers without DeepseekV2")
    hf = transformers.DeepseekV2Config(
        vocab_size=102400, hidden_size=2048, intermediate_size=11264, num_hidden_layers=27,
        num_attention_heads=16, num_key_value_heads=16, q_lora_rank=None, kv_lora_rank=512,
        qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, first_k_dense_replace=27,
        tie_word_embeddings=False,
    )
    cfg = get_preset("deepseek-v2-lite")
    assert sum(param_breakdown(cfg).values()) == _hf_numel(transformers.AutoModelForCausalLM, hf)
    assert "11264" in cfg.notes and "active" in cfg.notes.lower()


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_every_variant_on_meta(name: str) -> None:
    base = get_preset(name)
    assert base.notes, "every preset records its provenance"
    for v in available_variants():
        cfg = recost(base, v)
        assert cfg.variant == v
        with torch.device("meta"):
            model = Transformer(cfg)
        assert sum(param_breakdown(cfg).values()) == sum(p.numel() for p in model.parameters())


def test_recost_defaults() -> None:
    gpt2 = get_preset("gpt2")  # 12 heads of 64, MHA
    assert recost(gpt2, "gqa").attention.n_kv_heads == 3  # largest divisor of 12 <= 3
    assert recost(gpt2, "mqa").attention.n_kv_heads == 1
    assert recost(get_preset("paper-big"), "gqa").attention.n_kv_heads == 4
    llama = get_preset("llama3-8b")
    assert recost(llama, "gqa").attention.n_kv_heads == 8  # keeps the preset's sharing
    assert recost(llama, "mha").attention.n_kv_heads == 32
    # Key-less variants drop K and keep the model's grouping (paper §8, "GQA-QvVv").
    assert recost(llama, "qv").attention.n_kv_heads == 8
    assert recost(llama, "qv", n_kv_heads=32).attention.n_kv_heads == 32  # explicit choice
    q = recost(llama, "qvka").attention
    assert (q.n_kv_heads, q.option("d_ctx")) == (8, 128)
    assert recost(gpt2, "qv").attention.n_kv_heads == 12  # an MHA model stays one per head
    m = recost(gpt2, "mla").attention
    assert tuple(map(m.option, ("kv_lora_rank", "qk_rope_head_dim", "v_head_dim"))) == (256, 32, 64)
    ds = get_preset("deepseek-v2-lite")
    back = recost(recost(ds, "gqa"), "mla").attention  # MLA dims survive a round trip
    assert tuple(map(back.option, ("kv_lora_rank", "qk_rope_head_dim"))) == (512, 64)
    assert recost(gpt2, "mla", kv_lora_rank=128).attention.option("kv_lora_rank") == 128
    # dimensions outside attention are untouched
    assert recost(llama, "qv").replace(attention=llama.attention) == llama


def test_get_preset_errors_and_overrides() -> None:
    with pytest.raises(ConfigError, match="valid presets: .*gpt2.*llama3-8b"):
        get_preset("gpt-5")
    assert get_preset("tiny", n_layers=5).n_layers == 5
    with pytest.raises(ConfigError, match="unknown variant"):
        recost(get_preset("tiny"), "xqa")
    assert "paper-big" in preset_names() and "tiny-encoder" in preset_names()
    assert "3+3" in get_preset("paper-big").notes
    assert get_preset("tiny-encoder").causal is False


# Every causal preset with KV heads (an MLA model caches a latent, not heads).
HEADED = [n for n in preset_names() if get_preset(n).causal and get_preset(n).variant != "mla"]


@pytest.mark.parametrize("name", HEADED)
def test_qv_never_caches_more_than_the_models_own_sharing(name: str) -> None:
    """Dropping K cannot cost cache: QV holds V only, in the model's own V heads."""
    from qvka_core.accounting import attention_params, kv_cache_bytes_per_token

    base = get_preset(name)
    qv = recost(base, "qv")
    assert kv_cache_bytes_per_token(qv) <= kv_cache_bytes_per_token(base)
    assert kv_cache_bytes_per_token(qv) * 2 == kv_cache_bytes_per_token(
        recost(base, "gqa", n_kv_heads=base.attention.n_kv_heads))
    a = base.attention
    assert attention_params(base) - attention_params(qv) == (
        base.n_layers * (a.d_model + a.qkv_bias) * a.n_kv_heads * a.head_dim)  # W_K (+ bias)
