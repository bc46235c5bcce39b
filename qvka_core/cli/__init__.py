"""Command line: `python -m qvka_core <command> ...`.

Each command is one module in this package exposing `HELP` (one line),
`add_arguments(parser)` and `run(args) -> int`. User errors (`LabError`) print one line,
`error: ...`, and exit 2; they never show a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from qvka_core.errors import LabError

# command name -> module under qvka_core.cli
COMMANDS: dict[str, str] = {
    "variants": "variants",
    "costs": "costs",
    "convert": "convert",
    "train": "train",
    "jobs": "jobs",
    "paper": "paper",
    "attention": "attention",
    "checkpoints": "checkpoints",
    "export": "export",
    "generate": "generate",
    "warm": "warm",
}


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one clear line instead of usage noise on stderr."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m qvka_core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"qvka_core.cli.{module_name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except LabError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except BrokenPipeError:  # `... | head`: __main__ ends quietly
        raise
    except OSError as exc:  # the environment, not a bug: permissions, a file for a folder
        where = f": {exc.filename}" if exc.filename else ""
        sys.stderr.write(f"error: {exc.strerror or exc}{where}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
