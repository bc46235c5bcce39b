"""Calibration tokens and per-layer input statistics for data-aware conversions.

QV-Ka's least-squares fit and MLA's "rms" latent norm need the distribution of each
layer's attention input x (the normed residual stream). Because every source projection
is linear in x, the second moment E[[x ; 1][x ; 1]ᵀ] is all they need: a (d+1) x (d+1)
matrix per layer, accumulated in float64 over any number of calibration tokens.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from qvka_core.errors import DataError
from qvka_core.model import Transformer

MIN_TOKENS = 16
BATCH_ROWS = 4


def token_batches(text: str | None, tokenizer, *, vocab_size: int, max_seq_len: int,
                  max_tokens: int = 4096, chunk: int = 256, seed: int = 0,
                  what: str = "calib_text") -> tuple[list[Tensor], str]:
    """Token rows (each (1, T)) from text, or seeded random ids when text is None.

    Returns the rows and a short description of where they came from (for the report).
    """
    chunk = max(2, min(chunk, max_seq_len))
    if text is None:
        gen = torch.Generator().manual_seed(seed)
        n_rows = max(1, min(4, max_tokens // chunk))
        ids = torch.randint(0, vocab_size, (n_rows, chunk), generator=gen)  # (N, T)
        return [ids[i : i + 1] for i in range(n_rows)], f"random token ids ({n_rows}x{chunk})"
    if tokenizer is None:
        raise DataError(f"{what} needs a tokenizer, but the model has none")
    if not text.strip():
        raise DataError(f"{what} is empty")
    ids = tokenizer.encode(text[: 16 * max_tokens]).ids[:max_tokens]  # ~4 chars per token
    if len(ids) < MIN_TOKENS:
        raise DataError(f"{what} has {len(ids)} tokens; at least {MIN_TOKENS} are needed")
    if max(ids) >= vocab_size:
        raise DataError(f"{what}: token id {max(ids)} is outside the model's vocabulary")
    rows = [torch.tensor(ids[i : i + chunk])[None] for i in range(0, len(ids), chunk)]
    rows = [r for r in rows if r.shape[1] >= 2]  # (1, T) each
    return rows, f"text ({len(ids)} tokens)"


def default_calibration_text() -> tuple[str | None, str]:
    """The lab's training split (`qvka_core.data.train_text`), disjoint from the validation
    text the report uses; None when the corpus cannot be read."""
    from qvka_core.data import train_text

    try:
        return train_text(), "train split of the bundled corpus"
    except DataError:
        return None, "random token ids (corpus unavailable)"


@torch.no_grad()
def input_covariances(model: Transformer, batches: list[Tensor], *,
                      progress: Callable[[float], None] | None = None) -> list[Tensor]:
    """Per layer, E[[x ; 1]ᵀ[x ; 1]] over all calibration tokens: (d+1, d+1) float64.

    x is the input of each layer's attention module (after the pre-norm), read with forward
    pre-hooks; the model is run in eval mode and left unchanged. Rows of equal length run
    as batches of `BATCH_ROWS` (one forward instead of four).
    """
    d = model.cfg.d_model
    sums = [torch.zeros(d + 1, d + 1, dtype=torch.float64) for _ in model.layers]
    count = [0]

    def hook(i: int):
        def fn(_module, args, _kwargs=None):
            x = args[0].detach().reshape(-1, d).to(torch.float64).cpu()  # (B·T, d)
            xa = torch.cat([x, x.new_ones(x.shape[0], 1)], dim=1)  # (B·T, d + 1)
            sums[i] += xa.T @ xa
        return fn

    handles = [layer.attn.register_forward_pre_hook(hook(i)) for i, layer in
               enumerate(model.layers)]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        groups = _batched(batches)
        for j, ids in enumerate(groups):
            model(ids.to(device))
            count[0] += ids.numel()
            if progress is not None:
                progress((j + 1) / len(groups))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [s / max(1, count[0]) for s in sums]


def _batched(rows: list[Tensor]) -> list[Tensor]:
    """(1, T) rows stacked into (B ≤ BATCH_ROWS, T) batches of consecutive equal lengths."""
    out: list[Tensor] = []
    run: list[Tensor] = []
    for r in rows:
        if run and (r.shape[1] != run[0].shape[1] or len(run) == BATCH_ROWS):
            out.append(torch.cat(run))  # (B, T)
            run = []
        run.append(r)
    if run:
        out.append(torch.cat(run))
    return out
