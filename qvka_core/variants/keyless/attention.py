"""The torch half of QV and QV-Ka: `QVAttention`, `QVKaAttention` (specs: this package's
__init__, which also states the formulas)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from qvka_core.attention.base import AttentionBase, LayerCache
from qvka_core.attention.kernels import Impl
from qvka_core.config import AttentionConfig


class QVAttention(AttentionBase):
    """Scores against values: softmax(Q·Vᵀ/√d_h)·V."""

    def __init__(self, cfg: AttentionConfig) -> None:
        super().__init__(cfg)
        h, g, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, h * d, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.d_model, g * d, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(h * d, cfg.d_model, bias=cfg.o_bias)

    def forward_attn(self, x: Tensor, *, positions: range, key_padding_mask: Tensor | None,
                     cache: LayerCache | None, impl: Impl, return_weights: bool):
        cfg = self.cfg
        q = self.split_heads(self.q_proj(x), cfg.n_heads)  # (B, H, T, D)
        v = self.split_heads(self.v_proj(x), cfg.n_kv_heads)  # (B, Hkv, T, D)
        if cache is not None:
            v = cache.extend(v=v)["v"]  # (B, Hkv, S, D), never rotated
        v_match = v
        if cfg.position == "rope":
            q = self.rotate(q, self.rope(positions, cfg.head_dim, q))
            key_positions = range(v.shape[-2])
            v_match = self.rotate(v, self.rope(key_positions, cfg.head_dim, v))
        out, w = self.attend(q, v_match, v, q_positions=positions,
                             key_padding_mask=key_padding_mask, impl=impl,
                             return_weights=return_weights)
        return self.o_proj(self.merge_heads(out)), w


class QVKaAttention(AttentionBase):
    """K_i = [G ; V_i]·W_K,i with G = x·W_ctx shared by the heads."""

    def __init__(self, cfg: AttentionConfig) -> None:
        super().__init__(cfg)
        h, g, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, h * d, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.d_model, g * d, bias=cfg.qkv_bias)
        self.d_ctx = c = cfg.option("d_ctx")
        self.ctx_proj = nn.Linear(cfg.d_model, c, bias=False)  # W_ctx
        self.k_weight = nn.Parameter(torch.empty(g, c + d, d))  # W_K,i stacked
        nn.init.uniform_(self.k_weight, -1 / math.sqrt(c + d), 1 / math.sqrt(c + d))
        self.o_proj = nn.Linear(h * d, cfg.d_model, bias=cfg.o_bias)

    def derive_keys(self, g: Tensor, v: Tensor) -> Tensor:
        """[G ; V_i]·W_K,i: one batched matmul per head over the concatenation.

        g: (B, 1, S, d_ctx) or (B, S, d_ctx); v: (B, Hkv, S, D) -> K (B, Hkv, S, D).
        """
        if g.dim() == 3:
            g = g[:, None]  # (B, 1, S, d_ctx)
        gv = torch.cat([g.expand(-1, v.shape[1], -1, -1), v], dim=-1)  # (B, Hkv, S, d_ctx + D)
        return torch.matmul(gv, self.k_weight)  # (Hkv, d_ctx + D, D) per head -> (B, Hkv, S, D)

    def forward_attn(self, x: Tensor, *, positions: range, key_padding_mask: Tensor | None,
                     cache: LayerCache | None, impl: Impl, return_weights: bool):
        cfg = self.cfg
        q = self.split_heads(self.q_proj(x), cfg.n_heads)  # (B, H, T, D)
        v = self.split_heads(self.v_proj(x), cfg.n_kv_heads)  # (B, Hkv, T, D)
        g = self.ctx_proj(x)[:, None]  # (B, 1, T, d_ctx)
        rope = cfg.position == "rope"
        if rope:
            q = self.rotate(q, self.rope(positions, cfg.head_dim, q))
        if cache is not None and cfg.option("qvka_cache") == "vg":
            full = cache.extend(v=v, g=g)
            v, g = full["v"], full["g"]  # (B, Hkv, S, D), (B, 1, S, d_ctx)
            k = self.derive_keys(g, v)  # recomputed for every cached position
            if rope:
                key_positions = range(v.shape[-2])
                k = self.rotate(k, self.rope(key_positions, cfg.head_dim, k))
        else:
            k = self.derive_keys(g, v)  # (B, Hkv, T, D)
            if rope:
                k = self.rotate(k, self.rope(positions, cfg.head_dim, k))
            if cache is not None:
                full = cache.extend(k=k, v=v)
                k, v = full["k"], full["v"]  # (B, Hkv, S, D)
        out, w = self.attend(q, k, v, q_positions=positions, key_padding_mask=key_padding_mask,
                             impl=impl, return_weights=return_weights)
        return self.o_proj(self.merge_heads(out)), w
