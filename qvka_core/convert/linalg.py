"""Numerically stable solves for the conversions' normal equations.

Every fit in `convert/` solves G X = R with G a symmetric positive semi-definite Gram matrix
(second moments of calibration activations, or whitened design matrices). LU with partial
pivoting (`torch.linalg.solve`) is the wrong tool for that: it ignores the symmetry, and one
QV-Ka d_ctx 128 conversion of SmolLM2 once died inside it (MKL "DLASWP parameter 6", then
"Pivots given to lu_solve must be ..."). Here G is symmetrised, given a ridge relative to its
mean diagonal, and factorised by Cholesky in float64 (`cholesky_ex`, which reports failure
instead of raising); if the factorisation fails the ridge grows tenfold, and after a few
tries an eigendecomposition pseudo-inverse answers, so a rank-deficient or all-zero G always
gets a finite least-squares solution.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from qvka_core.errors import DataError

MAX_TRIES = 6


def _eye_like(gram: Tensor) -> Tensor:
    return torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)


def spd_solve(gram: Tensor, rhs: Tensor, ridge: float = 1e-10) -> Tensor:
    """X with (G + λI) X = R, λ = ridge · mean(diag G) (per matrix of a batch).

    gram: (..., n, n) symmetric PSD; rhs: (..., n, k). float64 throughout; returns rhs's
    shape. Never fails on a singular G: the ridge grows, then a pseudo-inverse takes over;
    non-finite input is a DataError.
    """
    g = gram.to(torch.float64)
    g = 0.5 * (g + g.transpose(-2, -1))
    r = rhs.to(torch.float64)
    if not (bool(torch.isfinite(g).all()) and bool(torch.isfinite(r).all())):
        raise DataError("the calibration statistics hold NaN or infinite values (a model "
                        "whose activations overflow, or corrupt weights); nothing to fit")
    scale = torch.diagonal(g, dim1=-2, dim2=-1).mean(-1).clamp_min(1e-300)  # (...,)
    eye = _eye_like(g)
    lam = max(float(ridge), 1e-15)
    for _ in range(MAX_TRIES):
        chol, info = torch.linalg.cholesky_ex(g + (lam * scale)[..., None, None] * eye)
        if not bool((info != 0).any()):
            out = torch.cholesky_solve(r, chol)
            if bool(torch.isfinite(out).all()):
                return out
        lam *= 10.0
    return pinv_solve(g, r)


def pinv_solve(gram: Tensor, rhs: Tensor, rcond: float = 1e-12) -> Tensor:
    """Minimum-norm solution of G X = R through G's eigendecomposition (G symmetric PSD)."""
    vals, vecs = torch.linalg.eigh(gram)  # (..., n), (..., n, n)
    cut = rcond * vals.abs().amax(-1, keepdim=True).clamp_min(1e-300)
    inv = torch.where(vals > cut, 1.0 / vals.clamp_min(1e-300), torch.zeros_like(vals))
    return vecs @ (inv[..., :, None] * (vecs.transpose(-2, -1) @ rhs))


def psd_cholesky(mat: Tensor, jitter: float = 1e-10) -> Tensor:
    """Lower Cholesky factor L of a PSD matrix (L Lᵀ ≈ mat + λI), with a growing jitter
    relative to the mean diagonal so that a singular second moment still factorises."""
    m = mat.to(torch.float64)
    m = 0.5 * (m + m.transpose(-2, -1))
    scale = float(torch.diagonal(m, dim1=-2, dim2=-1).mean().clamp_min(1e-300))
    eye = _eye_like(m)
    lam = max(jitter, 1e-15)
    for _ in range(MAX_TRIES + 4):
        chol, info = torch.linalg.cholesky_ex(m + lam * scale * eye)
        if not bool((info != 0).any()):
            return chol
        lam *= 10.0
    vals, vecs = torch.linalg.eigh(m)  # last resort: clip negative eigenvalues
    return torch.linalg.cholesky(vecs @ torch.diag_embed(vals.clamp_min(lam * scale))
                                 @ vecs.transpose(-2, -1))


@contextmanager
def few_threads(n: int = 1) -> Iterator[None]:
    """Run the fits' small float64 algebra on `n` threads, then restore the setting.

    The fits multiply and factorise matrices of a few hundred rows thousands of times; with
    two OpenMP threads on a CPU shared with other work each call waits for a busy core
    (measured on this 2-core machine under load: 100 QV-Ka fit steps of a SmolLM2 layer took
    26 s on 2 threads, 0.55 s on 1). The setting is process-wide, so it is held only while a
    fit runs.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(n, before)))
    try:
        yield
    finally:
        torch.set_num_threads(before)
