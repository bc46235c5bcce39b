"""Explorer tab bodies too long for the page itself (streamlit glue; numbers in
qvka_core.analysis.views)."""

from __future__ import annotations

from typing import Any

import streamlit as st

import app_shared as ui


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
    st.caption(ui.views.ALIGNMENT_NOTE)
    perms = table = None
    if match:
        perms, table = ui.views.head_matching(res, a, b)
    ui.show_figure(ui.views.difference(res, a, b, opts, perms), f"difference_{a}_{b}", "diff")
    fig, mean_js = ui.views.divergence(res, a, b, opts, perms)
    label = "Mean Jensen–Shannon divergence (bits)" + (", heads matched" if match else "")
    st.metric(label, f"{mean_js:.4f}")
    ui.show_figure(fig, f"divergence_{a}_{b}", "div")
    if perms is not None:
        before = ui.views.divergence(res, a, b, opts)[1]
        st.caption(ui.views.matching_summary(perms, before, mean_js, res.head))
        ui.table(table, key="diff_perm_table")
