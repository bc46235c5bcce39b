"""Glue of the Explorer page: its models run on the text (cached across sessions), the
match-space vectors, and tab bodies too long for the page itself (the figures are built in
qvka_app.explorer_views)."""

from __future__ import annotations

from typing import Any

import streamlit as st

import qvka_app.shared as ui
from qvka_app import explorer_views as views
from qvka_app.families import load_model, load_shown, model_stamp
from qvka_core.analysis import explorer as _explore
from qvka_core.analysis import vectors


@st.cache_data(show_spinner="Running the models…", max_entries=96)
def run_cached(family: str, variant: str, text: str, stamp: str = "") -> _explore.VariantRun:
    """One forward of (family, variant) on text; cached across sessions."""
    return _explore.run_model(load_model(family, variant, stamp), text)


def explorer(family: str, variants: list[str], text: str, layer: int, head: int | None
             ) -> _explore.ExplorerResult:
    models = {v: load_shown(family, v) for v in variants}
    return _explore.explore(models, text, layer, head,
                            run=lambda label, _m, t: run_cached(family, label, t,
                                                                model_stamp(family, label)))


@st.cache_data(show_spinner="Capturing queries and keys…", max_entries=48)
def _match_vectors(family: str, variant: str, text: str, layer: int, stamp: str = ""
                   ) -> vectors.MatchVectors:
    return vectors.capture(load_model(family, variant, stamp), text, layer)


def match_space(family: str, variants: list[str], text: str, layer: int, head: int | None,
                opts: views.ViewOptions) -> Any:
    """The Explorer's match-space figure: each variant's queries and matched keys in a plane."""
    vecs = {v: _match_vectors(family, v, text, layer, model_stamp(family, v)) for v in variants}
    return vectors.figure(vecs, 0 if head is None else head, presentation=opts.presentation,
                          hide_special=opts.hide_special)


def model_shape(family: str, variant: str) -> tuple[int, int, int]:
    """(layers, heads, token limit) of a model, for widget ranges."""
    m = load_shown(family, variant)
    return m.config.n_layers, m.config.n_heads, _explore.token_limit(m)


def difference_tab(res: Any, variants: list[str], opts: Any) -> None:
    """A − B, per-head divergence, and (on request) B's heads matched to A's by similarity."""
    if len(variants) < 2:
        st.info("Choose two or more variants to compare them.")
        return
    e1, e2, e3 = st.columns([2, 2, 3])
    a = e1.selectbox("Variant A", variants, index=0, key="diff_a")
    b = e2.selectbox("Variant B", variants, index=1, key="diff_b")
    match = e3.toggle("Match heads by similarity", key="diff_match",
                      help="Permute B's heads, layer by layer, to minimise the total "
                      "Jensen–Shannon divergence to A's heads on this text (Hungarian "
                      "assignment), then compare head i of A with its matched head of B.")
    st.caption(views.ALIGNMENT_NOTE)
    perms = table = None
    if match:
        perms, table = views.head_matching(res, a, b)
    ui.show_figure(views.difference(res, a, b, opts, perms), f"difference_{a}_{b}", "diff")
    fig, mean_js = views.divergence(res, a, b, opts, perms)
    label = "Mean Jensen–Shannon divergence (bits)" + (", heads matched" if match else "")
    st.metric(label, f"{mean_js:.4f}")
    ui.show_figure(fig, f"divergence_{a}_{b}", "div")
    if perms is not None:
        before = views.divergence(res, a, b, opts)[1]
        st.caption(views.matching_summary(perms, before, mean_js, res.head))
        ui.table(table, key="diff_perm_table")
