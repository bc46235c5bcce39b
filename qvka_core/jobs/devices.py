"""Device discovery and the device slots a job may use ("cpu", "cuda:0", "cuda:1", ...).

One job runs per slot at a time: the CPU is one slot, each GPU is one slot. Counting GPUs and
their memory is qvka_core.machine's (re-exported here).
"""

from __future__ import annotations

import os
from typing import Any

from qvka_core.errors import RunError
from qvka_core.machine import cuda_device_count, memory_bytes

__all__ = ["cuda_device_count", "devices", "memory_bytes", "resolve_device"]

CPU_THREADS_NOTE = "CPU jobs share the machine's cores; one CPU job runs at a time."


def devices() -> dict[str, Any]:
    """What the queue can schedule on: {"cuda": bool, "gpu_count": n, "slots": [...]}."""
    n = cuda_device_count()
    names: list[str] = []
    if n and not os.environ.get("QVKA_FAKE_GPUS"):
        import torch

        names = [torch.cuda.get_device_name(i) for i in range(n)]
    return {"cuda": n > 0, "gpu_count": n, "gpu_names": names,
            "slots": ["cpu"] + [f"cuda:{i}" for i in range(n)], "note": CPU_THREADS_NOTE}


def resolve_device(device: str, n_gpus: int = 1) -> tuple[list[str], int]:
    """The candidate slots for a job and its GPU count.

    "cpu" -> ["cpu"]; "cuda:N" -> ["cuda:N"]; "cuda" -> every GPU (the first free one is
    taken); "auto" -> every GPU if any, else the CPU. n_gpus > 1 needs that many GPUs.
    """
    if not isinstance(n_gpus, int) or n_gpus < 1:
        raise RunError(f"n_gpus must be a positive integer, got {n_gpus!r}")
    n = cuda_device_count()
    if device == "cpu" or (device == "auto" and n == 0):
        if n_gpus > 1:
            raise RunError("n_gpus > 1 needs CUDA devices; this machine has none")
        return ["cpu"], 1
    if device in ("cuda", "auto"):
        if n == 0:
            raise RunError("device 'cuda' asked for, but no CUDA device is available")
        if n_gpus > n:
            raise RunError(f"n_gpus={n_gpus} but only {n} CUDA device(s) are visible")
        return [f"cuda:{i}" for i in range(n)], n_gpus
    if device.startswith("cuda:"):
        idx = device.split(":", 1)[1]
        if not idx.isdigit() or int(idx) >= n:
            raise RunError(f"device {device!r} does not exist; visible GPUs: {n}")
        if n_gpus != 1:
            raise RunError("a single cuda:N device runs one GPU; use device='cuda' with n_gpus")
        return [device], 1
    raise RunError(f"device must be cpu, cuda, cuda:N or auto, got {device!r}")
