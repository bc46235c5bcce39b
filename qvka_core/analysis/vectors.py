"""What each query is matched against, as one 2-D picture per variant: the "match space".

The paper's claim (arXiv 2603.15665, abstract) is that the key is the value after "deep matching":
QV scores queries against the values themselves, QV-Ka against keys derived from [G ; V].
This module captures, for one layer and head, the query vectors and the vectors they are
scored against (whatever the variant feeds its kernel) and draws both in one plane.

The projection follows AttentionViz (Yeh et al., 2023). Softmax over the keys is unchanged
when every key moves by one vector c (each query's scores all shift by q·c) and when queries
are divided by s and keys multiplied by s. So keys are first moved to the queries' centroid
and both sets scaled to equal spread; then one PCA of [queries ; keys] gives the plane.
Lines join each query to the key it attends to most, read from the model's own
probabilities, so the picture can be checked against the heatmap.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from qvka_core.analysis import figures
from qvka_core.analysis.explorer import LoadedLike, token_limit
from qvka_core.attention.base import MATCHED, AttentionBase
from qvka_core.errors import LabError

MAX_LABELLED_POINTS = 24  # beyond this many tokens, points carry their token on hover only


@dataclass(frozen=True)
class MatchVectors:
    """One layer of one model on one text (numpy, picklable for Streamlit's cache)."""

    tokens: list[str]
    queries: np.ndarray  # (H, T, Dq) float32, after RoPE where the model uses it
    keys: np.ndarray  # (Hk, T, Dq) what the kernel scores the queries against
    probs: np.ndarray  # (H, T, T) the attention probabilities of the same forward
    special: tuple[bool, ...] = ()  # per token: added by the tokenizer ([CLS], <s>), no text

    def head(self, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(queries (T, D), keys (T, D), probs (T, T)) of query head h, with its shared key."""
        n_heads, n_keys = self.queries.shape[0], self.keys.shape[0]
        if not 0 <= h < n_heads:
            raise LabError(f"head must be in 0..{n_heads - 1}, got {h}")
        return self.queries[h], self.keys[h * n_keys // n_heads], self.probs[h]


@contextmanager
def _matching(attn: AttentionBase) -> Iterator[list]:
    """The (q, k, v) that `attn` scores during the block, in this thread only."""
    calls: list = []
    token = MATCHED.set((attn, calls))
    try:
        yield calls
    finally:
        MATCHED.reset(token)


def capture(loaded: LoadedLike, text: str, layer: int) -> MatchVectors:
    """One eager forward of `loaded` on `text`, keeping layer `layer`'s q, matched k, probs."""
    if not text.strip():
        raise LabError("enter some text to explore")
    layers = loaded.model.layers
    if not 0 <= layer < len(layers):
        raise LabError(f"layer must be in 0..{len(layers) - 1}, got {layer}")
    enc = loaded.tokenizer.encode(text)
    ids = list(enc.ids)[: token_limit(loaded)]
    if not ids:
        raise LabError("the text produced no tokens")
    with _matching(layers[layer].attn) as calls, torch.inference_mode():
        out = loaded.model(torch.tensor([ids]), impl="eager", return_attentions=True)
    q, k, _ = calls[0]  # (1, H, T, D), (1, Hk, T, D)
    offsets = list(enc.offsets)[: len(ids)]
    return MatchVectors(tokens=list(enc.tokens)[: len(ids)], queries=q[0].float().numpy(),
                        keys=k[0].float().numpy(), probs=out.attentions[layer][0].float().numpy(),
                        special=tuple(s == e for s, e in offsets))


def joint_plane(q: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """q (T, D), k (S, D) -> their points in one plane, (T, 2) and (S, 2), and the share of
    variance each of the two axes keeps (2,). Scores q·k are invariant under both steps."""
    q, k = q.astype(np.float64), k.astype(np.float64)
    k = k - k.mean(0)  # every query's scores shift by one constant: softmax unchanged
    spread_q = np.linalg.norm(q - q.mean(0), axis=1).mean()
    spread_k = np.linalg.norm(k, axis=1).mean()
    s = np.sqrt(spread_q / spread_k) if min(spread_q, spread_k) > 1e-12 else 1.0  # 1 token: 1.0
    q, k = q / s, k * s  # equal spreads; q·k unchanged
    k = k + q.mean(0)  # keys centred where the queries are
    x = np.concatenate([q, k])  # (T + S, D)
    x = x - x.mean(0)
    _, sv, vt = np.linalg.svd(x, full_matrices=False)
    axes = np.zeros((2, x.shape[1]))
    axes[: min(2, len(vt))] = vt[:2]
    xy = x @ axes.T  # (T + S, 2)
    total = float((sv**2).sum())
    share = np.array([(sv[i] ** 2) / total if total > 0 and i < len(sv) else 0.0
                      for i in range(2)])
    return xy[: len(q)], xy[len(q):], share


def figure(vectors: Mapping[str, MatchVectors], head: int, *, presentation: bool = False,
           hide_special: bool = False) -> go.Figure:
    """One panel per variant: queries (circles), the keys they are matched against
    (diamonds), and a line from each query to the key it attends to most. `hide_special`
    leaves out the tokenizer's special tokens, and the top key is chosen among those left."""
    labels = list(vectors)
    cols = min(1 if presentation else 3, len(labels))  # large type: one panel a row
    rows = -(-len(labels) // cols)
    titles, panels, shown = [], [], {}
    for label in labels:
        q, k, p = vectors[label].head(head)
        toks, special = vectors[label].tokens, vectors[label].special
        if hide_special and any(special) and not all(special):
            keep = np.flatnonzero(~np.asarray(special))
            q, k, p, toks = q[keep], k[keep], p[np.ix_(keep, keep)], [toks[i] for i in keep]
        qxy, kxy, share = joint_plane(q, k)
        panels.append((qxy, kxy, p.argmax(axis=1)))
        shown[label] = toks
        titles.append(f"{label} · {100 * share.sum():.0f}% of variance")  # short: 3 a row
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles,
                        horizontal_spacing=0.06, vertical_spacing=0.12)
    size = 13 if presentation else 9
    for i, (label, (qxy, kxy, top)) in enumerate(zip(labels, panels, strict=True)):
        r, c = divmod(i, cols)
        toks = [figures.token_label(t) for t in shown[label]]
        mode = "markers+text" if len(toks) <= MAX_LABELLED_POINTS else "markers"
        lx = [v for j, t in enumerate(top) for v in (qxy[j, 0], kxy[t, 0], None)]
        ly = [v for j, t in enumerate(top) for v in (qxy[j, 1], kxy[t, 1], None)]
        fig.add_trace(go.Scatter(x=lx, y=ly, mode="lines", hoverinfo="skip", showlegend=i == 0,
                                 name="query → its top key", line={"color": "#bbbbbb",
                                                                   "width": 1}), r + 1, c + 1)
        for name, xy, color, symbol, pos in (("query", qxy, "#1f77b4", "circle", "top center"),
                                             ("key", kxy, "#ff7f0e", "diamond", "bottom center")):
            hover = [f"{name} {j}: {tok}" + (f" → key {top[j]}: {toks[top[j]]}"
                                             if name == "query" else "")
                     for j, tok in enumerate(toks)]
            fig.add_trace(go.Scatter(
                x=xy[:, 0], y=xy[:, 1], mode=mode, text=toks, textposition=pos,
                hovertext=hover, hoverinfo="text", name=name, showlegend=i == 0,
                marker={"color": color, "symbol": symbol, "size": size}), r + 1, c + 1)
        x_axis = "x" if i == 0 else f"x{i + 1}"
        both = np.concatenate([qxy, kxy])  # (2T, 2)
        low, high = both.min(0), both.max(0)
        pad = 0.15 * (high - low).max() + 1e-9  # room for the token labels at the edges
        fig.update_xaxes(range=[low[0] - pad, high[0] + pad], row=r + 1, col=c + 1)
        fig.update_yaxes(range=[low[1] - pad, high[1] + pad], scaleanchor=x_axis,
                         scaleratio=1, row=r + 1, col=c + 1)  # true angles
    fig.update_xaxes(showticklabels=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, zeroline=False)
    if presentation:  # the legend under the panels, not beside them in a narrow window
        fig.update_layout(legend={"orientation": "h", "yanchor": "top", "y": -0.02,
                                  "x": 0})
    return figures.style(fig, presentation=presentation,
                         height=max(360, (440 if presentation else 340) * rows))


def caption(layer: int, head: int | None) -> str:
    """What the match-space panels show; `head=None` (the mean of heads) shows head 0."""
    which = f"head {head}" if head is not None else "head 0 (a mean of heads has no vectors)"
    return (f"Layer {layer}, {which}. Each query (●) and what it is scored against (◆): the "
            "keys for MHA/GQA/MQA/MLA, the values themselves for QV (rotated under RoPE), "
            "keys derived from [G ; V] for QV-Ka. Keys are shifted and scaled as softmax "
            "allows, then one PCA of both sets; a line joins each query to the key it "
            "attends to most (from the model's own probabilities).")
