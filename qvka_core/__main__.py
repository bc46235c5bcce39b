"""`python -m qvka_core ...`: see qvka_core.cli."""

import os
import sys

from qvka_core.cli import main

try:
    code = main()
    sys.stdout.flush()
except BrokenPipeError:  # `... | head` closed the pipe: stop quietly, as Unix tools do
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit flush
    code = 0
sys.exit(code)
