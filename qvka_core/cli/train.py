"""`python -m qvka_core train`: pre-train, fine-tune or distil one model (resumable, DDP).

    python -m qvka_core train --preset austen --variant qv --position agf --steps 300
    python -m qvka_core train --init austen-qv --data notes.txt --steps 100 --lr 3e-4
    python -m qvka_core train --out runs --name qv-agf --resume
    torchrun --nproc-per-node 2 -m qvka_core train --variant qv --batch 32 ...
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from qvka_core.cli.output import json_text
from qvka_core.paths import runs_root
from qvka_core.train.flags import add_train_flags, build_args, parse_train_argv

HELP = "train a model (from a preset or a checkpoint) on Austen or a text file"

__all__ = ["HELP", "add_arguments", "build_args", "parse_train_argv", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The TrainArgs flags (generated from the dataclass) plus this command's own."""
    add_train_flags(parser)
    g = parser.add_argument_group("command")
    g.add_argument("--quiet", action="store_true", help="no per-step progress lines")
    g = parser.add_argument_group("grids")
    g.add_argument("--grid", choices=["paper-mini"],
                   help="run a named grid here, one run after another (finished runs are "
                   "skipped), then print its summary: paper-mini is the paper's QKV/QV/QV-Ka "
                   "x sinusoidal/AGF comparison, 5 seeds, equal budgets; interrupted runs "
                   "resume from their last checkpoint")
    g.add_argument("--steps-mult", type=float, default=1.0,
                   help="with --grid: scale every run's steps (e.g. 10 on a GPU)")
    g.add_argument("--qvka-both", action="store_true",
                   help="with --grid: QV-Ka under sinusoidal PE too (8 cells, 24 runs; the "
                   "paper has QV-Ka under AGF only)")
    g.add_argument("--shard", type=_shard, default=(0, 1), metavar="I/N",
                   help="with --grid: run every N-th run from the I-th (0-based), so N "
                   "processes share the grid, e.g. --shard 0/2 and --shard 1/2")


def _shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N such as 0/2, got {text!r}") from None
    if not (count >= 1 and 0 <= index < count):
        raise argparse.ArgumentTypeError(f"expected I/N with 0 <= I < N, got {text!r}")
    return index, count


def _progress(record: dict[str, Any]) -> None:
    parts = [f"step {record['step']}"]
    for key in ("loss", "val_loss", "val_acc", "lr", "tokens_per_s"):
        if key in record:
            parts.append(f"{key} {record[key]:.4g}")
    print("  ".join(parts), flush=True)


def _run_grid(args: argparse.Namespace) -> int:
    from qvka_core import paper
    from qvka_core.cli.paper import _check_steps_mult

    _check_steps_mult(args.steps_mult)
    out = getattr(args, "out", None) or str(runs_root())
    done = paper.run_grid_local(out, device=getattr(args, "device", None) or "cpu",
                                steps_mult=args.steps_mult,
                                qvka_both=args.qvka_both, shard=args.shard,
                                threads=getattr(args, "threads", None))
    for r in done:  # one line per finished run
        loss = r.get("val_loss")
        print(f"{r.get('name')}: {r.get('state')}, val_loss "
              f"{loss:.4f}" if isinstance(loss, float) else f"{r.get('name')}: {r.get('state')}",
              flush=True)
    command = "python -m qvka_core train --grid paper-mini" + (
        f" --steps-mult {args.steps_mult:g}" if args.steps_mult != 1.0 else "") + (
        " --qvka-both" if args.qvka_both else "")
    target = Path(out) / "paper-mini-summary.json"
    print(paper.summary_text(paper.summary(out, command=command, out=target)))
    print(f"summary (JSON, every run) written to {target}", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    from qvka_core.train import run as train_run

    if args.grid:
        return _run_grid(args)
    targs = build_args(args)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    result = train_run(targs, on_metrics=None if args.quiet or not main_rank else _progress)
    if main_rank:
        summary = {"state": result.state, "step": result.step, "run_dir": str(result.run_dir),
                   "val_loss": result.val_loss, "val_acc": result.val_acc,
                   "unigram_loss": result.unigram_loss, "message": result.message}
        print(json_text(summary, indent=None))
    return 0 if result.state in ("completed", "cancelled") else 1
