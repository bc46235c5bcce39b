"""The bundled Austen models: one small causal decoder, every attention variant.

Config (all variants share it): d_model 128, 4 heads of 32, 2 pre-norm layers, LayerNorm,
GELU FFN 512, tied embeddings, RoPE by default, max_seq_len 128, vocab = the Austen BPE
(4096). Variant options chosen for d 128: gqa 2 KV heads, mla kv_lora_rank 64 (2·head_dim)
with a 16-wide decoupled RoPE key, qvka d_ctx = head_dim (32), vshared one V head shared by
the 4 per-head keys (n_v_heads 1, its spec's default: TrainArgs has no field for it).

`BUNDLED` lists every bundled checkpoint name with its TrainArgs overrides.
"""

from __future__ import annotations

from typing import Any

from qvka_core.config import AttentionConfig, ModelConfig

AUSTEN_PRESET = "austen"


def austen_config(vocab_size: int = 4096, **overrides: Any) -> ModelConfig:
    """The bundled model's config (ModelConfig fields in `overrides` replace the defaults)."""
    cfg = ModelConfig(
        attention=AttentionConfig(kind="mha", d_model=128, n_heads=4, position="rope"),
        n_layers=2, vocab_size=vocab_size, ffn_dim=512, max_seq_len=128, norm="layernorm",
        prenorm=True, mlp="gelu", activation="gelu", tie_embeddings=True, name="austen",
        notes="bundled tiny decoder trained from scratch on the Austen corpus",
    )
    return cfg.replace(**overrides) if overrides else cfg


# Variant options for d_model 128, head_dim 32.
VARIANT_OPTIONS: dict[str, dict[str, Any]] = {
    "mha": {},
    "mqa": {},
    "gqa": {"n_kv_heads": 2},
    "mla": {"kv_lora_rank": 64},
    "qv": {},
    "qvka": {"d_ctx": 32},
    "vshared": {},  # n_v_heads = 1, the spec's default (one V for all heads, paper §8)
}
POSITION_PAIRS = ("mha", "qv", "qvka")  # also trained with agf and sinusoidal positions


def bundled_runs() -> dict[str, dict[str, Any]]:
    """checkpoint name -> TrainArgs overrides (variant, position, variant options)."""
    runs: dict[str, dict[str, Any]] = {}
    for variant, opts in VARIANT_OPTIONS.items():
        runs[f"austen-{variant}"] = {"variant": variant, **opts}
    for variant in POSITION_PAIRS:
        for position in ("agf", "sinusoidal"):
            runs[f"austen-{variant}-{position}"] = {
                "variant": variant, "position": position, **VARIANT_OPTIONS[variant]}
    return runs


BUNDLED: dict[str, dict[str, Any]] = bundled_runs()
