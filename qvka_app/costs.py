"""Glue of the Costs page (and Home's spectrum): the model to re-cost, its variants'
configs and the measured-vs-formula table, cached across sessions. The tables and charts
themselves are built in qvka_app.costs_view."""

from __future__ import annotations

from typing import Any

import streamlit as st

from qvka_app import costs_view
from qvka_core.presets import get_preset


@st.cache_data(show_spinner=False)
def spectrum_table(preset: str) -> Any:
    """DataFrame of the spectrum (every registered variant) on `preset`."""
    return costs_view.spectrum(get_preset(preset))


@st.cache_data(show_spinner=False, max_entries=64)
def cost_base(source: str, preset: str, dims: tuple[tuple[str, int], ...],
              causal: bool) -> Any:
    """The model the Costs page re-costs: a preset or the user's dimensions."""
    return get_preset(preset) if source == "preset" else costs_view.custom_config(
        **dict(dims), causal=causal)


def cost_configs(source: str, preset: str, dims: tuple[tuple[str, int], ...],
                 variants: tuple[str, ...], causal: bool, n_kv_heads: int | None = None,
                 options: tuple[tuple[str, Any], ...] = ()) -> dict[str, Any]:
    """Variant -> ModelConfig on a preset's or the user's dimensions (ConfigError if bad);
    `options`: (variant option, value) pairs, each applied to the variants declaring it."""
    return costs_view.variant_configs(cost_base(source, preset, dims, causal), list(variants),
                                      causal=causal, n_kv_heads=n_kv_heads,
                                      options=dict(options))


@st.cache_data(show_spinner="Measuring on CPU…", max_entries=16)
def measured(source: str, preset: str, dims: tuple[tuple[str, int], ...],
             variants: tuple[str, ...], causal: bool, seq_len: int, batch: int, dtype: str,
             n_kv_heads: int | None = None, options: tuple[tuple[str, Any], ...] = ()) -> Any:
    """Measured-vs-formula table (None when the model is too big to build on CPU)."""
    cfgs = cost_configs(source, preset, dims, variants, causal, n_kv_heads, options)
    return costs_view.measured_table(cfgs, seq_len=seq_len, batch=batch, dtype=dtype)
