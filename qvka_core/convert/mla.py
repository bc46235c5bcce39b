"""MHA/GQA -> MLA by partial RoPE and a joint SVD of K and V (MHA2MLA, Ji et al. 2025,
arXiv 2502.14837; cf. TransMLA, Meng et al. 2025, arXiv 2502.07864).

Per layer, with source head width D and r = qk_rope_head_dim / 2 kept rotary pairs:

1. Partial RoPE. Our RoPE is half-split: pair j rotates dims (j, j + D/2) at frequency
   θ^(-2j/D). We keep the r *highest-frequency* pairs (j < r) in the decoupled RoPE key and
   send the other dims through the latent. MHA2MLA's 2-norm criterion can pick any pairs,
   but our MLA module rotates its d_R dims at the geometric frequencies θ'^(-2j/d_R), which
   can only reproduce a *prefix* of the source's frequencies: with θ' = θ^(d_R/D) the kept
   pairs rotate exactly as in the source. The target's `rope_theta` is set to θ'.
2. Shared RoPE key. MLA has one RoPE key for all heads, so the kept rows of the Hkv source
   K heads are mean-pooled (as in GQA -> MQA, Ainslie et al. 2023); exact when Hkv = 1.
3. Joint SVD. The stacked [W_K,nope ; W_V] of all KV heads, an (Hkv·(D - d_R + D)) x d
   matrix (its transpose M is d x n), is factorised M = U S Vᵀ and truncated to
   d_c = kv_lora_rank: W_DKV = U_c (the latent c = x U_c has orthonormal directions) and
   W_UKV = S_c V_cᵀ; query head i reads the rows of KV head i // group. With biases the
   input is augmented with a constant 1, so the latent's bias comes out of the same SVD.
   With calibration statistics C = E[x xᵀ] = L Lᵀ (`whiten`, the default in `convert`) the
   SVD is of Lᵀ M and W_DKV = L⁻ᵀ U_c: the truncation then minimises the error of K and V
   on the calibration activations rather than in weight space (as in SVD-LLM, Wang et al.
   2024, arXiv 2403.07378); at full rank both are exact.
4. Queries. q_proj rows are permuted per head to [nope ; rope]. If d_nope or d_R have to
   be padded (non-RoPE sources keep no rope dims; at least 1 nope dim is required) the pad
   rows are zero and q is scaled by sqrt((d_nope + d_R) / D) so the score scale is D^-1/2.
5. The latent RMSNorm (kv_a_layernorm), `latent_norm`:
   - "fold" (default): eps = 2^26 and weight = 2^13, so RMSNorm(c) = c·(1 + mean(c²)/eps)^-1/2
     ≈ c with relative error ≤ mean(c²)/(2·eps) (< 1e-6 for mean(c²) < 134; reported). The
     norm is folded away and the conversion is linear.
   - "rms": DeepSeek's eps, weight = the calibration RMS of the latent, so the latent keeps
     its average scale; per-token scale changes remain (an approximation).

Exactness: with latent_norm="fold", kv_lora_rank ≥ rank(M), and either no RoPE or Hkv = 1
with all D dims kept as RoPE (qk_rope_head_dim = D), MLA reproduces the source to float
precision. With RoPE and Hkv > 1 only the shared-key pooling is lossy.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from qvka_core.config import ModelConfig
from qvka_core.convert.linalg import psd_cholesky
from qvka_core.convert.weights import DenseAttention
from qvka_core.errors import ConfigError

FOLD_EPS = float(2**26)
FOLD_WEIGHT = float(2**13)  # sqrt(FOLD_EPS): exact in every float dtype


def mla_plan(cfg: ModelConfig, kv_lora_rank: int | None,
             qk_rope_head_dim: int | None) -> dict[str, int]:
    """Target MLA sizes, validated against the source (ConfigError naming the field)."""
    a = cfg.attention
    d, dm = a.head_dim, a.d_model
    rope = a.position == "rope"
    if qk_rope_head_dim is None:
        dr = max(2, d // 2) if rope else 2
    else:
        dr = qk_rope_head_dim
    if not isinstance(dr, int) or dr <= 0 or dr % 2:
        raise ConfigError(f"qk_rope_head_dim must be a positive even integer, got {dr!r}")
    if dr > d and rope:
        raise ConfigError(f"qk_rope_head_dim ({dr}) must be at most head_dim ({d})")
    kept = dr if rope else 0  # source dims that stay rotary
    n_nope_src = d - kept
    dn = max(1, n_nope_src)
    bound = min(dm + int(a.qkv_bias), a.n_kv_heads * (n_nope_src + d))
    bound = min(bound, dm)
    dc = kv_lora_rank if kv_lora_rank is not None else min(4 * d, bound)
    if not isinstance(dc, int) or dc <= 0:
        raise ConfigError(f"kv_lora_rank must be a positive integer, got {dc!r}")
    if dc > bound:
        raise ConfigError(
            f"kv_lora_rank ({dc}) is too large: at most min(d_model, n_kv_heads·(head_dim + "
            f"non-rotary dims)) = {bound}, the rank bound of the stacked K/V"
        )
    return {"kv_lora_rank": dc, "qk_rope_head_dim": dr, "qk_nope_head_dim": dn,
            "v_head_dim": d, "kept_rope": kept, "n_nope_src": n_nope_src}


def mla_config(cfg: ModelConfig, plan: dict[str, int], latent_norm: str) -> ModelConfig:
    a = cfg.attention
    changes: dict = {k: plan[k] for k in
                     ("kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim")}
    changes["q_lora_rank"] = None
    if a.position == "rope":
        changes["rope_theta"] = a.rope_theta ** (plan["qk_rope_head_dim"] / a.head_dim)
    if latent_norm == "fold":
        changes["latent_norm_eps"] = FOLD_EPS
    return cfg.with_variant("mla", **changes)


def _dim_split(d: int, kept: int) -> tuple[list[int], list[int]]:
    """Source dims (half-split RoPE) kept rotary, in MLA's half-split order, and the rest."""
    r, half = kept // 2, d // 2
    rope = list(range(r)) + list(range(half, half + r))
    rest = [i for i in range(d) if i not in set(rope)]
    return rope, rest


def mla_layer(dense: DenseAttention, plan: dict[str, int], *, latent_norm: str,
              input_cov: Tensor | None, norm_eps: float,
              whiten: bool = True) -> tuple[dict[str, Tensor], dict]:
    """One layer's MLA state dict and diagnostics (singular-value energy kept, norm error).

    input_cov: (d+1, d+1) second moment of [x ; 1] on calibration tokens; needed for
    latent_norm="rms", for `whiten` and for the reported fold error; may be None for "fold".
    """
    h, g, d = dense.n_heads, dense.n_kv_heads, dense.head_dim
    dm = dense.wq.shape[1]
    dc, dr, dn, kept = (plan["kv_lora_rank"], plan["qk_rope_head_dim"],
                        plan["qk_nope_head_dim"], plan["kept_rope"])
    rope_idx, nope_idx = _dim_split(d, kept)
    has_bias = dense.bk is not None or dense.bv is not None
    wk = dense.wk.view(g, d, dm)  # (Hkv·D, d) -> (Hkv, D, d)
    wv = dense.wv.view(g, d, dm)  # (Hkv·D, d) -> (Hkv, D, d)
    zeros = torch.zeros(g, d, dtype=wk.dtype)
    bk = zeros if dense.bk is None else dense.bk.view(g, d)  # (Hkv·D,) -> (Hkv, D)
    bv = zeros if dense.bv is None else dense.bv.view(g, d)  # (Hkv·D,) -> (Hkv, D)
    # Stack per KV head [k_nope ; v] as rows; augment the input with a 1 for the biases.
    rows = torch.cat([wk[:, nope_idx], wv], dim=1)  # (Hkv, n_nope + D, d)
    brows = torch.cat([bk[:, nope_idx], bv], dim=1)  # (Hkv, n_nope + D)
    width = rows.shape[1]
    m = rows.reshape(g * width, dm).T  # (d, Hkv·(n_nope + D))
    if has_bias:
        m = torch.cat([m, brows.reshape(1, -1)], dim=0)  # (d + 1, n)
    chol = None
    if whiten and input_cov is not None:  # SVD in the activation metric: E||x~ M||² = ||Lᵀ M||²
        chol = psd_cholesky(input_cov[: m.shape[0], : m.shape[0]].to(m.dtype))
    u, s, vt = torch.linalg.svd(m if chol is None else chol.T @ m,
                                full_matrices=False)  # (d', k), (k,), (k, n)
    k = min(dc, s.numel())
    w_down = torch.zeros(m.shape[0], dc, dtype=m.dtype)  # (d', dc)
    w_down[:, :k] = u[:, :k] if chol is None else torch.linalg.solve_triangular(
        chol.T, u[:, :k], upper=True)  # L⁻ᵀ U: the latent has unit variance per direction
    w_up = torch.zeros(dc, m.shape[1], dtype=m.dtype)  # (dc, n)
    w_up[:k] = s[:k, None] * vt[:k]
    energy = float((s[:k] ** 2).sum() / (s**2).sum().clamp_min(1e-300))
    # Shared RoPE key: mean of the kept rotary rows over KV heads (zero rows if none kept).
    k_rope = torch.zeros(dr, dm, dtype=m.dtype)
    b_rope = torch.zeros(dr, dtype=m.dtype)
    if kept:
        k_rope = wk[:, rope_idx].mean(0)  # (Hkv, dR, d) -> (dR, d)
        b_rope = bk[:, rope_idx].mean(0)  # (dR,)
    kv_a_w = torch.cat([w_down[:dm].T, k_rope], dim=0)  # (dc + dR, d)
    b_down = w_down[dm:].reshape(-1) if has_bias else w_down.new_zeros(dc)  # (1, dc) -> (dc,)
    kv_a_b = torch.cat([b_down, b_rope])  # (dc + dR,)
    # Up-projection per query head: rows [k_nope (padded to dn) ; v] of its KV head.
    up = w_up.T.reshape(g, width, dc)  # (n, dc) -> (Hkv, n_nope + D, dc)
    pad = dn - len(nope_idx)
    k_up = torch.cat([up[:, : len(nope_idx)], up.new_zeros(g, pad, dc)], dim=1)  # (Hkv, dn, dc)
    kv_b = torch.cat([k_up, up[:, len(nope_idx):]], dim=1)  # (Hkv, dn + D, dc)
    kv_b = kv_b.repeat_interleave(h // g, dim=0).reshape(h * (dn + d), dc)  # (H·(dn+D), dc)
    # Queries: per head [nope (padded) ; rope (or zeros)], scaled to keep the score scale.
    scale = math.sqrt((dn + dr) / d)
    wq = dense.wq.view(h, d, dm)  # (H·D, d) -> (H, D, d)
    q_parts = [wq[:, nope_idx], wq.new_zeros(h, pad, dm),
               wq[:, rope_idx] if kept else wq.new_zeros(h, dr, dm)]
    q_w = torch.cat(q_parts, dim=1).reshape(h * (dn + dr), dm) * scale  # (H·(dn+dR), d)
    state = {"q_proj.weight": q_w, "kv_a_proj_with_mqa.weight": kv_a_w,
             "kv_b_proj.weight": kv_b, "o_proj.weight": dense.wo}
    if dense.bq is not None:
        bq = dense.bq.view(h, d)  # (H·D,) -> (H, D)
        state["q_proj.bias"] = torch.cat(
            [bq[:, nope_idx], bq.new_zeros(h, pad),
             bq[:, rope_idx] if kept else bq.new_zeros(h, dr)],
            dim=1).reshape(-1) * scale  # (H, dn + dR) -> (H·(dn + dR),)
    if has_bias:
        state["kv_a_proj_with_mqa.bias"] = kv_a_b
    if dense.bo is not None:
        state["o_proj.bias"] = dense.bo
    diag: dict = {"svd_energy_kept": energy, "stacked_rank": int((s > s[0] * 1e-10).sum())}
    latent_ms = None
    if input_cov is not None:
        wd = w_down if has_bias else torch.cat([w_down, w_down.new_zeros(1, dc)])  # (d+1, dc)
        cov = input_cov.to(wd.dtype)
        latent_ms = float(torch.einsum("ic,ij,jc->", wd, cov, wd) / dc)  # E[mean(c²)]
        diag["latent_mean_square"] = latent_ms
    if latent_norm == "fold":
        state["kv_a_layernorm.weight"] = torch.full((dc,), FOLD_WEIGHT, dtype=m.dtype)
        if latent_ms is not None:
            diag["fold_rel_error_est"] = latent_ms / (2 * norm_eps)
    else:
        rms = math.sqrt(latent_ms) if latent_ms else 1.0
        state["kv_a_layernorm.weight"] = torch.full((dc,), rms, dtype=m.dtype)
    return {**state, **dense.extra}, diag
