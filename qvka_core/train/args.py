"""`TrainArgs`: everything one training run needs, frozen and validated once.

A run either builds a model from scratch (`preset` + `variant` + variant options) or starts
from a checkpoint (`init`, any name or directory `load_checkpoint` accepts, converted or
not). The same runner does pre-training and fine-tuning. Every rule broken raises a
`ConfigError` naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qvka_core import limits, paths
from qvka_core.config import POSITIONS
from qvka_core.errors import ConfigError

SCHEDULES = ("cosine", "constant")


DEVICES = ("auto", "cpu", "cuda", "mps")
DISTILL = ("none", "logits", "hidden")


SCRATCH_LR = 2e-3  # tiny models from scratch (the bundled ones were trained at 3e-3)
FINETUNE_LR = 1e-4  # a pretrained or converted checkpoint: heal it, do not retrain it

@dataclass(frozen=True, kw_only=True)
class TrainArgs:
    """One training run (pre-training or fine-tuning)."""

    # --- model -----------------------------------------------------------------------------
    preset: str | None = "austen"
    """Model preset for a from-scratch run: "austen" (the bundled d128 decoder) or any name of
    `qvka_core.presets`. Ignored when `init` is given."""
    variant: str | None = None
    """Attention variant (see `available_variants()`); None keeps the preset's/checkpoint's."""
    position: str | None = None
    """Position scheme override: rope, sinusoidal, learned, agf, alibi, none."""
    n_kv_heads: int | None = None
    """KV heads for gqa (None: the preset's or recost's default)."""
    d_ctx: int | None = None
    """QV-Ka context width (None: head_dim)."""
    kv_lora_rank: int | None = None
    """MLA latent width (None: recost's default, 4·head_dim capped at d_model)."""
    variant_options: dict[str, Any] = field(default_factory=dict)
    """Any other variant option by name, as NAME=VALUE on the command line (e.g. n_v_heads=2
    for vshared; `python -m qvka_core variants` lists each variant's options); checked by
    the variant's spec."""
    n_layers: int | None = None
    """Override the preset's layer count."""
    n_heads: int | None = None
    """Override the preset's query heads (head_dim = d_model / n_heads)."""
    embed_scale: bool | None = None
    """Scale token embeddings by sqrt(d_model) (init d^-1/2). None: only under sinusoidal
    positions; set it to compare position schemes under one embedding init and scale."""
    init: str | None = None
    """Start from this checkpoint (name or directory) instead of a fresh preset model. A
    `variant` different from the checkpoint's converts it on load (`load_checkpoint(init,
    variant=...)`); variant options and n_layers cannot be combined with init."""

    # --- data ------------------------------------------------------------------------------
    data: str = "austen"
    """"austen" (bundled corpus) or the path of a UTF-8 text file (last 5 % = validation)."""
    tokenizer: str | None = None
    """tokenizer.json for from-scratch runs (None: the bundled Austen BPE)."""

    # --- optimisation ----------------------------------------------------------------------
    steps: int = 300
    """Optimizer steps in total (a resumed run continues up to this step)."""
    batch: int = 32
    """Global batch in sequences (split across DDP ranks)."""
    seq_len: int = 128
    """Tokens per training window."""
    lr: float | None = None
    """Peak learning rate (AdamW). None: 2e-3 from scratch, 1e-4 when fine-tuning `init`
    (the from-scratch rate wrecks a pretrained model: SmolLM2's loss rose 4.40 -> 5.26)."""
    warmup: int | None = None
    """Linear warm-up steps (None: 10 % of steps, at most 100)."""
    schedule: str = "cosine"
    """"cosine" (decay to 10 % of lr at the last step) or "constant" after warm-up."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay on matrices (not on norms, biases, scalars)."""
    grad_clip: float = 1.0
    """Global gradient-norm clip; 0 disables."""
    seed: int = 0
    """Seeds the initialisation and the batches: batch(step) depends on (seed, step) only."""

    # --- evaluation, logging, checkpoints ---------------------------------------------------
    eval_every: int = 100
    """Evaluate on the fixed validation windows every this many steps (and at the end)."""
    eval_batches: int = 8
    """Validation windows = eval_batches · batch, evenly spaced over the validation split."""
    log_every: int = 10
    """Write a metrics line every this many steps (and at eval and final steps)."""
    checkpoint_every: int = 100
    """Write `checkpoint/` every this many steps (and at the end); 0 = only at the end."""

    # --- hardware --------------------------------------------------------------------------
    device: str = "auto"
    """auto (CUDA, then MPS, then CPU), cpu, cuda or mps. CUDA uses bf16 autocast."""
    threads: int | None = None
    """torch CPU threads (None: leave torch's setting)."""

    # --- distillation ----------------------------------------------------------------------
    distill: str = "none"
    """none, logits (KL to the teacher's softened logits) or hidden (MSE on final hiddens)."""
    teacher: str | None = None
    """Teacher checkpoint name or directory (same vocabulary; same d_model for hidden)."""
    temperature: float = 2.0
    """Softening temperature for logit distillation (loss scaled by T²)."""
    distill_weight: float = 0.5
    """Loss = (1 − w)·CE + w·distillation term."""
    reference: str | None = None
    """Checkpoint evaluated once before step 1 on the run's own validation windows
    (`ref_val_loss`, `ref_val_acc` in the step-0 metrics): the baseline a converted model's
    recovery is measured against, at the same context length. None: the teacher, if any."""

    # --- output ----------------------------------------------------------------------------
    out: str = field(default_factory=lambda: str(paths.runs_root()))
    """Parent directory of run directories (`qvka_core.paths.runs_root()`)."""
    name: str | None = None
    """Run directory name under `out` (None: "<variant>-<position>-s<seed>", or
    "<init>-ft-s<seed>" when fine-tuning)."""
    resume: bool = False
    """Continue the run in out/name from its last good checkpoint."""

    def __post_init__(self) -> None:
        if self.lr is None:
            object.__setattr__(self, "lr", FINETUNE_LR if self.init is not None else SCRATCH_LR)
        if self.warmup is None and isinstance(self.steps, int):
            object.__setattr__(self, "warmup", min(100, self.steps // 10))
        _check_int_fields(self)
        if not isinstance(self.variant_options, dict) or not all(
                isinstance(k, str) for k in self.variant_options):
            raise ConfigError("variant_options must be a mapping of option names to values, "
                              f"got {self.variant_options!r}")
        if self.init is None and not self.preset:
            raise ConfigError("preset must be given when init is not (a from-scratch run)")
        if self.position is not None and self.position not in POSITIONS:
            raise ConfigError(f"position must be one of {', '.join(POSITIONS)}, "
                              f"got {self.position!r}")
        if self.variant is not None:
            from qvka_core.variants.registry import get_variant

            get_variant(self.variant)  # ConfigError listing the valid names
        if not isinstance(self.data, str) or not self.data:
            raise ConfigError("data must be 'austen' or a text file path")
        if self.embed_scale not in (None, True, False):
            raise ConfigError(f"embed_scale must be true, false or unset, got "
                              f"{self.embed_scale!r}")
        for name in ("data", "tokenizer"):  # absolute, so a resume from elsewhere finds it
            value = getattr(self, name)
            if isinstance(value, str) and value and value != "austen":
                object.__setattr__(self, name, os.path.abspath(os.path.expanduser(value)))
        limits.check_finite("lr", self.lr, positive=True)
        if self.warmup < 0 or self.warmup > self.steps:
            raise ConfigError(f"warmup must be in 0..steps ({self.steps}), got {self.warmup}")
        for name in ("weight_decay", "grad_clip"):
            limits.check_finite(name, getattr(self, name), minimum=0)
        limits.check_finite("temperature", self.temperature, positive=True)
        limits.check_finite("distill_weight", self.distill_weight)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("device", self.device, DEVICES)
        _choice("distill", self.distill, DISTILL)
        if self.distill != "none" and not self.teacher:
            raise ConfigError(f"distill={self.distill!r} needs a teacher checkpoint (teacher)")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature!r}")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ConfigError(f"distill_weight must be in [0, 1], got {self.distill_weight!r}")
        if self.name is not None:
            check_run_name(self.name)

    @property
    def run_name(self) -> str:
        if self.name:
            return self.name
        if self.init:  # fine-tuning: "<init>-ft[-<variant> if converted on load]-s<seed>"
            convert = f"-{self.variant}" if self.variant else ""
            return f"{Path(self.init).name}-ft{convert}-s{self.seed}"
        return f"{self.variant or 'model'}-{self.position or 'default'}-s{self.seed}"

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.run_name

    def replace(self, **changes: Any) -> TrainArgs:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainArgs:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown TrainArgs field(s): {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_run_dir(cls, run_dir: str | Path) -> TrainArgs:
        """The arguments stored in a run's config.json."""
        path = Path(run_dir) / "config.json"
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8"))["train"])
        except (OSError, KeyError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path} is not a readable run config: {exc}") from exc


# Fields that may differ when resuming (they do not change what was trained so far).
RESUME_MUTABLE = ("steps", "resume", "device", "threads", "eval_every", "log_every",
                  "checkpoint_every")

_POSITIVE = ("steps", "batch", "seq_len", "eval_every", "eval_batches", "log_every")
_NON_NEGATIVE = ("warmup", "checkpoint_every", "seed")
_OPTIONAL_POSITIVE = ("n_kv_heads", "d_ctx", "kv_lora_rank", "n_layers", "n_heads", "threads")


MAX_NAME = 100  # characters; a run name is a directory name (255 bytes at most)
_NAME_BAD = set('/\\\0\n\r\t')


def check_run_name(name: Any) -> None:
    """A run name is one plain directory name: no separators, no leading dot, <= 100 chars."""
    if (not isinstance(name, str) or not name.strip() or name.startswith(".")
            or any(c in _NAME_BAD for c in name)):
        raise ConfigError(f"name must be a plain directory name (no '/', '\\', leading '.' "
                          f"or control characters), got {name!r}")
    if len(name) > MAX_NAME or len(name.encode("utf-8", "surrogateescape")) > 255:
        raise ConfigError(f"name is {len(name)} characters long; the limit is {MAX_NAME}")


def _check_int_fields(a: TrainArgs) -> None:
    """Integers within their caps (qvka_core.limits.MAX; threads: the CPU count)."""
    for name in _POSITIVE:
        limits.check_int(name, getattr(a, name))
    for name in _NON_NEGATIVE:
        limits.check_int(name, getattr(a, name), minimum=0)
    for name in _OPTIONAL_POSITIVE:
        if getattr(a, name) is not None:
            limits.check_int(name, getattr(a, name))


def _choice(name: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ConfigError(f"{name} must be one of {', '.join(options)}, got {value!r}")
