"""From an `ExplorerResult` and the page's display options to figures and tables, so the
Explorer page only reads widgets and renders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from qvka_core.analysis import figures, headmatch, lines, stats
from qvka_core.analysis.explorer import ExplorerResult, grouped_heads


@dataclass(frozen=True)
class ViewOptions:
    top_k: int = 0  # 0 = keep every weight
    block: int = 1  # 1 = no pooling
    zoom: tuple[int, int] | None = None  # token range [start, end) of queries and keys
    presentation: bool = False
    hide_special: bool = False  # drop [CLS]/[SEP]/<s> rows and columns, renormalise rows


def prepare(m: np.ndarray, tokens: list[str], opts: ViewOptions,
            special: Sequence[bool] | None = None) -> tuple[np.ndarray, list[str]]:
    """Zoom, then drop special tokens (if asked and `special` flags them), then top-k per
    row, then block pooling: (T, T) -> (T', T')."""
    if opts.zoom is not None:
        s, e = opts.zoom
        m, tokens = m[s:e, s:e], tokens[s:e]
        special = None if special is None else special[s:e]
    if opts.hide_special and special is not None and any(special) and not all(special):
        m, tokens = stats.drop_tokens(m, tokens, [not x for x in special])
    if opts.top_k:
        m = stats.top_k_rows(m, opts.top_k)
    if opts.block > 1:
        m, tokens = stats.block_pool(m, tokens, opts.block)
    return m, tokens


def _shown(res: ExplorerResult, label: str, m: np.ndarray, opts: ViewOptions
           ) -> tuple[np.ndarray, list[str]]:
    """`prepare` for one variant's (T, T) map, with its special-token flags."""
    return prepare(m, res.tokens(label), opts, res.runs[label].special)


def _where(res: ExplorerResult) -> str:
    head = "mean of heads" if res.head is None else f"head {res.head}"
    return f"layer {res.layer}, {head}"


def side_by_side(res: ExplorerResult, opts: ViewOptions) -> go.Figure:
    maps, toks = {}, {}
    for label in res.labels:
        maps[label], toks[label] = _shown(res, label, res.map(label), opts)
    longest = max(len(t) for t in toks.values())
    return figures.side_by_side(maps, toks, presentation=opts.presentation,
                                cols=2 if opts.presentation or longest > 16 else 3,  # readable
                                title=f"Attention, {_where(res)}")


def line_tokens(res: ExplorerResult, opts: ViewOptions) -> list[str]:
    """The tokens the lines view draws (after zoom and pooling), for its focus picker."""
    label = res.labels[0]
    return _shown(res, label, res.map(label), opts)[1]


def token_lines(res: ExplorerResult, opts: ViewOptions, *, every_head: bool = False,
                focus: int | None = None) -> go.Figure:
    """bertviz-style lines per variant: the chosen head (or the mean), or every head of the
    layer overlaid in one colour each; `focus` keeps one query's lines."""
    panels, toks = {}, {}
    for label in res.labels:
        if every_head:
            heads = res.runs[label].attentions[res.layer]  # (H, T, T)
            maps = [(f"head {h}", res.map(label, head=h)) for h in range(heads.shape[0])]
        else:
            maps = [(_where(res), res.map(label))]
        prepared = [(name, *_shown(res, label, m, opts)) for name, m in maps]
        panels[label] = [(name, m) for name, m, _ in prepared]
        toks[label] = prepared[0][2]
    what = f"layer {res.layer}, every head" if every_head else _where(res)
    return lines.token_lines(panels, toks, focus=focus, presentation=opts.presentation,
                             cols=2 if opts.presentation else 3,
                             title=f"Query → key lines, {what} (opacity = weight)")


def difference(res: ExplorerResult, a: str, b: str, opts: ViewOptions,
               perms: np.ndarray | None = None) -> go.Figure:
    """A − B after each map is zoomed, cleared of special tokens and pooled (no top-k), so
    that both sides are the same kind of distribution before they are subtracted. With
    `perms` (from `head_matching`), a chosen head of A is compared with B's matched head."""
    res.difference(a, b)  # LabError if the two tokenise the text differently
    same = ViewOptions(zoom=opts.zoom, block=opts.block, hide_special=opts.hide_special)
    ma, toks = _shown(res, a, res.map(a), same)
    b_head: int | None | str = "current"
    if perms is not None and res.head is not None:
        b_head = int(perms[res.layer, res.head])
    mb, _ = _shown(res, b, res.map(b, head=b_head), same)
    matched = "" if b_head == "current" else f" (B's head {b_head}, matched)"
    return figures.difference_heatmap(ma - mb, toks, presentation=opts.presentation,
                                      title=f"{a} − {b}, {_where(res)}{matched}")


def divergence(res: ExplorerResult, a: str, b: str, opts: ViewOptions,
               perms: np.ndarray | None = None) -> tuple[go.Figure, float]:
    """Per-head JS divergence (L, H) of a vs b and its mean, in bits (0 = same maps, 1 =
    disjoint), the unit the Convert page's fidelity report uses too; with `perms`, against
    B's heads matched to A's."""
    if perms is None:
        m = res.divergence(a, b) / np.log(2)  # (L, H), nats -> bits
    else:
        res.divergence(a, b)  # LabError if the two tokenise the text differently
        b_matched = headmatch.permute(res.runs[b].attentions, perms)
        m = stats.divergence_matrix(res.runs[a].attentions, b_matched) / np.log(2)  # (L, H)
    how = ", B's heads matched to A's" if perms is not None else ""
    fig = figures.matrix_figure(
        m, x_title="head", y_title="layer", presentation=opts.presentation, fmt=".2f",
        title=f"Jensen–Shannon divergence {a} vs {b}{how} (bits: 0 same, 1 disjoint)")
    return fig, float(m.mean())


ALIGNMENT_NOTE = (
    "Heads of independently trained models are not aligned: head i of A has no reason to do "
    "the job of head i of B (a layer's heads can be permuted without changing the model). "
    "Variants converted from one base keep its head order; for others, match heads by "
    "similarity before reading the per-head numbers.")


def head_matching(res: ExplorerResult, a: str, b: str) -> tuple[np.ndarray, pd.DataFrame]:
    """Per layer, B's head matched to each head of A (min total JS divergence on this text),
    as (L, H) and as a table: one row per layer, column "A head i" = B's head."""
    res.divergence(a, b)  # LabError if the two cannot be compared
    perms = headmatch.match_heads(res.runs[a].attentions, res.runs[b].attentions)  # (L, H)
    table = pd.DataFrame(perms, columns=[f"A head {i}" for i in range(perms.shape[1])])
    table.insert(0, "layer", range(perms.shape[0]))
    return perms, table


def matching_summary(perms: np.ndarray, before: float, after: float, head: int | None) -> str:
    """One line: how many heads moved, and the mean divergence before and after matching."""
    moved = int((perms != np.arange(perms.shape[1])).sum())
    note = ("" if head is not None else " The map above is the mean of heads, the same under "
            "any permutation: pick one head to see its matched difference.")
    return (f"{moved} of {perms.size} heads matched to a different index in B; mean JS "
            f"divergence {before:.4f} bits before matching, {after:.4f} after. The table gives, "
            f"per layer, the head of B matched to each head of A.{note}")


def overview(res: ExplorerResult, label: str, opts: ViewOptions) -> go.Figure:
    run = res.runs[label]
    order, labels = stats.group_order(run.groups[0])
    return figures.overview_grid(run.attentions, order, labels, presentation=opts.presentation,
                                 title=f"{label}: every layer × head (heads ordered by KV group)")


def variant_shares(variant: str) -> str:
    """What the variant's grouped heads share (its spec's `shares`; "KV" if unregistered)."""
    from qvka_core.errors import ConfigError
    from qvka_core.variants import get_variant

    try:
        return get_variant(variant).shares
    except ConfigError:  # a run of a variant this install does not register
        return "KV"


def groups(res: ExplorerResult, label: str, opts: ViewOptions) -> tuple[go.Figure, str]:
    """The chosen layer's heads laid out by the KV head / latent they share, plus a caption."""
    run = res.runs[label]
    g, shares = run.groups[res.layer], variant_shares(run.variant)
    order, labels = stats.group_order(g)
    fig = figures.overview_grid([run.attentions[res.layer]], order, labels, max_side=32,
                                presentation=opts.presentation,
                                layer_labels=[f"layer {res.layer}"],
                                title=f"{label}, layer {res.layer}: heads grouped by shared "
                                      f"{shares}")
    caption = f"layer {res.layer}: " + "; ".join(f"{name}: heads {', '.join(map(str, heads))}"
                                                 for name, heads in grouped_heads(g, shares))
    return fig, caption


STATS_DECIMALS = {"entropy": 3, "sink": 3, "mean_distance": 2, "prev_token": 3}


def stats_table(res: ExplorerResult, layer_only: bool = True) -> pd.DataFrame:
    """Per-head statistics of every variant (the chosen layer, or all), each column rounded to
    its own fixed number of decimals (`STATS_DECIMALS`); causal runs leave out query 0."""
    frames = []
    for label, run in res.runs.items():
        df = run.stats.copy()
        if layer_only:
            df = df[df["layer"] == res.layer]
        df.insert(0, "variant", label)
        frames.append(df)
    return pd.concat(frames, ignore_index=True).round(STATS_DECIMALS)


def stats_caption(res: ExplorerResult) -> str:
    """What the Statistics columns mean, and which query rows they average over."""
    causal = [label for label, run in res.runs.items() if run.causal]
    rows = ("every query row" if not causal else
            "query rows 1… (query 0 left out: under a causal mask it can only attend to "
            "itself, which would inflate sink and deflate entropy)" if len(causal) == len(res.runs)
            else f"query rows 1… for the causal {', '.join(causal)} (query 0 can only attend "
            "to itself), every row for the others")
    return (f"Means over {rows}. entropy in nats (uniform over T keys = ln T); sink = weight on "
            "the first token; mean_distance in tokens; prev_token = weight on the previous "
            "token. Decimals: " + ", ".join(f"{k} {v}" for k, v in STATS_DECIMALS.items()) + ".")


def rollout(res: ExplorerResult, opts: ViewOptions) -> go.Figure:
    maps, toks = {}, {}
    for label in res.labels:
        maps[label], toks[label] = _shown(res, label, res.rollout(label), ViewOptions(
            zoom=opts.zoom, block=opts.block, hide_special=opts.hide_special))
    return figures.side_by_side(maps, toks, presentation=opts.presentation,
                                cols=2 if opts.presentation else 3,
                                title=f"Attention rollout through layer {res.layer} "
                                "(0.5·I + 0.5·A, heads averaged)")


def pos_lens(res: ExplorerResult, text: str, opts: ViewOptions
             ) -> tuple[dict[str, go.Figure], str]:
    """One POS-pair matrix per variant on a shared colour scale, and a caption."""
    frames = {label: res.pos_pairs(label, text, opts.hide_special) for label in res.labels}
    zmax = max(float(np.nanmax(df.to_numpy())) for df in frames.values())
    figs = {label: figures.matrix_figure(df, x_title="key POS", y_title="query POS",
                                         presentation=opts.presentation, title=label,
                                         zmax=zmax, fmt=".0%" if opts.presentation else ".2f")
            for label, df in frames.items()}
    special = ("special tokens hidden, rows renormalised" if opts.hide_special
               else "SPECIAL = tokens without text ([CLS], <s>)")
    caption = (f"Mean attention mass from query tokens of one POS to key tokens of another, "
               f"{_where(res)}; rows sum to 1; {special}.")
    return figs, caption
