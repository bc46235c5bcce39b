"""`python -m qvka_core variants [--json]`: the registered attention variants."""

from __future__ import annotations

import argparse

from qvka_core.cli.output import json_text
from qvka_core.export.exportable import exportable_variants
from qvka_core.variants.registry import available_variants, get_variant

HELP = ("List the registered attention variants in spectrum order, with their options, "
        "whether `convert` can build them and whether `export` writes them as a stock "
        "Hugging Face class.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON list")


def _row(name: str, exportable: list[str]) -> dict:
    spec = get_variant(name)
    return {"name": name, "label": spec.display, "family": spec.family,
            "description": spec.description,
            "options": [{"name": o.name, "type": o.type.__name__, "default": o.default,
                         "choices": list(o.choices) if o.choices else None, "scope": o.scope,
                         "help": o.help} for o in spec.options],
            "conversion": None if spec.conversion is None else spec.conversion.method,
            "hf_export": name in exportable}


def run(args: argparse.Namespace) -> int:
    exportable = exportable_variants()
    rows = [_row(n, exportable) for n in available_variants()]
    if args.json:
        print(json_text(rows, ensure_ascii=False))
        return 0
    width = max(len(r["name"]) for r in rows)
    fam = max(len(r["family"]) for r in rows)
    for r in rows:
        opts = ", ".join("--" + o["name"].replace("_", "-") for o in r["options"])
        print(f"{r['name']:<{width}}  {r['family']:<{fam}}  {r['description']} [options: "
              f"{opts or 'none'}{'' if r['conversion'] else '; no converter'}"
              f"{'' if r['hf_export'] else '; no HF export'}]")
    return 0
