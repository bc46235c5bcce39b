"""The Home page's body (app.py draws its title first, before torch loads): links to the
pages, preparing every model, the variants explained from the registry (one tab per
variant: formula, a sentence, and a small diagram of what is projected, what a query is
scored against, and what a decoder caches; a variant registered with an `Explainer` brings
its own tab, one without shows its one-line description), the spectrum on a preset, and
the paper's Tables 3-4 beside our bundled models' validation losses."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

import qvka_app.shared as ui
from qvka_app import costs, costs_view
from qvka_app.families import warm_all
from qvka_core import paper
from qvka_core.paths import ASSETS
from qvka_core.presets import preset_names
from qvka_core.variants.registry import Explainer, available_variants, get_variant

POSITIONS = {"sinusoidal": "sinusoidal", "agf": "AGF + PCM-V"}  # the paper's "Default", AGF

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


@st.cache_data(ttl=60, show_spinner=False)
def bundled_losses(directory: str) -> list[dict[str, Any]]:
    """Validation loss of each bundled checkpoint that has a meta.json."""
    rows = []
    for meta_path in sorted(Path(directory).glob("*/meta.json")):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        metrics = meta.get("metrics", {}) if isinstance(meta.get("metrics"), dict) else {}
        loss = next((src[k] for src in (meta, metrics)
                     for k in ("val_loss", "valid_loss", "validation_loss") if k in src), None)
        acc = meta.get("val_acc", metrics.get("val_acc"))
        rows.append({"model": meta_path.parent.name,
                     "variant": meta.get("variant", meta_path.parent.name.removeprefix("austen-")),
                     "val loss": "not recorded" if loss is None else f"{loss:.4f}",
                     "val acc %": "" if acc is None else f"{100 * acc:.2f}"})
    return rows


def variant_list() -> str:
    """The registry's variants by label, in spectrum order: "MHA, GQA, … and V-shared"."""
    labels = [costs_view.label(v) for v in available_variants()]
    return ", ".join(labels[:-1]) + " and " + labels[-1] if len(labels) > 1 else "".join(labels)


def body(pages_dir: Path, pages: dict[str, tuple[str, str]]) -> None:
    """Everything under Home's title; `pages`: app.py's file -> (title, icon)."""
    ui.page_setup()
    st.markdown(
        "A lab for the attention variants of *QV May Be Enough* (arXiv 2603.15665): "
        f"{variant_list()}, built in one model so that only attention changes. "
        "Type a sentence and compare the variants' attention maps side by side, watch them "
        "write text side by side with the KV cache each one holds, or cost "
        "any preset: parameters, FLOPs, KV cache and decode speed. "
        "The key-less variants (QV, QV-Ka) drop or shrink the key projection; the lab shows "
        "what that does to the maps and to the bill."
    )
    for file, (title, icon) in pages.items():
        if (pages_dir / file).exists():
            st.page_link(f"pages/{file}", label=title, icon=icon)
    with st.expander("Before a talk: prepare every model"):
        st.caption("Converts MiniLM and SmolLM2 to every variant the Explorer offers, once per "
                   "machine (minutes), so that every family then opens in seconds; the same as "
                   "`./lab warm`.")
        if st.button("Prepare every model", key="home_warm"):
            with ui.guarded(False):
                items = warm_all()
                st.success(f"{len(items)} conversions are cached.")
    explain_variants(ui.is_presenting())
    _spectrum()
    _paper_and_ours()


def _spectrum() -> None:
    st.subheader("The spectrum: " + " → ".join(  # every registered variant, in order
        costs_view.label(v) for v in available_variants()))
    presets = preset_names()
    with ui.guarded(False):
        spectrum = costs.spectrum_table(st.selectbox(
            "Preset", presets, key="home_preset",
            index=presets.index("smollm2-135m") if "smollm2-135m" in presets else 0))
        st.plotly_chart(costs_view.spectrum_figure(spectrum, ui.is_presenting()),
                        key="home_spectrum")
        st.dataframe(costs_view.readable(spectrum), hide_index=True, key="home_spectrum_table")


def _paper_and_ours() -> None:
    st.subheader("Paper results and our bundled models")
    c1, c2 = st.columns(2)
    c1.caption("Paper Tables 3-4: validation accuracy (%) on WMT, as reported by secondary "
               "summaries of arXiv 2603.15665 (single runs); the paper's Default positions "
               "are sinusoidal.")
    table = pd.DataFrame(paper.PAPER_TABLES)
    c1.dataframe(table.assign(position=table["position"].map(POSITIONS))[
        ["table", "mode", "position", "valid_acc"]].rename(columns={
            "position": "positions", "valid_acc": "valid acc %"}),
        hide_index=True, key="home_paper")
    ours = bundled_losses(str(ASSETS / "checkpoints"))
    c2.caption("Our bundled Austen models: validation loss (nats/token, lower is better) and "
               "next-token accuracy on held-out Austen text (not comparable with WMT).")
    if ours:
        c2.container(key="home_models").dataframe(  # every bundled model, no scroll
            ours, hide_index=True, key="home_ours", height=35 * (len(ours) + 1) + 3)
    else:
        c2.info("Not trained yet: no assets/checkpoints/*/meta.json found.")
