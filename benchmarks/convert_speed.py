"""Seconds per stage of each conversion (load, calibrate, fit, report), side by side.

Every (source, target) runs in a fresh subprocess so that each one pays its own load. With
`--vs DIR` (a checkout of another commit, e.g. made by `git archive main | tar -x -C DIR`)
each conversion runs under that tree and this one in turn, A B A B, and the table prints the
ratio of this tree's seconds to DIR's per stage: pairing keeps ratios meaningful on a shared,
drifting machine. Quote ratios, not seconds, from a busy machine.

    .venv/bin/python benchmarks/convert_speed.py --source minilm-l6
    .venv/bin/python benchmarks/convert_speed.py --source smollm2-135m --to qvka --vs /tmp/before
    .venv/bin/python benchmarks/convert_speed.py --source smollm2-135m --profile   # cProfile top 15

The conversion stage target (issue 11): under 30 s for a 135M model, every target.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("minilm-l6", "smollm2-135m")
CASES: dict[str, dict[str, int]] = {
    "gqa": {"n_kv_heads": 1}, "mqa": {}, "mla": {"kv_lora_rank": 128}, "qv": {},
    "qvka": {"d_ctx": 64},
}
TARGET_S = 30.0


def one(source: str, to: str, profile: bool) -> dict:
    """Load `source`, convert it to `to` with the default calibration and report."""
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    from qvka_core.checkpoints import load_checkpoint
    from qvka_core.convert import convert

    t0 = time.perf_counter()
    loaded = load_checkpoint(source)
    load_s = time.perf_counter() - t0
    opts = dict(CASES[to])
    if to == "gqa":  # the nearest GQA that differs from the source
        opts["n_kv_heads"] = 3 if loaded.config.attention.n_kv_heads != 3 else 1
    prof = None
    if profile:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    r = convert(loaded, to, **opts).report
    if prof is not None:
        import io
        import pstats
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(15)
        sys.stderr.write(buf.getvalue())
    t = r.timings_s
    return {"source": source, "to": to, "load_s": load_s,
            "calibrate_s": t.get("calibrate_s", 0.0), "fit_s": t.get("convert_s", 0.0),
            "report_s": t.get("report_s", 0.0),
            "conversion_s": t.get("calibrate_s", 0.0) + t.get("convert_s", 0.0),
            "eval_tokens": r.eval_tokens, "loss_before": r.loss_before,
            "loss_after": r.loss_after, "js": r.js_divergence_mean,
            "cos": r.hidden_cosine}


def run_in(tree: Path, source: str, to: str, profile: bool) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", source, to]
    if profile:
        cmd.append("--profile")
    proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(tree)})
    if proc.returncode:
        raise SystemExit(f"{source} -> {to} under {tree}: failed\n{proc.stderr[-3000:]}")
    if profile:
        sys.stderr.write(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


STAGES = ("load_s", "calibrate_s", "fit_s", "report_s", "conversion_s")


def show(row: dict, base: dict | None) -> str:
    cells = []
    for s in STAGES:
        cell = f"{s[:-2]} {row[s]:6.1f}s"
        if base is not None:
            cell += f" ({row[s] / base[s]:.2f}x)" if base[s] > 0.05 else " (  -  )"
        cells.append(cell)
    fid = "" if row["loss_before"] is None else (
        f" | loss {row['loss_before']:.3f} -> {row['loss_after']:.3f}")
    return (f"{row['source']:13s} -> {row['to']:5s} | " + " | ".join(cells) +
            f" | JS {row['js']:.3f} cos {row['cos']:.3f}{fid} on {row['eval_tokens']} tok")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=SOURCES, action="append")
    parser.add_argument("--to", choices=sorted(CASES), action="append")
    parser.add_argument("--vs", metavar="DIR", help="another source tree, run in turn")
    parser.add_argument("--profile", action="store_true", help="cProfile of each conversion")
    parser.add_argument("--json", metavar="FILE", help="write every row here too")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, args.profile)))
        return 0
    rows, over = [], []
    for source in args.source or SOURCES:
        for to in args.to or list(CASES):
            base = run_in(Path(args.vs), source, to, False) if args.vs else None
            row = run_in(ROOT, source, to, args.profile)
            rows.append({"this": row, "vs": base})
            if base is not None:
                print("  before " + show(base, None), flush=True)
            print(("  after  " if base else "") + show(row, base), flush=True)
            if row["conversion_s"] >= TARGET_S:
                over.append(f"{source}->{to}")
    print(f"conversion (calibrate + fit) target < {TARGET_S:.0f} s: "
          f"{'OK' if not over else 'over for ' + ', '.join(over)}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
