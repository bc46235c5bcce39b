"""QV-Ka Lab's router: page config, the navigation over pages/, the Home page.

The main script is app.py in a checkout and this file in an installed wheel (`qvka app`),
which ships pages/ beside it as qvka_app/pages; both call `main` with the folder holding
pages/. The router, the sidebar and the presentation toggle are drawn before anything
imports torch (qvka_app.shared and the pages do), so the first paint is a titled page with
the sidebar's page titles. The Home page's body is qvka_app/home.py.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from qvka_app import present, routing

PAGES = {  # file -> (title, icon); other files in pages/ are added with a title from the name
    "explorer.py": ("Attention Explorer", ":material/grid_on:"),
    "decode.py": ("Decode", ":material/text_fields:"),
    "costs.py": ("Costs", ":material/calculate:"),
    "convert.py": ("Convert", ":material/swap_horiz:"),
    "finetune.py": ("Fine-tune", ":material/model_training:"),
    "paper.py": ("Paper", ":material/article:"),
}


def main(root: Path) -> None:
    """One run of the app: `root` holds pages/ (app.py's folder, or the wheel's qvka_app)."""

    def home() -> None:
        st.title("QV-Ka Lab")  # the first paint: drawn before qvka_app.home imports torch
        from qvka_app import home as body

        body.body(root / "pages", PAGES)

    st.set_page_config(page_title="QV-Ka Lab", page_icon=":material/science:", layout="wide")
    pages = [st.Page(home, title="Home", icon=":material/home:", default=True)]
    order = list(PAGES)  # the sidebar lists pages as Home and the README do
    files = sorted((root / "pages").glob("*.py"),
                   key=lambda f: (order.index(f.name) if f.name in PAGES else len(order),
                                  f.name))
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


if __name__ == "__main__":  # `streamlit run .../qvka_app/app.py`: the installed app
    main(routing.UI_ROOT)
