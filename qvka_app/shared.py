"""The page kit: every page's first import (`import qvka_app.shared as ui`), light enough
to run before torch loads. On import it sends a deep link on a fresh server through app.py's
router (routing.py), so the first paint has the router's sidebar; then `page_setup`, error
display (a LabError as an inline message, never a traceback), metric deltas, figures with
their downloads, and the URL state that makes a link reproduce a view.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import streamlit as st

from qvka_app.present import (
    export_size,
    is_presenting,
    table,  # noqa: F401 (re-exported for the pages)
)
from qvka_app.routing import ensure_routed
from qvka_core.errors import LabError

# A deep link on a fresh server runs its page without app.py: reroute before torch loads.
ensure_routed()


# --- URL state -------------------------------------------------------------------------------
def init_from_url(defaults: dict[str, Any], parsers: dict[str, Callable[[str], Any]]) -> None:
    """On a session's first visit, seed widget keys from the query params (else defaults)."""
    flag = "_url_seeded_" + "_".join(sorted(defaults))
    if st.session_state.get(flag):
        return
    st.session_state[flag] = True
    for key, default in defaults.items():
        raw = st.query_params.get(key)
        value = default
        if raw is not None:
            try:
                value = parsers.get(key, str)(raw)
            except (ValueError, TypeError):
                value = default
        st.session_state.setdefault(key, value)


def clamp_int(value: Any, low: int, high: int) -> int:
    """A URL or widget value as an int in [low, high] (garbage -> low): ?layer=-5 is layer 0."""
    try:
        return max(low, min(high, int(value)))
    except (TypeError, ValueError, OverflowError):
        return low


def sync_to_url(**values: Any) -> None:
    """Write the page state into the URL so that a link reproduces the view."""
    for key, value in values.items():
        text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
        if st.query_params.get(key) != text:
            st.query_params[key] = text


def split_list(raw: str) -> list[str]:
    return [x for x in raw.split(",") if x]


def fit_choices(key: str, options: list[str], max_n: int, what: str = "variants") -> None:
    """Make `session_state[key]` (a multiselect's state, maybe seeded from a URL) something
    the widget accepts: known options only, at most `max_n`, order kept (a list the widget
    refuses is a traceback). One inline warning names what was left out."""
    chosen = list(st.session_state.get(key) or [])
    known = [v for v in dict.fromkeys(chosen) if v in options]
    unknown = [v for v in chosen if v not in options]
    kept, extra = known[:max_n], known[max_n:]
    if kept == chosen:
        return
    st.session_state[key] = kept
    notes = []
    if extra:
        notes.append(f"at most {max_n} {what} at once, so {', '.join(extra)} "
                     f"{'was' if len(extra) == 1 else 'were'} left out")
    if unknown:
        notes.append(f"not available here: {', '.join(unknown)}")
    if notes:
        text = "; ".join(notes)
        st.warning(text[0].upper() + text[1:] + ".")


# --- router, errors, downloads -----------------------------------------------------------------
def _leave_pages_directory_mode() -> None:
    ensure_routed()  # every run: a page reached without app.py's router (routing.py)


def page_setup() -> bool:
    """Every page calls this first: the router check. Returns whether presentation mode is
    on (its toggle is app.py's, so that it survives page changes; see present.py)."""
    _leave_pages_directory_mode()
    return is_presenting()


def delta(diff: float, fmt: str, extra: str = "") -> str | None:
    """A metric's delta text, or None when `diff` rounds to zero in `fmt` (Streamlit draws
    any delta, +0 included, with a coloured arrow)."""
    text = format(diff, fmt)
    return text + extra if text.strip("+-0.,%") else None


def show_error(exc: BaseException) -> None:
    st.error(str(exc))


@contextmanager
def guarded(stop: bool = True) -> Iterator[None]:
    """Show a LabError as a message (no traceback); stop the script unless `stop=False`
    (inside a tab, so that the other tabs still render)."""
    try:
        yield
    except LabError as exc:
        show_error(exc)
        if stop:
            st.stop()


def show_figure(fig: Any, name: str, key: str, *, data: dict[str, str] | None = None) -> None:
    """Plot a figure with PNG/SVG (and optional CSV/JSON) downloads under it."""
    # The modebar's camera exports in the browser itself (PNG, no server round trip).
    st.plotly_chart(fig, key=f"chart_{key}", config={
        "displaylogo": False, "toImageButtonOptions": {"format": "png", "filename": name,
                                                       "scale": 2}})
    from qvka_core.analysis import figures

    ok, reason = figures.export_available()
    cols = st.columns(2 + len(data or {}) + (0 if ok else 1))
    if ok:
        for col, fmt, mime in ((cols[0], "png", "image/png"), (cols[1], "svg", "image/svg+xml")):
            col.download_button(f"{fmt.upper()}", data=_exporter(fig, fmt),
                                file_name=f"{name}.{fmt}", mime=mime, key=f"dl_{fmt}_{key}",
                                on_click="ignore")
    else:
        cols[0].download_button("HTML", data=fig.to_html(include_plotlyjs="cdn"),
                                file_name=f"{name}.html", key=f"dl_html_{key}",
                                on_click="ignore")
        cols[1].caption(reason)
    for i, (ext, payload) in enumerate((data or {}).items()):
        cols[2 + i].download_button(ext.upper(), data=payload, file_name=f"{name}.{ext}",
                                    key=f"dl_{ext}_{key}", on_click="ignore")


def _exporter(fig: Any, fmt: str) -> Callable[[], bytes]:
    size = export_size()

    def make() -> bytes:  # deferred: runs only when the user clicks
        from qvka_core.analysis import figures

        return figures.to_image(fig, fmt, size=size)

    return make
