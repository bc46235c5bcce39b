"""HF config.json -> our `ModelConfig`, per family (GPT-2, BERT, Llama/Qwen2, DeepSeek-V2,
GPT-NeoX with a sequential residual).

Field names and defaults follow the HF configuration classes of transformers 5.x
(`configuration_gpt2.py`, `configuration_bert.py`, `configuration_llama.py`,
`configuration_qwen2.py`, `configuration_deepseek_v2.py`, `configuration_gpt_neox.py`).
Architectures our model cannot reproduce exactly (scaled RoPE, sliding windows, MoE FFNs,
other activations, NeoX's parallel residual) are refused with a CheckpointError rather than
loaded approximately.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qvka_core.config import AttentionConfig, ModelConfig
from qvka_core.errors import CheckpointError, ConfigError

FAMILIES: tuple[str, ...] = ("gpt2", "bert", "llama", "qwen2", "deepseek_v2", "gpt_neox")


# --- configs -------------------------------------------------------------------------------
def _dict(hf_config: Any) -> dict[str, Any]:
    return dict(hf_config) if isinstance(hf_config, dict) else hf_config.to_dict()


def detect_family(hf_config: Any) -> str:
    """The key-table family of an HF config (its `model_type`)."""
    model_type = _dict(hf_config).get("model_type")
    if model_type not in FAMILIES:
        raise CheckpointError(
            f"unsupported HF model_type {model_type!r}; supported: {', '.join(FAMILIES)}"
        )
    return model_type


def _rope_theta(c: dict[str, Any]) -> float:
    """RoPE base; only plain RoPE is supported (scaled variants would change the angles)."""
    params = c.get("rope_parameters") or c.get("rope_scaling") or {}
    kind = params.get("rope_type", params.get("type", "default"))
    if kind != "default":
        raise CheckpointError(f"RoPE type {kind!r} is not supported (only plain RoPE)")
    return float(params.get("rope_theta", c.get("rope_theta", 10000.0)))


def config_from_hf(hf_config: Any, **overrides: Any) -> ModelConfig:
    """Our `ModelConfig` for an HF config object or its `config.json` dict.

    Raises CheckpointError for architectures our model cannot reproduce exactly, and
    KeyError when a field without a default is absent (old, diff-only config files).
    """
    c = _dict(hf_config)
    family = detect_family(c)
    try:
        cfg = _BUILDERS[family](c)
        return cfg.replace(**overrides) if overrides else cfg
    except ConfigError as exc:
        raise CheckpointError(f"HF {family} config cannot be represented: {exc}") from exc


def _gpt2(c: dict[str, Any]) -> ModelConfig:
    if not c.get("scale_attn_weights", True) or c.get("scale_attn_by_inverse_layer_idx"):
        raise CheckpointError("GPT-2 configs with non-standard attention scaling are unsupported")
    act = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu",
           "relu": "relu"}.get(c.get("activation_function", "gelu_new"))
    if act is None:
        raise CheckpointError(f"GPT-2 activation {c.get('activation_function')!r} unsupported")
    d = c["n_embd"]
    attn = AttentionConfig(kind="mha", d_model=d, n_heads=c["n_head"], causal=True,
                           position="learned", qkv_bias=True, o_bias=True)
    return ModelConfig(attention=attn, n_layers=c["n_layer"], vocab_size=c["vocab_size"],
                       ffn_dim=c.get("n_inner") or 4 * d, max_seq_len=c["n_positions"],
                       norm="layernorm", norm_eps=c.get("layer_norm_epsilon", 1e-5),
                       mlp="gelu", activation=act, mlp_bias=True,
                       tie_embeddings=bool(c.get("tie_word_embeddings", True)), name="gpt2",
                       notes="loaded from a Hugging Face GPT-2 checkpoint")


def _bert(c: dict[str, Any]) -> ModelConfig:
    if c.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError("only BERT with absolute position embeddings is supported")
    if c.get("is_decoder"):
        raise CheckpointError("BERT used as a decoder (is_decoder=True) is not supported")
    act = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh"}.get(c.get("hidden_act", "gelu"))
    if act is None:
        raise CheckpointError(f"BERT activation {c.get('hidden_act')!r} is not supported")
    attn = AttentionConfig(kind="mha", d_model=c["hidden_size"],
                           n_heads=c["num_attention_heads"], causal=False, position="learned",
                           qkv_bias=True, o_bias=True)
    return ModelConfig(attention=attn, n_layers=c["num_hidden_layers"],
                       vocab_size=c["vocab_size"], ffn_dim=c["intermediate_size"],
                       max_seq_len=c.get("max_position_embeddings", 512), norm="layernorm",
                       norm_eps=c.get("layer_norm_eps", 1e-12), prenorm=False, mlp="gelu",
                       activation=act, mlp_bias=True, tie_embeddings=False, lm_head=False,
                       type_vocab_size=c.get("type_vocab_size", 2), embed_norm=True,
                       pooler=True, final_norm=False, name="bert",
                       notes="loaded from a Hugging Face BERT checkpoint (BertModel)")


def _decoder(c: dict[str, Any], attn: AttentionConfig, name: str) -> ModelConfig:
    if c.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"{name}: activation {c.get('hidden_act')!r} is not supported")
    return ModelConfig(attention=attn, n_layers=c["num_hidden_layers"],
                       vocab_size=c["vocab_size"], ffn_dim=c["intermediate_size"],
                       max_seq_len=c.get("max_position_embeddings", 2048), norm="rmsnorm",
                       norm_eps=c.get("rms_norm_eps", 1e-6), mlp="swiglu", activation="silu",
                       mlp_bias=bool(c.get("mlp_bias", False)),
                       tie_embeddings=bool(c.get("tie_word_embeddings", False)),
                       name=name, notes=f"loaded from a Hugging Face {name} checkpoint")


def _llama(c: dict[str, Any]) -> ModelConfig:
    family = c.get("model_type", "llama")
    if c.get("use_sliding_window"):
        raise CheckpointError(f"{family}: sliding-window attention is not supported")
    h = c["num_attention_heads"]
    g = c.get("num_key_value_heads") or h
    bias = bool(c.get("attention_bias", False))
    attn = AttentionConfig(
        kind="mha" if g == h else ("mqa" if g == 1 else "gqa"), d_model=c["hidden_size"],
        n_heads=h, n_kv_heads=g, head_dim=c.get("head_dim") or c["hidden_size"] // h,
        causal=True, position="rope", rope_theta=_rope_theta(c),
        qkv_bias=bias or family == "qwen2", o_bias=bias and family != "qwen2",
    )
    return _decoder(c, attn, family)


def _deepseek_v2(c: dict[str, Any]) -> ModelConfig:
    n_layers = c["num_hidden_layers"]
    dense = c.get("n_routed_experts") in (None, 0) or c.get("first_k_dense_replace", 0) >= n_layers
    if not dense:
        raise CheckpointError(
            f"DeepSeek-V2 config has MoE FFN layers (first_k_dense_replace="
            f"{c.get('first_k_dense_replace', 0)} < num_hidden_layers={n_layers}, "
            f"n_routed_experts={c.get('n_routed_experts')}); only dense-FFN configs load"
        )
    bias = bool(c.get("attention_bias", False))
    if bias and c["q_lora_rank"] is None:
        raise CheckpointError("DeepSeek-V2 with attention_bias and no q_lora_rank is unsupported "
                              "(HF's q_proj has no bias there)")
    attn = AttentionConfig(
        kind="mla", d_model=c["hidden_size"], n_heads=c["num_attention_heads"],
        head_dim=c["qk_nope_head_dim"], causal=True, position="rope",
        rope_theta=_rope_theta(c), qkv_bias=bias, o_bias=bias,
        options={"q_lora_rank": c["q_lora_rank"], "kv_lora_rank": c["kv_lora_rank"],
                 "qk_nope_head_dim": c["qk_nope_head_dim"],
                 "qk_rope_head_dim": c["qk_rope_head_dim"], "v_head_dim": c["v_head_dim"],
                 "latent_norm_eps": 1e-6},  # HF's latent RMSNorms use the default eps
    )
    return _decoder(c, attn, "deepseek_v2")


def _gpt_neox(c: dict[str, Any]) -> ModelConfig:
    """GPT-NeoX with `use_parallel_residual=False` is our pre-norm LayerNorm block with RoPE."""
    if c.get("use_parallel_residual", True):
        raise CheckpointError("GPT-NeoX with a parallel residual (use_parallel_residual=True) "
                              "is not supported: our block adds attention, then the MLP")
    params = c.get("rope_parameters") or {}
    if float(params.get("partial_rotary_factor", c.get("rotary_pct", 1.0))) != 1.0:
        raise CheckpointError("GPT-NeoX with partial rotary embeddings is not supported "
                              "(our RoPE rotates the whole head)")
    act = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
           "relu": "relu"}.get(c.get("hidden_act", "gelu"))
    if act is None:
        raise CheckpointError(f"GPT-NeoX activation {c.get('hidden_act')!r} is not supported")
    bias = bool(c.get("attention_bias", True))
    attn = AttentionConfig(kind="mha", d_model=c["hidden_size"],
                           n_heads=c["num_attention_heads"], causal=True, position="rope",
                           rope_theta=_rope_theta(c),
                           qkv_bias=bias, o_bias=bias)
    return ModelConfig(attention=attn, n_layers=c["num_hidden_layers"],
                       vocab_size=c["vocab_size"], ffn_dim=c["intermediate_size"],
                       max_seq_len=c.get("max_position_embeddings", 2048), norm="layernorm",
                       norm_eps=c.get("layer_norm_eps", 1e-5), mlp="gelu", activation=act,
                       mlp_bias=True, tie_embeddings=bool(c.get("tie_word_embeddings", False)),
                       name="gpt_neox", notes="loaded from a Hugging Face GPT-NeoX checkpoint")


_BUILDERS: dict[str, Callable[[dict[str, Any]], ModelConfig]] = {
    "gpt2": _gpt2, "bert": _bert, "llama": _llama, "qwen2": _llama, "deepseek_v2": _deepseek_v2,
    "gpt_neox": _gpt_neox,
}
