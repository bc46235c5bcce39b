"""Attention tensors to CSV (long format) and JSON, for papers and notebooks."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd

CSV_COLUMNS = ["layer", "head", "query_index", "query_token", "key_index", "key_token", "weight"]


MAX_CSV_ROWS = 2_000_000  # beyond this the page exports the chosen layer only


def attention_long(
    attentions: Sequence[np.ndarray], tokens: Sequence[str], *, drop_zeros: bool = True,
    first_layer: int = 0,
) -> pd.DataFrame:
    """Per-layer (H, T, S) arrays -> one row per (layer, head, query, key) weight.

    Masked (exactly zero) weights are dropped by default so causal exports stay half-size.
    `first_layer` numbers the layers when a slice of the model is exported.
    """
    frames = []
    for layer, a in enumerate(attentions, start=first_layer):
        h, t, s = a.shape
        hh, qq, kk = np.meshgrid(np.arange(h), np.arange(t), np.arange(s), indexing="ij")
        frame = pd.DataFrame({
            "layer": layer, "head": hh.ravel(), "query_index": qq.ravel(),
            "key_index": kk.ravel(), "weight": np.asarray(a, dtype=np.float64).ravel(),
        })
        if drop_zeros:
            frame = frame[frame["weight"] != 0.0]
        frames.append(frame)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CSV_COLUMNS)
    tok = np.asarray(list(tokens), dtype=object)
    df["query_token"] = tok[df["query_index"].to_numpy(dtype=int)] if len(df) else []
    df["key_token"] = tok[df["key_index"].to_numpy(dtype=int)] if len(df) else []
    return df[CSV_COLUMNS]


def attention_csv(attentions: Sequence[np.ndarray], tokens: Sequence[str], *,
                  layer: int | None = None) -> str:
    """CSV of every layer, or of `layer` alone when the whole model exceeds MAX_CSV_ROWS."""
    cells = sum(a.size for a in attentions)
    if layer is not None and cells > MAX_CSV_ROWS:
        return attention_long(attentions[layer:layer + 1], tokens, first_layer=layer).to_csv(
            index=False, float_format="%.6g")
    return attention_long(attentions, tokens).to_csv(index=False, float_format="%.6g")


def attention_json(
    attentions: Sequence[np.ndarray], tokens: Sequence[str], *, meta: dict | None = None
) -> str:
    """{"tokens": [...], "attentions": [layer][head][query][key], **meta}."""
    payload = {
        **(meta or {}),
        "tokens": list(tokens),
        "shape": [len(attentions), *(attentions[0].shape if len(attentions) else ())],
        "attentions": [np.round(np.asarray(a, dtype=np.float64), 6).tolist()
                       for a in attentions],
    }
    return json.dumps(payload)
