"""Plotly figures for the Explorer (no Streamlit here) and their PNG/SVG export.

Axes are numeric with token tick labels, so repeated tokens ("the", "the") keep their own
rows. Rows are queries (top to bottom), columns keys. `presentation=True` gives large type
and a high-contrast colour scale.

Static export uses kaleido 1.x, which drives a local Chromium (Debian's /usr/bin/chromium
works offline); `export_available()` says whether it can run here.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from qvka_core.errors import LabError


def rgb_scale(name: str) -> list[list]:
    """A named plotly colour scale with every stop written as rgb(): Streamlit's frontend
    misreads some hex stops (Inferno's '#000004' is drawn pink), so none is sent as hex."""
    from plotly.colors import get_colorscale, hex_to_rgb

    return [[pos, c if c.startswith("rgb") else "rgb({}, {}, {})".format(*hex_to_rgb(c))]
            for pos, c in get_colorscale(name)]


SCALE = rgb_scale("Blues")
SCALE_PRESENTATION = rgb_scale("Inferno")  # dark = low, bright = high: reads on a projector
DIVERGING = rgb_scale("RdBu_r")
_EXPORT_LOCK = threading.Lock()


def token_label(tok: str) -> str:
    """A token as drawn: stripped, a blank one as ␣."""
    t = tok.strip()
    return t if t else "␣"


def _ticks(tokens: Sequence[str], max_ticks: int = 64) -> dict:
    step = max(1, -(-len(tokens) // max_ticks))
    idx = list(range(0, len(tokens), step))
    return {"tickmode": "array", "tickvals": idx, "ticktext": [token_label(tokens[i]) for i in idx]}


FONT = 12  # px, normal mode
FONT_PRESENTATION = 20  # px: reads from the back row (the issue asks >= 20 px at any width)
INK_PRESENTATION = "#111111"  # black text, not the theme's light grey, on a projector


def font_size(presentation: bool) -> int:
    return FONT_PRESENTATION if presentation else FONT


def style(fig: go.Figure, *, presentation: bool = False, height: int | None = None
          ) -> go.Figure:
    """Common layout; presentation mode enlarges every font.

    Each text element gets its size explicitly (ticks, axis titles, legend, hover labels,
    colour bar, cell and point texts): Streamlit's chart theme sets tick fonts of its own,
    which a layout-wide font size alone does not override. Axes grow their margins to fit
    their labels (automargin), so a static export clips nothing.
    """
    size = font_size(presentation)
    ink = {"color": INK_PRESENTATION} if presentation else {}
    # The empty "none" template: plotly.js defaults are already white with light grids, and a
    # named template is deep-copied into every figure (tens of ms each on the Costs page).
    fig.update_layout(
        # b: margins are max(b, what automargin measures), and its measure of a bottom axis
        # title leaves the descenders ("y" of "key") outside: so at least ticks + title.
        font={"size": size, **ink}, margin={"l": 10, "r": 10, "t": 50 + 2 * (size - FONT),
                                            "b": 3 * size + 24},
        template="none", height=height, hoverlabel={"font": {"size": size}},
        legend={"font": {"size": size}, "title": {"font": {"size": size}}},
        title={"font": {"size": size + 4}},
    )
    axis = {"tickfont": {"size": size, **ink}, "title": {"font": {"size": size, **ink}},
            "automargin": True}
    fig.update_xaxes(**axis)
    fig.update_yaxes(**axis)
    if presentation:  # log axes label 2 and 5 between decades at 3/4 size: decades only
        fig.for_each_xaxis(lambda ax: ax.update(dtick=1) if ax.type == "log" else None)
        fig.for_each_yaxis(lambda ax: ax.update(dtick=1) if ax.type == "log" else None)
    fig.update_coloraxes(colorbar={"tickfont": {"size": size, **ink}})
    fig.update_traces(colorbar={"tickfont": {"size": size, **ink}}, selector={"type": "heatmap"})
    fig.update_traces(textfont={"size": size}, selector={"type": "heatmap"})
    fig.update_traces(textfont={"size": size}, selector={"type": "scatter"})
    fig.update_annotations(font_size=size + 2)
    return fig


def _heat_trace(m: np.ndarray, q_tok: Sequence[str], k_tok: Sequence[str], *,
                scale: str, zmin: float | None, zmax: float | None, zmid: float | None,
                coloraxis: str | None = None) -> go.Heatmap:
    t, s = m.shape
    custom = np.empty((t, s, 2), dtype=object)  # (T, S, 2): query token, key token
    custom[:, :, 0] = np.asarray([token_label(x) for x in q_tok], dtype=object)[:, None]
    custom[:, :, 1] = np.asarray([token_label(x) for x in k_tok], dtype=object)[None, :]
    kw = {"coloraxis": coloraxis} if coloraxis else {
        "colorscale": scale, "zmin": zmin, "zmax": zmax, "zmid": zmid}
    return go.Heatmap(
        z=m, customdata=custom,
        hovertemplate="%{customdata[0]} → %{customdata[1]}: %{z:.3f}<extra></extra>", **kw,
    )


def heatmap(m: np.ndarray, q_tokens: Sequence[str], k_tokens: Sequence[str] | None = None,
            *, title: str = "", presentation: bool = False, diverging: bool = False
            ) -> go.Figure:
    """(T, S) map; hover reads "query → key: weight"."""
    m = np.asarray(m, dtype=np.float64)
    k_tokens = q_tokens if k_tokens is None else k_tokens
    if diverging:
        lim = float(np.nanmax(np.abs(m))) or 1e-9
        trace = _heat_trace(m, q_tokens, k_tokens, scale=DIVERGING, zmin=-lim, zmax=lim,
                            zmid=0.0)
    else:
        scale = SCALE_PRESENTATION if presentation else SCALE
        trace = _heat_trace(m, q_tokens, k_tokens, scale=scale, zmin=0.0, zmax=None, zmid=None)
    fig = go.Figure(trace)
    most = 32 if presentation else 64
    fig.update_xaxes(title_text="key", **_ticks(k_tokens, most), tickangle=-60)
    fig.update_yaxes(title_text="query", autorange="reversed", **_ticks(q_tokens, most))
    fig.update_layout(title=title)
    side = 260 + 14 * min(len(q_tokens), 60)
    return style(fig, presentation=presentation, height=side)


def _label_room(tokens: Sequence[str], size: int, angle: float = 0.0) -> float:
    """Pixels a tick label of the longest token needs across its axis, rotated by `angle`
    degrees from horizontal (a character is about 0.62 em wide)."""
    longest = max((len(token_label(t)) for t in tokens), default=1)
    return longest * 0.62 * size * abs(np.cos(np.radians(angle))) + size


NOMINAL_WIDTH = 1200  # px: the Explorer's figure width on a 1280-wide screen, and less than
# any export width, so that spacing computed against it is enough in both


def side_by_side(maps: Mapping[str, np.ndarray], tokens: Mapping[str, Sequence[str]], *,
                 presentation: bool = False, cols: int = 3, title: str = "") -> go.Figure:
    """One heatmap per variant on a shared colour scale (0 .. max).

    When every panel has the same tokens (one tokenizer), only the first column carries
    query labels and only the lowest panel of each column key labels, so no label is drawn
    over a neighbour. Gaps between panels are computed from the labels they must hold.
    """
    labels = list(maps)
    cols = min(cols, len(labels))
    rows = -(-len(labels) // cols)
    size = font_size(presentation)
    first = list(tokens[labels[0]])
    same = all(list(tokens[label]) == first for label in labels)
    every = [t for label in labels for t in tokens[label]]
    t = max(len(v) for v in tokens.values())
    panel = 280 + (14 if presentation else 10) * min(t, 50)  # px per row
    height = rows * panel
    x_room = _label_room(every, size, 30)  # -60° ticks: sin 60° of the length downwards
    title_room = 2.2 * (size + 2)
    gap_x = (24 if same else _label_room(every, size) + 24) / NOMINAL_WIDTH
    labelled_above = not same or len(labels) % cols != 0  # a non-bottom panel shows keys
    gap_y = (title_room + (x_room if labelled_above else 0)) / height if rows > 1 else 0.1
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=labels,
                        horizontal_spacing=min(0.3, gap_x),
                        vertical_spacing=min(0.5 / max(1, rows - 1), gap_y))
    zmax = max(float(np.nanmax(m)) for m in maps.values()) or 1.0
    most = 20 if presentation else 40  # large type: every other label at most
    for i, label in enumerate(labels):
        r, c = divmod(i, cols)
        tok = tokens[label]
        fig.add_trace(_heat_trace(np.asarray(maps[label], dtype=np.float64), tok, tok,
                                  scale="", zmin=None, zmax=None, zmid=None,
                                  coloraxis="coloraxis"), row=r + 1, col=c + 1)
        keys = i + cols >= len(labels) or not same  # nothing below it in its column
        queries = c == 0 or not same
        fig.update_xaxes(**_ticks(tok, most), tickangle=-60, row=r + 1, col=c + 1,
                         showticklabels=keys, ticks="outside" if keys else "")
        fig.update_yaxes(**_ticks(tok, most), autorange="reversed", row=r + 1, col=c + 1,
                         showticklabels=queries, ticks="outside" if queries else "")
    scale = SCALE_PRESENTATION if presentation else SCALE
    fig.update_layout(coloraxis={"colorscale": scale, "cmin": 0.0, "cmax": zmax}, title=title)
    return style(fig, presentation=presentation, height=int(height + x_room))


def difference_heatmap(diff: np.ndarray, tokens: Sequence[str], *, title: str = "",
                       presentation: bool = False) -> go.Figure:
    """Signed difference, diverging scale centred at 0."""
    return heatmap(diff, tokens, title=title, presentation=presentation, diverging=True)


def matrix_figure(m: np.ndarray | pd.DataFrame, *, x_title: str, y_title: str, title: str = "",
                  x_labels: Sequence[str] | None = None, y_labels: Sequence[str] | None = None,
                  presentation: bool = False, scale: str | None = None, fmt: str = ".2f",
                  zmax: float | None = None) -> go.Figure:
    """Small annotated matrix (divergence layers × heads, POS pairs, statistics)."""
    if isinstance(m, pd.DataFrame):
        x_labels = [str(c) for c in m.columns] if x_labels is None else x_labels
        y_labels = [str(i) for i in m.index] if y_labels is None else y_labels
        m = m.to_numpy(dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    x_labels = list(x_labels) if x_labels is not None else [str(i) for i in range(m.shape[1])]
    y_labels = list(y_labels) if y_labels is not None else [str(i) for i in range(m.shape[0])]
    text = [[("" if np.isnan(v) else format(v, fmt)) for v in row] for row in m]
    fig = go.Figure(go.Heatmap(
        z=m, x=x_labels, y=y_labels, text=text, texttemplate="%{text}",
        colorscale=rgb_scale(scale) if scale else (SCALE_PRESENTATION if presentation else SCALE),
        zmin=0.0 if zmax is not None else None, zmax=zmax,
        hovertemplate=f"{y_title} %{{y}} · {x_title} %{{x}}: %{{z:{fmt}}}<extra></extra>",
    ))
    fig.update_xaxes(title_text=x_title, type="category")
    fig.update_yaxes(title_text=y_title, type="category", autorange="reversed")
    fig.update_layout(title=title)
    row = 42 if presentation else 28  # px: a cell holds its number in the page's type size
    return style(fig, presentation=presentation, height=200 + row * min(len(y_labels), 30))


def overview_grid(attentions: Sequence[np.ndarray], head_order: Sequence[int],
                  head_labels: Sequence[str], *, max_side: int = 24, title: str = "",
                  presentation: bool = False,
                  layer_labels: Sequence[str] | None = None) -> go.Figure:
    """All layers × heads as one mosaic (one trace: fast even for 30 × 16 heads).

    Maps longer than `max_side` tokens are average-pooled so each tile stays small. Rows are
    labelled L0, L1, ... unless `layer_labels` names them (e.g. one chosen layer: ["L5"]).
    """
    n_layers = len(attentions)
    t = attentions[0].shape[-1]
    block = max(1, -(-t // max_side))
    n = -(-t // block)
    gap = 1
    mosaic = np.full((n_layers * (n + gap), len(head_order) * (n + gap)), np.nan)
    for li, a in enumerate(attentions):
        a = np.asarray(a, dtype=np.float64)
        pad = n * block - t
        a = np.pad(a, ((0, 0), (0, pad), (0, pad)))  # (H, n·block, n·block)
        pooled = a.reshape(a.shape[0], n, block, n, block).mean((2, 4))  # (H, n, n)
        for col, h in enumerate(head_order):
            r0, c0 = li * (n + gap), col * (n + gap)
            mosaic[r0:r0 + n, c0:c0 + n] = pooled[h]
    scale = SCALE_PRESENTATION if presentation else SCALE
    fig = go.Figure(go.Heatmap(z=mosaic, colorscale=scale, zmin=0.0, hoverongaps=False,
                               hovertemplate="%{z:.3f}<extra></extra>"))
    fig.update_xaxes(tickmode="array", tickvals=[c * (n + gap) + n / 2 for c in
                                                 range(len(head_order))],
                     ticktext=list(head_labels), tickangle=-60, showgrid=False)
    fig.update_yaxes(tickmode="array", tickvals=[li * (n + gap) + n / 2 for li in
                                                 range(n_layers)],
                     ticktext=list(layer_labels or [f"L{li}" for li in range(n_layers)]),
                     autorange="reversed",
                     showgrid=False)
    fig.update_layout(title=title)
    return style(fig, presentation=presentation,
                 height=min(1400, 160 + n_layers * max(40, 70 if len(head_order) < 10 else 45)))


# --- static export ----------------------------------------------------------------------------
def _chrome_path() -> str | None:
    for env in ("BROWSER_PATH", "CHROME_PATH"):
        if os.environ.get(env):
            return os.environ[env]
    return shutil.which("chromium") or shutil.which("google-chrome") or shutil.which("chrome")


def export_available() -> tuple[bool, str]:
    """(ok, reason): kaleido importable and a Chromium to drive."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False, "PNG/SVG export needs the kaleido package (pip install kaleido)"
    if _chrome_path() is None:
        return False, "PNG/SVG export needs Chromium (apt-get install chromium)"
    return True, ""


_SERVER: list[bool] = []  # [True] once kaleido's browser is kept running in this process


def _start_export_server() -> None:
    """Keep one headless Chromium for every export of this process: kaleido otherwise
    starts a browser per figure (seconds each; about 0.2 s per figure once it runs)."""
    if _SERVER:
        return
    _SERVER.append(True)
    try:
        import warnings

        import kaleido

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kaleido.start_sync_server(silence_warnings=True)
    except Exception:  # noqa: BLE001 - an older kaleido: one browser per export still works
        pass


EXPORT_SIZES: dict[str, tuple[int, int] | None] = {  # name -> (width, height) in px
    "figure": None,  # the figure's own height, EXPORT_WIDTH wide
    "16:9 slide": (1920, 1080),
    "4:3 slide": (1440, 1080),
    "square": (1080, 1080),
}
EXPORT_WIDTH = 1400


def export_size(fig: go.Figure, size: str = "figure") -> tuple[int, int]:
    """(width, height) in px of an export at `size` (a key of EXPORT_SIZES)."""
    if size not in EXPORT_SIZES:
        raise LabError(f"export size must be one of {', '.join(EXPORT_SIZES)}, got {size!r}")
    fixed = EXPORT_SIZES[size]
    if fixed is not None:
        return fixed
    return int(fig.layout.width or EXPORT_WIDTH), int(fig.layout.height or 500)


def to_image(fig: go.Figure, fmt: str = "png", *, scale: float = 2.0, size: str = "figure"
             ) -> bytes:
    """PNG or SVG bytes at `size`; raises LabError with the reason when export cannot run.

    The width is set explicitly (kaleido's default is 700 px, narrower than the page, which
    squeezed several panels into their neighbours' labels); the margins grow to the labels
    (see `style`), so nothing is clipped at the frame.
    """
    if fmt not in ("png", "svg"):
        raise LabError(f"export format must be png or svg, got {fmt!r}")
    width, height = export_size(fig, size)
    ok, reason = export_available()
    if not ok:
        raise LabError(reason)
    os.environ.setdefault("BROWSER_PATH", _chrome_path() or "")
    with _EXPORT_LOCK:  # one headless browser at a time on a small machine
        _start_export_server()
        try:
            return fig.to_image(format=fmt, width=width, height=height,
                                scale=scale if fmt == "png" else 1.0)
        except Exception as exc:  # kaleido/choreographer raise assorted errors
            raise LabError(f"figure export failed: {exc}") from exc
