"""QV-Ka Lab: Streamlit entry point (page config, router) and the Home page.

The router, the sidebar and the presentation toggle are drawn before anything imports torch
(app_shared does), so the first paint is a titled page with the sidebar's page titles.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

import app_present

ROOT = Path(__file__).parent
PAGES = {  # file -> (title, icon); other files in pages/ are added with a title from the name
    "explorer.py": ("Attention Explorer", ":material/grid_on:"),
    "decode.py": ("Decode", ":material/text_fields:"),
    "costs.py": ("Costs", ":material/calculate:"),
    "convert.py": ("Convert", ":material/swap_horiz:"),
    "finetune.py": ("Fine-tune", ":material/model_training:"),
    "paper.py": ("Paper", ":material/article:"),
}
PAPER = [  # Tables 3-4 of arXiv 2603.15665 as reported by secondary summaries (paper.md §5.2)
    ("3", "QV", "Default (sinusoidal PE)", 70.0756),
    ("3", "QKV", "Default (sinusoidal PE)", 70.5911),
    ("3", "QV", "AGF + PCM-V", 70.5188),
    ("3", "QKV", "AGF + PCM-V", 70.7305),
    ("4", "QV-Ka, d_ctx = 64", "AGF + PCM-V", 70.4998),
    ("4", "QV-Ka, d_ctx = 128", "AGF + PCM-V", 70.6919),
]


def home() -> None:
    st.title("QV-Ka Lab")  # the first paint: drawn before app_shared imports torch
    import app_shared as ui

    ui.page_setup()
    st.markdown(
        "A lab for the attention variants of *QV May Be Enough* (arXiv 2603.15665): MHA, "
        "GQA, MQA, MLA, QV and QV-Ka, built in one model so that only attention changes. "
        "Type a sentence and compare the variants' attention maps side by side, watch them "
        "write text side by side with the KV cache each one holds, or cost "
        "any preset: parameters, FLOPs, KV cache and decode speed. "
        "The key-less variants (QV, QV-Ka) drop or shrink the key projection; the lab shows "
        "what that does to the maps and to the bill."
    )
    for file, (title, icon) in PAGES.items():
        if (ROOT / "pages" / file).exists():
            st.page_link(f"pages/{file}", label=title, icon=icon)
    with st.expander("Before a talk: prepare every model"):
        st.caption("Converts MiniLM and SmolLM2 to every variant the Explorer offers, once per "
                   "machine (minutes), so that every family then opens in seconds; the same as "
                   "`./lab warm`.")
        if st.button("Prepare every model", key="home_warm"):
            with ui.guarded(False):
                items = ui.warm_all()
                st.success(f"{len(items)} conversions are cached.")
    import app_home

    app_home.explain_variants(ui.is_presenting())

    st.subheader("The spectrum: " + " → ".join(  # every registered variant, in order
        ui.costs_view.label(v) for v in ui.available_variants()))
    with ui.guarded(False):
        spectrum = ui.spectrum_table(st.selectbox(
            "Preset", ui.preset_options(), key="home_preset",
            index=ui.preset_options().index("smollm2-135m")
            if "smollm2-135m" in ui.preset_options() else 0))
        if spectrum is None:
            st.info("Cost accounting is not available yet in this build.")
        else:
            st.plotly_chart(ui.spectrum_figure(spectrum, ui.is_presenting()),
                            key="home_spectrum")
            st.dataframe(ui.costs_view.readable(spectrum), hide_index=True,
                         key="home_spectrum_table")

    st.subheader("Paper results and our bundled models")
    c1, c2 = st.columns(2)
    c1.caption("Paper Tables 3-4: validation accuracy (%) on WMT, as reported by secondary "
               "summaries of arXiv 2603.15665 (single runs).")
    c1.dataframe(
        [{"table": t, "mode": m, "positions": p, "valid acc %": a} for t, m, p, a in PAPER],
        hide_index=True, key="home_paper")
    ours = ui.bundled_losses(str(ROOT / "assets" / "checkpoints"))
    c2.caption("Our bundled Austen models: validation loss (nats/token, lower is better) and "
               "next-token accuracy on held-out Austen text (not comparable with WMT).")
    if ours:
        c2.dataframe(ours, hide_index=True, key="home_ours")
    else:
        c2.info("Not trained yet: no assets/checkpoints/*/meta.json found.")


st.set_page_config(page_title="QV-Ka Lab", page_icon=":material/science:", layout="wide")
pages = [st.Page(home, title="Home", icon=":material/home:", default=True)]
order = list(PAGES)  # the sidebar lists pages as Home and the README do
files = sorted((ROOT / "pages").glob("*.py"),
               key=lambda f: (order.index(f.name) if f.name in PAGES else len(order), f.name))
for file in files:
    title, icon = PAGES.get(file.name, (file.stem.replace("_", " ").capitalize(), None))
    pages.append(st.Page(f"pages/{file.name}", title=title, icon=icon))
router = st.navigation(pages)  # the sidebar's page titles, before any page runs
app_present.presentation_toggle()
app_present.export_size_picker()
st.session_state[app_present.ROUTED] = True  # pages check it (app_shared.page_setup)
try:
    router.run()
finally:
    st.session_state[app_present.ROUTED] = False
