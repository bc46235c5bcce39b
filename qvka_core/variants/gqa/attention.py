"""The torch half of MHA/GQA/MQA: `GQAttention` (the spec is this package's __init__)."""

from __future__ import annotations

from torch import Tensor, nn

from qvka_core.attention.base import AttentionBase, LayerCache
from qvka_core.attention.kernels import Impl
from qvka_core.config import AttentionConfig


class GQAttention(AttentionBase):
    """Grouped-query attention; MHA and MQA are its endpoints."""

    def __init__(self, cfg: AttentionConfig) -> None:
        super().__init__(cfg)
        h, g, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, h * d, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.d_model, g * d, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.d_model, g * d, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(h * d, cfg.d_model, bias=cfg.o_bias)

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
        q = self.split_heads(self.q_proj(x), cfg.n_heads)  # (B, H, T, D)
        k = self.split_heads(self.k_proj(x), cfg.n_kv_heads)  # (B, Hkv, T, D)
        v = self.split_heads(self.v_proj(x), cfg.n_kv_heads)  # (B, Hkv, T, D)
        if cfg.position == "rope":
            cs = self.rope(positions, cfg.head_dim, q)
            q, k = self.rotate(q, cs), self.rotate(k, cs)
        if cache is not None:
            full = cache.extend(k=k, v=v)
            k, v = full["k"], full["v"]  # (B, Hkv, S, D)
        out, w = self.attend(
            q, k, v, q_positions=positions, key_padding_mask=key_padding_mask, impl=impl,
            return_weights=return_weights,
        )
        return self.o_proj(self.merge_heads(out)), w
