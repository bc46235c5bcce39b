"""`python -m qvka_core ...`: see qvka_core.cli."""

import sys

from qvka_core.cli import main

sys.exit(main())
