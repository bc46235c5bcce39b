"""Held-out text for a conversion's fidelity report, and the batched comparison on it.

A report is judged on at least `EVAL_TOKENS` held-out tokens from more than one text: by
default windows of the validation split of each of the six bundled Austen novels (the last
5 % of each, never seen by calibration), taken round-robin so every novel contributes. Both
models read the same windows, so the loss difference is paired: its standard error is the
spread of the per-window differences over √(windows), which removes the text's own
difficulty (a hard window is hard for both models). Loss and hidden cosine read every window
through the fast attention path; the attention maps' JS divergence needs the eager path's
probabilities and reads the first `JS_WINDOWS` (one per novel, in the round-robin order).
"""

from __future__ import annotations

import hashlib
import math
import weakref
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from qvka_core.convert.report import js_divergence
from qvka_core.errors import DataError
from qvka_core.model import Transformer

EVAL_TOKENS = 4096
WINDOW = 256
JS_WINDOWS = 4  # attention maps (the eager path) on the first windows: four novels, 1,024 tokens
BATCH_ROWS = 4  # SmolLM2: 4 x 30 layers x 9 heads x 256² probabilities = 280 MB per model


def _windows(ids: list[int], width: int) -> list[Tensor]:
    return [torch.tensor(ids[i : i + width]) for i in range(0, len(ids) - width + 1, width)]


def held_out_windows(caller_text: str | None, tokenizer: Any, *, vocab_size: int,
                     max_seq_len: int, max_tokens: int = EVAL_TOKENS
                     ) -> tuple[list[tuple[str, Tensor]], str]:
    """(text name, token window (T,)) pairs totalling ≥ max_tokens where the texts allow,
    and a description of the source. The caller's text if given, else the validation split
    of every bundled novel, else a few windows of seeded random ids (no tokenizer or no
    corpus: nothing to judge fidelity on, only a smoke check)."""
    width = max(2, min(WINDOW, max_seq_len))
    texts: dict[str, str] = {}
    source = "random token ids"
    if tokenizer is not None:
        if caller_text is not None:
            texts, source = {"caller text": caller_text}, "caller text"
        else:
            try:
                from qvka_core.data import novel_splits

                texts = {name: val for name, (_, val) in novel_splits().items()}
                source = f"validation split of {len(texts)} bundled novels"
            except (ImportError, DataError):
                source = "random token ids (corpus unavailable)"
    per_text: dict[str, list[Tensor]] = {}
    for name, text in texts.items():
        if not text.strip():
            raise DataError(f"eval_text is empty ({name})")
        ids = tokenizer.encode(text[: 16 * max_tokens]).ids  # ~4 chars per token
        if ids and max(ids) >= vocab_size:
            raise DataError(f"eval_text: token id {max(ids)} is outside the model's vocabulary")
        rows = _windows(ids, width) or ([torch.tensor(ids)] if len(ids) >= 2 else [])
        per_text[name] = rows
    if texts and not any(per_text.values()):
        raise DataError("eval_text has fewer than 2 tokens")
    if not texts:
        gen = torch.Generator().manual_seed(1)
        n = min(4, math.ceil(max_tokens / width))  # ids carry no text to judge: a smoke check
        rand = torch.randint(0, vocab_size, (n, width), generator=gen)  # (N, T)
        return [("random", rand[i]) for i in range(n)], source
    out: list[tuple[str, Tensor]] = []
    total, depth = 0, 0
    while total < max_tokens and any(depth < len(r) for r in per_text.values()):
        for name, rows in per_text.items():  # round-robin: every text contributes
            if depth < len(rows) and total < max_tokens:
                out.append((name, rows[depth]))
                total += rows[depth].numel()
        depth += 1
    return out, source


def _groups(windows: list[tuple[str, Tensor]]) -> list[list[int]]:
    """Indices of windows batched together: same length, at most BATCH_ROWS each."""
    by_len: dict[int, list[int]] = {}
    for i, (_, w) in enumerate(windows):
        by_len.setdefault(w.numel(), []).append(i)
    return [idx[j : j + BATCH_ROWS] for idx in by_len.values()
            for j in range(0, len(idx), BATCH_ROWS)]


@dataclass
class _SourceMemo:
    """The source's outputs on one set of windows, kept for the next conversion of the same
    model: `warm` and the pages convert one base to every variant in turn, and the source's
    half of each report is the same forward pass every time."""

    model: weakref.ref
    key: tuple
    groups: list[tuple[list[Tensor] | None, Tensor, Tensor | None]]


_MEMO: list[_SourceMemo] = []  # at most one entry: the last source
MEMO_MAX_BYTES = 1 << 29  # keep a source's outputs only when they fit in 512 MiB


def _memo_key(model: Transformer, windows: list[tuple[str, Tensor]], js_windows: int) -> tuple:
    """Changes when the weights change (in place: _version; swapped: data_ptr) or the windows
    do; the model itself is matched by identity through a weak reference."""
    digest = hashlib.sha1()
    for name, w in windows:
        digest.update(name.encode() + b"\0" + w.numpy().tobytes() + b"\1")
    weights = tuple((p.data_ptr(), p._version) for p in model.parameters())
    return weights, digest.hexdigest(), js_windows, model.training


def _run_source(source: Transformer, groups: list[list[int]], windows, js_windows: int,
                device) -> list[tuple[list[Tensor] | None, Tensor, Tensor | None]]:
    key = _memo_key(source, windows, js_windows)
    for memo in _MEMO:
        if memo.model() is source and memo.key == key:
            return memo.groups
    out, size = [], 0
    for group in groups:
        maps, hidden, losses = _forward(source, group, windows, js_windows, device)
        out.append((maps, hidden, losses))
        size += sum(t.numel() * t.element_size() for t in (maps or [])) + hidden.numel() * 4
    _MEMO.clear()
    if size <= MEMO_MAX_BYTES:
        _MEMO.append(_SourceMemo(weakref.ref(source), key, out))
    return out


def _forward(model: Transformer, group: list[int], windows, js_windows: int, device
             ) -> tuple[list[Tensor] | None, Tensor, Tensor | None]:
    """(attention maps if the group is among the first `js_windows`, final hidden states,
    per-window mean next-token loss (B,) or None) of one batch of windows."""
    ids = torch.stack([windows[i][1] for i in group]).to(device)  # (B, T)
    maps = group[0] < js_windows  # groups keep the windows' order
    kw: dict[str, Any] = {"impl": "eager", "return_attentions": True} if maps else {}
    o = model(ids, **kw)
    losses = None
    if model.cfg.causal and model.cfg.lm_head and ids.shape[1] > 1:
        losses = F.cross_entropy(o.logits[:, :-1].float().transpose(1, 2), ids[:, 1:],
                                 reduction="none").mean(1)  # (B, V, T-1) -> (B,)
    return (list(o.attentions) if maps else None), o.hidden_states, losses


@torch.no_grad()
def compare(source: Transformer, target: Transformer, windows: list[tuple[str, Tensor]],
            js_windows: int = JS_WINDOWS) -> dict[str, Any]:
    """JS divergence per layer (first `js_windows` windows), final hidden cosine and LM loss
    of both models on the same windows (batched), with the paired SE of the loss change.
    The source's outputs are reused from the previous call when the source, its weights and
    the windows are the same (`_run_source`)."""
    n_layers = len(source.layers)
    js_sum = [0.0] * n_layers
    cos_sum, tokens, js_tokens = 0.0, 0, 0
    device = next(source.parameters()).device
    win_loss: list[tuple[str, int, float, float]] = []  # (text, predicted, before, after)
    groups = _groups(windows)
    for group, (maps_a, hid_a, loss_a) in zip(
            groups, _run_source(source, groups, windows, js_windows, device), strict=True):
        maps_b, hid_b, loss_b = _forward(target, group, windows, js_windows, device)
        n_tok = sum(windows[i][1].numel() for i in group)
        if maps_a is not None:
            for i, (pa, pb) in enumerate(zip(maps_a, maps_b, strict=True)):
                js_sum[i] += float(js_divergence(pa, pb).mean(1).sum())  # (B, H, T) -> sum
            js_tokens += n_tok
        cos = F.cosine_similarity(hid_a.double(), hid_b.double(), dim=-1)
        cos_sum += float(cos.sum())
        tokens += n_tok
        if loss_a is not None and loss_b is not None:
            n = windows[group[0]][1].numel() - 1
            win_loss += [(windows[j][0], n, float(loss_a[r]), float(loss_b[r]))
                         for r, j in enumerate(group)]
        del maps_b, hid_b
    per_layer = [s / max(1, js_tokens) for s in js_sum]
    out: dict[str, Any] = {
        "js_divergence_per_layer": per_layer,
        "js_divergence_mean": sum(per_layer) / max(1, len(per_layer)),
        "hidden_cosine": cos_sum / max(1, tokens), "eval_tokens": tokens,
        "js_eval_tokens": js_tokens,
        "eval_windows": len(windows), "loss_before": None, "loss_after": None,
        "loss_diff_se": None, "eval_texts": {},
    }
    if win_loss:
        out.update(_paired(win_loss))
    return out


def _paired(win_loss: list[tuple[str, int, float, float]]) -> dict[str, Any]:
    """Token-weighted losses, per text and overall, and the paired SE of after - before."""
    n_tok = sum(n for _, n, _, _ in win_loss)
    before = sum(n * lb for _, n, lb, _ in win_loss) / n_tok
    after = sum(n * la for _, n, _, la in win_loss) / n_tok
    diffs = [la - lb for _, _, lb, la in win_loss]
    mean = sum(diffs) / len(diffs)
    se = (math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs))
          if len(diffs) > 1 else None)
    texts: dict[str, dict[str, float]] = {}
    for name, n, lb, la in win_loss:
        t = texts.setdefault(name, {"windows": 0, "tokens": 0, "loss_before": 0.0,
                                    "loss_after": 0.0})
        t["windows"] += 1
        t["tokens"] += n
        t["loss_before"] += n * lb
        t["loss_after"] += n * la
    for t in texts.values():
        t["loss_before"] /= t["tokens"]
        t["loss_after"] /= t["tokens"]
    return {"loss_before": before, "loss_after": after, "loss_diff_se": se,
            "eval_texts": texts}
