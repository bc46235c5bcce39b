"""Job system: detached training runs with a small per-device queue, cancel, resume and
crash recovery. The run directory (under $QVKA_RUNS or ./runs) is the single source of truth.

    from qvka_core import jobs
    st = jobs.submit({"preset": "austen", "variant": "qv", "steps": 200}, name="qv-s0")
    jobs.list_jobs(); jobs.job_status(st["run_dir"]); jobs.cancel("qv-s0"); jobs.resume("qv-s0")

Importing this package does not import torch (`estimate` and `devices` import it lazily).
"""

from qvka_core.jobs.api import cancel, compare, delete, rename, resume, show, submit
from qvka_core.jobs.devices import devices, resolve_device
from qvka_core.jobs.estimate import estimate, preflight
from qvka_core.jobs.status import (
    ACTIVE,
    TERMINAL,
    job_status,
    list_jobs,
    log_tail,
    read_metrics,
    wait_for,
)
from qvka_core.jobs.store import run_dir_of, runs_root, slugify

__all__ = [
    "ACTIVE",
    "TERMINAL",
    "cancel",
    "compare",
    "delete",
    "devices",
    "estimate",
    "preflight",
    "job_status",
    "list_jobs",
    "log_tail",
    "read_metrics",
    "rename",
    "resolve_device",
    "resume",
    "run_dir_of",
    "runs_root",
    "show",
    "slugify",
    "submit",
    "wait_for",
]
