"""Count-based baselines a trained language model must beat, scored on given windows.

A model that has learned anything from its context is below the **bigram** cross-entropy;
one below the **unigram** only has learned word frequencies. Both are scored on exactly the
(input, target) pairs a run is evaluated on (its fixed validation windows), so a run's
validation loss and the baselines are like for like.

- unigram: add-one smoothed train frequencies, P(y).
- bigram: Jelinek-Mercer interpolation λ·c(x, y)/c(x) + (1 − λ)·P_unigram(y) (Chen & Goodman
  1999, §2.3), λ chosen from a grid to minimise the loss on the scored pairs themselves. That
  choice favours the baseline, so "below the bigram" is a conservative claim.
"""

from __future__ import annotations

import torch
from torch import Tensor

LAMBDAS = tuple(i / 20 for i in range(1, 20))  # 0.05 .. 0.95


def _unigram_logp(train: Tensor, vocab_size: int) -> Tensor:
    counts = torch.bincount(train, minlength=vocab_size).double() + 1.0  # (V,)
    return counts.log() - counts.sum().log()


def unigram_loss(train: Tensor, targets: Tensor, vocab_size: int) -> float:
    """Cross-entropy (nats/token) of the add-one smoothed train unigram on `targets`."""
    return float(-_unigram_logp(train, vocab_size)[targets.reshape(-1)].mean())


def bigram_loss(train: Tensor, inputs: Tensor, targets: Tensor,
                vocab_size: int) -> tuple[float, float]:
    """(cross-entropy in nats/token, λ) of the interpolated train bigram on (inputs → targets).

    inputs, targets: same shape; targets[i] follows inputs[i] (a window and its shift).
    """
    train = train.reshape(-1).long()
    pair_ids = train[:-1] * vocab_size + train[1:]  # (N-1,) one id per adjacent pair
    keys, counts = torch.unique(pair_ids, return_counts=True)  # sorted pair ids
    context = torch.bincount(train[:-1], minlength=vocab_size).double()  # c(x)
    x, y = inputs.reshape(-1).long(), targets.reshape(-1).long()
    query = x * vocab_size + y
    pos = torch.searchsorted(keys, query).clamp(max=keys.numel() - 1)
    pair = torch.where(keys[pos] == query, counts[pos], 0).double()  # c(x, y)
    seen = context[x] > 0
    p_big = torch.where(seen, pair / context[x].clamp(min=1.0), 0.0)
    p_uni = _unigram_logp(train, vocab_size).exp()[y]
    best = None
    for lam in LAMBDAS:
        p = torch.where(seen, lam * p_big + (1 - lam) * p_uni, p_uni)
        loss = float(-p.log().mean())
        if best is None or loss < best[0]:
            best = (loss, lam)
    assert best is not None
    return best
