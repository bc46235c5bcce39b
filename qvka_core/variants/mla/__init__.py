"""Multi-head latent attention (DeepSeek-V2, arXiv 2405.04434 §2.1; paper §2.4): the spec
(torch-free); the nn.Module is `attention.py` beside this file.

    c_KV = RMSNorm(x W_DKV)                 (B, S, d_c)   latent, cached
    k_R  = RoPE(x W_KR)                     (B, S, d_R)   one decoupled RoPE key, cached
    [k_C ; v]_i = c_KV W_UKV,i              per head, up-projected from the latent
    q_i  = [q_C ; RoPE(q_R)]_i              from x (q_lora_rank None) or a low-rank path
    score_i = q_i · [k_C,i ; k_R]ᵀ / sqrt(d_nope + d_R)

Module names follow HF's DeepSeek-V2 (`q_proj` or `q_a_proj`/`q_a_layernorm`/`q_b_proj`,
`kv_a_proj_with_mqa`, `kv_a_layernorm`, `kv_b_proj`, `o_proj`). RoPE here is half-split
("rotate_half"); a loader of interleaved-RoPE checkpoints permutes the rope rows once.

Decoding caches only (c_KV, k_R): d_c + d_R elements per token per layer. With
`mla_absorb_decode`, W_UK is folded into the query and W_UV applied after attention, so a
decode step scores directly against the latent (an MQA over d_c + d_R wide keys).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qvka_core import limits
from qvka_core.errors import ConfigError
from qvka_core.variants.registry import (
    Conversion,
    Explainer,
    VariantOption,
    VariantSpec,
    register_variant,
)

if TYPE_CHECKING:
    from qvka_core.config import AttentionConfig


def dims(c: AttentionConfig) -> tuple[int, int, int, int, int, int]:
    """(H, d_model, d_nope, d_R, d_v, d_c) of a normalized MLA config."""
    o = c.option
    return (c.n_heads, c.d_model, o("qk_nope_head_dim"), o("qk_rope_head_dim"),
            o("v_head_dim"), o("kv_lora_rank"))


def _normalize(c: AttentionConfig) -> dict:
    o = c.option
    return {
        "n_kv_heads": c.n_heads,
        "kv_lora_rank": o("kv_lora_rank") if o("kv_lora_rank") is not None else 4 * c.head_dim,
        "qk_nope_head_dim": o("qk_nope_head_dim") or c.head_dim,
        "qk_rope_head_dim": o("qk_rope_head_dim") or max(2, c.head_dim // 2),
        "v_head_dim": o("v_head_dim") or c.head_dim,
    }


def _validate(c: AttentionConfig) -> None:
    for name in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
        value = c.option(name)
        if not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    _, m, _, dr, _, dc = dims(c)
    if dr % 2:
        raise ConfigError(f"qk_rope_head_dim must be even for RoPE, got {dr}")
    if dc > m:
        raise ConfigError(f"kv_lora_rank ({dc}) must be at most d_model ({m})")
    r = c.option("q_lora_rank")
    if r is not None and not (0 < r <= m):
        raise ConfigError(f"q_lora_rank must be None or in 1..d_model ({m}), got {r}")
    limits.check_finite("latent_norm_eps", c.option("latent_norm_eps"), positive=True)


def _params(c: AttentionConfig) -> dict[str, int]:
    h, m, dn, dr, dv, dc = dims(c)
    b, r = int(c.qkv_bias), c.option("q_lora_rank")
    if r is None:
        q = {"q_proj": m * h * (dn + dr) + b * h * (dn + dr)}
    else:
        q = {"q_a_proj": m * r + b * r, "q_a_layernorm": r, "q_b_proj": r * h * (dn + dr)}
    return {
        **q,
        "kv_a_proj_with_mqa": m * (dc + dr) + b * (dc + dr),
        "kv_a_layernorm": dc,
        "kv_b_proj": dc * h * (dn + dv),
        "o_proj": h * dv * m + int(c.o_bias) * m,
    }


def _decode_macs(c: AttentionConfig) -> int:
    """Multiply-adds per cached position at one decode step: against the latent when
    W_UK/W_UV are absorbed, else up-projecting each cached latent to K and V first."""
    h, _, dn, dr, dv, dc = dims(c)
    if c.option("mla_absorb_decode"):
        return h * (2 * dc + dr)
    return h * (dn + dr + dv) + dc * h * (dn + dv)


def _keep(name: str, default):
    """Recost rule: the config's own MLA width if it has one, else `default(cfg)`."""
    return lambda c: c.option(name) if c.option(name) is not None else default(c)


MLA_OPTIONS = (
    VariantOption("kv_lora_rank", int, "latent width d_c (default 4·head_dim)", minimum=1,
                  recost=_keep("kv_lora_rank", lambda c: min(4 * c.head_dim, c.d_model)),
                  demo=32),
    VariantOption("q_lora_rank", int, "query low-rank width (default: none, a full W_Q)",
                  minimum=1),
    VariantOption("qk_rope_head_dim", int, "decoupled RoPE key width d_R (even; default "
                  "head_dim/2)", minimum=2,
                  recost=_keep("qk_rope_head_dim", lambda c: max(2, 2 * (c.head_dim // 4)))),
    VariantOption("qk_nope_head_dim", int, "per-head width of the non-RoPE key (default "
                  "head_dim)", minimum=1, recost=_keep("qk_nope_head_dim", lambda c: c.head_dim)),
    VariantOption("v_head_dim", int, "per-head value width (default head_dim)", minimum=1,
                  recost=_keep("v_head_dim", lambda c: c.head_dim)),
    VariantOption("mla_absorb_decode", bool, "decode in latent space: W_UK folded into the "
                  "query, W_UV applied after attention (default on)", default=True),
    VariantOption("latent_norm_eps", float, "epsilon of the latent RMSNorms (HF "
                  "DeepseekV2: 1e-6)", default=1e-6),
    VariantOption("latent_norm", str, "conversion: fold the latent RMSNorm (fold, exact) or "
                  "keep it (rms, scale-matched)", default="fold", choices=("fold", "rms"),
                  scope="convert"),
)

register_variant(VariantSpec(
    name="mla",
    module="qvka_core.variants.mla.attention:MLAttention",
    description="Multi-head latent attention: K and V up-projected from one cached latent "
    "plus a decoupled RoPE key (DeepSeek-V2).",
    family="latent",
    params=_params,
    proj_macs=lambda c: _mla_macs(c),
    score_dims=lambda c: (dims(c)[2] + dims(c)[3], dims(c)[4]),
    kv_cache_elems=lambda c: {"latent": dims(c)[5], "k_rope": dims(c)[3]},
    decode_macs_per_cached_token=_decode_macs,
    normalize=_normalize,
    validate=_validate,
    spectrum_rank=40,
    shares="latent",
    options=MLA_OPTIONS,
    conversion=Conversion(
        method="partial RoPE + joint SVD of K and V (MHA2MLA, Ji et al. 2025)",
        run="qvka_core.convert.api:run_mla",
        options=("kv_lora_rank", "qk_rope_head_dim", "latent_norm"),
        calibrate=lambda opts: True),  # latent statistics (rms weight, fold error)
    explainer=Explainer(
        r"c = XW_{DKV},\; K_i = [\,cW_{UK,i} \,;\, \mathrm{RoPE}(XW_{KR})\,],\; "
        r"V_i = cW_{UV,i},\qquad \mathrm{Attn}_i = \mathrm{softmax}\!\left(\frac{Q_iK_i^\top}"
        r"{\sqrt{d}}\right)V_i",
        "K and V are up-projected from one small latent c that every head shares; only c and "
        "a narrow RoPE key are cached (DeepSeek-V2's 576 elements per token per layer).",
        ("Q", "latent c", "RoPE key k_R"), "Q·Kᵀ (K from c and k_R)", ("c", "k_R")),
))


def _mla_macs(c: AttentionConfig) -> int:
    """Projection multiply-adds per token (weights only; biases and norms are not matmuls)."""
    h, m, dn, dr, dv, dc = dims(c)
    r = c.option("q_lora_rank")
    q = m * h * (dn + dr) if r is None else m * r + r * h * (dn + dr)
    return q + m * (dc + dr) + dc * h * (dn + dv) + h * dv * m
