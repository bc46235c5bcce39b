"""`python -m qvka_core checkpoints`: every checkpoint loadable by name (no weights read)."""

from __future__ import annotations

import argparse

from qvka_core.cli.output import json_text

HELP = "List the embedded, bundled and run checkpoints loadable by name."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON list")


def run(args: argparse.Namespace) -> int:
    from qvka_core.checkpoints import list_checkpoints

    rows = list_checkpoints()
    if args.json:
        print(json_text(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        params = f"{r['params_total'] / 1e6:.1f}M" if r.get("params_total") else "?"
        print(f"{r['name']:<{width}}  {r['source']:<8}  {r.get('variant') or '?':<5}  "
              f"{params:>7}  {r.get('description', '')}")
    return 0
