"""Costs page recompute time for every preset (warm script runs under AppTest, server side).

Target (issue 4): under 100 ms for any preset. The page costs every variant analytically
(nothing is allocated for big presets), so this measures the whole script run: widgets,
accounting for six variants, tables and three charts.

    PYTHONPATH=. .venv/bin/python benchmarks/costs_page.py
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from qvka_core.presets import preset_names

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page("pages/costs.py").run()  # cold: imports, first chart build
    print(f"{'preset':<18} {'switch to it':>13} {'warm rerun (median of 5)':>26}")
    worst = 0.0
    for name in preset_names():
        t0 = time.perf_counter()
        at.selectbox(key="cost_preset").set_value(name).run()
        switch = time.perf_counter() - t0
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            at.run()
            times.append(time.perf_counter() - t0)
        assert not at.exception, [e.message for e in at.exception]
        med = statistics.median(times)
        worst = max(worst, med, switch)
        print(f"{name:<18} {switch * 1e3:10.1f} ms {med * 1e3:23.1f} ms")
    print(f"worst {worst * 1e3:.1f} ms (target < 100 ms): {'met' if worst < 0.1 else 'NOT met'}")


if __name__ == "__main__":
    main()
