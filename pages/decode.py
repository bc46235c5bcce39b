"""Decode: one prompt, 1–6 variants generating side by side, with the cache each one holds."""

from __future__ import annotations

import streamlit as st

import qvka_app.shared as ui
from qvka_app import decode as dec
from qvka_app.families import FAMILIES
from qvka_core.decode import Sampling

ui.page_setup()
st.title("Decode side by side")
present = ui.is_presenting()
families = dec.families()
if not families:
    st.error("No causal model is available (bundled Austen models or SmolLM2).")
    st.stop()
default_family = "smollm2" if "smollm2" in families else next(iter(families))
st.session_state.setdefault("dec_family", default_family)
if st.session_state["dec_family"] not in families:
    st.session_state["dec_family"] = default_family

c1, c2 = st.columns([1, 1])
prompt = c1.text_area("Prompt", "The key idea of attention is", key="dec_prompt", height=122)
family = c2.selectbox("Model family", list(families), key="dec_family",
                      format_func=lambda f: FAMILIES.get(f, f))
options = families[family]
variants = c2.multiselect("Variants (1–6)", options, max_selections=6,  # one per family
                          default=dec.default_variants(family, options),
                          key=f"dec_variants_{family}")

c3, c4, c5 = st.columns([1, 2, 0.6], vertical_alignment="bottom")
mode = c3.radio("Choice", ["greedy", "sampled"], horizontal=True, key="dec_mode")
max_new = c4.slider("New tokens", 1, 128, 24, key="dec_max_new")
# A callback's flag survives the router's possible rerun (a plain button's True would not).
c5.button("Decode", type="primary", key="dec_go", disabled=not variants,
          on_click=lambda: st.session_state.update(dec_requested=True))
go = bool(st.session_state.pop("dec_requested", False)) and bool(variants)
sampling = Sampling()
if mode == "sampled":
    c6, c7, c8, c9 = st.columns(4)
    with ui.guarded():
        sampling = Sampling(
            float(c6.number_input("Temperature", 0.05, 5.0, 0.8, 0.05, key="dec_temp")),
            int(c7.number_input("Top-k (0 = off)", 0, 1000, 50, key="dec_top_k")) or None,
            float(c8.number_input("Top-p", 0.05, 1.0, 0.95, 0.05, key="dec_top_p")),
            int(c9.number_input("Seed", 0, 2**31 - 1, 0, key="dec_seed")))
if not variants:
    st.info("Choose at least one variant.")
    st.stop()
if not present:
    st.caption("Hover a token for the model's five likeliest next tokens at that step. Bars: "
               "the bytes the KV cache holds, measured from its tensors, beside the accounting "
               "formula, on one scale. tokens/s counts the steps after the first.")

with ui.guarded():
    if go:
        lanes, models = dec.prepare(family, variants, prompt, int(max_new))
        st.session_state["dec_last"] = (lanes, prompt, dec.bar_scale(lanes, int(max_new)))
last = st.session_state.get("dec_last")
if last is None:
    st.stop()
lanes, shown_prompt, scale = last

per_row = 3 if len(lanes) != 4 else 2
slots = {}
names = list(lanes)
for row in range(0, len(names), per_row):
    for col, v in zip(st.columns(per_row), names[row: row + per_row], strict=False):
        colour = dec.COLOURS[names.index(v) % len(dec.COLOURS)]
        col.markdown(f"<h3 style='color:{colour};margin:0'>{v}</h3>", unsafe_allow_html=True)
        if lanes[v].error:
            col.error(lanes[v].error)
            continue
        slots[v] = (col.empty(), col.empty(), col.empty(), colour)


def draw(lane: dec.Lane) -> None:
    text, bar, stats, colour = slots[lane.variant]
    text.markdown(dec.text_html(shown_prompt, lane.decode, colour, present),
                  unsafe_allow_html=True)
    bar.markdown(dec.bar_html(lane, scale, colour, present), unsafe_allow_html=True)
    if present:
        stats.markdown(f"<div style='font-size:22px'>{dec.stats_line(lane.decode)}</div>",
                       unsafe_allow_html=True)
    else:
        stats.caption(dec.stats_line(lane.decode))


for v in slots:
    draw(lanes[v])
if go:
    with ui.guarded():
        dec.decode_side_by_side({v: lanes[v] for v in slots}, models, prompt, int(max_new),
                                sampling, draw)
if not present and any(lanes[v].decode.steps for v in slots):
    with st.expander("Next-token choices, step by step"):
        for v in slots:
            st.caption(f"**{v}**")
            st.dataframe(dec.choices_table(lanes[v].decode), hide_index=True,
                         key=f"dec_table_{v}")
