"""softmax(q·kᵀ·scale + bias + mask)·v, in two implementations that must agree.

`eager` is the readable reference and the only path that returns the probabilities;
`sdpa` calls `torch.nn.functional.scaled_dot_product_attention`. Variants only build
q, k, v; grouping (GQA) is handled here, once.

Notation: B batch, H query heads, Hkv key/value heads, T queries, S keys,
Dk score width per head, Dv value width per head.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Impl = Literal["sdpa", "eager"]
# torch >= 2.5 lets SDPA broadcast KV heads over query groups without materialising copies.
_SDPA_GQA = "enable_gqa" in (F.scaled_dot_product_attention.__doc__ or "")


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """(B, Hkv, S, D) -> (B, Hkv·n_rep, S, D); query head i reads KV head i // n_rep."""
    if n_rep == 1:
        return x
    b, h_kv, s, d = x.shape
    x = x[:, :, None, :, :].expand(b, h_kv, n_rep, s, d)  # (B, Hkv, n_rep, S, D)
    return x.reshape(b, h_kv * n_rep, s, d)  # (B, H, S, D)


def build_mask(
    t: int,
    s: int,
    *,
    causal: bool,
    q_offset: int,
    key_padding_mask: Tensor | None,
    device: torch.device,
) -> Tensor | None:
    """Boolean mask, True = may attend; broadcastable to (B, H, T, S), or None.

    Query row i sits at absolute position q_offset + i; key j at position j.
    """
    mask = None
    if causal:
        q_pos = torch.arange(q_offset, q_offset + t, device=device)[:, None]  # (T, 1)
        k_pos = torch.arange(s, device=device)[None, :]  # (1, S)
        mask = (k_pos <= q_pos)[None, None]  # (1, 1, T, S)
    if key_padding_mask is not None:
        pad = key_padding_mask.bool()[:, None, None, :]  # (B, 1, 1, S)
        mask = pad if mask is None else mask & pad
    return mask


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool,
    scale: float | None = None,
    bias: Tensor | None = None,
    key_padding_mask: Tensor | None = None,
    q_offset: int = 0,
    impl: Impl = "sdpa",
    dropout: float = 0.0,
    return_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Attention core.

    Args:
        q: (B, H, T, Dk). k: (B, Hkv, S, Dk). v: (B, Hkv, S, Dv); H must be a multiple of Hkv.
        bias: additive logit bias broadcastable to (B, H, T, S) (AGF, ALiBi), or None.
        key_padding_mask: (B, S), 1/True for real tokens.
        q_offset: absolute position of the first query (incremental decoding).
        impl: "sdpa" (fast) or "eager" (reference). Asking for weights forces eager.

    Returns:
        out (B, H, T, Dv) and, if requested, probabilities (B, H, T, S).
    """
    b, h, t, dk = q.shape
    s = k.shape[2]
    n_rep = h // k.shape[1]
    scale = 1.0 / math.sqrt(dk) if scale is None else scale
    # A decode step's one query sits after every cached key: its causal mask is all True,
    # so none is built (saves two small tensors per layer per generated token).
    causal_needed = causal and not (t == 1 and q_offset == s - 1)
    mask = build_mask(
        t, s, causal=causal_needed, q_offset=q_offset, key_padding_mask=key_padding_mask,
        device=q.device,
    )
    if impl == "sdpa" and not return_weights:
        gqa_kw = {}
        if n_rep > 1 and _SDPA_GQA:
            gqa_kw = {"enable_gqa": True}  # the kernel reads each KV head for its group
        else:
            k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # (B, H, S, D)
        plain_causal = causal_needed and t == s and bias is None and key_padding_mask is None
        attn_mask = None
        if not plain_causal:
            attn_mask = _float_mask(mask, bias, q.dtype)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=dropout, is_causal=plain_causal,
            scale=scale, **gqa_kw,
        )
        return out, None
    if impl not in ("sdpa", "eager"):
        raise ValueError(f"impl must be 'sdpa' or 'eager', got {impl!r}")
    # Grouped heads without copying K/V: query heads that share a KV head are stacked along
    # time, so one matmul per KV head scores the whole group.
    # The scale and the mask are applied in place on the fresh score tensor (autograd needs
    # neither the matmul's output nor the scaled scores), saving two passes over (B, H, T, S).
    h_kv = k.shape[1]
    q_grouped = q.reshape(b, h_kv, n_rep * t, dk)  # (B, Hkv, n_rep·T, Dk)
    scores = torch.matmul(q_grouped, k.transpose(-2, -1)).mul_(scale)  # (B, Hkv, n_rep·T, S)
    scores = scores.view(b, h, t, s)  # (B, H, T, S)
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        # The dtype's lowest finite value, not -inf: a fully masked row (a padding query)
        # then gets a uniform row instead of NaN, with no extra pass over the scores.
        scores = scores.masked_fill_(~mask, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)  # (B, H, T, S)
    dropped = F.dropout(probs, p=dropout) if dropout > 0 else probs
    out = torch.matmul(dropped.view(b, h_kv, n_rep * t, s), v)  # (B, Hkv, n_rep·T, Dv)
    out = out.view(b, h, t, v.shape[-1])  # (B, H, T, Dv)
    return out, (probs if return_weights else None)


def _float_mask(mask: Tensor | None, bias: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """Fold a boolean mask and an additive bias into one float mask for SDPA."""
    if mask is None:
        return bias.to(dtype) if bias is not None else None
    neg = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    neg = neg.masked_fill(~mask, torch.finfo(dtype).min)  # finite: no NaN rows
    return neg if bias is None else neg + bias.to(dtype)
