"""Named model configurations mirroring published checkpoints, plus `recost` for the spectrum.

Each preset's `notes` names the Hugging Face config it mirrors. Published totals (checked in
tests/test_presets.py against the real HF model classes built on the meta device):
gpt2 124,439,808 · bert-base 109,482,240 · minilm-l6 22,713,216 · smollm2-135m 134,515,008 ·
qwen2.5-0.5b 494,032,768 · llama3-8b 8,030,261,248 · mistral-7b 7,241,732,096.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qvka_core.config import AttentionConfig, ModelConfig
from qvka_core.errors import ConfigError
from qvka_core.variants.registry import get_variant


def _bert(name: str, notes: str, *, d: int, layers: int, heads: int, ffn: int) -> ModelConfig:
    """BERT layout: post-norm encoder, learned positions, token types, embedding LayerNorm."""
    return ModelConfig(
        attention=AttentionConfig(d_model=d, n_heads=heads, causal=False, position="learned",
                                  qkv_bias=True, o_bias=True),
        n_layers=layers, vocab_size=30522, ffn_dim=ffn, max_seq_len=512, norm="layernorm",
        norm_eps=1e-12, prenorm=False, final_norm=False, mlp="gelu", activation="gelu",
        mlp_bias=True, tie_embeddings=False, lm_head=False, type_vocab_size=2, embed_norm=True,
        pooler=True, name=name, notes=notes,
    )


def _llama(name: str, notes: str, *, d: int, layers: int, heads: int, kv: int, ffn: int,
           vocab: int, theta: float, eps: float, max_len: int, tied: bool,
           qkv_bias: bool = False, head_dim: int | None = None) -> ModelConfig:
    """Llama layout: pre-norm RMSNorm, SwiGLU (SiLU), RoPE, no biases unless stated."""
    return ModelConfig(
        attention=AttentionConfig(kind="gqa", d_model=d, n_heads=heads, n_kv_heads=kv,
                                  head_dim=head_dim, rope_theta=theta, qkv_bias=qkv_bias),
        n_layers=layers, vocab_size=vocab, ffn_dim=ffn, max_seq_len=max_len, norm="rmsnorm",
        norm_eps=eps, mlp="swiglu", activation="silu", tie_embeddings=tied, name=name,
        notes=notes,
    )


def _gpt2() -> ModelConfig:
    return ModelConfig(
        attention=AttentionConfig(d_model=768, n_heads=12, position="learned", qkv_bias=True,
                                  o_bias=True),
        n_layers=12, vocab_size=50257, ffn_dim=3072, max_seq_len=1024, norm="layernorm",
        norm_eps=1e-5, mlp="gelu", activation="gelu_tanh", mlp_bias=True, tie_embeddings=True,
        name="gpt2", notes="mirrors HF openai-community/gpt2 (GPT2Config defaults): 124,439,808",
    )


def _deepseek_v2_lite() -> ModelConfig:
    return ModelConfig(
        attention=AttentionConfig(
            kind="mla", d_model=2048, n_heads=16, head_dim=128, rope_theta=10000.0,
            options={"kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
                     "v_head_dim": 128, "latent_norm_eps": 1e-6},
        ),
        n_layers=27, vocab_size=102400, ffn_dim=(2 + 6) * 1408, max_seq_len=32768,
        norm="rmsnorm", norm_eps=1e-6, mlp="swiglu", activation="silu", tie_embeddings=False,
        name="deepseek-v2-lite",
        notes="mirrors HF deepseek-ai/DeepSeek-V2-Lite attention (MLA, kv_lora_rank 512, rope "
        "64); MoE FFN costed as dense ACTIVE parameters: ffn_dim = (2 shared + 6 routed) x "
        "1408 = 11264 in every layer (router, idle experts and the dense first layer not "
        "modelled), so the total is not the published 15.7B",
    )


PRESETS: dict[str, Callable[[], ModelConfig]] = {
    "gpt2": _gpt2,
    "bert-base": lambda: _bert(
        "bert-base", "mirrors HF google-bert/bert-base-uncased BertModel incl. pooler: "
        "109,482,240", d=768, layers=12, heads=12, ffn=3072),
    "minilm-l6": lambda: _bert(
        "minilm-l6", "mirrors HF sentence-transformers/all-MiniLM-L6-v2 (BertModel incl. "
        "pooler): 22,713,216", d=384, layers=6, heads=12, ffn=1536),
    "smollm2-135m": lambda: _llama(
        "smollm2-135m", "mirrors HF HuggingFaceTB/SmolLM2-135M (LlamaConfig): 134,515,008",
        d=576, layers=30, heads=9, kv=3, ffn=1536, vocab=49152, theta=100000.0, eps=1e-5,
        max_len=8192, tied=True),
    "qwen2.5-0.5b": lambda: _llama(
        "qwen2.5-0.5b", "mirrors HF Qwen/Qwen2.5-0.5B (Qwen2Config, qkv bias): 494,032,768",
        d=896, layers=24, heads=14, kv=2, ffn=4864, vocab=151936, theta=1e6, eps=1e-6,
        max_len=32768, tied=True, qkv_bias=True, head_dim=64),
    "llama3-8b": lambda: _llama(
        "llama3-8b", "mirrors HF meta-llama/Meta-Llama-3-8B (LlamaConfig): 8,030,261,248",
        d=4096, layers=32, heads=32, kv=8, ffn=14336, vocab=128256, theta=500000.0, eps=1e-5,
        max_len=8192, tied=False),
    "mistral-7b": lambda: _llama(
        "mistral-7b", "mirrors HF mistralai/Mistral-7B-v0.1 (MistralConfig): 7,241,732,096; "
        "rope_theta 10000 is v0.1's (v0.2+ use 1e6; parameters are identical)",
        d=4096, layers=32, heads=32, kv=8, ffn=14336, vocab=32000, theta=10000.0, eps=1e-5,
        max_len=32768, tied=False),
    "deepseek-v2-lite": _deepseek_v2_lite,
    "paper-big": lambda: ModelConfig(
        attention=AttentionConfig(d_model=1024, n_heads=16, position="sinusoidal"),
        n_layers=3, vocab_size=36000, ffn_dim=4096, max_seq_len=1024, norm="layernorm",
        mlp="gelu", activation="relu", mlp_bias=True, tie_embeddings=True, name="paper-big",
        notes="decoder-only analogue of the paper's Transformer-BIG (OpenNMT-py, d 1024, 16 "
        "heads, FFN 4096, 36k shared vocab, sinusoidal PE); the paper's model is a 3+3 "
        "encoder-decoder with cross-attention, which this does not model"),
    "tiny": lambda: ModelConfig(
        attention=AttentionConfig(kind="gqa", d_model=64, n_heads=4, n_kv_heads=2),
        n_layers=2, vocab_size=256, ffn_dim=128, max_seq_len=256, name="tiny",
        notes="debug decoder (byte vocabulary); mirrors no published checkpoint"),
    "tiny-encoder": lambda: ModelConfig(
        attention=AttentionConfig(d_model=64, n_heads=4, causal=False, position="learned",
                                  qkv_bias=True, o_bias=True),
        n_layers=2, vocab_size=256, ffn_dim=128, max_seq_len=256, prenorm=False,
        final_norm=False, mlp_bias=True, tie_embeddings=False, lm_head=False,
        type_vocab_size=2, embed_norm=True, pooler=True, norm_eps=1e-12, name="tiny-encoder",
        notes="debug BERT-like encoder; mirrors no published checkpoint"),
}


def preset_names() -> list[str]:
    return list(PRESETS)


def get_preset(name: str, **overrides: Any) -> ModelConfig:
    """The preset `name`; `overrides` are ModelConfig fields replaced afterwards."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    cfg = PRESETS[name]()
    return cfg.replace(**overrides) if overrides else cfg


def recost(cfg: ModelConfig, kind: str, **overrides: Any) -> ModelConfig:
    """Same model dimensions with attention swapped to `kind`, for a spectrum comparison.

    Each option of `kind`'s spec with a `recost` rule gets that default (the rules live with
    the variant, e.g. gqa keeps the config's KV heads when shared, else the largest divisor
    of n_heads <= n_heads/4; mla keeps any MLA dims the config has, else kv_lora_rank
    4·head_dim capped at d_model and an even RoPE width ≈ head_dim/2; vshared keeps the
    model's KV grouping for V, else one V head). mha/mqa are forced by the registry; qv and
    qvka keep the model's own KV sharing (drop K, keep the grouping: the paper's
    "GQA-QvVv", notes/paper.md §2.8 and §4), so Llama-3-8B as QV has 8 V heads;
    `n_kv_heads=n_heads` asks for one V head per query head. `overrides` are variant
    options or AttentionConfig fields and win over every default.
    """
    spec = get_variant(kind)  # unknown kind -> ConfigError listing the valid names
    a = cfg.attention
    changes: dict[str, Any] = {}
    for opt in spec.model_options():
        if opt.recost is not None and (value := opt.recost(a)) is not None:
            changes[opt.name] = value
    changes.update(overrides)
    return cfg.with_variant(kind, **changes)
