"""Attention Explorer: one text, up to six attention variants, side by side."""

from __future__ import annotations

import streamlit as st

import qvka_app.shared as ui
from qvka_app import explorer as ax
from qvka_app import explorer_views as views
from qvka_app import families as fam
from qvka_core.analysis import export as exports
from qvka_core.analysis import figures, vectors
from qvka_core.analysis.explorer import EXPLORER_MAX_TOKENS

ui.page_setup()

DEFAULT_TEXT = "There is a beautiful girl."
MAX_VARIANTS = 6

st.title("Attention Explorer")
present = ui.is_presenting()
families = fam.family_variants()
default_family = "austen" if "austen" in families else "random"  # trained beats random
ui.init_from_url(
    {"text": DEFAULT_TEXT, "family": default_family, "variants": ["mha", "gqa", "qv"],
     "layer": 0, "head": "mean", "hide_special": False},
    {"variants": ui.split_list, "layer": int, "hide_special": lambda raw: raw == "1"},
)
if st.session_state.get("family") not in families:
    st.session_state["family"] = default_family

c1, c2 = st.columns([1, 1])  # room for six variant names
text = c1.text_area("Text", key="text", height=90 if not present else 68)
family = c2.selectbox("Model family", list(families), key="family",
                      format_func=lambda f: fam.FAMILIES.get(f, f))
options = families[family]
with c2:
    ui.fit_choices("variants", options, MAX_VARIANTS)  # a URL may name more, or unknown ones
variants = c2.multiselect(f"Variants (1–{MAX_VARIANTS})", options, key="variants",
                          max_selections=MAX_VARIANTS)
if not variants:
    st.info("Choose at least one variant.")
    st.stop()

with ui.guarded():
    if not fam.confirm_conversions(family, variants):  # never a silent minutes-long wait
        st.stop()
    n_layers, n_heads, limit = ax.model_shape(family, variants[0])
st.session_state["layer"] = ui.clamp_int(st.session_state.get("layer"), 0, n_layers - 1)
head_options = ["mean", *map(str, range(n_heads))]
if str(st.session_state.get("head")) not in head_options:
    st.session_state["head"] = "mean"
c3, c4 = st.columns(2)
layer = c3.slider("Layer", 0, n_layers - 1, key="layer") if n_layers > 1 else 0
head_s = c4.selectbox("Head", head_options, key="head",
                      format_func=lambda h: "mean of heads" if h == "mean" else f"head {h}")
head = None if head_s == "mean" else int(head_s)
ui.sync_to_url(text=text, family=family, variants=variants, layer=layer, head=head_s,
               hide_special=int(bool(st.session_state.get("hide_special"))))

with ui.guarded():
    res = ax.explorer(family, variants, text, layer, head)
n_tok = len(res.tokens(variants[0]))
if any(r.truncated for r in res.runs.values()):
    total = max(r.n_tokens_in_text for r in res.runs.values())
    st.warning(f"The text has {total} tokens; the Explorer shows the first {n_tok} "
               f"(limit {limit}: the model's maximum length or {EXPLORER_MAX_TOKENS}).")

hide = any(any(r.special) for r in res.runs.values()) and st.toggle(
    "Hide the tokenizer's special tokens ([CLS], [SEP], <s>) and renormalise each row",
    key="hide_special", help="Attention sinks on special tokens can dwarf the rest (exBERT's "
    "option). Statistics and divergences still use the full maps.")
opts = views.ViewOptions(presentation=present, hide_special=hide)
if not present and n_tok > 8:
    with st.expander("Long inputs: zoom, top-k, block pooling", expanded=n_tok > 48):
        d1, d2, d3 = st.columns(3)
        zoom = d1.slider("Token range", 0, n_tok, (0, n_tok), key=f"zoom_{n_tok}")
        top_k = d2.number_input("Top-k per query (0 = all)", 0, n_tok, 0, key=f"top_k_{n_tok}")
        block = d3.number_input("Block size (1 = none)", 1, max(1, n_tok // 2),
                                1 if n_tok <= 64 else max(1, n_tok // 48), key=f"block_{n_tok}")
        if zoom[1] - zoom[0] < 1:
            zoom = (0, n_tok)
    opts = views.ViewOptions(top_k=int(top_k), block=int(block), zoom=tuple(zoom),
                                presentation=present, hide_special=hide)

tabs = st.tabs(["Side by side", "Lines", "Difference", "Overview", "KV groups", "Statistics",
                "Rollout", "POS lens", "Match space"])
with tabs[0], ui.guarded(False):
    ui.show_figure(views.side_by_side(res, opts), "attention_side_by_side", "sbs")
    d1, d2 = st.columns(2)
    pick = d1.selectbox("Tensors of", variants, key="export_variant")
    run = res.runs[pick]
    d2.download_button("CSV (long format)", key="dl_csv_tensors", on_click="ignore",
                       data=lambda: exports.attention_csv(run.attentions, run.tokens,
                                                            layer=layer),
                       file_name=f"attention_{pick}.csv", mime="text/csv")
    d2.download_button("JSON", key="dl_json_tensors", on_click="ignore",
                       data=lambda: exports.attention_json(
                           run.attentions, run.tokens, meta={"variant": pick, "text": text}),
                       file_name=f"attention_{pick}.json", mime="application/json")

with tabs[1], ui.guarded(False):
    g1, g2 = st.columns(2)
    every = g1.toggle("Every head of the layer, one colour each", key="lines_every_head")
    shown = views.line_tokens(res, opts)
    focus = g2.selectbox("Lines from", [None, *range(len(shown))], key=f"lines_focus_{len(shown)}",
                         format_func=lambda j: "every token" if j is None else
                         f"{j}: {figures.token_label(shown[j])}")
    ui.show_figure(views.token_lines(res, opts, every_head=every, focus=focus),
                   "attention_lines", "lines")

with tabs[2], ui.guarded(False):
    ax.difference_tab(res, variants, opts)

with tabs[3], ui.guarded(False):
    which = st.selectbox("Variant", variants, key="overview_variant")
    ui.show_figure(views.overview(res, which, opts), f"overview_{which}", "overview")

with tabs[4], ui.guarded(False):
    for v in variants:
        fig, caption = views.groups(res, v, opts)
        st.caption(f"**{v}** — {caption}")
        ui.show_figure(fig, f"groups_{v}", f"groups_{v}")

with tabs[5], ui.guarded(False):
    all_layers = st.toggle("All layers", key="stats_all_layers")
    table = views.stats_table(res, layer_only=not all_layers)
    ui.table(table, key="stats_table",
             height=min(35 * (len(table) + 1) + 3, 640),  # every head of a layer, no scroll
             column_config={c: st.column_config.NumberColumn(format=f"%.{d}f")
                            for c, d in views.STATS_DECIMALS.items()})
    st.caption(views.stats_caption(res))
    st.download_button("CSV", table.to_csv(index=False), "head_stats.csv", key="dl_stats",
                       on_click="ignore")

with tabs[6], ui.guarded(False):
    ui.show_figure(views.rollout(res, opts), "rollout", "rollout")

with tabs[7], ui.guarded(False):
    figs, caption = views.pos_lens(res, text, opts)
    st.caption(caption)
    cols = st.columns(min(1 if present else 3, len(figs)))  # large type: one a row
    for i, (label, fig) in enumerate(figs.items()):
        with cols[i % len(cols)]:
            ui.show_figure(fig, f"pos_{label}", f"pos_{label}")

with tabs[8], ui.guarded(False):
    st.caption(vectors.caption(layer, head))
    ui.show_figure(ax.match_space(family, variants, text, layer, head, opts),
                   f"match_space_{layer}", "match")
