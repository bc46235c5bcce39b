"""Choosing the next token: greedy, or sampled with temperature, top-k and top-p.

The order is HF's: logits / temperature, keep the k largest, keep the smallest set whose
probability reaches p (Holtzman et al. 2020, "nucleus sampling"; the top token always
stays), then draw from what is left with a seeded `torch.Generator`, so the same prompt and
seed give the same text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from qvka_core.errors import ConfigError


@dataclass(frozen=True)
class Sampling:
    """temperature 0 = greedy (top_k, top_p and seed are then unused)."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, int | float) and 0 <= self.temperature <= 100):
            raise ConfigError(f"temperature must be in 0..100 (0 = greedy), got "
                              f"{self.temperature!r}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise ConfigError(f"top_k must be a positive integer, got {self.top_k!r}")
        if self.top_p is not None and not (isinstance(self.top_p, int | float)
                                           and 0 < self.top_p <= 1):
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def generator(self, device: torch.device) -> torch.Generator | None:
        return None if self.greedy else torch.Generator(device=device).manual_seed(self.seed)


def filtered_logits(logits: Tensor, s: Sampling) -> Tensor:
    """(B, V) logits with temperature applied and tokens outside top-k / top-p set to -inf."""
    logits = logits.float() / s.temperature
    if s.top_k is not None and s.top_k < logits.shape[-1]:
        kth = torch.topk(logits, s.top_k).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if s.top_p is not None and s.top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True)  # (B, V) each
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)  # (B, V)
        drop = cum - torch.softmax(sorted_logits, dim=-1) >= s.top_p  # mass before >= p
        drop[:, 0] = False  # the most likely token always stays
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def choose(logits: Tensor, s: Sampling, generator: torch.Generator | None) -> Tensor:
    """(B, V) logits -> (B, 1) next token ids."""
    if s.greedy:
        return logits.argmax(-1, keepdim=True)  # (B, 1)
    probs = torch.softmax(filtered_logits(logits, s), dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator)  # (B, 1)
