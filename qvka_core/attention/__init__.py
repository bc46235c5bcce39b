"""Attention variants behind one interface. Importing this package registers the built-ins.

To add a variant: write one module here that subclasses `AttentionBase` and calls
`register_variant(VariantSpec(...))` (formulas, options, conversion), then import it below.
Nothing else changes: `vshared.py` is the worked example.
"""

from qvka_core.attention.registry import (  # noqa: I001  (registry first: variants use it)
    Conversion,
    VariantOption,
    VariantSpec,
    available_variants,
    convertible_variants,
    get_variant,
    register_variant,
    unregister_variant,
    variant_options,
)
from qvka_core.attention.base import AttentionBase, AttentionOutput, LayerCache
from qvka_core.attention import gqa, mla, keyless  # noqa: F401  (registration side effect)
from qvka_core.attention import vshared  # noqa: F401


def build_attention(cfg) -> AttentionBase:
    """The attention module for a validated `AttentionConfig`."""
    return get_variant(cfg.kind).module(cfg)


__all__ = [
    "AttentionBase",
    "AttentionOutput",
    "Conversion",
    "LayerCache",
    "VariantOption",
    "VariantSpec",
    "available_variants",
    "build_attention",
    "convertible_variants",
    "get_variant",
    "register_variant",
    "unregister_variant",
    "variant_options",
]
