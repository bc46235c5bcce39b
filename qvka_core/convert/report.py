"""Fidelity report of a conversion: how far the converted model drifted from its source.

- Attention maps: per layer, the Jensen–Shannon divergence (in bits, so in [0, 1]) between
  the source's and the target's attention distributions, averaged over heads and query
  positions (Lin 1991; the same per-row comparison MHA2MLA and TransMLA report as KL).
- Final hidden states: mean cosine similarity over tokens (after the final norm).
- LM loss (cross-entropy, nats/token) on held-out text, before and after (causal LMs only),
  on ≥ 4,096 tokens of several texts with the paired standard error of the difference and
  the loss per text (`fidelity.py`).
- Parameters (numel, and the attention part) and KV-cache bytes per token (bf16, all layers,
  what each variant actually caches; `qvka_core.accounting`).
- Timings of each phase, the evaluation text's origin, and per-method diagnostics.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from qvka_core.accounting import kv_cache_bytes_per_token
from qvka_core.config import ModelConfig
from qvka_core.model import Transformer


@dataclass
class ConversionReport:
    source: str
    source_variant: str
    target_variant: str
    method: str
    options: dict[str, Any]
    eval_source: str
    eval_tokens: int
    js_divergence_per_layer: list[float]
    js_divergence_mean: float
    hidden_cosine: float
    loss_before: float | None
    loss_after: float | None
    params_before: int
    params_after: int
    attention_params_before: int
    attention_params_after: int
    kv_cache_bytes_per_token_before: int
    kv_cache_bytes_per_token_after: int
    eval_windows: int = 0
    js_eval_tokens: int = 0  # the attention maps' share of eval_tokens (eager path)
    loss_diff_se: float | None = None  # paired over windows: sd(after - before) / √windows
    eval_texts: dict[str, dict[str, float]] = field(default_factory=dict)  # per-text losses
    timings_s: dict[str, float] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (floats, ints, strings, lists, dicts only)."""
        return _jsonable(asdict(self))

    def summary(self) -> str:
        """A few lines for the CLI."""
        loss = "n/a"
        if self.loss_before is not None:
            se = "" if self.loss_diff_se is None else (
                f" ± {self.loss_diff_se:.3f} paired SE over {self.eval_windows} windows")
            loss = (f"{self.loss_before:.3f} -> {self.loss_after:.3f} nats/token "
                    f"({self.loss_after - self.loss_before:+.3f}{se})")
        return "\n".join([
            f"{self.source} ({self.source_variant}) -> {self.target_variant}: {self.method}",
            f"  attention JS divergence (mean over layers, {self.js_eval_tokens:,} tokens): "
            f"{self.js_divergence_mean:.4f} bits",
            f"  final hidden cosine: {self.hidden_cosine:.4f}",
            f"  LM loss on {self.eval_tokens:,} tokens ({self.eval_source}): {loss}",
            f"  parameters: {self.params_before:,} -> {self.params_after:,} "
            f"(attention {self.attention_params_before:,} -> {self.attention_params_after:,})",
            f"  KV cache per token (bf16): {self.kv_cache_bytes_per_token_before:,} -> "
            f"{self.kv_cache_bytes_per_token_after:,} bytes",
        ])


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Tensor):
        return _jsonable(x.tolist())
    return x


def count_params(model: Transformer) -> tuple[int, int]:
    """(all parameters, attention parameters), shared tensors counted once."""
    total = sum(p.numel() for p in model.parameters())
    attn = sum(p.numel() for layer in model.layers for p in layer.attn.parameters())
    return total, attn


def kv_bytes_per_token(cfg: ModelConfig, dtype: str = "bf16") -> int:
    return int(kv_cache_bytes_per_token(cfg, dtype))


def js_divergence(p: Tensor, q: Tensor) -> Tensor:
    """Jensen–Shannon divergence in bits along the last dim; (…, S) -> (…)."""
    p, q = p.double(), q.double()
    m = 0.5 * (p + q)

    def kl(a: Tensor) -> Tensor:
        ratio = torch.where(a > 0, a / m.clamp_min(1e-300), torch.ones_like(a))
        return (a * torch.log2(ratio)).sum(-1)

    return (0.5 * kl(p) + 0.5 * kl(q)).clamp_min(0.0)
