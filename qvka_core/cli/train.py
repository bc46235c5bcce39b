"""`python -m qvka_core train`: pre-train, fine-tune or distil one model (resumable, DDP).

    python -m qvka_core train --preset austen --variant qv --position agf --steps 300
    python -m qvka_core train --init austen-qv --data notes.txt --steps 100 --lr 3e-4
    python -m qvka_core train --out runs --name qv-agf --resume
    torchrun --nproc-per-node 2 -m qvka_core train --variant qv --batch 32 ...
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

from qvka_core.cli.output import json_text
from qvka_core.train.args import TrainArgs, default_runs_root

HELP = "train a model (from a preset or a checkpoint) on Austen or a text file"

# CLI flag -> TrainArgs field, where the names differ beyond '-' vs '_'.
_FIELDS = [f.name for f in dataclasses.fields(TrainArgs)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model")
    g.add_argument("--preset", help="model preset (default: austen, the bundled d128 decoder)")
    g.add_argument("--variant", help="attention variant: mha, gqa, mqa, mla, qvka, qv")
    g.add_argument("--position", help="rope, sinusoidal, learned, agf, alibi or none")
    g.add_argument("--n-kv-heads", type=int)
    g.add_argument("--d-ctx", type=int, help="QV-Ka context width (default head_dim)")
    g.add_argument("--kv-lora-rank", type=int, help="MLA latent width")
    g.add_argument("--n-layers", type=int)
    g.add_argument("--n-heads", type=int, help="query heads (head_dim = d_model / n_heads)")
    g.add_argument("--embed-scale", type=_on_off, metavar="on|off",
                   help="scale token embeddings by sqrt(d_model), init d^-1/2 (default: only "
                   "under sinusoidal positions)")
    g.add_argument("--init", help="start from this checkpoint (name or directory)")
    g = parser.add_argument_group("data and optimisation")
    g.add_argument("--data", help="'austen' (default) or a UTF-8 text file")
    g.add_argument("--tokenizer", help="tokenizer.json for from-scratch runs")
    for flag, kind in (("steps", int), ("batch", int), ("seq-len", int), ("lr", float),
                       ("warmup", int), ("weight-decay", float), ("grad-clip", float),
                       ("seed", int), ("eval-every", int), ("eval-batches", int),
                       ("log-every", int), ("checkpoint-every", int), ("threads", int),
                       ("temperature", float), ("distill-weight", float)):
        g.add_argument(f"--{flag}", type=kind)
    g.add_argument("--schedule", help="cosine (default) or constant")
    g.add_argument("--device", help="auto (default), cpu, cuda or mps")
    g.add_argument("--distill", help="none (default), logits or hidden")
    g.add_argument("--teacher", help="teacher checkpoint for --distill")
    g.add_argument("--reference", help="checkpoint whose validation loss on this run's windows "
                   "is recorded at step 0 (default: the teacher); the recovery baseline")
    g = parser.add_argument_group("output")
    g.add_argument("--out", help="parent directory of runs (default: $QVKA_RUNS, else runs)")
    g.add_argument("--name", help="run name (default: <variant>-<position>-s<seed>)")
    g.add_argument("--resume", action="store_true", help="continue out/name from its checkpoint")
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


def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")
    return text == "on"


class _RaisingParser(argparse.ArgumentParser):
    """The train parser for options given as data (jobs submit/estimate, pages): a bad
    option is a RunError, printed once by the caller, not a line on stderr + SystemExit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        from qvka_core.errors import RunError

        raise RunError(f"invalid train option: {message} (see `python -m qvka_core train "
                       "--help`)")


def parse_train_argv(argv: list[str]) -> TrainArgs:
    """TrainArgs from train options (["--variant", "qv", "--steps", "50", ...])."""
    parser = _RaisingParser(prog="train", add_help=False)
    add_arguments(parser)
    return build_args(parser.parse_args(argv))


def _given(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k in _FIELDS and v is not None}


def build_args(ns: argparse.Namespace) -> TrainArgs:
    """TrainArgs from the flags; with --resume, the stored arguments plus the given flags."""
    given = _given(ns)
    given.pop("resume", None)
    if ns.resume:
        out, name = given.get("out") or default_runs_root(), given.get("name")
        if name is None:
            from qvka_core.errors import RunError

            raise RunError("--resume needs --name (the run directory under --out)")
        stored = TrainArgs.from_run_dir(Path(out) / name)
        return stored.replace(**given, resume=True)
    return TrainArgs(**given)


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
    out = args.out or default_runs_root()
    done = paper.run_grid_local(out, device=args.device or "cpu", steps_mult=args.steps_mult,
                                qvka_both=args.qvka_both, shard=args.shard,
                                threads=args.threads)
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
