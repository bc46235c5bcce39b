"""Bounds on every size a user can give, and the one memory estimate they are checked against.

Two kinds of check, both before anything is allocated:
- a sanity cap per field (`MAX`), far above any model this lab builds, so that a typo such as
  `--n-layers 100000000` is one error line, not a kernel OOM kill;
- a memory estimate (`training_bytes`, `model_bytes`, `forward_bytes`) compared with the
  machine's memory (`fits`). The formulas are the jobs estimate's (qvka_core.jobs.estimate):
  params x 16 bytes (fp32 weights, grads, two AdamW moments) + activations
  tokens x d_model x n_layers x 34 bytes (Korthikanti et al. 2022) + attention scores
  batch x heads x seq² x n_layers x 4 + logits tokens x vocab x 8 bytes.
Every refusal is a ConfigError naming the field, the value, the limit and the memory.
"""

from __future__ import annotations

import math
import os
from typing import Any

from qvka_core.errors import ConfigError
from qvka_core.machine import memory_bytes

GiB = 2**30
# Sanity caps: the largest value a field accepts at all (the memory check comes after).
MAX: dict[str, int] = {
    "n_layers": 1024, "n_heads": 1024, "n_kv_heads": 1024, "head_dim": 4096,
    "d_model": 65536, "ffn_dim": 1 << 20, "vocab_size": 1 << 22, "max_seq_len": 1 << 21,
    "type_vocab_size": 1 << 16, "d_ctx": 65536, "kv_lora_rank": 65536, "q_lora_rank": 65536,
    "qk_rope_head_dim": 4096, "qk_nope_head_dim": 4096, "v_head_dim": 4096,
    "batch": 1 << 20, "seq_len": 1 << 21, "eval_batches": 1 << 14, "steps": 10**9,
    "eval_every": 10**9, "log_every": 10**9, "checkpoint_every": 10**9, "warmup": 10**9,
    "seed": 2**63 - 1, "gpus": 1024,
}
MEASURE_MAX_BYTES = 2 * GiB  # "Measure on CPU" runs inside the (shared) app server


def max_threads() -> int:
    return max(1, os.cpu_count() or 1)


def check_int(name: str, value: Any, *, minimum: int = 1, label: str | None = None) -> None:
    """An integer in [minimum, MAX[name]] (threads: at most the CPU count)."""
    label = label or name
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{label} must be an integer, got {value!r}")
    top = max_threads() if name == "threads" else MAX.get(name)
    if value < minimum:
        rule = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{label} must be {rule}, got {value!r}")
    if top is not None and value > top:
        what = f"this machine's {top} CPU cores" if name == "threads" else f"{top:,}"
        raise ConfigError(f"{label} {value:,} exceeds the limit of {what}")


def check_finite(name: str, value: Any, *, minimum: float | None = None,
                 positive: bool = False) -> None:
    """A finite real number (never inf/NaN), > 0 or >= minimum as asked."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum:g}, got {value!r}")


def memory_capacity(kind: str = "cpu") -> int | None:
    return memory_bytes("cuda" if kind.startswith("cuda") else "cpu")


def human(n: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", GiB), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n / 1024:,.1f} KiB"


def params_of(cfg: Any) -> int:
    from qvka_core.accounting import param_breakdown

    return int(sum(param_breakdown(cfg).values()))


def model_bytes(cfg: Any) -> int:
    """fp32 weights of a built model (what loading a checkpoint allocates)."""
    return params_of(cfg) * 4


def activation_bytes(cfg: Any, batch: int, seq_len: int) -> int:
    tokens = batch * seq_len
    return (tokens * cfg.d_model * cfg.n_layers * 34
            + batch * cfg.attention.n_heads * seq_len**2 * cfg.n_layers * 4)


def training_parts(cfg: Any, *, batch: int, seq_len: int, eval_batches: int = 0,
                   teacher: bool = False) -> dict[str, int]:
    """Peak training memory by part (bytes); the jobs estimate shows these."""
    params, tokens = params_of(cfg), batch * seq_len
    parts = {"weights": params * 4, "gradients": params * 4, "adam_moments": params * 8,
             "activations": activation_bytes(cfg, batch, seq_len),
             "logits": tokens * cfg.vocab_size * 8}
    if eval_batches:  # fixed validation windows: inputs and targets, int64
        parts["validation_windows"] = eval_batches * tokens * 16
    if teacher:  # a frozen fp32 copy of the teacher, plus its logits
        parts["teacher"] = params * 4 + tokens * cfg.vocab_size * 4
    return parts


def forward_bytes(cfg: Any, batch: int, seq_len: int, *, backward: bool = False) -> int:
    """One measured forward (and backward): weights, one layer's activations and scores
    (all layers' with backward), logits. The MATH kernel materialises the S x S scores."""
    layers = cfg.n_layers if backward else 1
    tokens = batch * seq_len
    act = (tokens * cfg.d_model * layers * 34
           + batch * cfg.attention.n_heads * seq_len**2 * layers * 4 * 3)
    return model_bytes(cfg) * (2 if backward else 1) + act + tokens * cfg.vocab_size * 8


def fits(total: int, *, what: str, given: str, kind: str = "cpu",
         limit: int | None = None) -> None:
    """Refuse `total` bytes beyond `limit` (default: the machine's memory of `kind`)."""
    capacity = memory_capacity(kind)
    bound = limit if limit is not None else capacity
    if bound is None or total <= bound:
        return
    memory = "GPU memory" if kind.startswith("cuda") else "RAM"
    machine = (f"this machine has {human(capacity)} of {memory}" if capacity
               else "this machine's memory is unknown")
    rule = f"the limit of {human(bound)}" if limit is not None else "the machine's memory"
    raise ConfigError(f"{given}: {what} is an estimated {human(total)}, more than {rule} "
                      f"({machine})")


def check_model(cfg: Any, *, source: str, kind: str = "cpu") -> None:
    """A model about to be built from `cfg` (a checkpoint's config.json, a preset) fits."""
    fits(model_bytes(cfg), what=f"the model ({params_of(cfg):,} parameters, fp32)",
         given=f"{source} (n_layers {cfg.n_layers}, d_model {cfg.d_model}, vocab "
               f"{cfg.vocab_size})", kind=kind)


def check_writable_dir(path: Any, label: str) -> None:
    """`path` is (or can be created as) a directory this process may write into; checked
    before the work whose result goes there, so a read-only folder costs nothing."""
    from pathlib import Path

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{label} {path} is a file, not a directory")
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{label} {path}: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{label} {path}: {probe} is not writable")
