"""The torch side of attention: the skeleton every variant's module subclasses
(`AttentionBase`, the per-layer `LayerCache`), the kernels, and `build_attention`.

The variants themselves (spec + module) live in `qvka_core.variants`; this package builds the
module a config's spec names, importing it only then.
"""

from qvka_core.attention.base import AttentionBase, AttentionOutput, LayerCache
from qvka_core.variants import get_variant, resolve


def build_attention(cfg) -> AttentionBase:
    """The attention module for a validated `AttentionConfig` (its spec's `module`)."""
    return resolve(get_variant(cfg.kind).module)(cfg)


__all__ = ["AttentionBase", "AttentionOutput", "LayerCache", "build_attention"]
