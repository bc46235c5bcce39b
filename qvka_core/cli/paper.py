"""`python -m qvka_core paper ...`: the paper-mini reproduction grid and its summary.

    paper grid [--seeds 0 1 2] [--steps-mult 4] [--submit] [--json]   list (or queue) the runs
    paper summary [--runs DIR] [--out FILE] [--json]
"""

from __future__ import annotations

import argparse
import shlex
import sys

from qvka_core import limits
from qvka_core.cli.output import check_output_file, json_text
from qvka_core.paths import runs_root

HELP = "the paper-mini grid (list or queue its runs) and the summary of finished runs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", default=str(runs_root()),
                        help="runs root (default: $QVKA_RUNS, else runs)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    common = argparse.ArgumentParser(add_help=False)  # also accepted after the action
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    common.add_argument("--runs", default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("grid", parents=[common],
                       help="the grid's train command lines; --submit queues them")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--cells", nargs="+", default=None, help="qkv qv qvka1x qvka2x")
    p.add_argument("--positions", nargs="+", default=None, help="sin agf")
    p.add_argument("--steps-mult", type=float, default=1.0, help="scale the step budget")
    p.add_argument("--qvka-both", action="store_true", help="QV-Ka under sinusoidal PE too")
    p.add_argument("--device", default="cpu", help="queue device (cpu, cuda, cuda:N, auto)")
    p.add_argument("--submit", action="store_true", help="queue every run as a job")
    p = sub.add_parser("summary", parents=[common],
                       help="mean ± sd per cell and the claims verdicts")
    p.add_argument("--out", default=None, help="also write the summary JSON here")


def run(args: argparse.Namespace) -> int:
    from qvka_core import paper

    if args.action == "grid":
        for seed in args.seeds:
            limits.check_int("seed", seed, minimum=0, label="--seeds")
        _check_steps_mult(args.steps_mult)
        kw = {"seeds": args.seeds, "cells": args.cells, "positions": args.positions,
              "steps_mult": args.steps_mult, "qvka_both": args.qvka_both}
        if args.submit:
            rows = paper.submit_grid(root=args.runs, device=args.device, **kw)
            text = "\n".join(f"queued {r['id']} (#{r['seq']})" for r in rows)
            print(json_text(rows, indent=2) if args.json else text)
            return 0
        argvs = paper.grid_argvs(out=args.runs, **kw)
        text = "\n".join("python -m qvka_core train " + shlex.join(a) for a in argvs)
        print(json_text(argvs, indent=2) if args.json else text)
        return 0
    if args.out is not None:
        check_output_file(args.out, "--out")
    command = "python -m qvka_core " + shlex.join(sys.argv[1:]) if sys.argv[1:] else None
    data = paper.summary(args.runs, command=command, out=args.out)
    if args.json:
        print(json_text(data, indent=2))
        return 0
    print(paper.summary_text(data))
    return 0


def _check_steps_mult(value: float) -> None:
    limits.check_finite("--steps-mult", value, positive=True)
    if value > 1000:
        raise limits.ConfigError(f"--steps-mult {value:g} exceeds the limit of 1000")
