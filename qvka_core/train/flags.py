"""The command-line form of `TrainArgs`, generated from the dataclass (no flag is declared by hand).

Each field `foo_bar` is the flag `--foo-bar`, typed from its annotation, with the field's
docstring as help and its default shown; the `# --- section ---` comments of the class
become argument groups. `--config FILE.json` supplies values (flags given too win). Booleans:
`resume` is a switch, `embed_scale` (true, false or unset) takes on|off.

    parser = argparse.ArgumentParser(); add_train_flags(parser)
    args = build_args(parser.parse_args(argv))       # -> TrainArgs
    parse_train_argv(["--variant", "qv", "--steps", "50"])   # same, errors as RunError
    to_argv({"variant": "qv", "steps": 50})          # -> ["--variant", "qv", "--steps", "50"]

Stdlib + `train.args` only: the job queue, the pages and `--help` use it without torch.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import json
import re
import typing
from pathlib import Path
from typing import Any

from qvka_core.errors import ConfigError, RunError
from qvka_core.paths import runs_root
from qvka_core.train import args as args_module
from qvka_core.train.args import DEVICES, DISTILL, SCHEDULES, TrainArgs

# Fields whose values form a closed set (the dataclass validates them too).
CHOICES: dict[str, tuple[str, ...]] = {"schedule": SCHEDULES, "device": DEVICES,
                                       "distill": DISTILL}
# Defaults computed at run time, described in words in --help.
DEFAULT_WORDS = {"out": "$QVKA_RUNS, else the checkout's runs/, else a per-user data folder"}
FIELDS = tuple(f.name for f in dataclasses.fields(TrainArgs))
CONFIG_DEST = "config"
_SECTION = re.compile(r"#\s*-{2,}\s*(.+?)\s*-{2,}")


def flag_of(name: str) -> str:
    """`n_kv_heads` -> `--n-kv-heads`."""
    return "--" + name.replace("_", "-")


@functools.cache
def field_docs() -> dict[str, tuple[str, str]]:
    """{field: (section, docstring)} read from the class source with `ast`: the string
    statement after each annotated field, and the `# --- section ---` comment above it."""
    source = inspect.getsource(args_module)
    lines = source.splitlines()
    cls = next(n for n in ast.parse(source).body
               if isinstance(n, ast.ClassDef) and n.name == TrainArgs.__name__)
    out: dict[str, tuple[str, str]] = {}
    section, last_line = "options", cls.lineno
    body = cls.body
    for i, node in enumerate(body):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        for text in lines[last_line:node.lineno - 1]:  # comments since the previous field
            match = _SECTION.search(text)
            if match:
                section = match.group(1)
        last_line = node.end_lineno or node.lineno
        doc = ""
        nxt = body[i + 1] if i + 1 < len(body) else None
        if (isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            doc = " ".join(nxt.value.value.split())
            last_line = nxt.end_lineno or last_line
        out[node.target.id] = (section, doc)
    return out


MAPPING_FIELDS = ("variant_options",)  # dict fields: one NAME=VALUE flag, repeatable


def _name_value(text: str) -> tuple[str, Any]:
    """"n_v_heads=2" -> ("n_v_heads", 2): the value read as JSON where it parses (numbers,
    true/false), else kept as text ("vg")."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return name.strip().replace("-", "_"), value


def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")
    return text == "on"


def _kind(name: str) -> tuple[type, bool]:
    """(base type, optional) of a field from its annotation (`int | None` -> (int, True))."""
    hint = typing.get_type_hints(TrainArgs)[name]
    parts = typing.get_args(hint) or (hint,)
    base = [p for p in parts if p is not type(None)]
    return base[0], type(None) in parts


def is_switch(name: str) -> bool:
    """A bool field that defaults to False is a plain switch (`--resume`)."""
    f = next(f for f in dataclasses.fields(TrainArgs) if f.name == name)
    return _kind(name)[0] is bool and f.default is False


def _default_text(f: dataclasses.Field[Any]) -> str:
    if f.name in DEFAULT_WORDS:
        return DEFAULT_WORDS[f.name]
    if f.default is dataclasses.MISSING:
        return ""
    if f.default is None:
        return "unset"
    if isinstance(f.default, bool):
        return "on" if f.default else "off"
    return str(f.default)


def add_train_flags(parser: argparse.ArgumentParser, *, skip: tuple[str, ...] = ()) -> None:
    """One flag per TrainArgs field (but those in `skip`, which the caller sets), grouped by
    the class's sections, plus --config.

    Every flag defaults to argparse.SUPPRESS, so the namespace holds only what was given
    (build_args tells "not given" from "given the default")."""
    parser.add_argument("--config", metavar="FILE.json", default=argparse.SUPPRESS,
                        help="read TrainArgs fields from a JSON object (or the 'train' object "
                        "of a run's config.json or job.json); flags given as well win")
    docs = field_docs()
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(TrainArgs):
        if f.name in skip:
            continue
        section, doc = docs.get(f.name, ("options", ""))
        group = groups.get(section) or groups.setdefault(
            section, parser.add_argument_group(section))
        default = _default_text(f)
        text = (doc or f.name.replace("_", " ")).replace("%", "%%")
        text += f" (default: {default})" if default and default != "unset" else ""
        base, _optional = _kind(f.name)
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": text}
        if f.name in MAPPING_FIELDS:
            kw.update(type=_name_value, action="append", metavar="NAME=VALUE",
                      help=text.replace(" (default: {})", "").rstrip(".") + "; repeat for several")
            group.add_argument(flag_of(f.name.rstrip("s")), **kw)
            continue
        if is_switch(f.name):
            kw["action"] = "store_true"
        elif base is bool:
            kw.update(type=_on_off, metavar="on|off")
        else:
            kw["type"] = base
            if f.name in CHOICES:
                kw["choices"] = CHOICES[f.name]
        group.add_argument(flag_of(f.name), **kw)


def given_fields(ns: argparse.Namespace) -> dict[str, Any]:
    """The TrainArgs fields in a parsed namespace: --config's values, then the flags given."""
    values: dict[str, Any] = {}
    config = getattr(ns, CONFIG_DEST, None)
    if config:
        values.update(read_config_file(config))
    values.update({k: v for k, v in vars(ns).items() if k in FIELDS and v is not None})
    for name in MAPPING_FIELDS:  # flags give [(key, value), ...]; --config gives a mapping
        if isinstance(values.get(name), list):
            values[name] = {**(read_config_file(config).get(name) or {} if config else {}),
                            **dict(values[name])}
    return values


def read_config_file(path: str | Path) -> dict[str, Any]:
    """TrainArgs fields from a JSON file: an object of fields, or one whose 'train' key holds
    them (a run's config.json, a job's job.json)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--config {path}: not a readable JSON file ({exc})") from exc
    if isinstance(data, dict) and isinstance(data.get("train"), dict):
        data = data["train"]
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a JSON object of train options")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ConfigError(f"--config {path}: unknown train option(s) {', '.join(unknown)}")
    return data


def build_args(ns: argparse.Namespace) -> TrainArgs:
    """TrainArgs from a parsed namespace; with resume, the stored arguments plus those given."""
    return args_from_fields(given_fields(ns))


def args_from_fields(fields: dict[str, Any]) -> TrainArgs:
    """TrainArgs from given fields; with resume=True, the run's stored arguments (its
    config.json under out/name) updated by the others."""
    given = dict(fields)
    if not given.pop("resume", False):
        return TrainArgs(**given)
    out, name = given.get("out") or str(runs_root()), given.get("name")
    if name is None:
        raise RunError("--resume needs --name (the run directory under --out)")
    stored = TrainArgs.from_run_dir(Path(out) / name)
    return stored.replace(**given, resume=True)


class _RaisingParser(argparse.ArgumentParser):
    """The train parser for options given as data (jobs, pages): a bad option is one
    RunError, not a line on stderr + SystemExit."""

    def error(self, message: str) -> typing.NoReturn:  # type: ignore[override]
        raise RunError(f"invalid train option: {message} (see `python -m qvka_core train "
                       "--help`)")


@functools.cache
def _data_parser() -> argparse.ArgumentParser:
    parser = _RaisingParser(prog="train", add_help=False)
    add_train_flags(parser)
    return parser


def parse_train_argv(argv: list[str]) -> TrainArgs:
    """TrainArgs from train options (["--variant", "qv", "--steps", "50", ...])."""
    return build_args(_data_parser().parse_args([str(a) for a in argv]))


def argv_fields(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """(typed TrainArgs fields, the tokens that are not train options) from an argv, without
    validating the values together: how job.json files that stored argv are read."""
    ns, rest = _data_parser().parse_known_args([str(a) for a in argv])
    return given_fields(ns), rest  # --config read, NAME=VALUE pairs made a mapping


def to_argv(fields: dict[str, Any], *, skip: tuple[str, ...] = ()) -> list[str]:
    """The flags that give `fields` (None values and `skip` left out): the inverse of the
    parser, for command lines that are shown or run."""
    argv: list[str] = []
    for name in FIELDS:
        value = fields.get(name)
        if name in skip or value is None:
            continue
        if name in MAPPING_FIELDS:
            for key, item in value.items():
                text = item if isinstance(item, str) else json.dumps(item)
                argv += [flag_of(name.rstrip("s")), f"{key}={text}"]
        elif is_switch(name):
            argv += [flag_of(name)] if value else []
        elif isinstance(value, bool):
            argv += [flag_of(name), "on" if value else "off"]
        else:
            argv += [flag_of(name), str(value)]
    return argv
