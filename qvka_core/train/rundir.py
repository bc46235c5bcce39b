"""The files of one run directory, and the trainer state saved next to each checkpoint.

    config.json      {"train": TrainArgs, "model": ModelConfig, "format": ...}
    status.json      state, step, updated_at, pid, pid_created (its start time, the
                     recycled-pid guard), message (atomic replace)
    metrics.jsonl    one JSON object per logged step, appended + flushed + fsynced
    log.txt          human-readable progress lines
    checkpoint -> checkpoints/step-N/   the current checkpoint (qvka_core.checkpoint_slots); its
                     meta.json holds {"step": N, ...}; older runs have a real checkpoint/ dir
    state/step-N.safetensors + state/step-N.json   optimizer tensors / scalars + RNG state

The trainer state for step N is written and fsynced *before* the checkpoint for step N is
switched in, and older states are deleted only afterwards, so the checkpoint's step always
has a matching state file. No pickle anywhere.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from qvka_core import checkpoint_slots as slots
from qvka_core import machine
from qvka_core.checkpoints.store import write_checkpoint_files
from qvka_core.errors import RunError

STATES = ("queued", "running", "completed", "failed", "cancelled", "diverged")
RUN_FORMAT = "qvka-lab-run/1"


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RunError(f"cannot read {path}: {exc}") from exc


class RunDir:
    """Writer for one run directory (used by rank 0 only)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.metrics_path = self.path / "metrics.jsonl"
        self.status_path = self.path / "status.json"
        self.log_path = self.path / "log.txt"
        self.checkpoint_path = self.path / "checkpoint"
        self.state_dir = self.path / "state"
        self.cancel_path = self.path / "CANCEL"

    def set_status(self, state: str, step: int, message: str = "", **extra: Any) -> None:
        assert state in STATES, state
        write_json(self.status_path, {
            "state": state, "step": step, "message": message, "pid": os.getpid(),
            "pid_created": machine.create_time(os.getpid()),
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra})

    def log(self, line: str) -> None:
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)

    def truncate_metrics(self, step: int) -> None:
        """Keep only records with step <= `step` (drop a torn last line too)."""
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))

    def checkpoint_step(self) -> int | None:
        """Step of the newest complete checkpoint that has its trainer state, if any."""
        found = slots.current(self.path, need_state=True)
        return found[0] if found else None

    def resume_checkpoint(self) -> tuple[int, Path] | None:
        """(step, directory) to resume from, after repairing an interrupted switch."""
        return slots.repair(self.path) if self.path.is_dir() else None

    def save_checkpoint(self, step: int, model: Any, tokenizer: Any,
                        meta: dict[str, Any]) -> None:
        """Write checkpoint `step` beside the current one and switch to it atomically."""
        slots.switch(self.path, step, lambda tmp: write_checkpoint_files(
            tmp, model, tokenizer=tokenizer, meta=meta))

    # --- trainer state -------------------------------------------------------------------
    def save_state(self, step: int, optimizer: torch.optim.Optimizer,
                   param_names: list[str], extra: dict[str, Any]) -> None:
        """Optimizer tensors -> safetensors, scalars + param groups + RNG -> JSON."""
        self.state_dir.mkdir(exist_ok=True)
        sd = optimizer.state_dict()
        tensors: dict[str, torch.Tensor] = {}
        scalars: dict[str, dict[str, Any]] = {}
        for idx, pstate in sd["state"].items():
            for key, value in pstate.items():
                if torch.is_tensor(value):
                    tensors[f"{param_names[idx]}::{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars.setdefault(param_names[idx], {})[key] = value
        tensors["rng::torch_cpu"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            tensors["rng::torch_cuda"] = torch.cuda.get_rng_state()
        base = self.state_dir / f"step-{step}"
        tmp = self.state_dir / f".step-{step}.safetensors.tmp"
        save_file(tensors, str(tmp))
        slots.fsync_path(tmp)
        os.replace(tmp, base.with_suffix(".safetensors"))
        write_json(base.with_suffix(".json"), {
            "format": RUN_FORMAT, "step": step, "param_names": param_names,
            "param_groups": sd["param_groups"], "scalars": scalars, **extra})

    def load_state(self, step: int, optimizer: torch.optim.Optimizer,
                   param_names: list[str]) -> dict[str, Any]:
        base = self.state_dir / f"step-{step}"
        info = read_json(base.with_suffix(".json"))
        if info.get("param_names") != param_names:
            raise RunError(f"{base}.json does not match the model's parameters")
        tensors = load_file(str(base.with_suffix(".safetensors")))
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            owner, _, field = key.partition("::")
            if owner == "rng":
                continue
            state.setdefault(param_names.index(owner), {})[field] = value
        for owner, values in info.get("scalars", {}).items():
            state.setdefault(param_names.index(owner), {}).update(values)
        optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})
        torch.set_rng_state(tensors["rng::torch_cpu"])
        if "rng::torch_cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors["rng::torch_cuda"])
        return info

    def prune_states(self, keep_step: int) -> None:
        for p in self.state_dir.glob("step-*"):
            if p.name.split(".")[0] != f"step-{keep_step}":
                p.unlink(missing_ok=True)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All complete metric records of a run (a torn last line is skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def read_status(run_dir: str | Path) -> dict[str, Any]:
    return read_json(Path(run_dir) / "status.json")


def request_cancel(run_dir: str | Path) -> None:
    """Ask a running job to stop cleanly at its next step (final checkpoint, 'cancelled')."""
    (Path(run_dir) / "CANCEL").write_text("cancel\n", encoding="utf-8")
