"""Job operations the pages and the CLI call: submit, cancel, resume, rename, delete, show.

Every function takes an optional `root` (default $QVKA_RUNS or ./runs) and returns plain
dicts; user mistakes raise `RunError` with a message that says what to do instead.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from qvka_core import machine
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
from qvka_core.jobs.worker import child_env
from qvka_core.train.args import TrainArgs
from qvka_core.train.flags import argv_fields, flag_of

DEFAULT_TRAINER = (sys.executable, "-m", "qvka_core", "train")
QUEUE_FIELDS = ("out", "name", "resume")  # the queue sets these (device: the `device` argument)
_CHILDREN: list[subprocess.Popen[bytes]] = []  # detached workers started here (reaped lazily)


def _reap() -> None:
    """Collect exited workers started by this process so they do not linger as zombies."""
    _CHILDREN[:] = [p for p in _CHILDREN if p.poll() is None]


def _auto_name(train: dict[str, Any]) -> str:
    init = train.get("init")
    base = Path(init).name if init else (train.get("variant") or "run")
    return slugify(f"{base}-{train.get('position') or 'default'}-s{train.get('seed') or 0}")


def _names_in_use(root: Path) -> set[str]:
    used = set()
    for path in root.iterdir():
        if path.is_dir() and not path.name.startswith("."):
            used.add(path.name)
            job = read_job(path)
            if job and job.get("name"):
                used.add(str(job["name"]))
    return used


def _given_fields(train_args: Any) -> tuple[dict[str, Any], list[str]]:
    """(TrainArgs fields given, tokens for a custom trainer) from TrainArgs, a dict of its
    fields, or train options (["--variant", "qv", ...]); the queue's own fields refused."""
    if isinstance(train_args, TrainArgs):
        fields = train_args.to_dict()
        return {k: v for k, v in fields.items() if k not in QUEUE_FIELDS}, []
    if isinstance(train_args, dict):
        _refuse_queue_fields([k for k in QUEUE_FIELDS if k in train_args])
        return dict(train_args), []
    if not isinstance(train_args, (list, tuple)) or not all(
            isinstance(a, (str, int, float)) for a in train_args):
        raise RunError("train options must be TrainArgs, a dict of its fields or a list of "
                       "strings (the options of `train`)")
    argv = [str(a) for a in train_args]
    fields, rest = argv_fields(argv)
    _refuse_queue_fields([k for k in QUEUE_FIELDS if k in fields])
    return fields, rest


def _refuse_queue_fields(given: list[str]) -> None:
    if given:
        flags = ", ".join(flag_of(k) for k in given)
        raise RunError(f"{flags} {'is' if len(given) == 1 else 'are'} set by the job queue; "
                       "remove it from the train options (use resume() to continue a run)")


def _record(fields: dict[str, Any], base: Path) -> dict[str, Any]:
    """The run record stored in job.json: the validated TrainArgs as data (ConfigError
    naming the field before anything is queued); its name is the job id, set once known."""
    given = {k: v for k, v in fields.items() if k not in QUEUE_FIELDS and v is not None}
    return TrainArgs(**given, out=str(base)).to_dict()


def _spawn_worker(run_dir: Path) -> int:
    """Start the detached worker for `run_dir`; returns its pid."""
    with open(run_dir / "log.txt", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "qvka_core.jobs", str(run_dir)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, env=child_env())
    _CHILDREN.append(proc)
    update_job(run_dir, worker_pid=proc.pid, worker_created=machine.create_time(proc.pid))
    return proc.pid


def submit(train_args: Any, *, name: str | None = None, device: str | None = None,
           n_gpus: int = 1, root: str | Path | None = None,
           trainer: list[str] | None = None, tags: dict[str, Any] | None = None,
           validate: bool = True, force_memory: bool = False) -> dict[str, Any]:
    """Queue one training run and return its status; job.json stores it as a TrainArgs record.

    Args:
        train_args: `TrainArgs`, a dict of its fields ({"variant": "qv", "steps": 50}) or
            train options (["--variant", "qv", "--steps", "50"]); out/name/resume are the
            queue's. A device among them is used when `device` is None. With a custom
            `trainer`, options that are not TrainArgs fields are passed on to it.
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
    fields, extra = _given_fields(train_args)
    device = device or fields.pop("device", None) or "auto"
    fields.pop("device", None)
    if extra and trainer is None:
        raise RunError(f"invalid train option(s): {' '.join(extra)} (see `python -m "
                       "qvka_core train --help`)")
    record = _record(fields, runs_root(root, create=False))  # ConfigError before anything
    if validate and trainer is None:
        preflight(record)  # e.g. a seq_len past the model's positions: refused, not queued
    slots, n_gpus = resolve_device(device, n_gpus)
    if validate and trainer is None and not force_memory:
        check_memory(record, "cuda" if slots[0].startswith("cuda") else "cpu")
    if trainer is None:
        trainer = trainer_prefix(n_gpus)
    base = runs_root(root)  # created now that the run is accepted
    used = _names_in_use(base)
    if name is not None:
        job_id = slugify(name)
        if job_id in used:
            raise RunError(f"a run named {job_id!r} already exists under {base}; choose "
                           "another name (runs are never overwritten)")
    else:
        stem = _auto_name(fields)
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
        "id": job_id, "name": job_id, "train": {**record, "name": job_id}, "device": device,
        "slots": slots, "extra_argv": extra,
        "n_gpus": n_gpus, "trainer": list(trainer), "seq": next_seq(base),
        "submitted_at": now_iso(), "submitted_ts": time.time(), "started_at": None,
        "finished_at": None, "exit_code": None, "worker_pid": None, "worker_created": None,
        "train_pid": None, "train_created": None,
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

    The same run record is used (a new `steps` may extend the run); metrics already written are
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
        train = dict(job.get("train") or {})
        if steps is not None:
            train["steps"] = steps
        attempt = {k: job.get(k) for k in ("seq", "started_at", "finished_at", "exit_code")}
        current = dict(job)
        (run_dir / CANCEL_FILE).unlink(missing_ok=True)
        current.update(train=train, seq=seq, submitted_at=now_iso(), submitted_ts=time.time(),
                       started_at=None, finished_at=None, exit_code=None, worker_pid=None,
                       worker_created=None, train_pid=None, train_created=None,
                       assigned=None, cancelled=False,
                       resume=(run_dir / "config.json").exists(),
                       attempts=[*job.get("attempts", []), attempt])
        atomic_write_json(run_dir / JOB_FILE, current)
        # The previous attempt's final status ("cancelled", ...) would otherwise be read as
        # the new attempt's until the trainer restarts and rewrites it.
        status_path = run_dir / "status.json"
        if status_path.exists():
            old = json.loads(status_path.read_text(encoding="utf-8") or "{}")
            old.pop("pid", None)  # the old trainer's pid is no one's now
            old.pop("pid_created", None)
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
