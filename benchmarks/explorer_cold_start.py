"""Seconds from a fresh process to the Explorer drawn for each family with six variants.

Each family runs in a new Python process (nothing imported, nothing in Streamlit's caches:
what a freshly started server pays), through Streamlit's AppTest (the page's script, no
browser). Run `./lab warm` first; a family that still has a conversion to make shows the
Explorer's "not converted yet" warning instead and is reported as such. Target: < 10 s.

    .venv/bin/python benchmarks/explorer_cold_start.py [--family smollm2 ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("austen", "minilm", "smollm2")
TARGET_S = 10.0

CHILD = """
import json, sys, time
t0 = float(sys.argv[2])
from streamlit.testing.v1 import AppTest
import qvka_app.families
fam = sys.argv[1]
variants = qvka_app.families.family_variants().get(fam, [])[:6]
at = AppTest.from_file("app.py", default_timeout=600)
at.query_params.update({"family": fam, "variants": ",".join(variants),
                        "text": "There is a beautiful girl."})
at.run()
at.switch_page("pages/explorer.py").run()
print(json.dumps({"family": fam, "variants": variants, "seconds": time.time() - t0,
                  "pending": [w.value for w in at.warning if "not converted" in w.value],
                  "errors": [e.message for e in at.exception],
                  "charts": len(at.get("plotly_chart"))}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", action="append", choices=FAMILIES)
    args = parser.parse_args()
    worst = 0.0
    for fam in args.family or FAMILIES:
        proc = subprocess.run([sys.executable, "-c", CHILD, fam, repr(time.time())], cwd=ROOT,
                              capture_output=True, text=True, env={"PYTHONPATH": str(ROOT),
                                                                   **_env()})
        if proc.returncode:
            print(f"{fam}: failed\n{proc.stderr[-2000:]}")
            return 1
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        state = ("NOT WARM: " + r["pending"][0][:80]) if r["pending"] else (
            f"{r['charts']} charts" + (f", errors {r['errors']}" if r["errors"] else ""))
        print(f"{fam:8s} {len(r['variants'])} variants ({', '.join(r['variants'])}): "
              f"{r['seconds']:.1f} s from process start | {state}", flush=True)
        worst = max(worst, r["seconds"])
    print(f"slowest family: {worst:.1f} s (target < {TARGET_S:.0f} s)")
    return 0


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


if __name__ == "__main__":
    raise SystemExit(main())
