"""Where files live, one answer for the trainer, the job queue, the pages and the CLI:

- assets (bundled checkpoints, corpus, tokenizer, paper-mini results): `qvka_core/_assets`
  in an installed wheel, else the checkout's `assets/`;
- the runs folder: $QVKA_RUNS, else the checkout's `runs/` when qvka_core is run from one,
  else a per-user data folder (installed: site-packages is no place for runs);
- the machine-wide cache (converted models, tokenised corpora): $QVKA_CACHE, else
  ~/.cache/qvka-lab.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent  # the checkout (or site-packages, when installed)
RUNS_ENV = "QVKA_RUNS"
APP_NAME = "qvka-lab"


def in_checkout() -> bool:
    """True when qvka_core is imported from a source checkout (pyproject.toml beside it)."""
    return (PROJECT_ROOT / "pyproject.toml").is_file() and (PROJECT_ROOT / "assets").is_dir()


def _assets_dir() -> Path:
    packaged = PACKAGE_DIR / "_assets"
    return packaged if packaged.is_dir() else PROJECT_ROOT / "assets"


ASSETS = _assets_dir()


def user_data_dir() -> Path:
    """The per-user data folder: $XDG_DATA_HOME/qvka-lab (default ~/.local/share), or
    ~/Library/Application Support/qvka-lab on macOS, or %LOCALAPPDATA%/qvka-lab."""
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP_NAME
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / APP_NAME
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / APP_NAME


def runs_root() -> Path:
    """$QVKA_RUNS, else <checkout>/runs, else <user data folder>/runs (not created here)."""
    if os.environ.get(RUNS_ENV):
        return Path(os.environ[RUNS_ENV])
    return (PROJECT_ROOT if in_checkout() else user_data_dir()) / "runs"


def cache_root() -> Path:
    """$QVKA_CACHE, else ~/.cache/qvka-lab (not created here)."""
    return Path(os.environ.get("QVKA_CACHE") or Path.home() / ".cache" / "qvka-lab")
