"""The variant registry: name -> `VariantSpec`.

A variant is one module that defines an `AttentionBase` subclass and registers it with
`register_variant(VariantSpec(...))`. Everything else (config validation, the model, the
accounting, the CLI, the pages) asks the registry, so a new variant needs no other edit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qvka_core.attention.base import AttentionBase
    from qvka_core.config import AttentionConfig


def _no_overrides(cfg: AttentionConfig) -> dict:
    return {}


def _no_rules(cfg: AttentionConfig) -> None:
    return None


@dataclass(frozen=True)
class VariantSpec:
    """Everything the rest of the lab needs to know about one attention variant.

    Attributes:
        name: registry key, lowercase (e.g. "gqa").
        module: the `AttentionBase` subclass.
        description: one line for `python -m qvka_core variants` and the pages.
        family: the spectrum group ("kv-sharing", "latent", "keyless").
        normalize: cfg -> {field: value} applied before the shared checks (e.g. mqa -> 1 kv head).
        validate: cfg -> None, raises `ConfigError` for variant-specific rules.
        params: cfg -> {component: count} for the attention projections of one layer.
        proj_macs: cfg -> multiply-adds per token in projections (training/prefill path).
        score_dims: cfg -> (d_qk, d_v): widths of the score and value matmuls per head.
        kv_cache_elems: cfg -> {tensor: elements per token per layer} actually cached.
        decode_macs_per_cached_token: cfg -> multiply-adds per cached position at one decode
            step (score + value + any recomputation), used for arithmetic intensity.
        decode_recompute_macs: cfg -> the part of decode_macs_per_cached_token that
            recomputes a key from cached tensors (QV-Ka's "vg" cache); the new token's key
            is derived the same way at decode, not by its projection.
        spectrum_rank: position on the paper's spectrum MHA -> ... -> QV (for ordering).
    """

    name: str
    module: type[AttentionBase]
    description: str
    family: str
    params: Callable[[AttentionConfig], dict[str, int]]
    proj_macs: Callable[[AttentionConfig], int]
    score_dims: Callable[[AttentionConfig], tuple[int, int]]
    kv_cache_elems: Callable[[AttentionConfig], dict[str, int]]
    decode_macs_per_cached_token: Callable[[AttentionConfig], int]
    normalize: Callable[[AttentionConfig], dict] = field(default=_no_overrides)
    validate: Callable[[AttentionConfig], None] = field(default=_no_rules)
    decode_recompute_macs: Callable[[AttentionConfig], int] = field(default=lambda c: 0)
    spectrum_rank: int = 100


_REGISTRY: dict[str, VariantSpec] = {}


def register_variant(spec: VariantSpec) -> VariantSpec:
    if spec.name in _REGISTRY:
        raise KeyError(f"variant {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def _ensure_loaded() -> None:
    # Importing the package registers the built-in variants exactly once.
    import qvka_core.attention  # noqa: F401


def available_variants() -> list[str]:
    """Registered variant names, in spectrum order (MHA first, QV last)."""
    _ensure_loaded()
    return [s.name for s in sorted(_REGISTRY.values(), key=lambda s: s.spectrum_rank)]


def get_variant(name: str) -> VariantSpec:
    from qvka_core.errors import ConfigError  # not config: config imports this registry

    _ensure_loaded()
    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown variant {name!r}; valid variants: {', '.join(available_variants())}"
        )
    return _REGISTRY[name]
