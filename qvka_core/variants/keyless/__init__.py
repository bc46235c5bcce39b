"""The paper's key-less variants (arXiv 2603.15665 §§4-7; notes/paper.md §2.5-2.6): their specs
(torch-free); the nn.Modules are `attention.py` beside this file.

QV: no key projection; V is both what queries match against and what is carried:
    A_i = softmax(Q_i V_iᵀ / sqrt(d_h)) ,  O = (⊕ A_i V_i) W_O
With n_kv_heads < n_heads, V is shared in groups ("GQA-QvVv", paper §8). Under RoPE, Q and
the *scoring copy* of V are rotated; the V carried to the output never is (§8, choice 13).
The cache holds V only.

QV-Ka ("Key-after-value & ctx"): K is derived after V from V and a small context vector:
    G = ctx · W_ctx        one W_ctx (d_model × d_ctx) shared by all heads (§8, choice 6)
    K_i = [G ; V_i] · W_K,i  per-head W_K,i of shape (d_ctx + d_h) × d_h, linear (choice 7)
ctx is the layer's (normed) input x (choice 5). Under RoPE, Q and the derived K are rotated.
The cache holds K and V (`qvka_cache="kv"`) or V and G with K recomputed ("vg", choice 14).
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


def _qv_params(c: AttentionConfig) -> dict[str, int]:
    return projection_params(c, k_heads=None, v_heads=c.n_kv_heads)


def _qvka_params(c: AttentionConfig) -> dict[str, int]:
    p = _qv_params(c)
    return {
        "q_proj": p["q_proj"],
        "v_proj": p["v_proj"],
        "ctx_proj": c.d_model * c.option("d_ctx"),
        "k_weight": c.n_kv_heads * (c.option("d_ctx") + c.head_dim) * c.head_dim,
        "o_proj": p["o_proj"],
    }


def _qvka_normalize(c: AttentionConfig) -> dict:
    return {"d_ctx": c.option("d_ctx") if c.option("d_ctx") is not None else c.head_dim}


def _qvka_validate(c: AttentionConfig) -> None:
    d_ctx, cache = c.option("d_ctx"), c.option("qvka_cache")
    if not isinstance(d_ctx, int) or not (0 < d_ctx <= c.d_model):
        raise ConfigError(f"d_ctx must be an integer in 1..d_model ({c.d_model}), got {d_ctx!r}")
    if cache not in ("kv", "vg"):
        raise ConfigError(f"qvka_cache must be 'kv' or 'vg', got {cache!r}")


def _qvka_recompute(c: AttentionConfig) -> int:
    """MACs per cached position to derive K_i = [G ; V_i]·W_K,i again ("vg" cache only)."""
    if c.option("qvka_cache") == "kv":
        return 0
    return c.n_kv_heads * (c.option("d_ctx") + c.head_dim) * c.head_dim


def _qvka_cache(c: AttentionConfig) -> dict[str, int]:
    """Cached elements per token and layer: K and V ("kv"), or V and G ("vg")."""
    if c.option("qvka_cache") == "kv":
        return {"k": c.n_kv_heads * c.head_dim, "v": c.n_kv_heads * c.head_dim}
    return {"v": c.n_kv_heads * c.head_dim, "g": c.option("d_ctx")}


def _weights_macs(params: dict[str, int], c: AttentionConfig) -> int:
    """Multiply-adds per token = weight elements of the projections (biases excluded)."""
    bias = int(c.qkv_bias) * (c.n_heads + c.n_kv_heads) * c.head_dim + int(c.o_bias) * c.d_model
    return sum(params.values()) - bias


KEYLESS_KV_HEADS = VariantOption(
    "n_kv_heads", int, "V heads (QV-Ka: K/V heads), shared by query groups; default: the "
    "model's own KV grouping (the paper's GQA-QvVv)", minimum=1,
)
QVKA_OPTIONS = (
    KEYLESS_KV_HEADS,
    VariantOption("d_ctx", int, "context width of W_ctx, G = ctx·W_ctx (default head_dim)",
                  minimum=1, demo=None),
    VariantOption("qvka_cache", str, "what QV-Ka caches: kv (K and V) or vg (V and the "
                  "context G, K recomputed at every decode step)", default="kv",
                  choices=("kv", "vg")),
    VariantOption("qvka_weighting", str, "conversion: weigh the key fit by the queries' "
                  "energy (query, score-space error) or not (none)", default="query",
                  choices=("query", "none"), scope="convert"),
)
QV_OPTIONS = (
    KEYLESS_KV_HEADS,
    VariantOption("qv_fit", str, "conversion: fold the least-squares map K ≈ V·M into the "
                  "queries (refit) or just drop K (drop, the lossy post-hoc tying)",
                  default="refit", choices=("refit", "drop"), scope="convert"),
)

register_variant(VariantSpec(
    name="qvka",
    module="qvka_core.variants.keyless.attention:QVKaAttention",
    description="QV-Ka: K derived after V from [ctx·W_ctx ; V]·W_K per head, no full W_K "
    "(the paper's proposal).",
    family="keyless",
    params=_qvka_params,
    proj_macs=lambda c: _weights_macs(_qvka_params(c), c),
    score_dims=lambda c: (c.head_dim, c.head_dim),
    kv_cache_elems=_qvka_cache,
    decode_macs_per_cached_token=lambda c: 2 * c.n_heads * c.head_dim + _qvka_recompute(c),
    decode_recompute_macs=lambda c: _qvka_recompute(c),
    normalize=_qvka_normalize,
    validate=_qvka_validate,
    spectrum_rank=50,
    options=QVKA_OPTIONS,
    conversion=Conversion(
        method="least-squares fit of W_ctx and W_K,i on calibration activations, weighted by "
        "query energy (score-space error; closed form)",
        run="qvka_core.convert.api:run_qvka", options=("n_kv_heads", "d_ctx", "qvka_weighting"),
        calibrate=lambda opts: True),
    label="QV-Ka",
    dense="qvka_core.convert.weights:qvka_dense",
    explainer=Explainer(
        r"G = X W_{\mathrm{ctx}},\qquad K_i = [\,G \,;\, V_i\,]\, W_{K,i},\qquad "
        r"\mathrm{Attn}_i = \mathrm{softmax}\!\left(\frac{Q_i K_i^\top}{\sqrt{d}}\right)V_i",
        "Each head's key is computed after its value, from V_i and a small context vector G "
        "(d_ctx wide, one W_ctx for all heads): far fewer key parameters than W_K. The cache "
        "holds K and V, or V and G with K recomputed (§2.6).",
        ("Q", "V", "G (d_ctx)"), "Q·Kᵀ, K = [G ; V]·W_K", ("K, V", "or V, G")),
))

register_variant(VariantSpec(
    name="qv",
    module="qvka_core.variants.keyless.attention:QVAttention",
    description="QV: no key at all; queries score directly against values, "
    "softmax(QVᵀ/√d)V (the paper's paradigm).",
    family="keyless",
    params=_qv_params,
    proj_macs=lambda c: _weights_macs(_qv_params(c), c),
    score_dims=lambda c: (c.head_dim, c.head_dim),
    kv_cache_elems=lambda c: {"v": c.n_kv_heads * c.head_dim},
    decode_macs_per_cached_token=lambda c: 2 * c.n_heads * c.head_dim,
    spectrum_rank=60,
    shares="V",
    options=QV_OPTIONS,
    conversion=Conversion(
        method="drop K after folding the least-squares map K ≈ V·M into W_Q (RoPE-commuting M "
        "under RoPE)", run="qvka_core.convert.api:run_qv", options=("n_kv_heads", "qv_fit"),
        calibrate=lambda opts: opts.get("qv_fit") != "drop"),
    dense="qvka_core.convert.weights:qv_dense",
    explainer=Explainer(
        r"Q = XW_Q,\; V = XW_V,\qquad \mathrm{Attn} = \mathrm{softmax}\!\left("
        r"\frac{QV^\top}{\sqrt{d}}\right)V",
        "No W_K at all: the value is its own key (the paper's claim: a key is only the value "
        "after \"deep matching\"). The cache holds V only, in the model's own grouping (§2.5).",
        ("Q", "V"), "Q·Vᵀ", ("V",)),
))
