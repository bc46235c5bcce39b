"""QV-Ka's key fit (arXiv 2603.15665 §2.6): W_ctx and the per-head W_K,i by least squares.

K_i = [G ; V_i]·W_K,i with G = x·W_ctx shared by the heads. We fit W_ctx (d x d_ctx) and
every W_K,i = [A_i ; B_i] so that the derived key matches the source's pre-RoPE key where it
matters, in the scores:

    min Σ_i E_x ||(x W_ctx A_i + V_i(x) B_i - K_i(x)) S_i^½||²      (+ a small ridge)

S_i is the energy of the queries that score against KV head i, Σ_h E[q_h q_hᵀ] over its
query group: an error Δk costs E_q[(q·Δk)²] = Δkᵀ S_i Δk in the logits. Under RoPE the
query meets the key rotated by the relative position, so S_i is averaged over rotations:
per rotary pair (j, j + D/2) both dims get (S_jj + S_{j+D/2,j+D/2}) / 2, and the cross-pair
terms average out. `weighting="none"` sets S_i = I (plain key-space error).

Every term is linear in x, so the expectation only needs C = E[[x ; 1][x ; 1]ᵀ] = L Lᵀ
(calibration.py); in whitened coordinates E||x~ M||² = ||Lᵀ M||²_F. Right-multiplying the
target by S_i^½ does not move the per-head solution [A_i ; B_i] for a given W_ctx (it is
linear in the target), so the weights only choose W_ctx. The fit is closed form throughout:

1. Initialisation, two candidates, the better one is kept: (a) the top-d_ctx principal
   directions of the stacked (weighted, whitened) residuals of K_i after V_i alone (reduced
   rank regression: optimal when every head has the same V); (b) the directions common to
   every span(V_i, top-d_ctx(R_i)), the top eigenvectors of Σ_i P_i, exactly span(G) when
   K_i = [G ; V_i]·W_K,i.
2. Alternating least squares: given W_ctx each [A_i ; B_i] is a ridge regression; given
   them, W_ctx solves one linear system (its normal matrix Σ_i A_i S_i A_iᵀ is d_ctx x
   d_ctx, the same x metric for every head). Each step can only lower the objective.
All solves are Cholesky with ridge in float64 (`linalg.spd_solve`). If the source's K is
exactly [G ; V]·W for some W_ctx of width ≤ d_ctx, the fit is exact (to the ridge). K biases:
ctx_proj has no bias, so only the part of b_K reachable through b_V·B_i is fitted.
"""

from __future__ import annotations

import torch
from torch import Tensor

from qvka_core.convert.linalg import psd_cholesky, spd_solve
from qvka_core.convert.weights import DenseAttention, _biases

WEIGHTINGS = ("query", "none")


def augmented(w: Tensor, b: Tensor | None, n_heads: int, head_dim: int) -> Tensor:
    """A projection as maps of x~ = [x ; 1], per head: (heads·D, d) -> (heads, d + 1, D)."""
    wt = w.view(n_heads, head_dim, -1).transpose(1, 2)  # (heads·D, d) -> (heads, d, D)
    bt = (b.view(n_heads, 1, head_dim) if b is not None  # (heads·D,) -> (heads, 1, D)
          else wt.new_zeros(n_heads, 1, head_dim))  # (heads, 1, D)
    return torch.cat([wt, bt], dim=1)  # (heads, d + 1, D)


def query_energy(dense: DenseAttention, cov: Tensor, *, rope: bool) -> Tensor:
    """S_i = Σ_{h in group i} E[q_h q_hᵀ]: (Hkv, D, D); rotation-averaged per pair under RoPE."""
    h, g, d = dense.n_heads, dense.n_kv_heads, dense.head_dim
    q_aug = augmented(dense.wq, dense.bq, h, d)  # (H, d + 1, D)
    energy = q_aug.transpose(1, 2) @ cov @ q_aug  # (H, D, D)
    energy = energy.view(g, h // g, d, d).sum(1)  # (H, D, D) -> (Hkv, D, D): group sums
    if rope:
        diag = torch.diagonal(energy, dim1=1, dim2=2)  # (Hkv, D)
        pair = 0.5 * (diag[:, : d // 2] + diag[:, d // 2:])  # (Hkv, D/2)
        energy = torch.diag_embed(torch.cat([pair, pair], dim=1))  # (Hkv, D, D)
    return 0.5 * (energy + energy.transpose(1, 2))


def _sqrt_psd(mat: Tensor, floor: float = 1e-6) -> Tensor:
    """Symmetric square roots of (Hkv, D, D) PSD matrices, eigenvalues floored relative to
    each matrix's mean so that no key direction is weighted to zero."""
    vals, vecs = torch.linalg.eigh(mat)  # (Hkv, D), (Hkv, D, D)
    vals = vals.clamp_min(floor * vals.mean(-1, keepdim=True).clamp_min(1e-300))
    return vecs @ torch.diag_embed(vals.sqrt()) @ vecs.transpose(1, 2)


def qvka_layer(dense: DenseAttention, cov: Tensor, d_ctx: int, *, ridge: float = 1e-6,
               rope: bool = False, weighting: str = "query", max_iter: int = 60,
               tol: float = 1e-5, trace: list | None = None) -> tuple[dict[str, Tensor], dict]:
    """Fit one QV-Ka layer to `dense`'s keys; returns its state dict and fit diagnostics.

    cov: (d+1, d+1) second moment of [x ; 1]. ridge is relative to the mean diagonal of
    each normal-equation matrix. weighting: "query" (score-space error) or "none".
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    g, d = dense.n_kv_heads, dense.head_dim
    dm = dense.wq.shape[1]
    cov = cov.to(torch.float64)
    cov = 0.5 * (cov + cov.T)
    lt = psd_cholesky(cov).T  # (d + 1, d + 1): E||x~ M||² = ||Lᵀ M||²
    k_hat = lt @ augmented(dense.wk, dense.bk, g, d)  # (Hkv, d + 1, D) whitened keys
    v_hat = lt @ augmented(dense.wv, dense.bv, g, d)  # (Hkv, d + 1, D) whitened values
    q_x, r_x = torch.linalg.qr(lt[:, :dm])  # (d + 1, d), (d, d): G whitened = q_x · (r_x W)
    if weighting == "query":
        root = _sqrt_psd(query_energy(dense, cov, rope=rope))  # (Hkv, D, D)
    else:
        root = torch.eye(d, dtype=torch.float64).expand(g, d, d)
    k_w = k_hat @ root  # (Hkv, d + 1, D): targets in score space

    def design(y: Tensor) -> Tensor:  # [G ; V_i] whitened, (Hkv, d + 1, d_ctx + D)
        return torch.cat([(q_x @ y).expand(g, -1, -1), v_hat], dim=2)

    def fit_heads(y: Tensor, target: Tensor) -> tuple[Tensor, float]:
        z = design(y)
        coef = spd_solve(z.transpose(1, 2) @ z, z.transpose(1, 2) @ target, ridge)
        return coef, float(((z @ coef - target) ** 2).sum())  # (Hkv, d_ctx + D, D)

    # 1. Residual of the (weighted) keys after V alone, in the whitened x coordinates.
    b0 = spd_solve(v_hat.transpose(1, 2) @ v_hat, v_hat.transpose(1, 2) @ k_w, ridge)
    resid = q_x.T @ (k_w - v_hat @ b0)  # (Hkv, d, D)
    inits = [e for e in (_residual_directions(resid, d_ctx),
                         _shared_directions(resid, q_x.T @ v_hat, d_ctx)) if e is not None]
    inits = [torch.linalg.qr(e)[0] for e in inits]  # orthonormal (d, d_ctx)
    fits = [fit_heads(y, k_w)[1] for y in inits]
    best = min(range(len(fits)), key=fits.__getitem__)
    y, err0 = inits[best], fits[best]
    y, err, _, iters = _alternate(y, q_x, v_hat, k_w, ridge=ridge, max_iter=max_iter, tol=tol,
                                  trace=trace)
    target_w = float((k_w**2).sum())
    # 2. W_ctx with Wᵀ Cxx W = I (Cxx = r_xᵀ r_x), then the heads against the plain keys.
    w_ctx = torch.linalg.solve_triangular(r_x, y, upper=True)  # (d, d_ctx)
    coef, key_err = fit_heads(y, k_hat)
    state = {"q_proj.weight": dense.wq, "v_proj.weight": dense.wv,
             "ctx_proj.weight": w_ctx.T.contiguous(), "k_weight": coef,
             "o_proj.weight": dense.wo}
    state.update(_biases(dense, ("q", "v")))
    diag = {"key_fit_rel_error": key_err / max(float((k_hat**2).sum()), 1e-300),
            "fit_rel_error": err / max(target_w, 1e-300),
            "fit_rel_error_init": err0 / max(target_w, 1e-300),
            "weighting": weighting, "als_iterations": iters,
            "init": ("residual", "shared")[best]}
    return {**state, **dense.extra}, diag


def _alternate(y: Tensor, q_x: Tensor, v_hat: Tensor, k_w: Tensor, *, ridge: float,
               max_iter: int, tol: float, trace: list | None = None
               ) -> tuple[Tensor, float, float, int]:
    """Alternating least squares from y (d, d_ctx); returns (best y, its error, the error
    at y, steps). Works on Gram blocks only (q_x has orthonormal columns, so the whitened
    G = q_x·y has Gᵀ G = yᵀ y = I after each re-orthonormalisation):

    - heads: [A_i ; B_i] = ridge solve of [[I, yᵀP_i], [P_iᵀy, V_iᵀV_i]] against
      [yᵀ Kx_i ; V_iᵀ K_i], with P_i = q_xᵀ V_i and Kx_i = q_xᵀ K_i;
    - context: y = (Σ_i (Kx_i - P_i B_i) A_iᵀ)(Σ_i A_i A_iᵀ)⁻¹, then orthonormalised.
    """
    d_ctx = y.shape[1]
    p_x = q_x.T @ v_hat  # (Hkv, d, D)
    k_x = q_x.T @ k_w  # (Hkv, d, D)
    vv = v_hat.transpose(1, 2) @ v_hat  # (Hkv, D, D)
    vk = v_hat.transpose(1, 2) @ k_w  # (Hkv, D, D)
    kk = float((k_w**2).sum())
    g = v_hat.shape[0]
    eye = torch.eye(d_ctx, dtype=y.dtype).expand(g, d_ctx, d_ctx)

    def heads(y: Tensor) -> tuple[Tensor, float]:
        gp = y.T @ p_x  # (Hkv, d_ctx, D)
        gram = torch.cat([torch.cat([eye, gp], 2),
                          torch.cat([gp.transpose(1, 2), vv], 2)], 1)  # (Hkv, c + D, c + D)
        rhs = torch.cat([y.T @ k_x, vk], 1)  # (Hkv, d_ctx + D, D)
        coef = spd_solve(gram, rhs, ridge)  # (Hkv, d_ctx + D, D)
        err = kk - 2 * float((coef * rhs).sum()) + float((coef * (gram @ coef)).sum())
        return coef, max(err, 0.0)

    best, best_err = y, None
    first = None
    steps, prev = 0, None
    while steps < max_iter:
        steps += 1
        coef, err = heads(y)
        if first is None:
            first = err
        if trace is not None:
            trace.append(err)
        if best_err is None or err < best_err:
            best, best_err = y, err
        if prev is not None and prev - err <= tol * max(prev, 1e-300):
            break
        prev = err
        a, b = coef[:, :d_ctx], coef[:, d_ctx:]  # (Hkv, d_ctx, D), (Hkv, D, D)
        rhs = ((k_x - p_x @ b) @ a.transpose(1, 2)).sum(0)  # (d, d_ctx)
        normal = (a @ a.transpose(1, 2)).sum(0)  # (d_ctx, d_ctx)
        y = torch.linalg.qr(spd_solve(normal, rhs.T, 1e-12).T)[0]  # (d, d_ctx), same span
    return best, float(best_err), float(first), steps


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
