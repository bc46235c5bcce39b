"""Token-to-token lines (the "head view" of bertviz, Vig 2019): queries in a left column,
keys in a right one, a line from query i to key j whose opacity is its attention weight.
Several heads overlay in one colour each; `focus` keeps one query's lines only.

Opacity is bucketed (`LEVELS` steps of weight / the largest weight shown) and every panel
shares one pair of axes, so the figure is one trace per (head, opacity level), not one per
line: about 50 ms for six variants of 35 tokens. Lines under half a step are not drawn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

from qvka_core.analysis.figures import style, token_label

LEVELS = 8
SINGLE = "#1f5fa8"
PALETTE = qualitative.D3 + qualitative.Set2  # 18 distinguishable head colours


def segments(m: np.ndarray, *, focus: int | None = None, levels: int = LEVELS,
             scale: float | None = None) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{opacity level 1..levels: (query indices, key indices)} of the lines to draw.

    m: (T, S) weights. Level = round(levels · w / scale) with scale = max(m) unless given;
    lines that round to level 0 (under half a step) are dropped.
    """
    m = np.asarray(m, dtype=np.float64)
    if focus is not None and not 0 <= focus < m.shape[0]:
        return {}
    if focus is not None:
        keep = np.zeros_like(m, dtype=bool)
        keep[focus] = True
        m = np.where(keep, m, 0.0)
    top = float(np.nanmax(m)) if scale is None else scale
    if not top > 0:
        return {}
    level = np.floor(levels * m / top + 0.5).clip(0, levels).astype(int)  # (T, S)
    return {k: tuple(np.nonzero(level == k)) for k in range(1, levels + 1)
            if (level == k).any()}


def _line_trace(lines: list[tuple[float, float, float, float]], *, color: str, opacity: float,
                width: float, name: str) -> go.Scatter:
    """Every (x0, y0, x1, y1) of one colour and opacity as one trace, broken by gaps."""
    xy = np.asarray(lines, dtype=np.float64).reshape(-1, 2, 2)  # (n, [start, end], [x, y])
    pts = np.concatenate([xy, np.full((len(xy), 1, 2), np.nan)], axis=1)  # (n, 3, 2)
    return go.Scatter(x=pts[:, :, 0].ravel(), y=pts[:, :, 1].ravel(), mode="lines",
                      line={"color": color, "width": width}, opacity=opacity,
                      hoverinfo="skip", name=name, legendgroup=name, showlegend=False)


def _tops(m: np.ndarray, tokens: Sequence[str], n: int = 3) -> list[str]:
    """Per query: its n strongest keys, for the hover of the left column."""
    out = []
    for row in np.asarray(m, dtype=np.float64):
        idx = np.argsort(row)[::-1][:n]
        out.append(", ".join(f"{token_label(tokens[j])} {row[j]:.2f}" for j in idx if row[j] > 0))
    return out


STRIDE = 3.2  # x distance between panels: query column, lines, key column, label room


def token_lines(panels: Mapping[str, Sequence[tuple[str, np.ndarray]]],
                tokens: Mapping[str, Sequence[str]], *, focus: int | None = None,
                title: str = "", presentation: bool = False, cols: int = 3) -> go.Figure:
    """One panel per variant: {label: [(head name, (T, T) weights), ...]} over its tokens.

    With one map per panel the lines are one colour; with several, each head has its colour
    (the same head name keeps its colour across panels) and a legend entry to hide it.
    Panel (r, c) draws query i at (c·STRIDE, −(r·(T + 3) + i)) and key j one unit right of
    it, all on one pair of axes, so that lines of one colour and opacity are one trace.
    """
    labels = list(panels)
    cols = min(cols, len(labels))
    rows = -(-len(labels) // cols)
    t_max = max(len(v) for v in tokens.values())
    names = list(dict.fromkeys(name for maps in panels.values() for name, _ in maps))
    colors = {name: (SINGLE if len(names) == 1 else PALETTE[i % len(PALETTE)])
              for i, name in enumerate(names)}
    # One opacity scale for every panel, as the heatmaps share one colour scale: a flat
    # (near-uniform) variant then looks flat next to a peaked one.
    scale = max(float(np.nanmax(m)) for maps in panels.values() for _, m in maps) or 1.0
    lines: dict[tuple[str, int], list[tuple[float, float, float, float]]] = {}
    left_x: list[float] = []
    left_y: list[float] = []
    right_x: list[float] = []
    left_text: list[str] = []
    left_hover: list[str] = []
    right_text: list[str] = []
    titles: list[dict] = []
    for i, label in enumerate(labels):
        r, c = divmod(i, cols)
        x0, y0 = c * STRIDE, -r * (t_max + 3)
        tok = [token_label(t) for t in tokens[label]]
        maps = panels[label]
        for name, m in maps:
            for level, (q, k) in segments(m, focus=focus, scale=scale).items():
                lines.setdefault((name, level), []).extend(
                    (x0, y0 - qi, x0 + 1.0, y0 - ki) for qi, ki in zip(q, k, strict=True))
        mean = np.mean([np.asarray(m, dtype=np.float64) for _, m in maps], axis=0)  # (T, T)
        left_x += [x0] * len(tok)
        left_y += [y0 - j for j in range(len(tok))]
        left_text += ["<b>" + t + "</b>" if focus == j else t for j, t in enumerate(tok)]
        left_hover += [f"{t} → {top}" for t, top in zip(tok, _tops(mean, tok), strict=True)]
        right_x += [x0 + 1.0] * len(tok)
        right_text += tok
        titles.append({"text": label, "x": x0 + 0.5, "y": y0 + 1.6, "xref": "x", "yref": "y",
                       "showarrow": False})
    width = 3.0 if presentation else 2.0
    by_level = sorted(lines.items(), key=lambda item: item[0][1])  # strong lines on top
    traces = [_line_trace(segs, color=colors[name], opacity=level / LEVELS, width=width,
                          name=name) for (name, level), segs in by_level]
    if len(names) > 1:  # legend entries at full opacity; clicking one hides that head
        traces += [go.Scatter(x=[None], y=[None], mode="lines", name=name, legendgroup=name,
                              line={"color": colors[name], "width": 4}) for name in names]
    traces.append(go.Scatter(x=left_x, y=left_y, mode="text", text=left_text,
                             textposition="middle left", showlegend=False,
                             hovertext=left_hover, hoverinfo="text"))
    traces.append(go.Scatter(x=right_x, y=left_y, mode="text", text=right_text,
                             textposition="middle right", showlegend=False, hoverinfo="skip"))
    fig = go.Figure(traces)
    fig.update_layout(
        title=title, annotations=titles, plot_bgcolor="white",
        legend={"title": {"text": "head"}, "itemsizing": "constant"},
        xaxis={"range": [-1.1, (cols - 1) * STRIDE + 2.1], "visible": False},
        yaxis={"range": [-(rows - 1) * (t_max + 3) - t_max + 0.5, 2.2], "visible": False})
    return style(fig, presentation=presentation, height=rows * (120 + 26 * min(t_max, 60)))

