"""Job operations the pages and the CLI call: submit, cancel, resume, rename, delete, show.

Every function takes an optional `root` (default $QVKA_RUNS or ./runs) and returns plain
dicts; user mistakes raise `RunError` with a message that says what to do instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from qvka_core.errors import RunError
from qvka_core.jobs.devices import resolve_device
from qvka_core.jobs.estimate import check_memory, preflight
from qvka_core.jobs.status import ACTIVE, job_status, list_jobs, log_tail, read_metrics
from qvka_core.jobs.store import (
    CANCEL_FILE,
    JOB_FILE,
    atomic_write_json,
    file_lock,
    next_seq,
    now_iso,
    read_job,
    run_dir_of,
    runs_root,
    slugify,
    update_job,
)
from qvka_core.jobs.worker import REPO_ROOT

DEFAULT_TRAINER = (sys.executable, "-m", "qvka_core", "train")
RESERVED_OPTIONS = ("--out", "--name", "--resume")
_CHILDREN: list[subprocess.Popen[bytes]] = []  # detached workers started here (reaped lazily)


def _reap() -> None:
    """Collect exited workers started by this process so they do not linger as zombies."""
    _CHILDREN[:] = [p for p in _CHILDREN if p.poll() is None]


def _option(argv: list[str], flag: str) -> str | None:
    """The value of `--flag V` or `--flag=V` in argv (last one wins)."""
    value = None
    for i, tok in enumerate(argv):
        if tok == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif tok.startswith(flag + "="):
            value = tok.split("=", 1)[1]
    return value


def _without_option(argv: list[str], flag: str) -> list[str]:
    out: list[str] = []
    skip = False
    for tok in argv:
        if skip:
            skip = False
        elif tok == flag:
            skip = True
        elif not tok.startswith(flag + "="):
            out.append(tok)
    return out


def _auto_name(argv: list[str]) -> str:
    init = _option(argv, "--init")
    base = Path(init).name if init else (_option(argv, "--variant") or "run")
    return slugify(f"{base}-{_option(argv, '--position') or 'default'}-s"
                   f"{_option(argv, '--seed') or 0}")


def _names_in_use(root: Path) -> set[str]:
    used = set()
    for path in root.iterdir():
        if path.is_dir() and not path.name.startswith("."):
            used.add(path.name)
            job = read_job(path)
            if job and job.get("name"):
                used.add(str(job["name"]))
    return used


def _validate_argv(argv: list[str]) -> None:
    """Parse argv with the train command's own parser, if it exists, for early errors."""
    if not all(isinstance(a, str) for a in argv):
        raise RunError("argv must be a list of strings (the options of `train`)")
    for flag in RESERVED_OPTIONS:
        if _option(argv, flag) is not None or flag in argv:
            raise RunError(f"{flag} is set by the job queue; remove it from the train options "
                           "(use resume() to continue a run)")
    try:
        from qvka_core.cli.train import parse_train_argv
    except ImportError:
        return
    parse_train_argv(argv)  # ConfigError naming the field, before anything is queued


def _spawn_worker(run_dir: Path) -> int:
    """Start the detached worker for `run_dir`; returns its pid."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    script = Path(__file__).with_name("worker.py")
    with open(run_dir / "log.txt", "ab") as log:
        proc = subprocess.Popen([sys.executable, str(script), str(run_dir)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, env=env)
    _CHILDREN.append(proc)
    update_job(run_dir, worker_pid=proc.pid)
    return proc.pid


def submit(argv: list[str], *, name: str | None = None, device: str | None = None,
           n_gpus: int = 1, root: str | Path | None = None,
           trainer: list[str] | None = None, tags: dict[str, Any] | None = None,
           validate: bool = True, force_memory: bool = False) -> dict[str, Any]:
    """Queue one training run (the options of `python -m qvka_core train`) and return its status.

    Args:
        argv: train options, e.g. ["--preset", "austen", "--variant", "qv", "--steps", "50"];
            --out/--name/--resume are the queue's. A --device in argv is used when `device`
            is None.
        name: display name and run directory id (slugified; must be unused). None: derived
            from variant, position and seed (made unique with a -2, -3 suffix).
        device: "cpu", "cuda:N", "cuda" (any free GPU) or "auto" (a GPU if any, else cpu).
        n_gpus: GPUs for one job (> 1 runs the trainer under torchrun).
        trainer: command prefix replacing `python -m qvka_core train` (tests use a fake).
        tags: free JSON metadata stored in job.json (e.g. the paper grid cell).
        force_memory: queue it even when its estimated peak memory exceeds the device's
            (refused otherwise, with the estimate and the memory in the error).
    """
    _reap()
    argv = [str(a) for a in argv]
    device = device or _option(argv, "--device") or "auto"
    argv = _without_option(argv, "--device")
    if validate and trainer is None:
        _validate_argv(argv)
        preflight(argv)  # e.g. a seq_len past the model's positions: refused, not queued
    elif any(flag in argv for flag in RESERVED_OPTIONS):
        raise RunError(f"{', '.join(RESERVED_OPTIONS)} are set by the job queue")
    slots, n_gpus = resolve_device(device, n_gpus)
    if validate and trainer is None and not force_memory:
        check_memory(argv, "cuda" if slots[0].startswith("cuda") else "cpu")
    base = runs_root(root)
    if trainer is None:
        trainer = trainer_prefix(n_gpus)
    used = _names_in_use(base)
    if name is not None:
        job_id = slugify(name)
        if job_id in used:
            raise RunError(f"a run named {job_id!r} already exists under {base}; choose "
                           "another name (runs are never overwritten)")
    else:
        stem = _auto_name(argv)
        job_id, k = stem, 1
        while job_id in used:
            k += 1
            job_id = f"{stem}-{k}"
    run_dir = base / job_id
    try:
        run_dir.mkdir()
    except FileExistsError as exc:
        raise RunError(f"a run named {job_id!r} already exists under {base}") from exc
    except OSError as exc:  # a read-only runs folder, say
        raise RunError(f"cannot create {run_dir}: {exc.strerror}") from exc
    job = {
        "id": job_id, "name": job_id, "argv": argv, "device": device, "slots": slots,
        "n_gpus": n_gpus, "trainer": list(trainer), "seq": next_seq(base),
        "submitted_at": now_iso(), "submitted_ts": time.time(), "started_at": None,
        "finished_at": None, "exit_code": None, "worker_pid": None, "train_pid": None,
        "assigned": None, "cancelled": False, "resume": False, "attempts": [],
        "tags": tags or {}, "force_memory": bool(force_memory),
    }
    atomic_write_json(run_dir / JOB_FILE, job)
    _spawn_worker(run_dir)
    return job_status(run_dir, root=base)


def trainer_prefix(n_gpus: int) -> list[str]:
    """The trainer command before its arguments: `python -m qvka_core train`, or torchrun with
    one process per GPU (standalone rendezvous on a free port) when n_gpus > 1."""
    if n_gpus <= 1:
        return list(DEFAULT_TRAINER)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
            str(n_gpus), "-m", "qvka_core", "train"]


def cancel(job_id: str, *, root: str | Path | None = None) -> dict[str, Any]:
    """Cancel a job: a queued one at once, a running one cleanly at its next step (CANCEL)."""
    run_dir = run_dir_of(job_id, root)
    status = job_status(run_dir)
    if status["state"] not in ACTIVE:
        raise RunError(f"run {job_id!r} is {status['state']}, not queued or running; "
                       "nothing to cancel")
    (run_dir / CANCEL_FILE).write_text("cancel\n", encoding="utf-8")
    if status["managed"]:
        job = read_job(run_dir) or {}
        if not job.get("started_at"):
            update_job(run_dir, cancelled=True, finished_at=now_iso(),
                       cancel_requested_at=now_iso())
        else:
            update_job(run_dir, cancel_requested_at=now_iso())
    return job_status(run_dir)


def resume(job_id: str, *, steps: int | None = None,
           root: str | Path | None = None) -> dict[str, Any]:
    """Requeue a crashed, cancelled or failed job in the same run directory with --resume.

    The same argv is used (a new `steps` may extend the run); metrics already written are
    kept up to the last checkpoint, where the trainer continues. A job that never started is
    simply requeued.
    """
    _reap()
    run_dir = run_dir_of(job_id, root)
    if steps is not None and (not isinstance(steps, int) or steps <= 0):
        raise RunError(f"steps must be a positive integer, got {steps!r}")
    seq = next_seq(run_dir.parent)
    # Two sessions pressing resume: only one wins. The status is judged under the lock that
    # the winner holds while it rewrites job.json and status.json, so the loser sees either
    # the old crashed run or the requeued one, never a mix of the two.
    with file_lock(run_dir / ".job.lock"):
        status = job_status(run_dir)
        if not status["managed"]:
            raise RunError(f"run {job_id!r} was not started through the job queue (no "
                           "job.json); resume it with `python -m qvka_core train ... --resume`")
        if status.get("exiting"):
            raise RunError(f"run {job_id!r} is still stopping; resume it in a moment")
        if not status["resumable"]:
            raise RunError(f"run {job_id!r} is {status['state']}; only crashed, cancelled or "
                           "failed runs can be resumed")
        job = read_job(run_dir) or {}
        argv = list(job["argv"])
        if steps is not None:
            argv = _without_option(argv, "--steps") + ["--steps", str(steps)]
        attempt = {k: job.get(k) for k in ("seq", "started_at", "finished_at", "exit_code")}
        current = dict(job)
        (run_dir / CANCEL_FILE).unlink(missing_ok=True)
        current.update(argv=argv, seq=seq, submitted_at=now_iso(), submitted_ts=time.time(),
                       started_at=None, finished_at=None, exit_code=None, worker_pid=None,
                       train_pid=None, assigned=None, cancelled=False,
                       resume=(run_dir / "config.json").exists(),
                       attempts=[*job.get("attempts", []), attempt])
        atomic_write_json(run_dir / JOB_FILE, current)
        # The previous attempt's final status ("cancelled", ...) would otherwise be read as
        # the new attempt's until the trainer restarts and rewrites it.
        status_path = run_dir / "status.json"
        if status_path.exists():
            old = json.loads(status_path.read_text(encoding="utf-8") or "{}")
            old.pop("pid", None)  # the old trainer's pid is no one's now
            atomic_write_json(status_path, {**old, "state": "queued",
                                            "message": "resumed; waiting for its slot"})
    _spawn_worker(run_dir)
    return job_status(run_dir)


def rename(job_id: str, new_name: str, *, root: str | Path | None = None) -> dict[str, Any]:
    """Change a job's display name (job.json only; the directory name stays the id)."""
    run_dir = run_dir_of(job_id, root)
    name = slugify(new_name)
    if read_job(run_dir) is None:
        raise RunError(f"run {job_id!r} has no job.json; only queued jobs can be renamed")
    current = (read_job(run_dir) or {}).get("name")
    if name != current and name in _names_in_use(run_dir.parent) and name != job_id:
        raise RunError(f"the name {name!r} is already used by another run")
    update_job(run_dir, name=name)
    return job_status(run_dir)


def delete(job_id: str, *, root: str | Path | None = None) -> None:
    """Delete a run directory; refused while the job is queued or running (cancel first)."""
    run_dir = run_dir_of(job_id, root)
    status = job_status(run_dir)
    if status["state"] in ACTIVE or status.get("exiting"):
        raise RunError(f"run {job_id!r} is {status['state']}; cancel it and wait for it to "
                       "stop before deleting")
    if run_dir.is_symlink():  # a link placed in the runs folder: remove it, not its target
        run_dir.unlink()
        return
    shutil.rmtree(run_dir)


def show(job_id: str, *, root: str | Path | None = None, log_lines: int = 40) -> dict[str, Any]:
    """Status + the last metrics record + the log tail of one run."""
    run_dir = run_dir_of(job_id, root)
    return {**job_status(run_dir), "log_tail": log_tail(run_dir, log_lines)}


def compare(job_ids: list[str], *,
            root: str | Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """Metrics of several runs, keyed by id (for overlaid curves)."""
    return {j: read_metrics(run_dir_of(j, root)) for j in job_ids}


__all__ = ["cancel", "compare", "delete", "list_jobs", "rename", "resume", "show", "submit"]
