"""Attention variants behind one interface. Importing this package registers the built-ins.

To add a variant: write one module here that subclasses `AttentionBase` and calls
`register_variant(VariantSpec(...))`, then import it below. Nothing else changes.
"""

from qvka_core.attention.registry import (  # noqa: I001  (registry first: variants use it)
    VariantSpec,
    available_variants,
    get_variant,
    register_variant,
)
from qvka_core.attention.base import AttentionBase, AttentionOutput, LayerCache
from qvka_core.attention import gqa, mla, keyless  # noqa: F401  (registration side effect)


def build_attention(cfg) -> AttentionBase:
    """The attention module for a validated `AttentionConfig`."""
    return get_variant(cfg.kind).module(cfg)


__all__ = [
    "AttentionBase",
    "AttentionOutput",
    "LayerCache",
    "VariantSpec",
    "available_variants",
    "build_attention",
    "get_variant",
    "register_variant",
]
