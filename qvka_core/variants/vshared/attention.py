"""The torch half of V-shared: `VSharedAttention`, its dense form and its conversion (the spec
and the formulas: this package's __init__)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from qvka_core.attention.base import AttentionBase, LayerCache
from qvka_core.attention.kernels import Impl, repeat_kv
from qvka_core.config import AttentionConfig
from qvka_core.variants.vshared import default_v_heads


class VSharedAttention(AttentionBase):
    """Per-head K, V shared by groups of query heads."""

    def __init__(self, cfg: AttentionConfig) -> None:
        super().__init__(cfg)
        h, g, d = cfg.n_heads, cfg.option("n_v_heads"), cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, h * d, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.d_model, h * d, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.d_model, g * d, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(h * d, cfg.d_model, bias=cfg.o_bias)

    def forward_attn(self, x: Tensor, *, positions: range, key_padding_mask: Tensor | None,
                     cache: LayerCache | None, impl: Impl, return_weights: bool):
        cfg = self.cfg
        h, g = cfg.n_heads, cfg.option("n_v_heads")
        q = self.split_heads(self.q_proj(x), h)  # (B, H, T, D)
        k = self.split_heads(self.k_proj(x), h)  # (B, H, T, D)
        v = self.split_heads(self.v_proj(x), g)  # (B, G, T, D)
        if cfg.position == "rope":
            cs = self.rope(positions, cfg.head_dim, q)
            q, k = self.rotate(q, cs), self.rotate(k, cs)
        if cache is not None:
            full = cache.extend(k=k, v=v)
            k, v = full["k"], full["v"]  # (B, H, S, D), (B, G, S, D)
        # The kernel groups K and V alike; here only V is shared, so it is expanded to the
        # query heads (a copy of V per head, like the kernel's own non-grouped path).
        v = repeat_kv(v, h // g)  # (B, G, S, D) -> (B, H, S, D)
        out, w = self.attend(q, k, v, q_positions=positions, key_padding_mask=key_padding_mask,
                             impl=impl, return_weights=return_weights)
        return self.o_proj(self.merge_heads(out)), w

    def kv_groups(self) -> list[list[int]]:
        """Query heads grouped by the V head they share (each still has its own K)."""
        r = self.cfg.n_heads // self.cfg.option("n_v_heads")
        return [list(range(i * r, (i + 1) * r)) for i in range(self.cfg.option("n_v_heads"))]


def _pool_rows(w: Tensor | None, heads: int, groups: int) -> Tensor | None:
    """Mean of the V rows of the heads in each group: (H·D, ...) -> (G·D, ...)."""
    if w is None:
        return None
    rest = w.shape[1:]
    grouped = w.reshape(groups, heads // groups, -1, *rest)  # (G, H/G, D, ...)
    return grouped.mean(1).reshape(-1, *rest)  # (G, D, ...) -> (G·D, ...)


def dense(attn: VSharedAttention) -> dict[str, Tensor | None]:
    """The layer as dense float64 Q/K/V/O with V replicated to one head per query head, so
    K and V both have H heads: exact, and what every other conversion starts from."""
    h, g = attn.cfg.n_heads, attn.cfg.option("n_v_heads")

    def f64(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.detach().to(torch.float64).clone()

    def per_head(t: Tensor | None) -> Tensor | None:
        if t is None:
            return None
        rows = t.reshape(g, -1, *t.shape[1:])  # (G·D, ...) -> (G, D, ...)
        return rows.repeat_interleave(h // g, dim=0).reshape(-1, *t.shape[1:])  # (H·D, ...)

    return {"wq": f64(attn.q_proj.weight), "bq": f64(attn.q_proj.bias),
            "wk": f64(attn.k_proj.weight), "bk": f64(attn.k_proj.bias),
            "wv": per_head(f64(attn.v_proj.weight)), "bv": per_head(f64(attn.v_proj.bias)),
            "wo": f64(attn.o_proj.weight), "bo": f64(attn.o_proj.bias)}


def convert(job: Any) -> Any:
    """MHA/GQA/... -> V-shared: keep K per head, mean-pool V per group (see module doc)."""
    src = job.model.cfg.attention
    g = job.options.get("n_v_heads") or default_v_heads(src)
    cfg = job.model.cfg.with_variant("vshared", n_v_heads=g)  # validates g | n_heads
    h = src.n_heads
    states = []
    # Every K and V head replicated to one per query head first (exact), then V pooled.
    for dense in job.dense_layers(n_kv_heads=h, message="pooling V heads"):
        state = {"q_proj.weight": dense.wq, "k_proj.weight": dense.wk,
                 "v_proj.weight": _pool_rows(dense.wv, h, g), "o_proj.weight": dense.wo}
        for name, bias in (("q", dense.bq), ("k", dense.bk), ("v", _pool_rows(dense.bv, h, g)),
                           ("o", dense.bo)):
            if bias is not None:
                state[f"{name}_proj.bias"] = bias
        states.append({**state, **dense.extra})
    return job.assemble(cfg, states)
