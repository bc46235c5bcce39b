"""`python -m qvka_core variants [--json]`: the registered attention variants."""

from __future__ import annotations

import argparse

from qvka_core.attention.registry import available_variants, get_variant
from qvka_core.cli.output import json_text

HELP = "List the registered attention variants (spectrum order: MHA first, QV last)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON list")


def run(args: argparse.Namespace) -> int:
    rows = [
        {"name": n, "family": get_variant(n).family, "description": get_variant(n).description}
        for n in available_variants()
    ]
    if args.json:
        print(json_text(rows, ensure_ascii=False))
        return 0
    width = max(len(r["name"]) for r in rows)
    fam = max(len(r["family"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {r['family']:<{fam}}  {r['description']}")
    return 0
