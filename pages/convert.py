"""Convert: turn a model into another attention variant and read the fidelity report."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

import qvka_app.shared as ui
from qvka_app import navigation as nav
from qvka_app import sources as src
from qvka_app.hf_export import export_button

ui.page_setup()
st.title("Convert")
st.caption("Convert a trained model to another attention variant without training, then see "
           "how far it drifted: attention divergence per layer, hidden-state cosine and loss.")
choices = src.checkpoint_choices()
if st.session_state.get("cv_source") not in choices:
    st.session_state["cv_source"] = "austen-mha" if "austen-mha" in choices else next(
        iter(choices))

c1, c2 = st.columns(2)
label = c1.selectbox("Source model", list(choices), key="cv_source")
targets = src.convert_targets()
to = c2.selectbox("Target variant", targets, key="cv_to", index=targets.index("qv"))
if missing := src.without_converter():
    c2.caption(f"No converter yet (train these from scratch instead): {', '.join(missing)}")
wanted = src.convert_options(to)  # from the target's spec: numbers and choices
numbers = [o for o in wanted if o.choices is None]
cols = st.columns(3)
opts = tuple((o.name, int(v)) for i, o in enumerate(numbers) if (v := cols[i % 3].number_input(
    f"{o.name} (0 = default)", 0, 4096, 0, key=f"cv_{o.name}", help=o.help)))
for i, o in enumerate(o for o in wanted if o.choices is not None):
    opts += ((o.name, cols[(len(numbers) + i) % 3].radio(
        o.name, list(o.choices), key=f"cv_{o.name}", horizontal=True, help=o.help)),)
calib_mode = st.radio("Calibration text (QV, QV-Ka and MLA fit on it)",
                      ["Bundled corpus (train split)", "Paste text"], key="cv_calib",
                      horizontal=True)
calib = None
if calib_mode == "Paste text":
    calib = st.text_area("Calibration text", key="cv_calib_text", height=120) or None
    if calib is None:
        st.caption("Nothing pasted yet: Convert would calibrate on the bundled corpus.")
st.caption("The report always evaluates on the bundled validation split (held out from "
           "calibration).")

st.caption(f"Convert will use: {', '.join(f'{k} = {v}' for k, v in opts) or 'default options'}"
           " (a value outside a box's range is not taken: the box keeps its last valid one).")
if st.button("Convert", key="cv_run", type="primary"):
    bar = st.progress(0.0, text="starting…")
    try:  # the bar goes away on success and on error alike
        with ui.guarded():
            src.conversion(choices[label], to, opts, calib,
                           progress=lambda f, m: bar.progress(min(1.0, f), text=m))
            st.session_state["cv_last"] = (choices[label], to, opts, calib)
            st.session_state.pop("cv_saved", None)
    finally:
        bar.empty()

last = st.session_state.get("cv_last")
if last is None:
    st.info("Pick a source and a target, then press Convert.")
    st.stop()
with ui.guarded():
    result = src.conversion(*last)
rep = result.report.to_dict()
st.subheader(f"{rep['source']} ({rep['source_variant']}) → {rep['target_variant']}")
options = ", ".join(f"{k} = {v}" for k, v in rep["options"].items()) or "defaults"
st.caption(f"Method: {rep['method']}. Options: {options}. Evaluated on "
           f"{rep['eval_tokens']} tokens of the {rep['eval_source']}.")
# five tiles in a row cut their labels in presentation type at 1280 px: three a row there
m = [c for _ in range(2) for c in st.columns(3)] if ui.is_presenting() else st.columns(5)
m[0].metric("Mean JS divergence (bits)", f"{rep['js_divergence_mean']:.4f}")
m[1].metric("Hidden-state cosine", f"{rep['hidden_cosine']:.4f}")
if rep["loss_before"] is not None:
    m[2].metric("Loss after (nats)", f"{rep['loss_after']:.3f}", ui.delta(
        rep["loss_after"] - rep["loss_before"], "+.3f", f" vs {rep['loss_before']:.3f}"),
        delta_color="inverse", help=src.loss_help(last[0], rep))
else:
    m[2].metric("Loss", "n/a", help="not a causal language model")
m[3].metric("Parameters", f"{rep['params_after']:,}",
            ui.delta(rep["params_after"] - rep["params_before"], "+,"), delta_color="inverse")
kv0, kv1 = rep["kv_cache_bytes_per_token_before"], rep["kv_cache_bytes_per_token_after"]
m[4].metric("KV cache bytes/token", f"{kv1:,}",
            ui.delta(kv1 - kv0, "+,", f" ({kv1 / kv0 - 1:+.0%})"), delta_color="inverse")
layers = pd.DataFrame({"layer": range(len(rep["js_divergence_per_layer"])),
                       "JS divergence (bits)": rep["js_divergence_per_layer"]})
st.altair_chart(alt.Chart(layers).mark_bar().encode(x="layer:O", y="JS divergence (bits):Q",
                                                    tooltip=list(layers.columns)),
                key="cv_layers", width="stretch")
if r2 := rep["diagnostics"].get("key_from_value_r2_per_layer"):
    st.caption("How much of each layer's K is a map of its V (R² of K ≈ V·M, mean over KV "
               "heads; 1 = QV loses nothing): " + ", ".join(f"{x:.2f}" for x in r2))
for note in rep.get("notes") or []:
    st.caption(f"Note: {note}")

name = st.text_input("Save as", f"{last[0].rsplit('/', 1)[-1]}-to-{last[1]}", key="cv_name")
row = st.container(horizontal=True)  # buttons as wide as their labels, wrapping if need be
if row.button("Save", key="cv_save"):
    with ui.guarded(False):
        saved = src.save_converted(last[0], result, name)
        st.session_state["cv_saved"] = str(saved)
saved = st.session_state.get("cv_saved")
if saved:
    st.success(f"Saved to {saved}")
target = nav.saved_explorer_target(saved, last[0], last[1])
if target and row.button("Open in Explorer", key="cv_explorer", help=nav.EXPLORER_NOTE):
    nav.open_in_explorer(*target)
if row.button("Heal on the Fine-tune page", key="cv_heal", disabled=not saved,
             help="save first; the saved model is then the Fine-tune page's base"):
    st.session_state["ft_preselect"] = saved
    st.switch_page("pages/finetune.py")
export_button(saved, "cv_export", row)
