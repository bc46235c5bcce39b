"""Paper: Tables 3-4 of arXiv 2603.15665 beside our paper-mini reproduction, and its claims."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import app_runs as ar
import app_shared as ui
from qvka_core import paper

ui.page_setup()
st.title("Paper vs. paper-mini")
st.markdown(
    "*QV May Be Enough* reports validation token accuracy of a 3-layer Transformer-BIG on "
    "WMT17 en→de (one run per cell). **paper-mini** reruns the same comparison at toy scale: "
    "the bundled 2-layer d128 decoder on the Austen corpus, every cell under the same budget "
    "and several seeds, so that differences can be set against seed noise. The two tables "
    "measure different tasks: compare the *ordering and gaps*, not the numbers.")

results = ar.paper_results(str(ar.runs_root()))
c1, c2 = st.columns(2)
c1.subheader("Paper (Tables 3-4)")
c1.dataframe(pd.DataFrame(paper.PAPER_TABLES)[["table", "mode", "position", "valid_acc"]]
             .rename(columns={"valid_acc": "valid acc %"}), hide_index=True, key="pp_paper")
c1.caption(paper.SOURCE)
c2.subheader("Ours (paper-mini)")
ours = ar.ours_table(results)
if ours.empty:
    c2.info("No finished paper-mini runs yet: launch the grid below (or commit "
            "assets/paper_mini/results.json).")
else:
    c2.dataframe(ours, hide_index=True, key="pp_ours")
    c2.caption(f"Mean ± sample sd over seeds, from {results['from']}. Validation loss in "
               "nats/token (lower is better), next-token accuracy in %. 'Below unigram': how "
               "far the loss is under a word-frequency model's (what training learned).")
if pending := results.get("incomplete"):
    st.caption(f"Not finished yet: {len(pending)} run(s) ({', '.join(pending[:6])}"
               f"{' …' if len(pending) > 6 else ''})")

st.subheader("The paper's claims, against our runs")
metric = st.radio("Verdict by", ["val_loss", "val_acc"], key="pp_metric", horizontal=True,
                  format_func={"val_loss": "validation loss", "val_acc": "accuracy"}.get)
with ui.guarded(False):
    for c in paper.claims(results, metric=metric) if results.get("cells") else []:
        st.markdown(f"**({c['id']}) {c['claim']}** — paper: {c['paper']}  \n"
                    f"Ours: {c['text']}")
    if not results.get("cells"):
        st.caption("Claims need finished runs (≥ 2 seeds per cell for a verdict).")
st.caption("Command that produces the committed results:")
st.code(results.get("command") or ar.PAPER_COMMAND, language="bash")

st.subheader("Run the grid")
budget = paper.BUDGET
g1, g2, g3, g4 = st.columns(4)
mult = float(g1.number_input("Steps multiplier", 0.1, 100.0, 1.0, 0.5, key="pp_mult",
                             help=f"1 = {budget['steps']} steps x batch {budget['batch']} x "
                             f"{budget['seq_len']} tokens per run (tiny CPU budget); "
                             "raise it on a GPU"))
seeds = int(g2.number_input("Seeds", 1, 10, 3, key="pp_seeds"))
device = g3.selectbox("Device", ["cpu", "auto", "cuda"], key="pp_device")
both = g4.toggle("QV-Ka under sinusoidal PE too", value=True, key="pp_qvka_both",
                 help="the committed table's 8 cells (24 runs); off: the paper's 6 (18 runs)")
with ui.guarded(False):
    runs = paper.grid_runs(seeds=list(range(seeds)), steps_mult=mult, qvka_both=both)
    est = ar.jobs.estimate(runs[0]["argv"], device="cpu" if device == "cpu" else "cuda")
    st.caption(f"{len(runs)} runs, one at a time per device; ~{est['seconds']:,.0f} s each, "
               f"~{len(runs) * est['seconds'] / 60:,.0f} min in all ({est['label']}).")
    if st.button("Launch the grid", key="pp_launch", type="primary"):
        queued, skipped = ar.launch_grid(mult, seeds, device, qvka_both=both)
        st.success(f"Queued {len(queued)} run(s); {len(skipped)} already existed and were "
                   "skipped. Follow them on the Fine-tune page.")
        ar.paper_results.clear()
