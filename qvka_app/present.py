"""Presentation mode: large type for a talk, kept across pages and in the URL (?present=1).

Imports Streamlit only, so that app.py can draw the sidebar before torch is imported. The
toggle is drawn by the entry point (app.py), not by each page: a widget of the entry point
keeps its state across pages, a page's own widget is reset when the page changes.
"""

from __future__ import annotations

import streamlit as st

KEY = "presentation"
PARAM = "present"

# Streamlit's own text in large type: widget labels, text, captions, tabs, metric tiles.
# Metric values wrap instead of being cut with "…" in narrow columns.
_CSS = """
<style>
[data-testid="stMarkdownContainer"] p, [data-testid="stMarkdownContainer"] li,
[data-testid="stWidgetLabel"] p, [data-testid="stCaptionContainer"],
[data-testid="stMetricLabel"] p, [data-testid="stTab"] p,
[data-testid="stSidebarNav"] span, [data-testid="stAlert"] p { font-size: 1.25rem; }
/* Streamlit >= 1.67 wraps a metric's value in stMarkdownContainer p: without the more specific
   selector the 1.25rem rule above shrinks the number (36 -> 20 px). */
[data-testid="stMetricValue"], [data-testid="stMetricValue"] [data-testid="stMarkdownContainer"] p
{ font-size: 2.5rem; }
h1 { font-size: 3rem; }
/* the Explorer's nine tabs in one row at 1280 px (16 px gaps made the bar scroll, 830 > 820) */
[data-testid="stTabs"] [role="tablist"] { gap: 0.6rem; }
.katex { font-size: 1.6em; }
[data-testid="stMainBlockContainer"] { padding-top: 2.5rem; }  /* 720 px tall screens */
[data-testid="stTable"] th, [data-testid="stTable"] td { font-size: 1.25rem; }
</style>
"""


def presentation_toggle() -> bool:
    """The sidebar toggle, seeded from ?present=1 on a session's first run, written back
    into the URL on every run (page changes drop the query string)."""
    if KEY not in st.session_state:
        st.session_state[KEY] = st.query_params.get(PARAM) in ("1", "true", "on")
    on = st.sidebar.toggle("Presentation mode", key=KEY,
                           help="Large type, fewer controls, high-contrast colours. "
                                "Kept in the URL as ?present=1.")
    if on and st.query_params.get(PARAM) != "1":
        st.query_params[PARAM] = "1"
    elif not on and PARAM in st.query_params:
        del st.query_params[PARAM]
    if on:
        st.html(_CSS)
    return on


# qvka_core.analysis.figures.EXPORT_SIZES' names (not imported: it would import plotly before
# the first paint); tests/test_presentation_layout.py checks that the two agree.
EXPORT_SIZES = ("figure", "16:9 slide", "4:3 slide", "square")


def export_size_picker() -> str:
    """The sidebar's size for every PNG/SVG download (kept across pages like the toggle)."""
    return st.sidebar.selectbox("Figure export size", EXPORT_SIZES, key="export_size",
                                help="PNG/SVG downloads: the figure as drawn (1400 px wide), "
                                     "or a 16:9 / 4:3 slide or a square at 1080 px high.")


def export_size() -> str:
    return str(st.session_state.get("export_size", EXPORT_SIZES[0]))


def is_presenting() -> bool:
    return bool(st.session_state.get(KEY, False))


def table(frame, **dataframe_kw) -> None:
    """A table that reads from the back of the room: in presentation mode an HTML table (its
    type scales with the mode's CSS; a dataframe grid draws on a canvas at a fixed 14 px),
    the first column as its row labels; otherwise the interactive `st.dataframe`."""
    if is_presenting():
        st.table(frame.set_index(frame.columns[0]) if len(frame.columns) > 1 else frame)
    else:
        st.dataframe(frame, hide_index=True, **dataframe_kw)
