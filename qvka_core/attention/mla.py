"""Multi-head latent attention (DeepSeek-V2, arXiv 2405.04434 §2.1; paper §2.4).

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

import torch
from torch import Tensor, nn

from qvka_core.attention.base import AttentionBase, LayerCache
from qvka_core.attention.kernels import Impl
from qvka_core.attention.registry import (
    Conversion,
    Explainer,
    VariantOption,
    VariantSpec,
    register_variant,
)
from qvka_core.config import AttentionConfig, ConfigError
from qvka_core.norms import RMSNorm


class MLAttention(AttentionBase):
    def __init__(self, cfg: AttentionConfig) -> None:
        super().__init__(cfg)
        h, m = cfg.n_heads, cfg.d_model
        dn, dr = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim
        dv, dc = cfg.v_head_dim, cfg.kv_lora_rank
        if cfg.q_lora_rank is None:
            self.q_proj = nn.Linear(m, h * (dn + dr), bias=cfg.qkv_bias)
        else:
            self.q_a_proj = nn.Linear(m, cfg.q_lora_rank, bias=cfg.qkv_bias)
            self.q_a_layernorm = RMSNorm(cfg.q_lora_rank, eps=cfg.norm_eps)
            self.q_b_proj = nn.Linear(cfg.q_lora_rank, h * (dn + dr), bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(m, dc + dr, bias=cfg.qkv_bias)
        self.kv_a_layernorm = RMSNorm(dc, eps=cfg.norm_eps)
        self.kv_b_proj = nn.Linear(dc, h * (dn + dv), bias=False)
        self.o_proj = nn.Linear(h * dv, m, bias=cfg.o_bias)
        self.scale = (dn + dr) ** -0.5

    def _queries(self, x: Tensor) -> Tensor:
        if self.cfg.q_lora_rank is None:
            return self.q_proj(x)
        return self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))

    def forward_attn(
        self,
        x: Tensor,
        *,
        positions: range,
        key_padding_mask: Tensor | None,
        cache: LayerCache | None,
        impl: Impl,
        return_weights: bool,
    ) -> tuple[Tensor, Tensor | None]:
        cfg = self.cfg
        h, dn, dr, dv, dc = (
            cfg.n_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim,
            cfg.kv_lora_rank,
        )
        q = self.split_heads(self._queries(x), h)  # (B, H, T, dn + dr)
        q_nope, q_rope = q.split([dn, dr], dim=-1)  # (B, H, T, dn), (B, H, T, dr)
        kv_a = self.kv_a_proj_with_mqa(x)  # (B, T, dc + dr)
        latent, k_rope = kv_a.split([dc, dr], dim=-1)  # (B, T, dc), (B, T, dr)
        latent = self.kv_a_layernorm(latent)[:, None]  # (B, 1, T, dc)
        k_rope = k_rope[:, None]  # (B, 1, T, dr): one RoPE key shared by all heads
        if cfg.position == "rope":
            cs = self.rope(positions, dr, q)
            q_rope, k_rope = self.rotate(q_rope, cs), self.rotate(k_rope, cs)
        decoding = cache is not None and cache.length > 0
        if cache is not None:
            full = cache.extend(latent=latent, k_rope=k_rope)
            latent, k_rope = full["latent"], full["k_rope"]  # (B, 1, S, dc), (B, 1, S, dr)
        if decoding and cfg.mla_absorb_decode:
            out, w = self._absorbed(q_nope, q_rope, latent, k_rope, positions, key_padding_mask,
                                    impl, return_weights)
        else:
            b, _, s, _ = latent.shape
            kv = self.kv_b_proj(latent[:, 0])  # (B, S, H·(dn + dv))
            kv = kv.view(b, s, h, dn + dv).transpose(1, 2)  # (B, H, S, dn + dv)
            k_nope, v = kv.split([dn, dv], dim=-1)  # (B, H, S, dn), (B, H, S, dv)
            k = torch.cat([k_nope, k_rope.expand(b, h, s, dr)], dim=-1)  # (B, H, S, dn + dr)
            out, w = self.attend(
                torch.cat([q_nope, q_rope], dim=-1), k, v, q_positions=positions,
                key_padding_mask=key_padding_mask, impl=impl, return_weights=return_weights,
                scale=self.scale,
            )
        return self.o_proj(self.merge_heads(out)), w

    def _absorbed(self, q_nope, q_rope, latent, k_rope, positions, key_padding_mask, impl,
                  return_weights):
        """Score against the latent: q_C·W_UKᵀ·c, then W_UV after the weighted sum."""
        cfg = self.cfg
        h, dn, dv, dc = cfg.n_heads, cfg.qk_nope_head_dim, cfg.v_head_dim, cfg.kv_lora_rank
        w_ukv = self.kv_b_proj.weight.view(h, dn + dv, dc)  # (H, dn + dv, dc)
        w_uk, w_uv = w_ukv.split([dn, dv], dim=1)  # (H, dn, dc), (H, dv, dc)
        q_latent = torch.einsum("bhtn,hnc->bhtc", q_nope, w_uk)  # (B, H, T, dc)
        q_abs = torch.cat([q_latent, q_rope], dim=-1)  # (B, H, T, dc + dr)
        k_abs = torch.cat([latent, k_rope], dim=-1)  # (B, 1, S, dc + dr)
        out_latent, w = self.attend(
            q_abs, k_abs, latent, q_positions=positions, key_padding_mask=key_padding_mask,
            impl=impl, return_weights=return_weights, scale=self.scale,
        )  # (B, H, T, dc)
        return torch.einsum("bhtc,hvc->bhtv", out_latent, w_uv), w  # (B, H, T, dv)

    def kv_groups(self) -> list[list[int]]:
        return [list(range(self.cfg.n_heads))]  # every head reads the one latent


def _normalize(c: AttentionConfig) -> dict:
    return {
        "n_kv_heads": c.n_heads,
        "kv_lora_rank": c.kv_lora_rank if c.kv_lora_rank is not None else 4 * c.head_dim,
        "qk_nope_head_dim": c.qk_nope_head_dim or c.head_dim,
        "qk_rope_head_dim": c.qk_rope_head_dim or max(2, c.head_dim // 2),
        "v_head_dim": c.v_head_dim or c.head_dim,
    }


def _validate(c: AttentionConfig) -> None:
    for name in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
        value = getattr(c, name)
        if not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if c.qk_rope_head_dim % 2:
        raise ConfigError(f"qk_rope_head_dim must be even for RoPE, got {c.qk_rope_head_dim}")
    if c.kv_lora_rank > c.d_model:
        raise ConfigError(
            f"kv_lora_rank ({c.kv_lora_rank}) must be at most d_model ({c.d_model})"
        )
    if c.q_lora_rank is not None and not (0 < c.q_lora_rank <= c.d_model):
        raise ConfigError(
            f"q_lora_rank must be None or in 1..d_model ({c.d_model}), got {c.q_lora_rank}"
        )


def _params(c: AttentionConfig) -> dict[str, int]:
    h, m, dn, dr, dv, dc = (c.n_heads, c.d_model, c.qk_nope_head_dim, c.qk_rope_head_dim,
                           c.v_head_dim, c.kv_lora_rank)
    b = int(c.qkv_bias)
    if c.q_lora_rank is None:
        q = {"q_proj": m * h * (dn + dr) + b * h * (dn + dr)}
    else:
        r = c.q_lora_rank
        q = {"q_a_proj": m * r + b * r, "q_a_layernorm": r, "q_b_proj": r * h * (dn + dr)}
    return {
        **q,
        "kv_a_proj_with_mqa": m * (dc + dr) + b * (dc + dr),
        "kv_a_layernorm": dc,
        "kv_b_proj": dc * h * (dn + dv),
        "o_proj": h * dv * m + int(c.o_bias) * m,
    }


def _keep(name: str, default):
    """Recost rule: the config's own MLA width if it has one, else `default(cfg)`."""
    return lambda c: getattr(c, name) if getattr(c, name) is not None else default(c)


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
    VariantOption("latent_norm", str, "conversion: fold the latent RMSNorm (fold, exact) or "
                  "keep it (rms, scale-matched)", default="fold", choices=("fold", "rms"),
                  scope="convert"),
)

register_variant(VariantSpec(
    name="mla",
    module=MLAttention,
    description="Multi-head latent attention: K and V up-projected from one cached latent "
    "plus a decoupled RoPE key (DeepSeek-V2).",
    family="latent",
    params=_params,
    proj_macs=lambda c: _mla_macs(c),
    score_dims=lambda c: (c.qk_nope_head_dim + c.qk_rope_head_dim, c.v_head_dim),
    kv_cache_elems=lambda c: {"latent": c.kv_lora_rank, "k_rope": c.qk_rope_head_dim},
    decode_macs_per_cached_token=lambda c: (
        c.n_heads * (2 * c.kv_lora_rank + c.qk_rope_head_dim) if c.mla_absorb_decode
        else c.n_heads * (c.qk_nope_head_dim + c.qk_rope_head_dim + c.v_head_dim)
        + c.kv_lora_rank * c.n_heads * (c.qk_nope_head_dim + c.v_head_dim)
    ),
    normalize=_normalize,
    validate=_validate,
    spectrum_rank=40,
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
    h, m, dn, dr, dv, dc = (c.n_heads, c.d_model, c.qk_nope_head_dim, c.qk_rope_head_dim,
                           c.v_head_dim, c.kv_lora_rank)
    q = m * h * (dn + dr) if c.q_lora_rank is None else (
        m * c.q_lora_rank + c.q_lora_rank * h * (dn + dr)
    )
    return q + m * (dc + dr) + dc * h * (dn + dv) + h * dv * m
