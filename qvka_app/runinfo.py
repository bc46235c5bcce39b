"""What the Fine-tune page shows about runs, read from disk (no streamlit, no torch).

- `run_row`: one results-table row (variant, params, KV cache, final val loss and its share of
  the original's, tokens/s, wall time, status) from a `jobs.job_status` dict and config.json.
- `unconverted_source`: the model a checkpoint (or `--init X --variant Y`) was converted
  from, which is the distillation teacher and the recovery reference.
- `recovery`: validation loss against tokens seen, as a share of the original's loss.
- `rss_bytes` (from qvka_core.machine) / `gpu_memory`: memory used by a training process and
  on the GPUs.
- `progress_of`: a live run's progress line (step, ETA, tokens/s, device, memory).
- `busy` / `poll_seconds`: whether, and how often, a page must keep refreshing runs.
- `explorer_target`: the Explorer view closest to a model; `origin`: what a user checkpoint
  started from, so that the Explorer can show the two side by side.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

from qvka_core.errors import LabError
from qvka_core.machine import rss_bytes


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def checkpoint_dir(ref: str) -> Path | None:
    """The directory of a checkpoint name or path (None for embedded or unknown ones)."""
    from qvka_core.checkpoints.resolve import find

    try:
        return find(ref)[2]
    except LabError:
        return None


def checkpoint_meta(ref: str) -> dict[str, Any]:
    directory = checkpoint_dir(ref)
    return {} if directory is None else _json(directory / "meta.json")


def checkpoint_variant(ref: str) -> str | None:
    """The attention variant of a checkpoint, from its config.json or the embedded table."""
    from qvka_core.checkpoints.embedded import EMBEDDED

    if ref in EMBEDDED:
        return str(EMBEDDED[ref]["variant"])
    directory = checkpoint_dir(ref)
    model = _json(directory / "config.json").get("model", {}) if directory else {}
    kind = (model.get("attention") or {}).get("kind") if isinstance(model, dict) else None
    return str(kind) if kind else None


def unconverted_source(init: str | None, variant: str | None = None) -> str | None:
    """The original of a converted model: `init` itself when the run converts it on load
    (`variant` differs), else the `converted_from` recorded by the Convert page; else None."""
    if not init:
        return None
    if variant and variant != checkpoint_variant(init):
        return init
    source = checkpoint_meta(init).get("converted_from")
    return str(source) if source else None


def user_name(ref: str | None) -> str | None:
    """The name under which the pages list a user checkpoint given by name or path ("ID" for
    a run, "converted/NAME" for a saved conversion), or None if `ref` is not one."""
    from qvka_core.checkpoints.resolve import user_checkpoints

    if not ref:
        return None
    mine = user_checkpoints()
    if ref in mine:
        return ref
    target = Path(ref).resolve()
    return next((name for name, directory in mine.items() if directory.resolve() == target),
                None)


def origin(name: str) -> str | None:
    """What a user checkpoint started from, as a listed name: the model a saved conversion was
    converted from, or a run's `--init` (a bundled, embedded or user checkpoint); else None."""
    from qvka_core.checkpoints.resolve import user_checkpoints

    directory = user_checkpoints().get(name)
    if directory is None:
        return None
    source = _json(directory / "meta.json").get("converted_from")
    if source is None:  # a run: runs/ID/checkpoint, trained with `--init` (or from scratch)
        source = (_json(directory.parent / "config.json").get("train") or {}).get("init")
    if not source:
        return None
    return user_name(str(source)) or (str(source) if checkpoint_variant(str(source)) else None)


def original_loss(init: str | None, variant: str | None = None,
                  metrics: list[dict[str, Any]] | None = None) -> tuple[float | None, str]:
    """(loss of the unconverted source, where it comes from). Best: `ref_val_loss`, which the
    trainer measures on the run's own validation windows (`--reference`); else a loss recorded
    elsewhere, at another context length, so only roughly comparable."""
    source = unconverted_source(init, variant)
    if source is None:
        return None, "not a converted model"
    ref = next((r["ref_val_loss"] for r in metrics or [] if r.get("ref_val_loss") is not None),
               None)
    if isinstance(ref, (int, float)):
        return float(ref), f"{source} on this run's validation windows"
    val = checkpoint_meta(source).get("val_loss")
    if isinstance(val, (int, float)):
        return float(val), f"{source}: validation loss recorded with the checkpoint (approximate)"
    before = (checkpoint_meta(init or "").get("conversion") or {}).get("loss_before")
    if isinstance(before, (int, float)):
        return float(before), f"{source}: loss before conversion, Convert report (approximate)"
    return None, f"{source}: no recorded validation loss"


def recovery(metrics: list[dict[str, Any]], original: float) -> list[dict[str, float]]:
    """[{tokens, share}] with share = val_loss / original (1.0 = fully recovered)."""
    return [{"tokens": float(r.get("tokens") or 0), "share": float(r["val_loss"]) / original}
            for r in metrics if r.get("val_loss") is not None and original > 0]


@lru_cache(maxsize=256)
def _costs(config_path: str, mtime_ns: int) -> tuple[str, int | None, int | None]:
    """(variant, params, KV cache bytes/token bf16) from a run's config.json."""
    from qvka_core.accounting import kv_cache_bytes_per_token, param_breakdown
    from qvka_core.config import ModelConfig

    data = _json(Path(config_path))
    try:
        cfg = ModelConfig.from_dict(data["model"])
    except (KeyError, LabError, TypeError, ValueError):
        return "?", None, None
    return cfg.variant, sum(param_breakdown(cfg).values()), int(kv_cache_bytes_per_token(cfg))


def train_record(status: dict[str, Any]) -> dict[str, Any]:
    """The TrainArgs fields of a run: its job record, else (a run started by `train`
    directly) the `train` object of its config.json; {} when neither exists yet."""
    if status.get("train") or not status.get("run_dir"):
        return status.get("train") or {}
    return _json(Path(status["run_dir"]) / "config.json").get("train") or {}


def run_row(status: dict[str, Any]) -> dict[str, Any]:
    """One row of the results table for a `jobs.job_status` dict."""
    run_dir = Path(status["run_dir"])
    cfg_path = run_dir / "config.json"
    train = train_record(status)
    init, preset = train.get("init"), train.get("preset")
    if cfg_path.exists():
        variant, params, kv = _costs(str(cfg_path), cfg_path.stat().st_mtime_ns)
    else:
        variant = train.get("variant") or (checkpoint_variant(init) if init else None)
        variant, params, kv = variant or "?", None, None
    last = status.get("last_metrics") or {}
    last_val = status.get("last_val") or {}
    speed = next((r.get("tokens_per_s") for r in [last] if r.get("tokens_per_s")), None)
    final, ref = last_val.get("val_loss"), status.get("ref_val_loss")
    return {
        "run": status["id"], "state": status["state"], "name": status.get("name"),
        "variant": variant,
        "base": ref_label(str(init)) if init else preset or "austen",
        "params": params, "KV bytes/token": kv, "step": status.get("step"),
        "steps": int(status.get("total_steps") or train.get("steps") or 0) or None,
        "final val loss": final,
        "vs original": round(final / ref, 4) if final is not None and ref else None,
        "tokens/s": None if speed is None else round(speed),
        "wall s": None if last.get("elapsed_s") is None else round(last["elapsed_s"], 1),
        "message": status.get("message"),
        "device": ",".join(status.get("assigned") or []) or status.get("device"),
    }


def ref_label(ref: str) -> str:
    """A checkpoint reference as the pages list it: "converted: NAME" for runs/converted/NAME,
    "run: ID" for a run's checkpoint/, else the reference itself (a name or a path)."""
    path = Path(ref)
    if path.parent.name == "converted":
        return f"converted: {path.name}"
    if path.name == "checkpoint" and path.parent.name:
        return f"run: {path.parent.name}"
    return ref


def gpu_memory() -> list[dict[str, Any]]:
    """[{gpu, used_mib, total_mib}] from nvidia-smi (empty without one); no CUDA init here."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=index,name,memory.used,memory.total",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in out.strip().splitlines():
        idx, name, used, total = [p.strip() for p in line.split(",")]
        rows.append({"gpu": f"cuda:{idx} {name}", "used_mib": int(used), "total_mib": int(total)})
    return rows


def progress_of(status: dict[str, Any]) -> tuple[float, str]:
    """(fraction done, "name: step s/N · ETA · tokens/s · device · RSS") for a live run."""
    step, total = int(status.get("step") or 0), status.get("total_steps")
    last = status.get("last_metrics") or {}
    parts = [f"{status['id']}: {status['state']} {status.get('message') or ''}".strip()]
    if total and step and last.get("elapsed_s"):
        parts.append(f"ETA {last['elapsed_s'] / step * (int(total) - step):.0f} s")
    if last.get("tokens_per_s"):
        parts.append(f"{last['tokens_per_s']:,.0f} tokens/s")
    rss = rss_bytes(_train_pid(status))
    parts.append(",".join(status.get("assigned") or []) or str(status.get("device")))
    if rss:
        parts.append(f"RSS {rss / 2**20:,.0f} MiB")
    return (min(1.0, step / int(total)) if total else 0.0), " · ".join(parts)


def _train_pid(status: dict[str, Any]) -> int | None:
    from qvka_core.jobs.store import read_job

    return (read_job(Path(status["run_dir"])) or {}).get("train_pid")


def explorer_target(source: str, variant: str) -> tuple[str, list[str]] | None:
    """The Explorer family and variants closest to (source, variant), or None. The Explorer
    cannot load saved or trained checkpoints: MiniLM/SmolLM2 are re-converted there with
    default options; an austen-* source shows the bundled models trained as each variant."""
    if source in ("minilm-l6", "smollm2-135m"):
        own = checkpoint_variant(source) or "mha"
        return source.split("-")[0], list(dict.fromkeys([own, variant]))
    if source.startswith("austen-"):
        own = source.removeprefix("austen-")
        return "austen", list(dict.fromkeys([own, variant]))
    return None


def busy(status: dict[str, Any]) -> bool:
    """True while a run (a `jobs.job_status` dict) is queued, training or still exiting: a page
    showing it must keep refreshing until this turns False, or it stops on a stale picture
    (a final state whose worker has not yet written job.json, so no resume/delete yet)."""
    from qvka_core.jobs.status import ACTIVE

    return status["state"] in ACTIVE or bool(status.get("exiting"))


def poll_seconds(statuses: list[dict[str, Any]]) -> float | None:
    """How often a page showing these runs refreshes: None when none is busy; 1 s while one
    is about to show its first point (starting, or running with no metric yet), so that a
    launch answers quickly; else 2 s, which keeps the page's own CPU use low."""
    if not any(busy(s) for s in statuses):
        return None
    starting = any(s.get("starting") or (s["state"] == "running" and not s.get("last_metrics"))
                   for s in statuses)
    return 1.0 if starting else 2.0
