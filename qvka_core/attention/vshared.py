r"""V-shared attention: per-head keys, values shared across heads or in groups.

A direction the paper proposes and does not run (arXiv 2603.15665 §8, "V-shared instead of
KV-shared"; notes/paper.md §2.8 and §4): KV sharing (MQA/GQA) throws away per-head diversity
in *matching*, the part the paper says must stay specific, so keep each head's key and share
only the content V. The formula is a **reconstruction** (notes/paper.md §8, choice 16):

    K_i = x·W_K,i  (one per query head)     V_g = x·W_V,g  (n_v_heads groups)
    A_i = softmax(Q_i K_iᵀ / √d_h) ,   O = (⊕_i A_i V_{g(i)}) W_O ,   g(i) = i // (H / G)

      q  q  q  q  q  q  q  q
      |  |  |  |  |  |  |  |
      k  k  k  k  k  k  k  k        K: one head per query head, as in MHA
      \__________/ \__________/
            v            v          V: n_v_heads = G shared heads (G = 1: MQA for V only)

The KV cache holds n_heads·d_h elements of K plus n_v_heads·d_h of V per token per layer.
Under RoPE, Q and K are rotated (V never is). `convert` builds it from MHA/GQA/MQA/QV/QV-Ka:
K replicated to one head per query head (exact), V heads mean-pooled per group (exact when
the pooled V heads are equal); and from it (V replicated per head: its exact dense form).
Notation: B batch, H query (= key) heads, G value heads, T new tokens, S cached positions,
D head width.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from qvka_core.attention.base import AttentionBase, LayerCache
from qvka_core.attention.kernels import Impl, repeat_kv
from qvka_core.attention.registry import (
    Conversion,
    Explainer,
    VariantOption,
    VariantSpec,
    register_variant,
)
from qvka_core.config import AttentionConfig
from qvka_core.errors import ConfigError


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


def default_v_heads(c: AttentionConfig) -> int:
    """Recost/convert default: the model's own KV grouping if it shares (V keeps it, K goes
    back to one head per query head), else one V head shared by all (the paper's form)."""
    return c.n_kv_heads if c.n_kv_heads < c.n_heads else 1


def _validate(c: AttentionConfig) -> None:
    g = c.option("n_v_heads")
    if isinstance(g, int) and g > 0 and c.n_heads % g:
        raise ConfigError(f"n_v_heads ({g}) must divide n_heads ({c.n_heads})")


def _params(c: AttentionConfig) -> dict[str, int]:
    h, g, d, m, b = c.n_heads, c.option("n_v_heads"), c.head_dim, c.d_model, int(c.qkv_bias)
    return {
        "q_proj": m * h * d + b * h * d,
        "k_proj": m * h * d + b * h * d,
        "v_proj": m * g * d + b * g * d,
        "o_proj": h * d * m + int(c.o_bias) * m,
    }


def _proj_macs(c: AttentionConfig) -> int:
    h, g, d, m = c.n_heads, c.option("n_v_heads"), c.head_dim, c.d_model
    return 2 * m * h * d + m * g * d + h * d * m


def _pool_rows(w: Tensor | None, heads: int, groups: int) -> Tensor | None:
    """Mean of the V rows of the heads in each group: (H·D, ...) -> (G·D, ...)."""
    if w is None:
        return None
    rest = w.shape[1:]
    grouped = w.reshape(groups, heads // groups, -1, *rest)  # (G, H/G, D, ...)
    return grouped.mean(1).reshape(-1, *rest)  # (G, D, ...) -> (G·D, ...)


def _dense(attn: VSharedAttention) -> dict[str, Tensor | None]:
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


def _convert(job: Any) -> Any:
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


register_variant(VariantSpec(
    name="vshared",
    module=VSharedAttention,
    description="V-shared: every head keeps its own K, V is shared across heads or groups "
    "(the paper's §8 future direction; a reconstruction).",
    family="v-sharing",
    params=_params,
    proj_macs=_proj_macs,
    score_dims=lambda c: (c.head_dim, c.head_dim),
    kv_cache_elems=lambda c: {"k": c.n_heads * c.head_dim,
                              "v": c.option("n_v_heads") * c.head_dim},
    decode_macs_per_cached_token=lambda c: 2 * c.n_heads * c.head_dim,  # q·k and p·v
    normalize=lambda c: {"n_kv_heads": c.n_heads},  # K: one head per query head
    validate=_validate,
    spectrum_rank=70,
    options=(VariantOption(
        "n_v_heads", int, "V-shared: value heads, each shared by a group of query heads "
        "(must divide n_heads; 1 = one V for all)", default=1, minimum=1,
        recost=default_v_heads, demo=2),),
    conversion=Conversion(
        method="keep K per head, mean-pool V heads per group (exact when they are equal)",
        run=_convert, options=("n_v_heads",)),
    dense=_dense,
    label="V-shared",
    explainer=Explainer(
        r"K_i = XW_{K,i},\; V_g = XW_{V,g},\qquad \mathrm{Attn}_i = \mathrm{softmax}\!\left("
        r"\frac{Q_iK_i^\top}{\sqrt{d}}\right)V_{g(i)}",
        "The paper's proposed direction (§8, a reconstruction): keep a key per head for "
        "matching, share only the content V across heads or groups.",
        ("Q", "K (every head)", "V (per group)"), "Q·Kᵀ (own K)",
        ("K (every head)", "V (per group)")),
))
