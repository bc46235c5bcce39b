"""Deep links on a fresh server go through app.py's router, with no Streamlit internal.

Imports Streamlit only, so that the check runs before anything imports torch.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

_HERE = Path(__file__).resolve().parent
# The folder holding the main script and pages/: the installed wheel ships pages/ inside this
# package (qvka_app/pages, main script qvka_app/app.py); a checkout has them at its top.
UI_ROOT = _HERE if (_HERE / "pages").is_dir() else _HERE.parent
MAIN_SCRIPT = UI_ROOT / "app.py"
ROUTED = "_routed_by_app"  # session_state flag: this script run goes through app.py's router
_REROUTED = "_rerouted_once"


def ensure_routed() -> None:
    """Until some session runs app.py, Streamlit treats the pages/ folder as the old
    auto-discovered navigation and runs a deep-linked page (/explorer?...) on its own, without
    app.py's router and page config. app.py marks the runs it routes (`ROUTED`); a page run
    without that mark declares the navigation (public `st.navigation`, which ends the folder
    mode for the server) and reruns, this time through app.py. Once per session, so a page
    run as the main script (AppTest) draws as it is."""
    if not st.runtime.exists() or st.session_state.get(ROUTED) or st.session_state.get(
            _REROUTED):
        return  # imported outside a server, routed, or already rerouted once
    st.session_state[_REROUTED] = True
    st.navigation([st.Page(str(MAIN_SCRIPT), default=True),  # the same pages as app.py,
                   *(st.Page(str(f)) for f in sorted((UI_ROOT / "pages").glob("*.py")))],
                  position="hidden")  # so the rerun keeps the deep-linked page
    st.rerun()
