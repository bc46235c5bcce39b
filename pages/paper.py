"""Paper: Tables 3-4 of arXiv 2603.15665 beside our paper-mini reproduction, and its claims."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import qvka_app.shared as ui
from qvka_app import paper as ap
from qvka_app import runs_view as arv
from qvka_core import paper

ui.page_setup()
st.title("Paper vs. paper-mini")
budget = paper.BUDGET
tokens = int(budget["steps"]) * int(budget["batch"]) * int(budget["seq_len"])
st.markdown(
    "*QV May Be Enough* reports validation token accuracy of a 3-layer Transformer-BIG on "
    "WMT17 en→de (one run per cell). **paper-mini** reruns the comparison at toy scale on "
    f"the Austen corpus: a 2-layer d128 decoder with the paper's **16 heads** (of 8), so "
    "QV-Ka's key side is the paper's **19 %** (d_ctx = d_h) and **31 %** (2·d_h) of W_K; "
    "the same √d-scaled embedding under both position schemes; "
    f"{tokens / 1e6:.1f} M tokens per run; **{len(paper.SEEDS)} seeds**, and seed s gives "
    "every cell the same data order, so cells are compared **paired by seed**. Compare the "
    "*ordering and gaps*, not the numbers: the tasks differ.")

results = ap.paper_results(str(ap.jobs.runs_root()))
c1, c2 = st.container(), st.container()  # one above the other: every column fits at 1024
c1.subheader("Paper (Tables 3-4)")
c1.dataframe(pd.DataFrame(paper.PAPER_TABLES)[["table", "mode", "position", "valid_acc"]]
             .rename(columns={"valid_acc": "valid acc %"}), hide_index=True, key="pp_paper")
c1.caption(paper.SOURCE)
c2.subheader("Ours (paper-mini)")
ours = ap.ours_table(results)
if ours.empty:
    c2.info("No finished paper-mini runs yet: launch the grid below (or commit "
            "assets/paper_mini/results.json).")
else:
    c2.dataframe(ours, hide_index=True, key="pp_ours")
    c2.caption(f"Mean ± sample sd over seeds, from {results['from']}. Loss in nats/token "
               "(lower is better). 'Below bigram/unigram': how far the loss is under a "
               "count model's on the same windows; a cell above its bigram has not learned "
               "even which word follows which, and no claim is judged on it.")
if pending := results.get("incomplete"):
    st.caption(f"Not finished yet: {len(pending)} run(s) ({', '.join(pending[:6])}"
               f"{' …' if len(pending) > 6 else ''})")

chart = ap.curves_chart(results)
if chart is not None:
    st.subheader("Learning curves")
    st.altair_chart(chart, key="pp_curves")
    st.caption("Validation loss against training tokens: mean over seeds, band from min to "
               "max; dashed: the bigram and unigram baselines. The paper reports QV-Ka "
               "converging faster early (its Fig. 7).")

st.subheader("The paper's claims, against our runs")
st.caption(f"Each verdict comes from the paired differences across seeds: a 95 % t "
           f"interval (n − 1 degrees of freedom). Claim 3 is an equivalence test: "
           f"'close to' means within ±{paper.MARGIN_NATS} nats (2 % perplexity, just inside "
           "plain QV's known 2.5-3.1 % cost at 300 M-1.2 B, arXiv 2606.04032).")
for c in results.get("claims") or []:
    st.markdown(f"**({c['id']}) {c['claim']}** — paper: {c['paper']}  \nOurs: {c['text']}")
if not results.get("cells"):
    st.caption("Claims need finished runs (≥ 2 seeds per cell for a verdict).")
if not (table := ap.comparisons_table(results)).empty:
    st.dataframe(table, hide_index=True, key="pp_pairs")
if machine := results.get("machine"):
    st.caption(f"Measured on {machine.get('cpus')} CPU(s), {machine.get('platform')}, torch "
               f"{machine.get('torch')}; {results.get('train_wall_s_total') or 0:,.0f} s of "
               "training in all.")
st.caption("Command that produces the committed results:")
st.code(results.get("command") or ap.PAPER_COMMAND, language="bash")

st.subheader("Run the grid")
g1, g2, g3, g4 = st.columns(4)
mult = float(g1.number_input("Steps multiplier", 0.1, 100.0, 1.0, 0.5, key="pp_mult",
                             help=f"1 = {budget['steps']} steps x batch {budget['batch']} x "
                             f"{budget['seq_len']} tokens per run; raise it on a GPU"))
seeds = int(g2.number_input("Seeds", 2, 10, len(paper.SEEDS), key="pp_seeds"))
device = g3.selectbox("Device", ["cpu", "auto", "cuda"], key="pp_device")
both = g4.toggle("QV-Ka under sinusoidal PE too", value=False, key="pp_qvka_both",
                 help="off: the paper's 6 cells; on: QV-Ka under sinusoidal PE as well")
with ui.guarded(False):
    runs = paper.grid_runs(seeds=list(range(seeds)), steps_mult=mult, qvka_both=both)
    sec, basis = arv.estimate_caption(runs[0]["train"], "cpu" if device == "cpu" else "cuda")
    st.caption(f"{len(runs)} runs, one at a time per device; ~{sec:,.0f} s each, "
               f"~{len(runs) * sec / 60:,.0f} min in all — {basis}.")
    if st.button("Launch the grid", key="pp_launch", type="primary"):
        queued, skipped = ap.launch_grid(mult, seeds, device, qvka_both=both)
        st.success(f"Queued {len(queued)} run(s); {len(skipped)} already existed and were "
                   "skipped. Follow them on the Fine-tune page.")
        ap.paper_results.clear()
