"""True job status recomputed from disk: job.json + status.json + whether recorded pids live.

Nothing is cached in memory, so a restarted app (or another browser tab) sees the same
thing. States:

    queued     waiting behind older jobs for its device (queue_position 1 = next)
    waiting    first in line, waiting for the device slot to be released
    running    the trainer process is alive
    completed / failed / cancelled / diverged   as the trainer's status.json says
    crashed    the trainer (or the worker, before starting it) died without a final status;
               "crashed — resumable from step N" (N = last checkpoint step)

Runs made by `python -m qvka_core train` directly (no job.json) are listed too
(`managed: False`), with their state from status.json and its pid.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from qvka_core import checkpoint_slots as slots
from qvka_core.jobs.store import (
    CANCEL_FILE,
    iter_run_dirs,
    pid_alive,
    read_job,
    read_json,
    run_dir_of,
    runs_root,
    slot_lock_path,
    try_lock,
)
from qvka_core.jobs.worker import is_waiting, jobs_ahead

TERMINAL = ("completed", "failed", "cancelled", "diverged", "crashed")
ACTIVE = ("queued", "waiting", "running")


def resolve(ref: str | Path, root: str | Path | None = None) -> Path:
    """A run directory from its path or its id (under the runs root)."""
    if isinstance(ref, Path) or "/" in str(ref):
        return Path(ref)
    return run_dir_of(str(ref), root)


def read_metrics(run_dir: str | Path, root: str | Path | None = None) -> list[dict[str, Any]]:
    """Metric records of a run (path or id), one per step (a re-logged step keeps its latest
    record, so a resumed run shows each step once)."""
    path = resolve(run_dir, root) / "metrics.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    by_step: dict[int, dict[str, Any]] = {}
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line while the trainer writes
        if isinstance(rec, dict) and isinstance(rec.get("step"), int):
            by_step[rec["step"]] = rec
    return [by_step[s] for s in sorted(by_step)]


def log_tail(run_dir: str | Path, lines: int = 40, max_bytes: int = 65536,
             root: str | Path | None = None) -> str:
    """The last `lines` lines of RUN_DIR/log.txt ('' if there is none); path or id."""
    path = resolve(run_dir, root) / "log.txt"
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def checkpoint_step(run_dir: Path) -> int | None:
    """Step of the run's newest complete checkpoint (qvka_core.checkpoint_slots), if any."""
    found = slots.current(run_dir)
    return found[0] if found else None


def _last_val(metrics: list[dict[str, Any]]) -> dict[str, Any] | None:
    for rec in reversed(metrics):
        if rec.get("val_loss") is not None:
            return rec
    return None


def _crash_message(run_dir: Path, code: Any, step: int) -> tuple[str, bool]:
    ckpt = checkpoint_step(run_dir)
    how = f" (exit code {code})" if code is not None else ""
    if ckpt is not None:
        return f"crashed{how} at step {step} — resumable from step {ckpt}", True
    if (run_dir / "config.json").exists():
        return f"crashed{how} before its first checkpoint — resume restarts at step 0", True
    return f"crashed{how} before training started — resume requeues it", True


def job_status(run_dir: str | Path, *, root: str | Path | None = None) -> dict[str, Any]:
    """Everything a page shows about one run (path or id), recomputed from disk.

    Keys: id, name, run_dir, managed, state, message, step, total_steps, seq, device,
    assigned, submitted_at, started_at, finished_at, exit_code, queue_position, starting
    (next in line with its slots free), resumable, resume_from, last_metrics, last_val,
    ref_val_loss (the reference model's loss on the run's windows, if it has one), train
    (the run record: TrainArgs fields, from job.json).
    """
    run_dir = resolve(run_dir, root)
    base = run_dir.parent
    job = read_job(run_dir)
    st = read_json(run_dir / "status.json") or {}
    metrics = read_metrics(run_dir)
    step = int(st.get("step") or (metrics[-1]["step"] if metrics else 0))
    out: dict[str, Any] = {
        "id": run_dir.name, "name": (job or {}).get("name", run_dir.name),
        "run_dir": str(run_dir), "managed": job is not None, "step": step,
        "total_steps": st.get("total_steps"), "queue_position": None, "starting": False,
        "resumable": False, "resume_from": None,
        "last_metrics": metrics[-1] if metrics else None,
        "ref_val_loss": metrics[0].get("ref_val_loss") if metrics else None,
        "last_val": _last_val(metrics), "trainer_state": st.get("state"),
    }
    for key in ("seq", "device", "assigned", "submitted_at", "started_at", "finished_at",
                "exit_code", "train", "n_gpus", "tags"):
        out[key] = (job or {}).get(key)
    state, message = _derive(run_dir, base, job, st, step, out)
    # A final status is written a moment before the trainer and its worker exit; until they
    # have, the worker may still write job.json, so resuming or deleting must wait.
    out["exiting"] = job is not None and state not in ACTIVE and (
        pid_alive(job.get("train_pid"), run_dir.name, job.get("train_created"))
        or pid_alive(job.get("worker_pid"), run_dir.name, job.get("worker_created")))
    if out["exiting"]:
        message = f"{message} (stopping)" if message else "stopping"
    out["state"], out["message"] = state, message
    if state in ("crashed", "cancelled", "failed") and job is not None and not out["exiting"]:
        out["resumable"] = True
        out["resume_from"] = checkpoint_step(run_dir) or 0
    return out


def _derive(run_dir: Path, root: Path, job: dict[str, Any] | None, st: dict[str, Any],
            step: int, out: dict[str, Any]) -> tuple[str, str]:
    st_state = st.get("state")
    st_msg = str(st.get("message") or "")
    if job is None:  # a run started by `train` directly
        created = st.get("pid_created")  # the recycled-pid guard (absent in older runs)
        if st_state in ("running", "queued") and not pid_alive(
                st.get("pid"), created=created if isinstance(created, float) else None):
            return "crashed", _crash_message(run_dir, None, step)[0]
        return str(st_state or "unknown"), st_msg
    cancel_requested = (run_dir / CANCEL_FILE).exists()
    if not job.get("started_at"):
        if job.get("cancelled"):
            return "cancelled", "cancelled before it started"
        if is_waiting(job, run_dir):
            ahead = jobs_ahead(root, job)
            out["queue_position"] = len(ahead) + 1
            if ahead:
                return "queued", f"{len(ahead)} job(s) ahead on {', '.join(job['slots'])}"
            if _slots_busy(root, job):
                return "waiting", f"next; waiting for {', '.join(job['slots'])} to be free"
            out["starting"] = True
            return "waiting", "starting"
        if cancel_requested:
            return "cancelled", "cancelled before it started"
        return "crashed", "the queue worker died before the job started — resume requeues it"
    train_alive = pid_alive(job.get("train_pid"), run_dir.name, job.get("train_created"))
    worker_alive = pid_alive(job.get("worker_pid"), run_dir.name, job.get("worker_created"))
    if train_alive or (worker_alive and not job.get("finished_at")):
        if st_state in ("completed", "failed", "cancelled", "diverged"):
            return st_state, st_msg  # final status written; the process is exiting
        total = st.get("total_steps")
        msg = f"step {step}/{total}" if total else f"step {step}"
        return "running", ("cancelling — " + msg) if cancel_requested else msg
    if st_state in ("completed", "failed", "cancelled", "diverged"):
        if st_state == "failed":
            return "failed", st_msg or f"exit code {job.get('exit_code')}"
        return st_state, st_msg
    code = job.get("exit_code")
    if not st_state and isinstance(code, int) and code > 0:
        lines = [ln for ln in log_tail(run_dir, 20).splitlines() if "[jobs]" not in ln]
        errors = [ln for ln in lines if ln.startswith(("error:", "Traceback"))] or lines
        return "failed", f"trainer exited with code {code}: {errors[-1] if errors else ''}"
    return "crashed", _crash_message(run_dir, code, step)[0]


def _slots_busy(root: Path, job: dict[str, Any]) -> bool:
    """True if none of the job's slots can be locked right now (probe and release)."""
    import os

    for slot in job.get("slots") or []:
        fd = try_lock(slot_lock_path(root, slot))
        if fd is not None:
            os.close(fd)
            return False
    return True


def list_jobs(root: str | Path | None = None) -> list[dict[str, Any]]:
    """Status of every run under the runs root, newest submission first."""
    base = runs_root(root, create=False)
    rows = [job_status(p, root=base) for p in iter_run_dirs(base)]
    return sorted(rows, key=lambda r: (r.get("seq") or 0, r["id"]), reverse=True)


def wait_for(run_dir: str | Path, states: tuple[str, ...] = TERMINAL, timeout_s: float = 60.0,
             poll_s: float = 0.2) -> dict[str, Any]:
    """Poll `job_status` until its state is in `states` (or raise TimeoutError).

    A terminal state counts only once the job's processes have exited (not `exiting`).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        status = job_status(run_dir)
        if status["state"] in states and not (status["state"] in TERMINAL
                                              and status.get("exiting")):
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"{run_dir}: still {status['state']} after {timeout_s} s")
        time.sleep(poll_s)
