"""Numbers computed from attention probabilities: per-head statistics, divergence between
two variants, attention rollout (Abnar & Zuidema 2020), and helpers for long inputs.

Everything works on numpy arrays of probabilities. Notation: L layers, H heads, T queries,
S keys (S == T for a full forward). A row of an (H, T, S) tensor sums to 1 (masked entries 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from qvka_core.errors import LabError

_EPS = 1e-12


def _as_stack(attentions: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """List of per-layer (H, T, S) arrays -> (L, H, T, S) float64."""
    arr = np.asarray(attentions, dtype=np.float64)
    if arr.ndim != 4:
        raise LabError(f"expected attentions of shape (L, H, T, S), got {arr.shape}")
    return arr


def row_entropy(p: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) over the last axis; 0·log 0 = 0."""
    p = np.asarray(p, dtype=np.float64)
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(-1)


def head_stats(attentions: Sequence[np.ndarray] | np.ndarray, *,
               first_query: int = 0) -> pd.DataFrame:
    """One row per (layer, head): mean entropy, sink share, mean distance, previous-token share.

    - entropy: mean over query rows of the row entropy (nats); uniform over T keys -> ln T.
    - sink: mean attention to key 0 (the first token).
    - distance: mean over queries of sum_j p_ij |i - j| (in tokens).
    - prev: mean over queries i >= 1 of p_{i, i-1}.

    Queries before `first_query` are left out of every mean: a causal model's query 0 can only
    attend to token 0 (entropy 0, sink 1), which says nothing about the head.
    """
    a = _as_stack(attentions)  # (L, H, T, S)
    n_layers, n_heads, t, s = a.shape
    first = min(max(0, first_query), t - 1)  # keep at least one query row
    qi = np.arange(first, t)[:, None] + (s - t)  # absolute query positions (T', 1)
    dist = np.abs(qi - np.arange(s)[None, :])  # (T', S)
    kept = a[..., first:, :]  # (L, H, T', S)
    entropy = row_entropy(kept).mean(-1)  # (L, H)
    sink = kept[..., 0].mean(-1)  # (L, H)
    mean_dist = (kept * dist).sum(-1).mean(-1)  # (L, H)
    if t > 1 and s > 1:
        rows = np.arange(max(1, first), t)
        prev = a[..., rows, rows + (s - t) - 1].mean(-1)  # (L, H)
    else:
        prev = np.zeros((n_layers, n_heads))
    layer, head = np.meshgrid(np.arange(n_layers), np.arange(n_heads), indexing="ij")
    return pd.DataFrame({
        "layer": layer.ravel(), "head": head.ravel(), "entropy": entropy.ravel(),
        "sink": sink.ravel(), "mean_distance": mean_dist.ravel(), "prev_token": prev.ravel(),
    })


def js_divergence_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence (nats, in [0, ln 2]) between rows on the last axis."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> np.ndarray:
        ratio = np.where(a > 0, a / np.maximum(m, _EPS), 1.0)
        return (a * np.log(ratio)).sum(-1)

    return np.clip(0.5 * kl(p) + 0.5 * kl(q), 0.0, None)


def divergence_matrix(
    a: Sequence[np.ndarray] | np.ndarray, b: Sequence[np.ndarray] | np.ndarray
) -> np.ndarray:
    """Per-(layer, head) JS divergence averaged over query rows -> (L, H)."""
    x, y = _as_stack(a), _as_stack(b)
    if x.shape != y.shape:
        raise LabError(
            f"cannot compare attentions of shapes {x.shape} and {y.shape}: the two models "
            "must share layers, heads and tokenizer"
        )
    return js_divergence_rows(x, y).mean(-1)  # (L, H, T) -> (L, H)


def difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Signed difference a - b of two equally shaped attention maps."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise LabError(f"cannot subtract maps of shapes {a.shape} and {b.shape}")
    return a - b


def rollout(attentions: Sequence[np.ndarray] | np.ndarray, residual: float = 0.5) -> np.ndarray:
    """Attention rollout: R_l = Â_l · R_{l-1}, Â = residual·I + (1-residual)·mean_h A, rows
    renormalised. Returns the cumulative maps after each layer, (L, T, T).

    Works for causal (lower-triangular stays lower-triangular) and bidirectional models.
    """
    a = _as_stack(attentions).mean(1)  # (L, T, S), heads averaged
    n_layers, t, s = a.shape
    if t != s:
        raise LabError(f"rollout needs square maps, got {t}×{s}")
    eye = np.eye(t)
    out = np.empty_like(a)
    r = eye
    for i in range(n_layers):
        ah = residual * eye + (1.0 - residual) * a[i]
        ah = ah / np.maximum(ah.sum(-1, keepdims=True), _EPS)
        r = ah @ r
        out[i] = r
    return out


def block_pool(
    matrix: np.ndarray, tokens: Sequence[str], block: int
) -> tuple[np.ndarray, list[str]]:
    """Average a (T, T) map into ceil(T/block)² blocks; labels join the block's tokens.

    Each pooled row is renormalised to sum to 1 so it still reads as a distribution.
    """
    if block < 1:
        raise LabError(f"block size must be >= 1, got {block}")
    m = np.asarray(matrix, dtype=np.float64)
    t = m.shape[0]
    n = -(-t // block)
    pooled = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            pooled[i, j] = m[i * block:(i + 1) * block, j * block:(j + 1) * block].mean()
    pooled = pooled / np.maximum(pooled.sum(-1, keepdims=True), _EPS)
    labels = []
    for i in range(n):
        chunk = "".join(tokens[i * block:(i + 1) * block]).strip()
        span = f"{i * block}-{min(t, (i + 1) * block) - 1}"
        labels.append(f"{span}:{chunk[:14]}" + ("…" if len(chunk) > 14 else ""))
    return pooled, labels


def drop_tokens(matrix: np.ndarray, tokens: Sequence[str], keep: Sequence[bool]
                ) -> tuple[np.ndarray, list[str]]:
    """Remove the rows and columns of the tokens not kept (e.g. [CLS], [SEP], <s>) from a
    (T, T) map and renormalise each row over the keys left (a row that had all its weight on
    removed keys stays zero): attention among the text's own tokens, as exBERT shows it."""
    idx = np.flatnonzero(np.asarray(keep, dtype=bool))
    m = np.asarray(matrix, dtype=np.float64)[np.ix_(idx, idx)]  # (T', T')
    sums = m.sum(-1, keepdims=True)
    m = np.divide(m, sums, out=np.zeros_like(m), where=sums > 0)
    return m, [tokens[i] for i in idx]


def top_k_rows(matrix: np.ndarray, k: int) -> np.ndarray:
    """Keep the k largest weights in each query row, zero the rest (ties keep all)."""
    if k < 1:
        raise LabError(f"top-k must be >= 1, got {k}")
    m = np.asarray(matrix, dtype=np.float64)
    if k >= m.shape[-1]:
        return m.copy()
    kth = np.partition(m, -k, axis=-1)[..., -k][..., None]  # (..., 1)
    return np.where(m >= kth, m, 0.0)


def select(attn_layer: np.ndarray, head: int | None) -> np.ndarray:
    """(H, T, S) -> (T, S): one head, or the mean over heads when head is None."""
    if head is None:
        return attn_layer.mean(0)
    if not 0 <= head < attn_layer.shape[0]:
        raise LabError(f"head {head} out of range: this layer has {attn_layer.shape[0]} heads")
    return attn_layer[head]


def group_order(groups: Sequence[Sequence[int]]) -> tuple[list[int], list[str]]:
    """Display order of heads and a label per head, e.g. "kv0·h1", from kv_groups()."""
    order: list[int] = []
    labels: list[str] = []
    for g, heads in enumerate(groups):
        for h in heads:
            order.append(h)
            labels.append(f"kv{g}·h{h}" if len(groups) > 1 else f"h{h}")
    return order, labels
