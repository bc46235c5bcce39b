"""Costs: parameters, FLOPs, KV cache and decode speed of every variant on one model."""

from __future__ import annotations

import streamlit as st

import qvka_app.shared as ui
from qvka_app import costs
from qvka_app import costs_view as cv
from qvka_app.option_widgets import option_widgets
from qvka_core.hardware import gpu_names
from qvka_core.presets import preset_names
from qvka_core.variants.registry import available_variants

ui.page_setup()

st.title("Costs")
present = ui.is_presenting()
presets = preset_names()
ui.init_from_url({"cost_preset": "smollm2-135m" if "smollm2-135m" in presets else presets[0]},
                 {})

c1, c2 = st.columns([1, 2])
source = c1.radio("Dimensions", ["preset", "custom"], key="cost_source", horizontal=True)
dims: tuple[tuple[str, int], ...] = ()
if source == "preset":
    preset = c2.selectbox("Preset", presets, key="cost_preset")
else:
    preset = ""
    fields = [("d_model", 576), ("n_heads", 9), ("n_kv_heads", 3), ("n_layers", 30),
              ("ffn_dim", 1536), ("vocab_size", 49152)]
    cols = c2.columns(3)
    dims = tuple((name, int(cols[i % 3].number_input(name, value=default, step=1,
                                                     key=f"cost_{name}")))
                 for i, (name, default) in enumerate(fields))
spectrum = available_variants()
variants = st.multiselect("Variants", spectrum, default=spectrum, key="cost_variants")
grouping = st.radio("QV / QV-Ka value heads", ["the model's grouping", "one per query head"],
                    key="cost_keyless_heads", horizontal=True,
                    help="Drop K and keep the model's KV sharing (the paper's GQA-QvVv), or "
                    "give every query head its own V head")
with st.expander("Variant options (empty: the variant's default)"):  # from the registry
    options = option_widgets(variants, "cost", exclude=("n_kv_heads",))  # radio above
c3, c4, c5, c6 = st.columns(4)
seq_len = int(c3.number_input("Sequence / context length", 1, 1 << 20, 2048, key="cost_seq"))
batch = int(c4.number_input("Batch", 1, 4096, 1, key="cost_batch"))
dtype = c5.selectbox("dtype", ["bf16", "fp16", "fp32"], key="cost_dtype")
gpus = gpu_names()
gpu = c6.selectbox("GPU (roofline)", gpus, key="cost_gpu") if gpus else None
c7, c8 = st.columns(2)
causal = c7.toggle("Causal (decoder)", value=True, key="cost_causal",
                   help="A decoder scores each query against earlier keys only: half the "
                        "attention FLOPs.")
unit = c8.radio("Count", ["FLOPs", "MACs"], key="cost_unit", horizontal=True,
                help="1 multiply-add (MAC) = 2 FLOPs")
if source == "preset":
    ui.sync_to_url(cost_preset=preset)
if not variants:
    st.info("Choose at least one variant.")
    st.stop()

with ui.guarded():
    base = costs.cost_base(source, preset, dims, causal)
    kv_heads = base.n_heads if grouping == "one per query head" else None
    cfgs = costs.cost_configs(source, preset, dims, tuple(variants), causal, kv_heads,
                              tuple(options.items()))
    table = cv.compare_table(cfgs, seq_len=seq_len, batch=batch, dtype=dtype,
                             causal_halving=causal, unit=unit, gpu=gpu)
native = cv.native_variant(base)
ref = native if native in variants else variants[0]
st.subheader("KV cache per token")
st.caption(f"The model's own attention is **{native}**; deltas are against "
           f"{'it' if ref == native else ref}.")
kv_row = table.loc["KV bytes / token"]
per_row = 3  # six tiles in one row read "512.0 …" at 1280 wide: three a row, never cut
for start in range(0, len(variants), per_row):
    row = list(kv_row.items())[start:start + per_row]
    for col, (v, kv) in zip(st.columns(per_row), row, strict=False):
        col.metric(f"{v} (model)" if v == native else v, cv.human_bytes(kv),
                   help=f"{kv:,.0f} bytes",
                   delta=None if v == ref else ui.delta(kv / kv_row[ref] - 1, "+.0%"),
                   delta_color="inverse")
st.subheader("Side by side")
st.dataframe(cv.compact(table.rename(columns={native: f"{native} (model)"})),
             key="cost_table")  # k / M / G: every column fits at 1024
st.download_button("CSV", table.to_csv(), "costs.csv", key="dl_costs", on_click="ignore")
st.caption("FLOPs = 2 × MACs, matmuls only; training = 3 × forward. KV bytes per token sum "
           "every layer's cached tensors (MLA: latent + RoPE key; QV: V only). The roofline "
           "is an upper bound: min(bandwidth / bytes, peak / FLOPs) per decode step.")

t0, t1, t2, t3 = st.tabs(["Decode roofline", "Parameters", "KV cache vs context",
                          f"{unit} vs sequence length"])
with t0:
    st.plotly_chart(cv.roofline_figure(cfgs, seq_len=seq_len, batch=batch, dtype=dtype,
                                       presentation=present), key="cost_roofline_fig")
    st.caption("A variant's bar under a GPU's line is bandwidth-bound there: its decode speed "
               "is set by the bytes it reads (weights + KV cache), not by its FLOPs. Hover a "
               "bar for its roofline tokens/s on each GPU.")
with t1:
    st.plotly_chart(cv.params_figure(cv.params_long(cfgs), present), key="cost_params_fig")
with t2:
    kv = cv.kv_vs_context(cfgs, dtype=dtype, batch=batch, max_context=max(seq_len, 1 << 17))
    st.plotly_chart(cv.line_figure(kv, "context", "KV GiB", f"KV cache ({dtype}, batch "
                                   f"{batch})", present), key="cost_kv_fig")
with t3:
    fl = cv.flops_vs_seq(cfgs, batch=batch, causal_halving=causal,
                         max_seq=max(seq_len, 1 << 15), unit=unit)
    st.plotly_chart(cv.line_figure(fl, "seq_len", f"forward T{unit}", f"Forward {unit} per "
                                   "step", present), key="cost_flops_fig")

if not present:
    st.subheader("Measured next to the formula")
    refusal = cv.measure_refusal(cfgs, seq_len)
    if refusal:
        st.info(f"Costed analytically only: {refusal}.")
    elif st.toggle("Measure on CPU (params, forward FLOPs, KV bytes)", key="cost_measure"):
        with ui.guarded(False):
            m = costs.measured(source, preset, dims, tuple(variants), causal, seq_len, batch,
                            dtype, kv_heads, tuple(options.items()))
            st.dataframe(cv.readable(m), hide_index=True, key="cost_measured")
            st.caption("Measured: parameters of the built model, FlopCounterMode FLOPs "
                       "(full S×S scores, so compared without causal halving), KV bytes "
                       "after a prefill and one decode step.")
