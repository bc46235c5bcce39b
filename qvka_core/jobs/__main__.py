"""`python -m qvka_core.jobs RUN_DIR`: the detached queue worker of one job (see worker.py)."""

import sys

from qvka_core.jobs.worker import main

if len(sys.argv) != 2:
    sys.stderr.write("usage: python -m qvka_core.jobs RUN_DIR\n")
    raise SystemExit(2)
raise SystemExit(main(sys.argv[1]))
