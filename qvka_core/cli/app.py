"""`qvka app [STREAMLIT ARGS]`: start the Streamlit app of the checkout qvka_core runs from.

The app (app.py, pages/) is not part of the wheel: installed without a checkout, this says
so in one line. `./lab app` does the same and also installs what is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

from qvka_core import paths
from qvka_core.errors import RunError

HELP = "start the Streamlit app (from a source checkout; ./lab app does the same)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("streamlit_args", nargs=argparse.REMAINDER,
                        help="passed to `streamlit run app.py` (e.g. --server.port 8502)")


def run(args: argparse.Namespace) -> int:
    app = paths.PROJECT_ROOT / "app.py"
    if not (paths.in_checkout() and app.is_file()):
        raise RunError("the app runs from a source checkout (app.py and pages/ are not in the "
                       "package); clone the project and run ./lab app there")
    if importlib.util.find_spec("streamlit") is None:
        raise RunError("the app needs streamlit: pip install 'qvka-lab[app]' (or ./lab app)")
    rest = [a for a in args.streamlit_args if a != "--"]
    os.chdir(paths.PROJECT_ROOT)
    os.execv(sys.executable, [sys.executable, "-m", "streamlit", "run", str(app), *rest])
    return 0  # not reached: execv replaces this process
