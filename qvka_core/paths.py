"""Where the user's files live: $QVKA_RUNS, else the project's runs/ folder. One answer for
the trainer, the job queue, the pages and checkpoint names, wherever a command is run from."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RUNS_ENV = "QVKA_RUNS"


def runs_root() -> Path:
    """$QVKA_RUNS, else <project>/runs (not created here)."""
    return Path(os.environ.get(RUNS_ENV) or PROJECT_ROOT / "runs")
