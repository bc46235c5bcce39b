"""`python -m qvka_core jobs ...`: queue, watch, cancel, resume and tidy detached training runs.

    jobs submit --name heal-qvka --init austen-qvka --steps 50   (or: ... -- TRAIN OPTIONS)
    jobs list [--json]            jobs show ID [--json]       jobs cancel ID
    jobs resume ID [--steps N]    jobs rename ID NEW          jobs delete ID --yes
    jobs estimate -- --variant qv --steps 300      jobs devices
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from qvka_core.cli.output import json_text
from qvka_core.train.flags import add_train_flags, argv_fields, given_fields

# Fields the queue sets for each attempt: `--name` and `--device` are the submit command's own.
QUEUE_OWNED = ("out", "name", "resume", "device")

HELP = "queue detached training runs; list, show, cancel, resume, rename, delete them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", default=None,
                        help="runs root (default: $QVKA_RUNS, else the checkout's runs/)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    common = argparse.ArgumentParser(add_help=False)  # also accepted after the action
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON instead of text")
    common.add_argument("--runs", default=argparse.SUPPRESS,
                        help="runs root (default: $QVKA_RUNS, else the checkout's runs/)")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", parents=[common], help="every run with its true state")
    p = sub.add_parser("submit", parents=[common],
                       help="queue a run: jobs submit [--name N] TRAIN OPTIONS")
    p.add_argument("--name", default=None, help="run name (slugified; must be unused)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto")
    p.add_argument("--gpus", type=int, default=1, help="GPUs for this job (torchrun if > 1)")
    p.add_argument("--force-memory", action="store_true",
                   help="queue it even if its memory estimate exceeds the device's memory")
    add_train_flags(p, skip=QUEUE_OWNED)
    p.add_argument("train_args", nargs=argparse.REMAINDER,
                   help="train options after --, as for `train` (the flags above, same names)")
    for action, text in (("cancel", "cancel a queued or running job"),
                         ("show", "status, last metrics and log tail")):
        sub.add_parser(action, parents=[common], help=text).add_argument("id")
    p = sub.add_parser("resume", parents=[common],
                       help="requeue a crashed/cancelled/failed run with --resume")
    p.add_argument("id")
    p.add_argument("--steps", type=int, default=None, help="new total steps")
    p = sub.add_parser("rename", parents=[common], help="change a run's display name")
    p.add_argument("id")
    p.add_argument("name")
    p = sub.add_parser("delete", parents=[common], help="delete a finished run's directory")
    p.add_argument("id")
    p.add_argument("--yes", action="store_true", help="confirm the deletion")
    p = sub.add_parser("estimate", parents=[common],
                       help="time/memory estimate: jobs estimate TRAIN OPTIONS")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda: the device kind")
    p.add_argument("--gpu", default=None, help="GPU name from qvka_core.hardware")
    add_train_flags(p, skip=QUEUE_OWNED)
    p.add_argument("train_args", nargs=argparse.REMAINDER,
                   help="train options after --, as for `train` (the flags above, same names)")
    sub.add_parser("devices", parents=[common], help="CUDA availability and device slots")
    p = sub.add_parser("_worker", parents=[common], help=argparse.SUPPRESS)
    p.add_argument("run_dir")


def _train_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainArgs fields given as flags (and --config; the queue's own fields dropped),
    then those after `--` (which win; an out/name/resume/device there is refused by submit);
    a token that is not a train option is one error naming it."""
    fields = {k: v for k, v in given_fields(args).items() if k not in QUEUE_OWNED}
    rest = list(args.train_args)
    rest = rest[1:] if rest and rest[0] == "--" else rest
    if rest:
        after, unknown = argv_fields(rest)
        if unknown:
            from qvka_core.errors import RunError

            raise RunError(f"invalid train option(s): {' '.join(unknown)} (see `python -m "
                           "qvka_core train --help`)")
        fields.update(after)
    return fields


def _line(row: dict[str, Any]) -> str:
    val = row.get("last_val") or {}
    vl = f"{val['val_loss']:.4f}" if isinstance(val.get("val_loss"), (int, float)) else "-"
    shown = row["id"] if row.get("name") in (None, row["id"]) else f"{row['id']} ({row['name']})"
    return (f"{shown:<32} {row['state']:<10} #{row.get('seq') or '-':<4} "
            f"{row.get('device') or '-':<7} val_loss {vl:<8} {row.get('message') or ''}")


def _print(obj: Any, as_json: bool, text: str) -> None:
    if as_json:
        print(json_text(obj))
    else:
        print(text)


def run(args: argparse.Namespace) -> int:
    from qvka_core import jobs

    root = args.runs
    if args.action == "_worker":
        from qvka_core.jobs.worker import main

        return main(args.run_dir)
    if args.action == "list":
        rows = jobs.list_jobs(root)
        _print(rows, args.json, "\n".join(_line(r) for r in rows) or "no runs")
    elif args.action == "submit":
        st = jobs.submit(_train_fields(args), name=args.name, device=args.device,
                         n_gpus=args.gpus, root=root, force_memory=args.force_memory)
        _print(st, args.json, f"queued {st['id']} (#{st['seq']}) on {st['device']}; "
               f"now {st['state']}\n  dir {st['run_dir']}")
    elif args.action == "show":
        st = jobs.show(args.id, root=root)
        last = json.dumps(st.get("last_metrics"), default=str)
        _print(st, args.json, f"{_line(st)}\nlast metrics: {last}\n--- log tail ---\n"
               f"{st['log_tail']}")
    elif args.action == "cancel":
        st = jobs.cancel(args.id, root=root)
        _print(st, args.json, _line(st))
    elif args.action == "resume":
        st = jobs.resume(args.id, steps=args.steps, root=root)
        _print(st, args.json, _line(st))
    elif args.action == "rename":
        st = jobs.rename(args.id, args.name, root=root)
        _print(st, args.json, f"renamed: {st['id']} is now shown as {st['name']} (its id and "
               f"directory stay {st['id']}; commands accept either)")
    elif args.action == "delete":
        if not args.yes:
            sys.stderr.write(f"error: deleting {args.id} removes its directory; add --yes\n")
            return 2
        jobs.delete(args.id, root=root)
        _print({"deleted": args.id}, args.json, f"deleted {args.id}")
    elif args.action == "estimate":
        from qvka_core.paths import runs_root

        runs = args.runs or runs_root()
        est = jobs.estimate(_train_fields(args), device=args.device, gpu=args.gpu,
                            root=runs)
        text = (f"ESTIMATE ({est['throughput_basis']}): ~{est['seconds']:.0f} s, "
                f"~{est['memory_total_bytes'] / 2**20:.0f} MiB peak, {est['params']:,} params")
        if est["warning"]:
            text += f"\nWARNING: {est['warning']}"
        if est["measured_seconds"]:
            text += (f"\nat the effective rate of recent runs in {runs} "
                     f"({est['measured_flops'] / 1e9:.1f} GFLOP/s): ~"
                     f"{est['measured_seconds']:.0f} s")
        _print(est, args.json, text)
    elif args.action == "devices":
        d = jobs.devices()
        _print(d, args.json, f"cuda: {d['cuda']} ({d['gpu_count']} GPU(s)); slots: "
               f"{', '.join(d['slots'])}")
    return 0
