"""Shared skeleton of every attention variant, and the per-layer KV cache.

A variant subclasses `AttentionBase` and implements `forward_attn`: turn the normed input
into q, k, v (and decide what goes into the cache), then call `self.attend(...)`. The base
owns positions (RoPE tables, the AGF/ALiBi bias), the kernel choice and the output
projection, so variants differ only where the paper says they differ.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from qvka_core.attention.kernels import Impl, attend
from qvka_core.config import AttentionConfig
from qvka_core.positions import PositionBias, apply_rope, rope_cos_sin

# (module, list): that module's `attend` appends the (q, k, v) it is given, i.e. the vectors
# each variant really matches (QV's rotated values, QV-Ka's derived keys, MLA's decompressed
# keys). Set by `analysis.vectors` around one forward. A context variable, so that sessions
# running the same cached model in other threads neither see nor disturb it.
MATCHED: ContextVar[tuple[nn.Module, list[tuple[Tensor, Tensor, Tensor]]] | None] = ContextVar(
    "matched", default=None)


@dataclass
class LayerCache:
    """What one layer keeps between decode steps: named buffers written in place along time.

    Each buffer is (B, ..., C, D) with time on dim -2 and C >= `length` positions reserved.
    With `capacity` set (a decode that knows prompt + new tokens), each buffer is allocated
    once at its first write; without it, a full buffer is regrown to twice its size (copying
    once per doubling, never once per step). `nbytes`, the bytes of the filled positions, is
    what the accounting formula must equal; `reserved_bytes` is what is allocated.
    """

    tensors: dict[str, Tensor] = field(default_factory=dict)
    length: int = 0  # positions already cached
    capacity: int | None = None  # positions to reserve at the first write

    def extend(self, **new: Tensor) -> dict[str, Tensor]:
        """Write new time steps after the `length` cached ones; returns the filled views."""
        start = self.length
        out = {}
        for name, value in new.items():
            stop = start + value.shape[-2]
            buf = self._room(name, value, stop)
            buf.narrow(-2, start, value.shape[-2]).copy_(value)
            out[name] = buf.narrow(-2, 0, stop)  # (B, ..., S, D), a view: no copy
        return out

    def _room(self, name: str, value: Tensor, stop: int) -> Tensor:
        """The buffer for `name`, (re)allocated when it cannot hold `stop` positions."""
        buf = self.tensors.get(name)
        if buf is not None and buf.shape[-2] >= stop and buf.shape[:-2] == value.shape[:-2]:
            return buf
        old = 0 if buf is None else buf.shape[-2]
        size = max(stop, self.capacity or 0, 2 * old)
        grown = value.new_empty((*value.shape[:-2], size, value.shape[-1]))  # (B, ..., C, D)
        if buf is not None and self.length:
            grown.narrow(-2, 0, self.length).copy_(buf.narrow(-2, 0, self.length))
        self.tensors[name] = grown
        return grown

    @property
    def nbytes(self) -> int:
        """Bytes of the positions filled so far (the live extent), all buffers."""
        return sum(t.numel() // t.shape[-2] * self.length * t.element_size()
                   for t in self.tensors.values() if t.shape[-2])

    @property
    def reserved_bytes(self) -> int:
        """Bytes allocated, filled or not (>= nbytes)."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


@dataclass
class AttentionOutput:
    out: Tensor  # (B, T, d_model)
    weights: Tensor | None = None  # (B, H, T, S) when requested


class AttentionBase(nn.Module):
    """Base for all variants. Subclasses set their projections and implement `forward_attn`."""

    def __init__(self, cfg: AttentionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.pos_bias = (
            PositionBias(cfg.position, cfg.n_heads) if cfg.position in ("agf", "alibi") else None
        )

    # --- helpers used by variants -------------------------------------------------------
    def rope(self, positions: range, dim: int, like: Tensor) -> tuple[Tensor, Tensor]:
        """cos, sin (T, dim) for `positions`, in `like`'s dtype and on its device."""
        return rope_cos_sin(positions, dim, self.cfg.rope_theta, like.dtype, like.device)

    @staticmethod
    def rotate(x: Tensor, cos_sin: tuple[Tensor, Tensor] | None) -> Tensor:
        return x if cos_sin is None else apply_rope(x, *cos_sin)

    def split_heads(self, x: Tensor, n_heads: int) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, n_heads, -1).transpose(1, 2)  # (B, T, H·D) -> (B, H, T, D)

    @staticmethod
    def merge_heads(x: Tensor) -> Tensor:
        b, h, t, d = x.shape
        return x.transpose(1, 2).reshape(b, t, h * d)  # (B, H, T, D) -> (B, T, H·D)

    def attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        q_positions: range,
        key_padding_mask: Tensor | None,
        impl: Impl,
        return_weights: bool,
        scale: float | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Kernel call with the position bias and causal offset filled in."""
        capture = None if torch.compiler.is_compiling() else MATCHED.get()  # eager only
        if capture is not None and capture[0] is self:
            capture[1].append((q.detach(), k.detach(), v.detach()))
        s = k.shape[-2]
        bias = None
        if self.pos_bias is not None:
            q_pos = torch.arange(q_positions.start, q_positions.stop, device=q.device)  # (T,)
            k_pos = torch.arange(s, device=q.device)  # (S,)
            bias = self.pos_bias(q_pos, k_pos)[None]  # (1, H, T, S)
        return attend(
            q, k, v,
            causal=self.cfg.causal,
            scale=scale,
            bias=bias,
            key_padding_mask=key_padding_mask,
            q_offset=q_positions.start,
            impl=impl,
            dropout=self.cfg.dropout if self.training else 0.0,
            return_weights=return_weights,
        )

    # --- the interface -----------------------------------------------------------------
    def forward(
        self,
        x: Tensor,
        *,
        key_padding_mask: Tensor | None = None,
        cache: LayerCache | None = None,
        impl: Impl = "sdpa",
        return_weights: bool = False,
    ) -> AttentionOutput:
        """x: (B, T, d_model). With a cache, x holds only the new tokens."""
        start = cache.length if cache is not None else 0
        # The T new tokens as a plain range: RoPE and the causal offset then need no
        # read-back from the device (no host sync, no torch.compile graph break).
        positions = range(start, start + x.shape[1])
        out, weights = self.forward_attn(
            x, positions=positions, key_padding_mask=key_padding_mask, cache=cache,
            impl=impl, return_weights=return_weights,
        )
        if cache is not None:
            cache.length += x.shape[1]
        return AttentionOutput(out=out, weights=weights)

    def forward_attn(
        self,
        x: Tensor,
        *,
        positions: range,
        key_padding_mask: Tensor | None,
        cache: LayerCache | None,
        impl: Impl,
        return_weights: bool,
    ) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def kv_groups(self) -> list[list[int]]:
        """Query heads grouped by the cached tensor they read (for the Explorer's grouping)."""
        g = self.cfg.group_size
        return [list(range(i * g, (i + 1) * g)) for i in range(self.cfg.n_kv_heads)]
