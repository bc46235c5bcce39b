"""On-disk job records: the runs root, job.json, names, submission numbers, locks, pids.

A job's run directory is the single source of truth. Besides the trainer's own files
(config.json, status.json, metrics.jsonl, log.txt, checkpoint/) it holds `job.json`:

    id, name, train, device, slots, n_gpus, trainer, seq, submitted_at, started_at,
    finished_at, exit_code, worker_pid, worker_created, train_pid, train_created (psutil
    create_times: the recycled-pid guard), assigned, cancel_requested_at, attempts

`train` is the run record: the run's `TrainArgs` as data (`TrainArgs.to_dict()`; out/name/
device/resume are the queue's, set by the worker). `extra_argv` holds options for a custom
trainer that are not TrainArgs fields (tests' fake trainer). Records written before the
record existed hold `argv` (train options) instead; `read_job` converts them on read.

Every write is atomic (temp file + os.replace) and read-modify-write cycles hold an fcntl
lock on RUN_DIR/.job.lock, so the submitting process and the worker never lose each
other's fields. No torch: the detached worker imports this (and `train.flags`) only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qvka_core import machine, paths
from qvka_core.errors import RunError
from qvka_core.train.flags import argv_fields

JOB_FILE = "job.json"
CANCEL_FILE = "CANCEL"
NAME_MAX = 64
_SLUG_OK = re.compile(r"[^a-z0-9._-]+")


def now_iso() -> str:
    """UTC time as ISO-8601 with seconds (what every record stores)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def runs_root(root: str | Path | None = None, *, create: bool = True) -> Path:
    """The runs root: `root`, else $QVKA_RUNS, else <project>/runs (created if missing and
    `create`)."""
    path = Path(root) if root is not None else paths.runs_root()
    if path.exists() and not path.is_dir():
        raise RunError(f"runs folder {path} is a file, not a directory")
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunError(f"cannot create the runs folder {path}: {exc.strerror}") from exc
    return path.resolve()


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON to a temp file in the same directory, fsync, then os.replace."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None if it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


# --- names ----------------------------------------------------------------------------------
def slugify(name: str) -> str:
    """A user-given run name as a safe directory name: [a-z0-9._-], at most 64 characters.

    Raises RunError for empty names and anything that looks like a path ("../x", "/etc",
    "a/b", ".", "..", names starting with a dot).
    """
    if not isinstance(name, str) or not name.strip():
        raise RunError("run name is empty; give a short name such as 'qv-agf-s0'")
    raw = name.strip()
    if "/" in raw or "\\" in raw or "\x00" in raw or ".." in raw or raw.startswith("."):
        raise RunError(f"run name {name!r} looks like a path; use letters, digits, '-', '_' "
                       "and '.' only (no '/', '..' or leading '.')")
    slug = _SLUG_OK.sub("-", raw.lower()).strip("-")
    if not slug or slug.startswith(".") or set(slug) <= {".", "-", "_"}:
        raise RunError(f"run name {name!r} has no letters or digits")
    if len(slug) > NAME_MAX:
        raise RunError(f"run name is {len(slug)} characters after cleaning; the limit is "
                       f"{NAME_MAX}")
    return slug


def run_dir_of(job_id: str, root: str | Path | None = None) -> Path:
    """The directory of job `job_id` under the runs root (never outside it); a display name
    given by `rename` is accepted too when one run has it."""
    base = runs_root(root, create=False)
    plain = (isinstance(job_id, str) and bool(job_id) and "/" not in job_id
             and "\x00" not in job_id and not job_id.startswith("."))
    if plain and (base / job_id).is_dir():  # e.g. `train --name "my run"`: its exact name
        return base / job_id
    if slugify(job_id) != job_id:
        raise RunError(f"{job_id!r} is not a run id (ids are lowercase [a-z0-9._-])")
    path = base / job_id
    if path.is_dir():
        return path
    named = [p for p in sorted(path.parent.glob(f"*/{JOB_FILE}"))
             if (read_job(p.parent) or {}).get("name") == job_id]
    if len(named) == 1:
        return named[0].parent
    raise RunError(f"no run {job_id!r} under {path.parent}")


# --- locks and counters -----------------------------------------------------------------------
@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive (blocking) fcntl lock on `path` for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def try_lock(path: Path) -> int | None:
    """A non-blocking exclusive lock on `path`: the open fd, or None if another holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def slot_lock_path(root: Path, slot: str) -> Path:
    """RUNS/.locks/<slot>.lock, held by the worker (and its trainer) using that device."""
    return root / ".locks" / f"{slot.replace(':', '-')}.lock"


def next_seq(root: Path) -> int:
    """The next submission number: unique and increasing across processes (locked file)."""
    counter = root / ".locks" / "seq"
    with file_lock(root / ".locks" / "seq.lock"):
        try:
            value = int(counter.read_text(encoding="utf-8").strip() or 0)
        except (OSError, ValueError):
            value = 0
        value += 1
        tmp = counter.with_name(f".seq.tmp{os.getpid()}")
        tmp.write_text(f"{value}\n", encoding="utf-8")
        os.replace(tmp, counter)
    return value


# --- job.json ---------------------------------------------------------------------------------
def read_job(run_dir: Path) -> dict[str, Any] | None:
    """The job record of `run_dir`, or None for runs not made through the queue. A record
    from before `train` existed (train options as `argv`) is returned converted."""
    job = read_json(run_dir / JOB_FILE)
    return upgrade_job(job) if job is not None else None


def upgrade_job(job: dict[str, Any]) -> dict[str, Any]:
    """An old record's `argv` as the `train` fields it gives (+ `extra_argv`, the tokens
    that are not train options); a current record unchanged. Values are typed, not
    validated together: an old run shows even if today's rules would refuse it."""
    if "train" in job or "argv" not in job:
        return job
    argv = [str(a) for a in job.pop("argv") or []]
    try:
        fields, rest = argv_fields(argv)
    except RunError:  # a value today's parser refuses: keep the tokens as they were
        fields, rest = {}, argv
    job["train"] = fields
    if rest:
        job["extra_argv"] = rest
    return job


def update_job(run_dir: Path, **changes: Any) -> dict[str, Any]:
    """Locked read-modify-write of job.json; returns the new record."""
    with file_lock(run_dir / ".job.lock"):
        job = read_job(run_dir)
        if job is None:
            raise RunError(f"{run_dir} has no readable {JOB_FILE}")
        job.update(changes)
        atomic_write_json(run_dir / JOB_FILE, job)
    return job


def iter_run_dirs(root: Path) -> Iterator[Path]:
    """Run directories under `root`: those with a job.json or a status.json."""
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return
    for path in entries:
        if path.name.startswith(".") or not path.is_dir():
            continue
        if (path / JOB_FILE).exists() or (path / "status.json").exists():
            yield path


# --- processes --------------------------------------------------------------------------------
def pid_alive(pid: int | None, must_contain: str | None = None,
              created: float | None = None) -> bool:
    """True if `pid` is a live process (not a zombie) that is the one recorded: started at
    `created` (its psutil create_time, recorded beside the pid) and with `must_contain` in
    its command line. Both guard against a recycled pid (qvka_core.machine)."""
    return machine.alive(pid, must_contain, created)
