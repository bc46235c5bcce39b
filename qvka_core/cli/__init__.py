"""Command line: `python -m qvka_core <command> ...`.

Each command is one module in this package exposing `HELP` (one line),
`add_arguments(parser)` and `run(args) -> int`. User errors (`LabError`) print one line,
`error: ...`, and exit 2; they never show a traceback.

Only the command being run is imported: the others' one-line HELP is read from their source
with `ast`, so `--help` and a light command (`train --help`, `jobs list`) load no torch.
"""

from __future__ import annotations

import argparse
import ast
import functools
import importlib
import sys
from pathlib import Path

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
    "app": "app",
}


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one clear line instead of usage noise on stderr."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {message}\n")
        raise SystemExit(2)


@functools.cache
def command_help(module_name: str) -> str:
    """The `HELP = "..."` line of a command module, read without importing it."""
    tree = ast.parse(Path(__file__).with_name(f"{module_name}.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if (isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "HELP"
                                                 for t in node.targets)
                and isinstance(node.value, ast.Constant)):
            return str(node.value.value)
    return importlib.import_module(f"qvka_core.cli.{module_name}").HELP  # a computed HELP


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with `only`, the named command's arguments alone are built (the
    others are listed by their help line), so only that command's module is imported."""
    prog = "qvka" if Path(sys.argv[0]).name == "qvka" else "python -m qvka_core"
    parser = _Parser(prog=prog, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, module_name in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=command_help(module_name))
            continue
        module = importlib.import_module(f"qvka_core.cli.{module_name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _command_in(argv: list[str]) -> str:
    """The command named in argv ("" when none is: `--help`, a typo)."""
    return next((a for a in argv if not a.startswith("-")), "") if argv else ""


def _passthrough(argv: list[str]) -> list[str]:
    """`qvka app --server.port 8502`: what follows `app` goes to streamlit as it is (argparse
    would take `--server.port` for an option of ours)."""
    if argv[:1] == ["app"] and argv[1:2] not in ([], ["-h"], ["--help"], ["--"]):
        return ["app", "--", *argv[1:]]
    return argv


def main(argv: list[str] | None = None) -> int:
    argv = _passthrough(sys.argv[1:] if argv is None else list(argv))
    args = build_parser(only=_command_in(argv)).parse_args(argv)
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
