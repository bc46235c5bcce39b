"""QV-Ka Lab: Streamlit entry point (page config, router) and the Home page.

The router, the sidebar and the presentation toggle are drawn before anything imports torch
(qvka_app.shared and the pages do), so the first paint is a titled page with the sidebar's
page titles. The Home page's body is qvka_app/home.py.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from qvka_app import present, routing

ROOT = Path(__file__).parent
PAGES = {  # file -> (title, icon); other files in pages/ are added with a title from the name
    "explorer.py": ("Attention Explorer", ":material/grid_on:"),
    "decode.py": ("Decode", ":material/text_fields:"),
    "costs.py": ("Costs", ":material/calculate:"),
    "convert.py": ("Convert", ":material/swap_horiz:"),
    "finetune.py": ("Fine-tune", ":material/model_training:"),
    "paper.py": ("Paper", ":material/article:"),
}


def home() -> None:
    st.title("QV-Ka Lab")  # the first paint: drawn before qvka_app.home imports torch
    from qvka_app import home as body

    body.body(ROOT / "pages", PAGES)


st.set_page_config(page_title="QV-Ka Lab", page_icon=":material/science:", layout="wide")
pages = [st.Page(home, title="Home", icon=":material/home:", default=True)]
order = list(PAGES)  # the sidebar lists pages as Home and the README do
files = sorted((ROOT / "pages").glob("*.py"),
               key=lambda f: (order.index(f.name) if f.name in PAGES else len(order), f.name))
for file in files:
    title, icon = PAGES.get(file.name, (file.stem.replace("_", " ").capitalize(), None))
    pages.append(st.Page(f"pages/{file.name}", title=title, icon=icon))
router = st.navigation(pages)  # the sidebar's page titles, before any page runs
present.presentation_toggle()
present.export_size_picker()
st.session_state[routing.ROUTED] = True  # pages check it (qvka_app.shared.page_setup)
try:
    router.run()
finally:
    st.session_state[routing.ROUTED] = False
