"""Conversions to the paper's key-less variants (arXiv 2603.15665 §2.5-2.6).

QV: the key projection is dropped and queries score against V. Dropping it alone is the
"post-hoc tying" that the BrainChip companion notes report as lossy: nothing makes V a good
key. `qv_layer` first fits, per KV head, the map M_i with K_i ≈ V_i·M_i (least squares on
calibration activations) and folds it into the queries, since q·(v M) = (q Mᵀ)·v: "K is V
after matching" made literal, exact when K lies in V's span. Under RoPE, M_i is restricted
to the maps that commute with the rotation (one complex scalar per rotary pair), so the fold
stays exact after rotating q and v (fitted on centred moments by default; see `qv_layer`).

QV-Ka: K_i = [G ; V_i]·W_K,i with G = x·W_ctx shared by the heads (paper §2.6), fitted in
closed form on the score-space error; see `qvka_core.convert.qvka_fit`.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from qvka_core.convert.linalg import spd_solve
from qvka_core.convert.qvka_fit import augmented, qvka_layer  # noqa: F401 (re-exported)
from qvka_core.convert.weights import DenseAttention, qv_state


def qv_layer(dense: DenseAttention, cov: Tensor, *, rope: bool, ridge: float = 1e-9,
             uncentred: bool = False) -> tuple[dict[str, Tensor], dict]:
    """QV with refitted queries: W_Q,h <- M_i·W_Q,h (and b_Q) for the query heads h of KV
    group i, where M_i = argmin E||K_i - V_i·M_i||² on calibration moments of [x ; 1] (`cov`,
    (d+1, d+1)), centred: without RoPE the keys' mean adds the same score to every key of a
    query and moves no softmax, so M_i fits the keys' variation about it, as any D x D map.
    Under RoPE M_i is one complex scalar per rotary pair (j, j + D/2), the maps that commute
    with the rotation. A rotated mean key is not constant, so `uncentred=True` fits the raw
    moments instead (the mean enters the scores as a position-dependent bias); measured on
    SmolLM2 it costs loss (README), so the default stays centred. Returns the QV state and
    each head's R² (≥ 0) in the metric of its fit."""
    g, d, h = dense.n_kv_heads, dense.head_dim, dense.n_heads
    dm = dense.wq.shape[1]
    cov = cov.to(torch.float64)
    cov = 0.5 * (cov + cov.T)
    mean = cov[:, dm]  # (d + 1,): E[x~], the constant coordinate's column
    cent = cov if rope and uncentred else cov - torch.outer(mean, mean)
    k_aug = augmented(dense.wk, dense.bk, g, d)  # (Hkv, d + 1, D)
    v_aug = augmented(dense.wv, dense.bv, g, d)  # (Hkv, d + 1, D)
    s_vk = v_aug.transpose(1, 2) @ cent @ k_aug  # (Hkv, D, D): E[v_r k_s] (centred or not)
    s_vv = v_aug.transpose(1, 2) @ cent @ v_aug  # (Hkv, D, D)
    if rope:
        half = d // 2
        lo, hi = torch.arange(half), torch.arange(half, d)
        den = (s_vv[:, lo, lo] + s_vv[:, hi, hi]).clamp_min(1e-300)  # (Hkv, D/2): E|v_c|²
        re = (s_vk[:, lo, lo] + s_vk[:, hi, hi]) / den  # Re E[conj(v_c) k_c] / E|v_c|²
        im = (s_vk[:, lo, hi] - s_vk[:, hi, lo]) / den  # Im of the same
        m = torch.zeros(g, d, d, dtype=torch.float64)
        m[:, lo, lo], m[:, hi, hi], m[:, lo, hi], m[:, hi, lo] = re, re, im, -im
    else:
        m = spd_solve(s_vv, s_vk, ridge)  # (Hkv, D, D)
    resid_maps = k_aug - v_aug @ m  # (Hkv, d + 1, D)
    resid = torch.einsum("hip,ij,hjp->h", resid_maps, cent, resid_maps)  # (Hkv,)
    var_k = torch.einsum("hip,ij,hjp->h", k_aug, cent, k_aug)  # (Hkv,)
    r2 = 1.0 - resid / var_k.clamp_min(1e-300)
    m_q = m.repeat_interleave(h // g, dim=0)  # (H, D, D): query head h uses KV head h·g // H
    wq = torch.einsum("hij,hjm->him", m_q, dense.wq.view(h, d, dm)).reshape(h * d, dm)
    bq = None if dense.bq is None else torch.einsum(
        "hij,hj->hi", m_q, dense.bq.view(h, d)).reshape(-1)  # (H·D,)
    state = qv_state(dataclasses.replace(dense, wq=wq, bq=bq))
    return state, {"key_from_value_r2": [float(x) for x in r2]}


