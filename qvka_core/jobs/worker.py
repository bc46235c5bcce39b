"""The detached queue worker: one per submitted job, no daemon.

`submit` starts `python -m qvka_core.jobs RUN_DIR` (this module) in a new session (stdout/stderr
appended to RUN_DIR/log.txt). The worker

1. waits until its job is the oldest waiting job among those that share a device slot
   with it and it can take non-blocking fcntl locks on RUNS/.locks/<slot>.lock for the
   slots it needs (one slot per GPU, or "cpu"),
2. runs the trainer as a child process (its command prefix is in job.json: `python -m
   qvka_core train` or torchrun for several GPUs); the lock fds are passed to the trainer
   too, so a slot stays taken while either process lives and the OS frees it when both die,
3. records started_at, train_pid, exit_code and finished_at in job.json.

A cancel before the trainer starts (CANCEL file or job.json "cancelled") ends the worker.
It imports no torch (the package's names load on first use). The trainer gets the run
record (job.json's `train`) as train options, with the queue's --device/--out/--name/--resume.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from qvka_core import machine
from qvka_core.errors import RunError
from qvka_core.jobs.store import (
    CANCEL_FILE,
    JOB_FILE,
    now_iso,
    pid_alive,
    read_job,
    slot_lock_path,
    try_lock,
    update_job,
    upgrade_job,
)
from qvka_core.train.flags import to_argv

POLL_S = 0.5
PENDING_GRACE_S = 60.0  # a job whose worker pid is not yet recorded counts as alive this long
FORCE_MEMORY_ENV = "QVKA_FORCE_MEMORY"
PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # the folder holding qvka_core/
ATTEMPT_FIELDS = ("out", "name", "resume", "device")  # set per attempt by trainer_command


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} [jobs] {message}", flush=True)


def is_waiting(job: dict[str, Any], run_dir: Path, now: float | None = None) -> bool:
    """True if `job` is in the queue: not started, not finished, not cancelled, worker alive."""
    if job.get("started_at") or job.get("finished_at") or job.get("cancelled"):
        return False
    if (run_dir / CANCEL_FILE).exists():
        return False
    pid = job.get("worker_pid")
    if pid is None:
        age = (now or time.time()) - float(job.get("submitted_ts", 0.0))
        return age < PENDING_GRACE_S
    return pid_alive(pid, run_dir.name, job.get("worker_created"))


def jobs_ahead(root: Path, job: dict[str, Any]) -> list[dict[str, Any]]:
    """Waiting jobs submitted before `job` that want one of its device slots."""
    mine = set(job.get("slots") or [])
    ahead = []
    now = time.time()
    for path in root.iterdir():
        if path.name == job["id"] or path.name.startswith(".") or not path.is_dir():
            continue
        other = read_job(path)
        if not other or other.get("seq", 0) >= job["seq"]:
            continue
        if mine & set(other.get("slots") or []) and is_waiting(other, path, now):
            ahead.append(other)
    return sorted(ahead, key=lambda j: j["seq"])


def acquire_slots(root: Path, job: dict[str, Any]) -> tuple[list[str], list[int]] | None:
    """Lock `n_gpus` (or the one cpu) of the job's slots; None (nothing held) if busy."""
    need = max(1, int(job.get("n_gpus") or 1))
    taken: list[str] = []
    fds: list[int] = []
    for slot in job.get("slots") or []:
        fd = try_lock(slot_lock_path(root, slot))
        if fd is not None:
            taken.append(slot)
            fds.append(fd)
            if len(taken) == need:
                return taken, fds
    for fd in fds:
        os.close(fd)
    return None


def trainer_command(job: dict[str, Any], run_dir: Path,
                    slots: list[str]) -> tuple[list[str], dict[str, str]]:
    """The trainer argv and environment for `job` on `slots`."""
    job = upgrade_job(dict(job))
    argv = to_argv(job.get("train") or {}, skip=ATTEMPT_FIELDS) + list(job.get("extra_argv") or [])
    gpu = [s.split(":", 1)[1] for s in slots if s.startswith("cuda")]
    argv += ["--device", "cuda" if gpu else "cpu"]
    argv += ["--out", str(run_dir.parent), "--name", run_dir.name]
    if job.get("resume"):
        argv.append("--resume")
    env = child_env()
    if job.get("force_memory"):  # submitted with --force-memory: the trainer skips its check
        env[FORCE_MEMORY_ENV] = "1"
    if gpu:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu)
    return list(job["trainer"]) + argv, env


def child_env() -> dict[str, str]:
    """This environment, with the folder that holds this qvka_core first on PYTHONPATH (a
    checkout or site-packages alike) and unbuffered output for log.txt."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PACKAGE_PARENT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def main(run_dir_arg: str) -> int:
    """Wait for the job's turn, run its trainer, record the outcome. Returns an exit code."""
    run_dir = Path(run_dir_arg).resolve()
    root = run_dir.parent
    if not (run_dir / JOB_FILE).is_file():  # only job folders: nothing written elsewhere
        raise RunError(f"{run_dir} is not a job folder (no {JOB_FILE}); the worker runs "
                       "only jobs queued by `jobs submit`")
    job = update_job(run_dir, worker_pid=os.getpid(),
                     worker_created=machine.create_time(os.getpid()))
    _log(f"queued {job['id']} (#{job['seq']}) for {', '.join(job['slots'])}")
    held: tuple[list[str], list[int]] | None = None
    announced = False
    while held is None:
        job = read_job(run_dir) or job
        if job.get("cancelled") or (run_dir / CANCEL_FILE).exists():
            update_job(run_dir, cancelled=True, finished_at=job.get("finished_at") or now_iso())
            _log("cancelled before it started")
            return 0
        ahead = jobs_ahead(root, job)
        if not ahead:
            held = acquire_slots(root, job)
        if held is None:
            if not announced:
                _log(f"waiting: {len(ahead)} job(s) ahead" if ahead else "waiting for a slot")
                announced = True
            time.sleep(POLL_S)
    slots, fds = held
    cmd, env = trainer_command(job, run_dir, slots)
    _log(f"start on {', '.join(slots)}: {' '.join(cmd)}")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=sys.stdout, stderr=sys.stderr,
                            pass_fds=fds, env=env, cwd=os.getcwd())
    update_job(run_dir, started_at=now_iso(), train_pid=proc.pid,
               train_created=machine.create_time(proc.pid), assigned=slots,
               exit_code=None, finished_at=None)

    def _forward(signum: int, _frame: Any) -> None:
        (run_dir / CANCEL_FILE).write_text("cancel\n", encoding="utf-8")
        if signum == signal.SIGINT:
            proc.send_signal(signal.SIGINT)

    signal.signal(signal.SIGTERM, _forward)
    signal.signal(signal.SIGINT, _forward)
    code = proc.wait()
    for fd in fds:
        os.close(fd)
    update_job(run_dir, finished_at=now_iso(), exit_code=code)
    _log(f"trainer exited with code {code}")
    return 0

