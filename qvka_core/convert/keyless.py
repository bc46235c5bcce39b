"""Conversions to the paper's key-less variants (arXiv 2603.15665 §2.5-2.6).

QV: the key projection is dropped and queries score against V. Dropping it alone is the
"post-hoc tying" that the BrainChip companion notes report as lossy: nothing makes V a good
key. `qv_layer` first fits, per KV head, the map M_i with K_i ≈ V_i·M_i (least squares on
calibration activations, about the keys' mean) and folds it into the queries, since
q·(v M) = (q Mᵀ)·v: "K is V after matching" made literal, exact when K lies in V's span.
Under RoPE, M_i is restricted to the maps that commute with the rotation (one complex scalar
per rotary pair), so the fold stays exact after rotating q and v.

QV-Ka: K_i = [G ; V_i]·W_K,i with G = x·W_ctx shared by the heads (paper §2.6). We fit
W_ctx (d x d_ctx) and every W_K,i = [A_i ; B_i] by ridge least squares so that the derived
key matches the source's pre-RoPE key on calibration activations:

    min Σ_i E_x ||x W_ctx A_i + V_i(x) B_i - K_i(x)||²  (+ ridge·||[A_i ; B_i]||²)

Every term is linear in x, so the expectation only needs C = E[[x ; 1][x ; 1]ᵀ]
(calibration.py) and the fit runs in weight space, independent of the number of tokens.

1. Initialisation, two candidates, the better one is kept: (a) "the K residual not
   explained by V": regress each K_i on V_i alone and take the top-d_ctx principal
   directions of the stacked residuals [R_1 … R_Hkv] in the C metric (whitened SVD);
   (b) "shared": the directions common to every span(V_i, top-d_ctx(R_i)), i.e. the top
   eigenvectors of Σ_i P_i, which is exactly span(G) when K_i = [G ; V_i]·W_K,i.
2. Refinement by variable projection (Golub & Pereyra 1973): given W_ctx each [A_i ; B_i]
   is a ridge regression of K_i on [G ; V_i] (closed form), so the error is a function of
   W_ctx alone, minimised by L-BFGS; never worse than the initialisation.
If the source's K is exactly [G ; V]·W for some W_ctx of width ≤ d_ctx, the fit is exact
(to the ridge). K biases: ctx_proj has no bias, so only the part of b_K reachable through
b_V·B_i is fitted.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from qvka_core.convert.weights import DenseAttention, _biases, qv_state


def augmented(w: Tensor, b: Tensor | None, n_kv: int, head_dim: int) -> Tensor:
    """A K or V projection as maps of x~ = [x ; 1], per head: (Hkv·D, d) -> (Hkv, d + 1, D)."""
    wt = w.view(n_kv, head_dim, -1).transpose(1, 2)  # (Hkv·D, d) -> (Hkv, d, D)
    bt = (b.view(n_kv, 1, head_dim) if b is not None  # (Hkv·D,) -> (Hkv, 1, D)
          else wt.new_zeros(n_kv, 1, head_dim))  # (Hkv, 1, D)
    return torch.cat([wt, bt], dim=1)  # (Hkv, d + 1, D)


def qv_layer(dense: DenseAttention, cov: Tensor, *, rope: bool, ridge: float = 1e-9
             ) -> tuple[dict[str, Tensor], dict]:
    """QV with refitted queries: W_Q,h <- M_i·W_Q,h (and b_Q) for the query heads h of KV
    group i, where M_i = argmin E||(K_i - E K_i) - (V_i - E V_i)·M_i||² on the calibration
    second moment `cov` ((d+1, d+1) of [x ; 1]). The keys' mean is left out: without RoPE it
    adds the same score to every key and moves no softmax; under RoPE a rotated constant is
    not constant and cannot be kept, so M_i fits the keys' variation about it. Without RoPE
    M_i is any D x D map; under RoPE one complex scalar per rotary pair (j, j + D/2), the
    maps that commute with the rotation. Returns the QV state and each head's R² (≥ 0)."""
    g, d, h = dense.n_kv_heads, dense.head_dim, dense.n_heads
    dm = dense.wq.shape[1]
    cov = cov.to(torch.float64)
    cov = 0.5 * (cov + cov.T)
    mean = cov[:, dm]  # (d + 1,): E[x~], the constant coordinate's column
    cent = cov - torch.outer(mean, mean)  # covariance of x~ (the constant has none)
    k_aug = augmented(dense.wk, dense.bk, g, d)  # (Hkv, d + 1, D)
    v_aug = augmented(dense.wv, dense.bv, g, d)  # (Hkv, d + 1, D)
    s_vk = v_aug.transpose(1, 2) @ cent @ k_aug  # (Hkv, D, D): Cov[v_r, k_s]
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
        lam = ridge * float(torch.diagonal(s_vv, dim1=1, dim2=2).mean().clamp_min(1e-300))
        m = torch.linalg.solve(s_vv + lam * torch.eye(d, dtype=torch.float64), s_vk)
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


def qvka_layer(dense: DenseAttention, cov: Tensor, d_ctx: int, *, ridge: float = 1e-6,
               max_iter: int = 50, tol: float = 1e-10) -> tuple[dict[str, Tensor], dict]:
    """Fit one QV-Ka layer to `dense`'s keys; returns its state dict and fit diagnostics.

    cov: (d+1, d+1) second moment of [x ; 1]. ridge is relative to the mean diagonal of
    each normal-equation matrix.
    """
    g, d = dense.n_kv_heads, dense.head_dim
    dm = dense.wq.shape[1]
    cov = cov.to(torch.float64)
    cov = 0.5 * (cov + cov.T)
    k_aug, v_aug = augmented(dense.wk, dense.bk, g, d), augmented(dense.wv, dense.bv, g, d)
    jitter = 1e-10 * float(torch.diagonal(cov).mean())
    cxx = cov[:dm, :dm] + jitter * torch.eye(dm, dtype=cov.dtype)
    chol = torch.linalg.cholesky(cxx)  # Cxx = L Lᵀ

    def metric(a: Tensor, b: Tensor) -> Tensor:  # aᵀ C b for (.., d+1, p), (.., d+1, q)
        return a.transpose(-2, -1) @ cov @ b

    def ridge_solve(gram: Tensor, rhs: Tensor) -> Tensor:
        lam = ridge * float(torch.diagonal(gram, dim1=-2, dim2=-1).mean().clamp_min(1e-300))
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype)
        return torch.linalg.solve(gram + lam * eye, rhs)

    def orthonormal(w: Tensor) -> Tensor:  # (d, d_ctx) with Wᵀ Cxx W = I
        gram = w.T @ cxx @ w
        r = torch.linalg.cholesky(gram + 1e-12 * float(torch.diagonal(gram).mean()) *
                                  torch.eye(gram.shape[0], dtype=gram.dtype))
        return torch.linalg.solve_triangular(r, w.T, upper=False).T  # W R⁻ᵀ

    # 1. Residual of K after V alone, principal directions in the whitened x space.
    b0 = ridge_solve(metric(v_aug, v_aug), metric(v_aug, k_aug))  # (Hkv, D, D)
    resid = chol.T @ (k_aug - v_aug @ b0)[:, :dm]  # (Hkv, d, D): whitened Lᵀ R_i
    inits = [_residual_directions(resid, d_ctx), _shared_directions(
        resid, chol.T @ v_aug[:, :dm], d_ctx)]
    inits = [orthonormal(torch.linalg.solve_triangular(chol.T, e, upper=True))  # L⁻ᵀ E
             for e in inits if e is not None]
    target = float(torch.einsum("hip,ij,hjp->", k_aug, cov, k_aug))  # Σ E||K_i||²

    def fit_heads(w: Tensor) -> tuple[Tensor, Tensor, float]:
        ctx_aug = torch.cat([w, w.new_zeros(1, d_ctx)], dim=0)  # (d + 1, d_ctx)
        z = torch.cat([ctx_aug.expand(g, -1, -1), v_aug], dim=2)  # (Hkv, d+1, d_ctx + D)
        coef = ridge_solve(metric(z, z), metric(z, k_aug))  # (Hkv, d_ctx + D, D)
        res = z @ coef - k_aug  # (Hkv, d + 1, D)
        err = float(torch.einsum("hip,ij,hjp->", res, cov, res))
        return coef[:, :d_ctx], coef[:, d_ctx:], err

    fits = [fit_heads(w) for w in inits]
    best = min(range(len(fits)), key=lambda j: fits[j][2])
    w_ctx = w_init = inits[best]
    err0 = fits[best][2]
    w_ctx, iters = _variable_projection(w_ctx, cov, k_aug, v_aug, max_iter=max_iter, tol=tol)
    w_ctx = orthonormal(w_ctx)
    a, b, err = fit_heads(w_ctx)
    if err > err0:  # never worse than the initialisation
        w_ctx, (a, b, err) = w_init, fit_heads(w_init)
    k_weight = torch.cat([a, b], dim=1)  # (Hkv, d_ctx + D, D)
    state = {"q_proj.weight": dense.wq, "v_proj.weight": dense.wv,
             "ctx_proj.weight": w_ctx.T.contiguous(), "k_weight": k_weight,
             "o_proj.weight": dense.wo}
    state.update(_biases(dense, ("q", "v")))
    diag = {"key_fit_rel_error": err / max(target, 1e-300),
            "key_fit_rel_error_init": err0 / max(target, 1e-300),
            "lbfgs_iterations": iters, "init": ("residual", "shared")[best]}
    return {**state, **dense.extra}, diag


def _residual_directions(resid: Tensor, d_ctx: int) -> Tensor:
    """Top-d_ctx principal directions of the stacked whitened residuals [R_1 … R_Hkv]."""
    g, dm, d = resid.shape
    stacked = resid.transpose(0, 1).reshape(dm, g * d)  # (Hkv, d, D) -> (d, Hkv·D)
    u, _, _ = torch.linalg.svd(stacked, full_matrices=False)  # (d, k)
    out = torch.randn(dm, d_ctx, dtype=resid.dtype, generator=torch.Generator().manual_seed(0))
    k = min(d_ctx, u.shape[1])
    out[:, :k] = u[:, :k]  # pad with random directions if the residual has too few
    return out


def _shared_directions(resid: Tensor, v_hat: Tensor, d_ctx: int) -> Tensor | None:
    """Directions common to every head's span(V_i, top-d_ctx(R_i)) (whitened).

    If K_i = G A_i + V_i B_i exactly, span(G) lies in each span(V_i, R_i), and for two or
    more heads it is (generically) their intersection: the eigenvectors of Σ_i P_i with
    eigenvalue Hkv. None for a single head, where the intersection is not informative.
    """
    g, dm, _ = resid.shape
    if g < 2:
        return None
    u, _, _ = torch.linalg.svd(resid, full_matrices=False)  # (Hkv, d, D)
    span = torch.cat([v_hat, u[:, :, :d_ctx]], dim=2)  # (Hkv, d, D + d_ctx)
    q, _ = torch.linalg.qr(span)  # orthonormal bases, (Hkv, d, D + d_ctx)
    proj = (q @ q.transpose(1, 2)).sum(0)  # Σ_i P_i, (d, d)
    _, vecs = torch.linalg.eigh(proj)  # ascending eigenvalues
    return vecs[:, -d_ctx:].flip(1)  # (d, d_ctx)


def _variable_projection(w0: Tensor, cov: Tensor, k_aug: Tensor, v_aug: Tensor, *,
                         max_iter: int, tol: float) -> tuple[Tensor, int]:
    """Minimise f(W) = Σ_i min_{A,B} E||x W A + V_i B - K_i||² over W by L-BFGS.

    Variable projection (Golub & Pereyra 1973): A_i, B_i are eliminated in closed form, so
    f depends on W only through its column span. Computed in coordinates whitened by
    C = L Lᵀ, where E||x~ M||² = ||Lᵀ M||²_F.
    """
    dm, d_ctx = w0.shape
    chol = torch.linalg.cholesky(cov + 1e-12 * float(torch.diagonal(cov).mean()) *
                                 torch.eye(cov.shape[0], dtype=cov.dtype))
    k_hat = chol.T @ k_aug  # (Hkv, d + 1, D)
    v_hat = chol.T @ v_aug  # (Hkv, d + 1, D)
    lt_x = chol.T[:, :dm]  # (d + 1, d): whitening of [W ; 0]
    scale = float((k_hat**2).sum()).__pow__(-1) if float((k_hat**2).sum()) > 0 else 1.0
    w = w0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=max_iter, tolerance_grad=1e-12,
                            tolerance_change=tol, history_size=20,
                            line_search_fn="strong_wolfe")
    eye = torch.eye(d_ctx + k_hat.shape[2], dtype=cov.dtype)

    def closure() -> Tensor:
        opt.zero_grad()
        g_hat = (lt_x @ w).expand(k_hat.shape[0], -1, -1)  # (Hkv, d + 1, d_ctx)
        z = torch.cat([g_hat, v_hat], dim=2)  # (Hkv, d + 1, d_ctx + D)
        gram = z.transpose(1, 2) @ z  # (Hkv, d_ctx + D, d_ctx + D)
        lam = 1e-12 * torch.diagonal(gram, dim1=1, dim2=2).mean().detach()
        coef = torch.linalg.solve(gram + lam * eye, z.transpose(1, 2) @ k_hat)
        loss = ((z @ coef - k_hat) ** 2).sum() * scale
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    iters = int(opt.state[opt._params[0]].get("n_iter", 0))
    return w.detach(), iters
