r"""V-shared attention: per-head keys, values shared across heads or in groups. The spec
(torch-free); the nn.Module, its dense form and its conversion are `attention.py` beside it.

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

from typing import TYPE_CHECKING

from qvka_core.errors import ConfigError
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


def default_v_heads(c: AttentionConfig) -> int:
    """Recost/convert default: the model's own KV grouping if it shares (V keeps it, K goes
    back to one head per query head), else one V head shared by all (the paper's form)."""
    return c.n_kv_heads if c.n_kv_heads < c.n_heads else 1


def _validate(c: AttentionConfig) -> None:
    g = c.option("n_v_heads")
    if isinstance(g, int) and g > 0 and c.n_heads % g:
        raise ConfigError(f"n_v_heads ({g}) must divide n_heads ({c.n_heads})")


def _params(c: AttentionConfig) -> dict[str, int]:
    return projection_params(c, k_heads=c.n_heads, v_heads=c.option("n_v_heads"))


def _proj_macs(c: AttentionConfig) -> int:
    h, g, d, m = c.n_heads, c.option("n_v_heads"), c.head_dim, c.d_model
    return 2 * m * h * d + m * g * d + h * d * m


register_variant(VariantSpec(
    name="vshared",
    module="qvka_core.variants.vshared.attention:VSharedAttention",
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
        run="qvka_core.variants.vshared.attention:convert", options=("n_v_heads",)),
    dense="qvka_core.variants.vshared.attention:dense",
    label="V-shared",
    shares="V",
    explainer=Explainer(
        r"K_i = XW_{K,i},\; V_g = XW_{V,g},\qquad \mathrm{Attn}_i = \mathrm{softmax}\!\left("
        r"\frac{Q_iK_i^\top}{\sqrt{d}}\right)V_{g(i)}",
        "The paper's proposed direction (§8, a reconstruction): keep a key per head for "
        "matching, share only the content V across heads or groups.",
        ("Q", "K (every head)", "V (per group)"), "Q·Kᵀ (own K)",
        ("K (every head)", "V (per group)")),
))
