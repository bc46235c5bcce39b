"""A stock twin written in Hugging Face's layout: state dict through the shared key tables
(`checkpoints/hf_keys.py`, each transform's inverse) and the stock class's config.json.

`config_from_hf` (the importer) must read the written config back to the twin's config;
`check_round_trip` asserts that, and that importing the written state gives back the
twin's tensors bit for bit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from qvka_core.checkpoints.fastload import expected_shapes
from qvka_core.checkpoints.hf_keys import EXPORT_PREFIXES, HEAD_KEYS, Fused, hf_entry
from qvka_core.config import ModelConfig
from qvka_core.errors import CheckpointError
from qvka_core.export.twin import ARCHITECTURES

_ACT_NAMES = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}


def hf_state(cfg: ModelConfig, state: dict[str, Tensor], family: str) -> dict[str, Tensor]:
    """HF state dict (with the task model's prefix) from our state, via the family's table."""
    prefix = EXPORT_PREFIXES[family]
    out: dict[str, Tensor] = {}
    fused: dict[str, tuple[Fused, dict[int, Tensor]]] = {}
    for our_key in expected_shapes(cfg):
        try:
            hf_key, tf = hf_entry(family, our_key)
        except KeyError:
            raise CheckpointError(f"no {family} tensor holds our {our_key}") from None
        hf_key = hf_key if hf_key in HEAD_KEYS else prefix + hf_key
        t = state[our_key]
        if isinstance(tf, Fused):
            fused.setdefault(hf_key, (tf, {}))[1][tf.index] = t
        else:
            out[hf_key] = tf.save(t, cfg) if tf else t
    for hf_key, (tf, parts) in fused.items():
        out[hf_key] = tf.join(parts[0], parts[1], parts[2], cfg)
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


def hf_config(cfg: ModelConfig, family: str, *, eos_id: int | None = None,
              bos_id: int | None = None) -> dict[str, Any]:
    """The stock class's config.json for a twin config (inverse of `hf_config.py`)."""
    a = cfg.attention
    rope = {"rope_type": "default", "rope_theta": a.rope_theta}
    common: dict[str, Any] = {"model_type": family, "architectures": [ARCHITECTURES[family]],
                              "vocab_size": cfg.vocab_size, "torch_dtype": "float32",
                              "tie_word_embeddings": cfg.tie_embeddings}
    if eos_id is not None:
        common["eos_token_id"] = eos_id
    if bos_id is not None:
        common["bos_token_id"] = bos_id
    if family == "gpt2":
        return {**common, "n_embd": cfg.d_model, "n_head": a.n_heads, "n_layer": cfg.n_layers,
                "n_positions": cfg.max_seq_len, "n_inner": cfg.ffn_dim,
                "layer_norm_epsilon": cfg.norm_eps,
                "activation_function": _ACT_NAMES[cfg.activation],
                "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
    if family == "bert":
        return {**common, "hidden_size": cfg.d_model, "num_attention_heads": a.n_heads,
                "num_hidden_layers": cfg.n_layers, "intermediate_size": cfg.ffn_dim,
                "max_position_embeddings": cfg.max_seq_len,
                "type_vocab_size": cfg.type_vocab_size, "layer_norm_eps": cfg.norm_eps,
                "hidden_act": _ACT_NAMES[cfg.activation], "hidden_dropout_prob": 0.0,
                "attention_probs_dropout_prob": 0.0, "position_embedding_type": "absolute",
                "tie_word_embeddings": False}
    if family == "gpt_neox":
        return {**common, "hidden_size": cfg.d_model, "num_attention_heads": a.n_heads,
                "num_hidden_layers": cfg.n_layers, "intermediate_size": cfg.ffn_dim,
                "max_position_embeddings": cfg.max_seq_len, "layer_norm_eps": cfg.norm_eps,
                "hidden_act": _ACT_NAMES[cfg.activation], "use_parallel_residual": False,
                "attention_bias": a.qkv_bias,
                "rope_parameters": {**rope, "partial_rotary_factor": 1.0},
                "hidden_dropout": 0.0, "attention_dropout": 0.0}
    decoder = {**common, "hidden_size": cfg.d_model, "num_attention_heads": a.n_heads,
               "num_hidden_layers": cfg.n_layers, "intermediate_size": cfg.ffn_dim,
               "max_position_embeddings": cfg.max_seq_len, "rms_norm_eps": cfg.norm_eps,
               "hidden_act": "silu", "rope_parameters": rope, "attention_dropout": 0.0}
    if family == "deepseek_v2":
        return {**decoder, "num_key_value_heads": a.n_heads, "attention_bias": a.o_bias,
                "mlp_bias": cfg.mlp_bias,
                **{k: a.option(k) for k in ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
                                            "qk_rope_head_dim", "v_head_dim")},
                "first_k_dense_replace": cfg.n_layers}
    decoder.update(num_key_value_heads=a.n_kv_heads, head_dim=a.head_dim)
    if family == "qwen2":
        return {**decoder, "use_sliding_window": False}
    return {**decoder, "attention_bias": a.qkv_bias, "mlp_bias": cfg.mlp_bias}


def check_round_trip(cfg: ModelConfig, state: dict[str, Tensor], family: str,
                     hf_cfg: dict[str, Any], hf_tensors: dict[str, Tensor]) -> None:
    """Import what was written with the lab's own HF loader: config and tensors must match."""
    from qvka_core.checkpoints.hf import convert_hf_state
    from qvka_core.checkpoints.hf_config import config_from_hf

    back = config_from_hf(hf_cfg)
    if family == "bert":
        back = back.replace(pooler=cfg.pooler)
    if family == "deepseek_v2":  # MLA's head_dim only seeds defaults; the importer uses dn
        back = back.with_attention(head_dim=cfg.attention.head_dim)
    fields = ("attention", "n_layers", "vocab_size", "ffn_dim", "max_seq_len", "norm",
              "norm_eps", "prenorm", "mlp", "activation", "mlp_bias", "tie_embeddings",
              "lm_head", "type_vocab_size", "embed_norm", "pooler", "final_norm")
    diff = [f for f in fields if _norm(getattr(back, f), f) != _norm(getattr(cfg, f), f)]
    if diff:
        raise CheckpointError(f"internal: the {family} config does not read back the same "
                              f"({', '.join(diff)})")
    ours = convert_hf_state(back, hf_tensors, family, source="export")
    bad = [k for k, v in state.items() if k in ours and not torch.equal(ours[k], v)]
    if bad or set(ours) != set(state):
        raise CheckpointError(f"internal: the {family} tensors do not read back the same "
                              f"({', '.join((bad or sorted(set(ours) ^ set(state)))[:4])})")


_NAME_ONLY_OPTIONS = ("d_ctx", "qvka_cache", "mla_absorb_decode")


def _norm(value: Any, name: str) -> Any:
    if name == "attention":  # name-only and cache-mode fields do not change the function
        options = {k: v for k, v in value.options if k not in _NAME_ONLY_OPTIONS}
        return value.replace(dropout=0.0, options=options,
                             rope_theta=value.rope_theta if value.position == "rope" else 1.0)
    return value
