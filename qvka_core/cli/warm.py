"""`python -m qvka_core warm`: convert and cache every family × variant the pages offer.

    python -m qvka_core warm                    # MiniLM and SmolLM2, every variant
    python -m qvka_core warm --family smollm2   # one family

Afterwards the Explorer, the Convert page and `convert` read these from the shared
conversion cache (`$QVKA_CACHE/converted`) instead of converting. Already cached entries
are skipped, so running it again is instant.
"""

from __future__ import annotations

import argparse
import sys
import time

HELP = "Convert and cache every embedded family × variant the pages offer (for a fast start)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from qvka_core.convert.warm import FAMILY_BASES

    parser.add_argument("--family", action="append", choices=sorted(FAMILY_BASES),
                        help="only this family (repeatable); default: every embedded family")


def run(args: argparse.Namespace) -> int:
    from qvka_core.convert import warm as w
    from qvka_core.errors import CheckpointError

    t0 = time.perf_counter()
    items = []
    for fam in args.family or list(w.FAMILY_BASES):
        try:
            items += w.plan([fam])
        except CheckpointError as exc:  # its package is not installed: say so, go on
            print(f"{fam}: skipped ({exc})")
    pending = [it for it in items if it.state == "pending"]
    eta = sum(w.estimate_s(it.base, it.variant) for it in pending)
    print(f"{len(items) - len(pending)} of {len(items)} conversions cached already; "
          f"converting {len(pending)} (about {eta:.0f} s on an idle 2-core CPU)", flush=True)
    show = sys.stderr.isatty()

    def progress(fraction: float, message: str) -> None:
        if show:
            sys.stderr.write(f"\r[{fraction:5.0%}] {message[:70]:<70}")
            sys.stderr.flush()
        elif message.endswith(" s") and ": done in " in message:
            print(f"[{fraction:5.0%}] {message}", flush=True)

    w.warm(items, progress)
    if show:
        sys.stderr.write("\n")
    for it in items:
        how = "cached" if it.state == "cached" else f"converted in {it.seconds:.1f} s"
        print(f"  {it.base} -> {it.variant}: {how}")
    print(f"warm: {len(items)} conversions ready in {time.perf_counter() - t0:.1f} s")
    return 0
