"""Position schemes: rotary (RoPE), sinusoidal and learned absolute, AGF and ALiBi logit biases.

- RoPE (Su et al. 2021) in the half-split ("rotate_half") layout used by Llama in HF.
- Sinusoidal (Vaswani et al. 2017), the paper's "Default" set-up: added to the embeddings.
- AGF, "Attention's Gravitational Field" (arXiv 2603.04805), reconstructed as in
  notes/paper.md §8 (1): bias_h(i, j) = -α_h · ln(1 + |i - j|), α_h > 0 learnable per head
  (softplus keeps it positive, init α = 1). A power law in distance, KERPLE's log kernel.
- ALiBi (Press et al. 2022): bias_h(i, j) = -m_h · |i - j|, fixed geometric slopes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_ROPE_TABLES: dict[tuple, tuple[Tensor, Tensor]] = {}


def rope_cos_sin(
    positions: Tensor | range, dim: int, theta: float, dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """cos, sin of shape (T, dim) for T positions; dim must be even.

    A `range` (the T new tokens of a forward pass: always contiguous) gives views of a
    table computed once per (dim, theta, device, dtype) and grown on demand, so the layers
    share it and nothing is read back from the device (no host sync, no graph break under
    torch.compile). A tensor of positions is gathered from the same table.
    """
    if isinstance(positions, range):
        if torch.compiler.is_compiling():  # in-graph: a shared table would be guarded on, and
            # filling it on the first call would force a second compilation
            cos, sin = _rope_angles(dim, theta, torch.device(device or "cpu"), dtype,
                                    positions.stop)
        else:
            cos, sin = _rope_table(dim, theta, torch.device(device or "cpu"), dtype,
                                   max(positions.stop, 1))
        return cos[positions.start:positions.stop], sin[positions.start:positions.stop]
    needed = int(positions.max()) + 1 if positions.numel() else 1
    cos, sin = _rope_table(dim, theta, positions.device, dtype, needed)
    return cos[positions], sin[positions]


def _rope_table(dim: int, theta: float, device: torch.device, dtype: torch.dtype,
                needed: int) -> tuple[Tensor, Tensor]:
    """The shared (size >= needed, dim) cos and sin tables."""
    key = (dim, float(theta), device, dtype)
    table = _ROPE_TABLES.get(key)
    if table is None or table[0].shape[0] < needed:
        size = max(needed, 2 * table[0].shape[0] if table is not None else 256)
        # Shared across calls, so never an inference-mode tensor (autograd refuses those)
        # and never part of a graph.
        with torch.inference_mode(False), torch.no_grad():
            table = _rope_angles(dim, theta, device, dtype, size)
        _ROPE_TABLES[key] = table
    return table


def _rope_angles(dim: int, theta: float, device: torch.device, dtype: torch.dtype,
                 size: int) -> tuple[Tensor, Tensor]:
    """cos and sin of position × frequency, (size, dim), halves repeated (rotate_half)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, device=device).float() / dim))
    angles = torch.arange(size, device=device).float()[:, None] * inv_freq  # (size, dim/2)
    emb = torch.cat([angles, angles], dim=-1)  # (size, dim)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x (..., T, D) by position; cos/sin are (T, D)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)  # rotate_half
    return x * cos + rotated * sin


def sinusoidal_table(n_positions: int, dim: int) -> Tensor:
    """(n_positions, dim) sin/cos table, interleaved as in Vaswani et al. (even = sin)."""
    pos = torch.arange(n_positions).float()[:, None]  # (P, 1)
    div = torch.exp(torch.arange(0, dim, 2).float() * (-math.log(10000.0) / dim))  # (dim/2,)
    table = torch.zeros(n_positions, dim)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div[: dim // 2])
    return table


def alibi_slopes(n_heads: int) -> Tensor:
    """ALiBi's geometric slopes 2^(-8i/n), extended for non-powers of two as in the paper."""

    def powers(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n_heads).is_integer():
        return torch.tensor(powers(n_heads))
    closest = 2 ** math.floor(math.log2(n_heads))
    extra = powers(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(powers(closest) + extra)


class PositionBias(nn.Module):
    """Relative logit bias (H, T, S) for AGF (learnable α_h) or ALiBi (fixed slopes)."""

    def __init__(self, kind: str, n_heads: int) -> None:
        super().__init__()
        if kind not in ("agf", "alibi"):
            raise ValueError(f"PositionBias kind must be 'agf' or 'alibi', got {kind!r}")
        self.kind = kind
        if kind == "agf":
            # softplus(raw) = 1.0 at init: α_h starts at the inverse-square-root-free power 1.
            raw = math.log(math.e - 1.0)
            self.alpha_raw = nn.Parameter(torch.full((n_heads,), raw))
        else:
            self.register_buffer("slopes", alibi_slopes(n_heads), persistent=False)

    def strength(self) -> Tensor:
        """α_h (AGF) or m_h (ALiBi), shape (H,)."""
        return F.softplus(self.alpha_raw) if self.kind == "agf" else self.slopes

    def forward(self, q_positions: Tensor, k_positions: Tensor) -> Tensor:
        dist = (q_positions[:, None] - k_positions[None, :]).abs().float()  # (T, S)
        shape = -torch.log1p(dist) if self.kind == "agf" else -dist  # (T, S)
        return self.strength()[:, None, None] * shape[None]  # (H, T, S)
