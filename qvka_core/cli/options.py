"""Command-line flags generated from the variants' options (`attention.variant_options()`)."""

from __future__ import annotations

import argparse
from typing import Any

from qvka_core.variants.registry import VariantOption


def add_option_flags(parser: argparse.ArgumentParser, options: list[VariantOption]) -> None:
    """One flag per variant option (default None: the variant's own default), its help
    naming the variants it applies to."""
    for opt in options:
        kw: dict[str, Any] = {"dest": opt.name, "default": None,
                              "help": f"{opt.help} [{', '.join(opt.variants)}]"}
        if opt.choices is not None:
            kw["choices"] = opt.choices
        elif opt.type is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw.update(type=opt.type, metavar="N" if opt.type is int else "X")
        parser.add_argument(opt.flag, **kw)
