r"""MHA, GQA and MQA: one module, three registry names (paper §2.1-2.3). The spec (torch-free);
the nn.Module is `attention.py` beside it.

    MHA  n_kv_heads = n_heads     GQA  1 < n_kv_heads < n_heads     MQA  n_kv_heads = 1

      q  q  q  q  q  q  q  q        q  q  q  q  q  q  q  q       q  q  q  q  q  q  q  q
      |  |  |  |  |  |  |  |        \__/   \__/   \__/   \__/      \____________________/
      k  k  k  k  k  k  k  k          k      k      k      k                 k
      v  v  v  v  v  v  v  v          v      v      v      v                 v

K and V are projected to n_kv_heads heads (Ainslie et al. 2023) and expanded once in the
kernel. The cache holds K and V: 2·n_kv_heads·head_dim elements per token per layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qvka_core.variants.registry import (
    Conversion,
    Explainer,
    VariantOption,
    VariantSpec,
    projection_params,
    register_variant,
)

if TYPE_CHECKING:
    from qvka_core.config import AttentionConfig

def _params(cfg: AttentionConfig) -> dict[str, int]:
    return projection_params(cfg, k_heads=cfg.n_kv_heads, v_heads=cfg.n_kv_heads)


def _proj_macs(cfg: AttentionConfig) -> int:
    h, g, d, m = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_model
    return m * h * d + 2 * m * g * d + h * d * m


def _cache(cfg: AttentionConfig) -> dict[str, int]:
    return {"k": cfg.n_kv_heads * cfg.head_dim, "v": cfg.n_kv_heads * cfg.head_dim}


def _decode_macs(cfg: AttentionConfig) -> int:
    return 2 * cfg.n_heads * cfg.head_dim  # q·k and p·v per cached position


def default_kv_heads(n_heads: int, current: int) -> int:
    """GQA's default: the config's own KV heads if it shares, else the largest divisor of
    n_heads that is <= n_heads/4 (e.g. 32 -> 8, 12 -> 3, 9 -> 1)."""
    if current < n_heads:
        return current
    return max((k for k in range(1, n_heads + 1) if n_heads % k == 0 and 4 * k <= n_heads),
               default=1)


GQA_KV_HEADS = VariantOption(
    "n_kv_heads", int, "KV heads, each shared by a group of query heads (must divide n_heads)",
    minimum=1, recost=lambda c: default_kv_heads(c.n_heads, c.n_kv_heads), demo=2,
)
_POOL = "mean-pool KV heads per group (GQA uptraining, Ainslie et al. 2023)"
_CONVERT = "qvka_core.convert.api:run_kv_sharing"


def _spec(name: str, description: str, rank: int, normalize, method: str,
          options: tuple[VariantOption, ...] = (), explainer: Explainer | None = None
          ) -> VariantSpec:
    return VariantSpec(
        name=name,
        module="qvka_core.variants.gqa.attention:GQAttention",
        description=description,
        family="kv-sharing",
        params=_params,
        proj_macs=_proj_macs,
        score_dims=lambda c: (c.head_dim, c.head_dim),
        kv_cache_elems=_cache,
        decode_macs_per_cached_token=_decode_macs,
        normalize=normalize,
        spectrum_rank=rank,
        options=options,
        conversion=Conversion(method=method, run=_CONVERT,
                              options=tuple(o.name for o in options)),
        dense="qvka_core.convert.weights:gqa_dense",
        explainer=explainer,
    )


register_variant(_spec(
    "mha", "Multi-head attention: every query head has its own K and V head (Vaswani et al.).",
    10, lambda c: {"n_kv_heads": c.n_heads},
    "replicate/mean-pool KV heads (GQA uptraining, Ainslie et al. 2023)",
    explainer=Explainer(
        r"Q_i = XW_{Q,i},\; K_i = XW_{K,i},\; V_i = XW_{V,i},\qquad \mathrm{Attn}_i = "
        r"\mathrm{softmax}\!\left(\frac{Q_iK_i^\top}{\sqrt{d}}\right)V_i",
        "Every query head is scored against a key of its own, a projection separate from the "
        "value; the cache holds K and V of every head.",
        ("Q", "K", "V"), "Q·Kᵀ", ("K (every head)", "V (every head)")),
))
register_variant(_spec(
    "gqa", "Grouped-query attention: query heads share K/V heads in groups (Ainslie et al.).",
    20, lambda c: {}, _POOL, (GQA_KV_HEADS,),
    explainer=Explainer(
        r"K_g = XW_{K,g},\; V_g = XW_{V,g},\qquad \mathrm{Attn}_i = \mathrm{softmax}\!\left("
        r"\frac{Q_iK_{g(i)}^\top}{\sqrt{d}}\right)V_{g(i)}",
        "Query heads share K and V in groups: the cache shrinks by the group size, the keys "
        "stay a projection of their own.",
        ("Q", "K (per group)", "V (per group)"), "Q·Kᵀ (group's K)",
        ("K (per group)", "V (per group)")),
))
register_variant(_spec(
    "mqa", "Multi-query attention: all query heads share one K and one V head (Shazeer).",
    30, lambda c: {"n_kv_heads": 1},
    "mean-pool all KV heads into one (GQA uptraining, Ainslie et al. 2023)",
    explainer=Explainer(
        r"K = XW_K,\; V = XW_V,\qquad \mathrm{Attn}_i = \mathrm{softmax}\!\left("
        r"\frac{Q_iK^\top}{\sqrt{d}}\right)V",
        "All query heads share one K and one V: the smallest KV-sharing cache.",
        ("Q", "K (one)", "V (one)"), "Q·Kᵀ (shared K)", ("K (one head)", "V (one head)")),
))
