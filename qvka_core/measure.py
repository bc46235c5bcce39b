"""Measured costs of a small model built on CPU, next to the analytic numbers.

- parameters: `sum(p.numel())` of the built `Transformer` (tied weights counted once);
- KV cache: prefill seq_len - 1 tokens, decode one, then `sum(c.nbytes for c in cache)`;
- FLOPs: `torch.utils.flop_counter.FlopCounterMode` on one forward (optionally + backward)
  under `sdpa_kernel(SDPBackend.MATH)`. On CPU the default SDPA kernel has no FLOP formula
  and is silently counted as 0 (notes/stack.md §5, pytorch#195460); MATH decomposes into
  bmm, which is counted, over the full S x S matrix, so the analytic side is taken without
  causal halving.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from qvka_core import limits
from qvka_core.accounting import DTYPE_BYTES, costs, dtype_bytes
from qvka_core.config import ModelConfig
from qvka_core.errors import ConfigError
from qvka_core.model import Transformer

MAX_PARAMS = 200_000_000
MAX_SEQ_LEN = 4096
_TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _count_flops(fn: Any) -> int:
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        fn()
    return int(counter.get_total_flops())


def measure(
    cfg: ModelConfig,
    *,
    seq_len: int,
    batch: int = 1,
    dtype: str = "fp32",
    backward: bool = False,
) -> dict[str, Any]:
    """Build `cfg` on CPU and measure it; returns measured, analytic and relative differences.

    Refuses (ConfigError) configs over 200M parameters or seq_len over 4096 / max_seq_len.
    `backward=True` also counts forward + backward FLOPs (compare with training FLOPs).
    """
    dtype_bytes(dtype)
    report = costs(cfg, seq_len=seq_len, batch=batch, dtype=dtype, causal_halving=False)
    if report.params_total > MAX_PARAMS:
        raise ConfigError(
            f"measure builds the model on CPU: {report.params_total:,} parameters exceeds "
            f"the limit of {MAX_PARAMS:,}; use the analytic costs instead"
        )
    if seq_len > min(MAX_SEQ_LEN, cfg.max_seq_len):
        raise ConfigError(
            f"seq_len must be at most {min(MAX_SEQ_LEN, cfg.max_seq_len)} for measure "
            f"(max_seq_len {cfg.max_seq_len}, CPU limit {MAX_SEQ_LEN}), got {seq_len}"
        )
    limits.fits(limits.forward_bytes(cfg, batch, seq_len, backward=backward),
                what="measuring on CPU", given=f"batch {batch}, seq_len {seq_len}",
                limit=min(limits.MEASURE_MAX_BYTES, limits.memory_capacity() or 2**62))
    model = Transformer(cfg).eval()
    params = sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, cfg.vocab_size, (batch, seq_len))  # (B, S)
    with torch.no_grad():
        forward = _count_flops(lambda: model(ids))
    training = None
    if backward:
        model.train()

        def step() -> None:
            out = model(ids)
            parts = [out.hidden_states, out.logits, out.pooled]  # every output gets gradients
            sum(t.float().mean() for t in parts if t is not None).backward()

        training = _count_flops(step)
        model.zero_grad(set_to_none=True)
    kv_bytes = None
    if cfg.causal:
        model = model.to(_TORCH_DTYPES[dtype])
        cache = model.new_cache()
        with torch.no_grad():
            if seq_len > 1:
                model(ids[:, : seq_len - 1], cache=cache)
            model(ids[:, seq_len - 1 :], cache=cache)
        kv_bytes = sum(c.nbytes for c in cache)
    analytic = {
        "params_total": report.params_total,
        "forward_flops": report.flops["forward_per_step"],
        "training_flops": report.flops["training_per_step"],
        "kv_cache_bytes": report.kv_cache_bytes,
    }
    measured = {
        "params_total": params,
        "forward_flops": forward,
        "training_flops": training,
        "kv_cache_bytes": kv_bytes,
    }
    return {
        "variant": cfg.variant,
        "seq_len": seq_len,
        "batch": batch,
        "dtype": dtype,
        "bytes_per_element": DTYPE_BYTES[dtype],
        "measured": measured,
        "analytic": analytic,
        "rel_diff": {k: _rel(measured[k], analytic[k]) for k in analytic},
        "notes": [
            "FLOPs counted by FlopCounterMode under the MATH SDPA backend (full S x S scores),"
            " compared with analytic FLOPs without causal halving.",
            "KV bytes read after prefilling seq_len - 1 tokens and decoding one.",
        ],
    }


def _rel(measured: float | None, analytic: float) -> float | None:
    if measured is None:
        return None
    if analytic == 0:
        return 0.0 if measured == 0 else float("inf")
    return (measured - analytic) / analytic
