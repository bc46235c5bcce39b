"""A small GPU table and a decode roofline (Williams et al. 2009, applied per decode step).

Peaks are dense (no 2:4 sparsity) BF16 tensor-core FLOP/s and HBM/GDDR bandwidth as printed
on each vendor datasheet; real decode reaches perhaps 60-80% of the bandwidth figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qvka_core.accounting import (
    decode_flops_per_token,
    dtype_bytes,
    kv_cache_bytes_per_token,
    param_breakdown,
)
from qvka_core.config import ModelConfig
from qvka_core.errors import ConfigError


@dataclass(frozen=True)
class GPU:
    name: str
    bandwidth: float  # bytes/s
    peak_flops: float  # dense bf16 FLOP/s
    memory_bytes: int
    source: str


GPUS: dict[str, GPU] = {
    # NVIDIA H100 Tensor Core GPU datasheet (SXM): 3.35 TB/s HBM3, BF16 1,979 TFLOPS with
    # sparsity -> 989.4 dense, 80 GB.
    "H100 SXM": GPU("H100 SXM", 3.35e12, 989.4e12, 80 * 10**9,
                    "NVIDIA H100 Tensor Core GPU datasheet"),
    # NVIDIA H200 Tensor Core GPU datasheet (SXM): 4.8 TB/s HBM3e, BF16 1,979 TFLOPS sparse
    # -> 989.4 dense, 141 GB.
    "H200": GPU("H200", 4.8e12, 989.4e12, 141 * 10**9, "NVIDIA H200 Tensor Core GPU datasheet"),
    # NVIDIA A100 Tensor Core GPU datasheet (80GB SXM): 2,039 GB/s HBM2e, BF16 312 TFLOPS dense.
    "A100 80GB SXM": GPU("A100 80GB SXM", 2.039e12, 312e12, 80 * 10**9,
                         "NVIDIA A100 Tensor Core GPU datasheet"),
    # NVIDIA Ada Lovelace GPU architecture whitepaper, GeForce RTX 4090: 1,008 GB/s GDDR6X,
    # BF16 tensor 165.2 TFLOPS dense with FP32 accumulate, 24 GB.
    "RTX 4090": GPU("RTX 4090", 1.008e12, 165.2e12, 24 * 10**9,
                    "NVIDIA Ada Lovelace GPU architecture whitepaper"),
}


def gpu_names() -> list[str]:
    return list(GPUS)


def get_gpu(name: str) -> GPU:
    if name not in GPUS:
        raise ConfigError(f"unknown gpu {name!r}; valid gpus: {', '.join(GPUS)}")
    return GPUS[name]


def weight_bytes_read_per_step(cfg: ModelConfig, dtype: str = "bf16") -> int:
    """Weights streamed once per decode step: all but the embedding table, plus the head.

    The embedding lookup reads one row per sequence (ignored); a tied head still reads the
    whole V x d matrix.
    """
    p = param_breakdown(cfg)
    elems = sum(p.values()) - p["embeddings"]
    if cfg.lm_head and cfg.tie_embeddings:
        elems += cfg.vocab_size * cfg.d_model
    return elems * dtype_bytes(dtype)


def decode_roofline(
    cfg: ModelConfig, gpu: str | GPU, context_len: int, batch: int = 1, dtype: str = "bf16"
) -> dict[str, Any]:
    """Decode tokens/s ≈ batch x min(bandwidth / bytes per step, peak / FLOPs per step).

    bytes per step = weights (once, shared by the batch) + KV cache read (batch x context);
    FLOPs per step = batch x weights-inclusive decode FLOPs per token at `context_len`.
    An upper bound: no kernel overheads, perfect overlap, nothing else in memory.
    """
    g = get_gpu(gpu) if isinstance(gpu, str) else gpu
    for name, value in (("context_len", context_len), ("batch", batch)):
        if not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    w_bytes = weight_bytes_read_per_step(cfg, dtype)
    kv_bytes = kv_cache_bytes_per_token(cfg, dtype) * context_len * batch
    flops = decode_flops_per_token(cfg, context_len) * batch
    steps_bw = g.bandwidth / (w_bytes + kv_bytes)
    steps_compute = g.peak_flops / flops
    steps = min(steps_bw, steps_compute)
    resident = param_breakdown_total(cfg) * dtype_bytes(dtype) + kv_bytes
    return {
        "gpu": g.name,
        "source": g.source,
        "context_len": context_len,
        "batch": batch,
        "dtype": dtype,
        "weight_bytes_per_step": w_bytes,
        "kv_bytes_per_step": kv_bytes,
        "flops_per_step": flops,
        "tokens_per_s": steps * batch,
        "tokens_per_s_bandwidth_bound": steps_bw * batch,
        "tokens_per_s_compute_bound": steps_compute * batch,
        "bound": "bandwidth" if steps_bw <= steps_compute else "compute",
        "step_intensity": flops / (w_bytes + kv_bytes),  # FLOPs per byte of this step
        "ridge_intensity": g.peak_flops / g.bandwidth,
        "fits_in_memory": resident <= g.memory_bytes,
        "resident_bytes": resident,
    }


def param_breakdown_total(cfg: ModelConfig) -> int:
    return sum(param_breakdown(cfg).values())
