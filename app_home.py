"""Home's explanation of the variants, drawn from the registry: one tab per variant with its
formula, a sentence, and a small diagram of what is projected, what a query is scored
against, and what a decoder caches. A variant registered with an `Explainer` brings its own
tab; one without shows its one-line description."""

from __future__ import annotations

import html

import streamlit as st

from qvka_core.variants.registry import Explainer, available_variants, get_variant

_ROWS = (("projects x to", "proj"), ("scores against", "score"), ("caches", "cache"))
_COLOURS = {"proj": "#1f77b4", "score": "#7b3fa0", "cache": "#d35400"}


def diagram_html(ex: Explainer, present: bool) -> str:
    """Three labelled rows of chips; every text escaped (a variant's strings are data)."""
    size = 22 if present else 15
    rows = []
    for (label, kind), items in zip(_ROWS, (ex.projects, (ex.scores,), ex.caches), strict=True):
        chips = "".join(
            f"<span class='vd-chip' style='border-color:{_COLOURS[kind]};color:{_COLOURS[kind]};"
            f"'>{html.escape(item)}</span>" for item in items)
        rows.append(f"<div class='vd-row' data-kind='{kind}'><span class='vd-label'>"
                    f"{label}</span>{chips}</div>")
    return (f"<style>.vd-row{{display:flex;flex-wrap:wrap;align-items:center;gap:.4em;"
            f"margin:.25em 0;font-size:{size}px}}.vd-label{{min-width:9em;color:#555}}"
            f".vd-chip{{border:2px solid;border-radius:.6em;padding:.05em .55em;"
            f"font-weight:600}}</style><div class='variant-diagram'>{''.join(rows)}</div>")


def stacked(formula: str) -> str:
    """The formula with each `\\qquad`-separated part on its own line, so the widest (MLA's)
    fits a 1280-pixel screen in presentation type."""
    parts = [p.strip().rstrip(",") for p in formula.split(r"\qquad")]
    return r"\begin{gathered}" + r" \\ ".join(parts) + r"\end{gathered}"


def explain_variants(present: bool) -> None:
    """The registry's variants, in spectrum order, as tabs."""
    st.subheader("What each variant changes")
    st.markdown(
        "Every variant keeps the queries Q and the values V. They differ in what the queries "
        "are scored against and in what a decoder must cache per token. GQA and MQA share K "
        "and V among query heads; MLA caches a small latent; the paper asks whether a "
        "separate key is needed at all (QV), or only a cheap one derived from V (QV-Ka).")
    specs = [get_variant(v) for v in available_variants()]
    for tab, spec in zip(st.tabs([spec.label or spec.name.upper() for spec in specs]), specs,
                         strict=True):
        with tab:
            ex = spec.explainer
            if ex is None:
                st.markdown(spec.description)
                continue
            st.latex(stacked(ex.formula))
            st.caption(ex.text)
            st.markdown(diagram_html(ex, present), unsafe_allow_html=True)
