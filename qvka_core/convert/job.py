"""The job a variant's converter works on, and the checks `convert` makes before it runs.

A variant's spec names its conversion (`attention.registry.Conversion`); `convert` checks the
options against that spec (`conversion_options`), calibrates if asked, and calls the
converter with a `ConvertJob`: the source model, the options, calibration statistics and
two helpers, `dense_layers` (the source's layers as dense Q/K/V/O matrices) and `assemble`.
A converter therefore needs nothing from this package but the job it is handed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from qvka_core.config import ModelConfig
from qvka_core.convert.weights import assemble, extract_dense, regroup_kv
from qvka_core.model import Transformer
from qvka_core.variants.registry import (  # noqa: F401 (conversion_* re-exported)
    Conversion,
    conversion_for,
    conversion_options,
    resolve,
)

Progress = Callable[[float, str], None]


def step_ticker(progress: Progress | None, lo: float, hi: float, n: int, msg: str):
    """tick(i): report item i of n done, as a fraction between lo and hi."""
    def tick(i: int) -> None:
        if progress is not None:
            progress(lo + (hi - lo) * (i + 1) / max(1, n), f"{msg} ({i + 1}/{n})")
    return tick


@dataclass
class ConvertJob:
    """What a variant's `Conversion.run` gets: the source, the options, calibration
    statistics, and helpers to read dense layers and assemble the target.

    `options` holds every option the conversion accepts: the value given, else None for a
    model option (the converter picks its default) and the declared default for a
    conversion option (e.g. qv_fit "refit"). A converter may add to `diagnostics`, `notes`
    and `report_options`, and set `method` (e.g. QV's "drop" variant of its recipe)."""

    model: Transformer
    to: str
    options: dict[str, Any]
    covariances: list[Tensor] | None
    progress: Progress | None
    method: str
    ridge: float = 1e-6
    diagnostics: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    report_options: dict[str, Any] = field(default_factory=dict)

    def dense_layers(self, n_kv_heads: int | None = None, message: str = "converting"):
        """Each source layer as `DenseAttention` (float64 Q/K/V/O), its K and V heads
        regrouped to `n_kv_heads` when given (mean-pooled, or replicated: exact)."""
        tick = step_ticker(self.progress, 0.0, 1.0, len(self.model.layers), message)
        for i, layer in enumerate(self.model.layers):
            dense = extract_dense(layer.attn)
            yield dense if n_kv_heads is None else regroup_kv(dense, n_kv_heads)
            tick(i)

    def assemble(self, cfg: ModelConfig, states: list[dict[str, Tensor]]) -> Transformer:
        """The target model: the source's other weights copied, attention from `states`."""
        return assemble(self.model, cfg, states)


def runner(conv: Conversion) -> Callable[[ConvertJob], Transformer]:
    return resolve(conv.run)
