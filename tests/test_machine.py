"""Process liveness and memory through psutil (qvka_core.machine): the recycled-pid guard."""

from __future__ import annotations

import subprocess
import sys
import time

from qvka_core import machine
from qvka_core.jobs.store import pid_alive


def test_a_live_process_is_alive_only_as_the_one_recorded() -> None:
    child = "b = bytearray(64 << 20); print('ready', flush=True); import time; time.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", child, "run-xyz"], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        started = machine.create_time(proc.pid)
        assert started is not None and abs(started - time.time()) < 60
        assert machine.alive(proc.pid)
        assert pid_alive(proc.pid, "run-xyz", started)
        assert not pid_alive(proc.pid, "another-run", started)  # not the run's process
        # Same pid, other start time: the number was reused by a later process.
        assert not pid_alive(proc.pid, "run-xyz", started - 3600)
        # Known only by a file it wrote: the writer started before the file was written.
        assert machine.alive(proc.pid, started_by=time.time())
        assert not machine.alive(proc.pid, started_by=started - 3600)
        assert (machine.rss_bytes(proc.pid) or 0) > 64 << 20  # it holds a 64 MiB buffer
    finally:
        proc.kill()
        proc.wait()
    assert not machine.alive(proc.pid)
    assert machine.rss_bytes(proc.pid) is None and machine.create_time(proc.pid) is None


def test_a_zombie_is_not_alive() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 20
    while machine._process(proc.pid) is not None and time.monotonic() < deadline:
        if not machine.alive(proc.pid):
            break  # exited and not yet reaped: a zombie, which is not alive
        time.sleep(0.05)
    assert not machine.alive(proc.pid)
    proc.wait()


def test_nonsense_pids_are_not_alive() -> None:
    for pid in (None, 0, -1, True, 2**22 + 12345):
        assert not machine.alive(pid)  # type: ignore[arg-type]
    assert (machine.total_memory_bytes() or 0) > 1 << 28
