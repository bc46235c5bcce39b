"""`qvka app [STREAMLIT ARGS]`: start the Streamlit app.

From a checkout this runs its app.py there (as `./lab app` does, which also installs what
is missing). Installed from the wheel, it runs the shipped copy (qvka_app/app.py with
qvka_app/pages beside it) with the checkout's Streamlit settings (.streamlit/config.toml,
shipped as qvka_app/_streamlit) passed as flags, from any folder.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

from qvka_core import paths
from qvka_core.errors import RunError

HELP = "start the Streamlit app (./lab app does the same from a checkout)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("streamlit_args", nargs=argparse.REMAINDER,
                        help="passed to `streamlit run` (e.g. --server.port 8502)")


def settings_flags(config: Path) -> list[str]:
    """A Streamlit config.toml as `--section.option value` flags (what `streamlit run` reads
    from ./.streamlit/config.toml, for a run whose working folder is not the app's)."""
    import tomllib

    flags = []
    for section, options in tomllib.loads(config.read_text("utf-8")).items():
        for name, value in options.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            flags += [f"--{section}.{name}", text]
    return flags


def main_script() -> tuple[Path, list[str]]:
    """(the app's main script, the settings flags it needs) for a checkout or an install."""
    if paths.in_checkout() and (paths.PROJECT_ROOT / "app.py").is_file():
        return paths.PROJECT_ROOT / "app.py", []  # streamlit reads ./.streamlit there
    spec = importlib.util.find_spec("qvka_app")
    if spec is None or spec.origin is None:
        raise RunError("the app is not installed: pip install 'qvka-lab[app]'")
    package = Path(spec.origin).parent
    config = package / "_streamlit" / "config.toml"
    return package / "app.py", settings_flags(config) if config.is_file() else []


def run(args: argparse.Namespace) -> int:
    script, flags = main_script()
    if importlib.util.find_spec("streamlit") is None:
        raise RunError("the app needs streamlit: pip install 'qvka-lab[app]' (or ./lab app)")
    rest = [a for a in args.streamlit_args if a != "--"]
    os.chdir(script.parent)
    os.execv(sys.executable, [sys.executable, "-m", "streamlit", "run", str(script), *flags,
                              *rest])
    return 0  # not reached: execv replaces this process
