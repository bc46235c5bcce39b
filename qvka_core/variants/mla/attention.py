"""The torch half of MLA: `MLAttention` (the spec and the formulas: this package's __init__)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from qvka_core.attention.base import AttentionBase, LayerCache
from qvka_core.attention.kernels import Impl
from qvka_core.config import AttentionConfig
from qvka_core.norms import RMSNorm
from qvka_core.variants.mla import dims


class MLAttention(AttentionBase):
    def __init__(self, cfg: AttentionConfig) -> None:
        super().__init__(cfg)
        h, m, dn, dr, dv, dc = self.dims = dims(cfg)
        r, eps = cfg.option("q_lora_rank"), cfg.option("latent_norm_eps")
        self.absorb_decode = cfg.option("mla_absorb_decode")
        if r is None:
            self.q_proj = nn.Linear(m, h * (dn + dr), bias=cfg.qkv_bias)
        else:
            self.q_a_proj = nn.Linear(m, r, bias=cfg.qkv_bias)
            self.q_a_layernorm = RMSNorm(r, eps=eps)
            self.q_b_proj = nn.Linear(r, h * (dn + dr), bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(m, dc + dr, bias=cfg.qkv_bias)
        self.kv_a_layernorm = RMSNorm(dc, eps=eps)
        self.kv_b_proj = nn.Linear(dc, h * (dn + dv), bias=False)
        self.o_proj = nn.Linear(h * dv, m, bias=cfg.o_bias)
        self.scale = (dn + dr) ** -0.5

    def _queries(self, x: Tensor) -> Tensor:
        if self.cfg.option("q_lora_rank") is None:
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
        h, _, dn, dr, dv, dc = self.dims
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
        if decoding and self.absorb_decode:
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
        h, _, dn, _, dv, dc = self.dims
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
