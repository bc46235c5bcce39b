"""This machine: its processes, memory and GPUs. Liveness and memory go through psutil, so
Linux and macOS alike keep the recycled-pid guard and the memory display (no /proc, no bare
`os.kill(pid, 0)`); torch is imported only to count GPUs.

A pid alone can name a stranger once its process has exited and the number was reused. The
job queue records each process's start time (`create_time`) next to its pid; `alive` then
accepts only the process that started at that time (and, for old records without one, only
a process whose command line names the run). Where only a file the process wrote is known
(a temp file named by its writer's pid), `started_by` accepts only a process that started
before the file was last written.
"""

from __future__ import annotations

import os

import psutil

CREATE_TIME_SLACK_S = 1.0  # create_time is rounded differently by platforms (jiffies, µs)


def _process(pid: int | None) -> psutil.Process | None:
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    try:
        return psutil.Process(pid)
    except (psutil.Error, OverflowError, ValueError):
        return None


def create_time(pid: int | None) -> float | None:
    """When process `pid` started (seconds since the epoch), or None if there is none."""
    proc = _process(pid)
    try:
        return None if proc is None else proc.create_time()
    except psutil.Error:
        return None


def alive(pid: int | None, must_contain: str | None = None,
          created: float | None = None, *, started_by: float | None = None) -> bool:
    """True if `pid` is a live process (not a zombie) that is the one recorded: started at
    `created` when that is known, no later than `started_by` when given, and whose command
    line holds `must_contain` when given. A process we may not inspect (another user's)
    counts as alive when it exists."""
    proc = _process(pid)
    if proc is None:
        return False
    try:
        if proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return False
        if created is not None and abs(proc.create_time() - created) > CREATE_TIME_SLACK_S:
            return False  # the pid was reused by a later process
        if started_by is not None and proc.create_time() > started_by + CREATE_TIME_SLACK_S:
            return False  # started after its record was written: not the writer
        if must_contain is not None:
            return must_contain in " ".join(proc.cmdline())
    except psutil.AccessDenied:
        return True
    except psutil.Error:  # it exited meanwhile
        return False
    return True


def rss_bytes(pid: int | None) -> int | None:
    """Resident memory of a live process, else None."""
    proc = _process(pid)
    try:
        return None if proc is None else int(proc.memory_info().rss)
    except psutil.Error:
        return None


def total_memory_bytes() -> int | None:
    """Physical memory of this machine."""
    try:
        return int(psutil.virtual_memory().total)
    except (psutil.Error, OSError):
        return None


def cuda_device_count() -> int:
    """Visible CUDA devices (0 without torch/CUDA). Honours CUDA_VISIBLE_DEVICES."""
    if os.environ.get("QVKA_FAKE_GPUS"):  # tests: pretend to have N GPUs
        return int(os.environ["QVKA_FAKE_GPUS"])
    try:
        import torch
    except ImportError:
        return 0
    try:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken driver means "no GPU" here
        return 0


def memory_bytes(kind: str) -> int | None:
    """Physical memory of this machine ("cpu") or of its smallest visible GPU ("cuda");
    None when unknown or absent."""
    if kind == "cpu":
        return total_memory_bytes()
    n = cuda_device_count()
    if not n or os.environ.get("QVKA_FAKE_GPUS"):
        return None
    import torch

    return min(torch.cuda.get_device_properties(i).total_memory for i in range(n))
