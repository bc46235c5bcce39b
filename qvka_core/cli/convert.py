"""`python -m qvka_core convert`: convert a checkpoint to another attention variant.

    python -m qvka_core convert --from smollm2-135m --to mla --kv-lora-rank 128 \\
        --calib-text train.txt --out runs/smollm2-mla

Writes a checkpoint in DIR (weights, config, tokenizer, meta.json with the source, method
and options) plus report.json, the fidelity report (`qvka_core.convert.report`). An
existing DIR is an error and nothing is overwritten.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from qvka_core import limits
from qvka_core.cli.options import add_option_flags
from qvka_core.errors import CheckpointError, ConfigError, DataError
from qvka_core.variants.registry import (
    VariantOption,
    available_variants,
    conversion_options,
    convertible_variants,
    get_variant,
    variant_options,
)

HELP = "Convert a checkpoint to another attention variant, with a fidelity report."
MAX_TEXT_BYTES = 50_000_000


def conversion_flags() -> list[VariantOption]:
    """Every option a registered converter accepts (model and conversion knobs alike)."""
    taken = {n for v in convertible_variants() for n in get_variant(v).conversion.options}
    return [o for o in variant_options(scope=None) if o.name in taken]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", required=True, metavar="NAME_OR_DIR",
                        help="embedded model name (e.g. smollm2-135m) or checkpoint directory")
    parser.add_argument("--to", dest="to", required=True, metavar="VARIANT",
                        help=f"one of: {', '.join(convertible_variants())}")
    add_option_flags(parser, conversion_flags())
    parser.add_argument("--calib-text", metavar="FILE",
                        help="UTF-8 text for calibration (qvka and qv fits, mla statistics)")
    parser.add_argument("--eval-text", metavar="FILE",
                        help="held-out UTF-8 text for the report (default: the lab's "
                        "validation text if available)")
    parser.add_argument("--out", required=True, metavar="DIR", help="new checkpoint directory")


def read_text(path: str, flag: str) -> str:
    """A UTF-8 text file; DataError naming the flag if missing, empty, binary or too large."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{flag}: {path} does not exist or is not a file")
    if p.stat().st_size > MAX_TEXT_BYTES:
        raise DataError(f"{flag}: {path} is larger than {MAX_TEXT_BYTES // 1_000_000} MB")
    raw = p.read_bytes()
    if b"\x00" in raw:
        raise DataError(f"{flag}: {path} looks binary (NUL bytes); give a UTF-8 text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{flag}: {path} is not UTF-8 text ({exc})") from exc
    if not text.strip():
        raise DataError(f"{flag}: {path} is empty")
    return text


def _given(args: argparse.Namespace) -> dict[str, Any]:
    return {o.name: getattr(args, o.name) for o in conversion_flags()
            if getattr(args, o.name, None) is not None}


def check_cheap(args: argparse.Namespace) -> None:
    """The rules that need no model: a target with a converter, options it takes, each
    within its rule. The rest (e.g. n_kv_heads dividing the source's heads) is checked
    against the model itself."""
    if args.to not in available_variants():
        raise ConfigError(f"--to: unknown variant {args.to!r}; one of: "
                          f"{', '.join(convertible_variants())}")
    flags = {o.name: o for o in conversion_flags()}
    for name, value in _given(args).items():
        try:
            flags[name].check(value)
        except ConfigError as exc:
            raise ConfigError(f"{flags[name].flag}: {exc}") from None
    conversion_options(args.to, **_given(args))  # no converter, or a foreign option: refused


def command_line(args: argparse.Namespace) -> str:
    """The equivalent command, for meta.json."""
    parts = ["python", "-m", "qvka_core", "convert", "--from", args.source, "--to", args.to]
    for name, value in _given(args).items():
        parts += ["--" + name.replace("_", "-"), str(value)]
    for name in ("calib_text", "eval_text"):
        if getattr(args, name) is not None:
            parts += ["--" + name.replace("_", "-"), getattr(args, name)]
    return shlex.join([*parts, "--out", args.out])


def run(args: argparse.Namespace) -> int:
    from qvka_core.checkpoints import save_checkpoint
    from qvka_core.convert.cache import cached_conversion
    from qvka_core.convert.report import ConversionReport

    out = Path(args.out)
    if out.exists():
        raise CheckpointError(f"--out: {out} already exists; choose a new directory")
    limits.check_writable_dir(out.parent, "--out")  # a read-only folder: refused up front
    check_cheap(args)  # before loading weights: a typo costs a second, not a model load
    calib = read_text(args.calib_text, "--calib-text") if args.calib_text else None
    held_out = read_text(args.eval_text, "--eval-text") if args.eval_text else None

    def progress(fraction: float, message: str) -> None:
        sys.stderr.write(f"\r[{fraction:5.0%}] {message[:60]:<60}")
        sys.stderr.flush()

    show = sys.stderr.isatty()  # a progress line only for people, never in logs or pipes
    try:  # through the conversion cache the Explorer and the Convert page share
        converted = cached_conversion(
            args.source, args.to, calib_text=calib, eval_text=held_out,
            progress=progress if show else None, **_given(args))
    finally:
        if show:
            sys.stderr.write("\n")
    report = converted.meta["conversion"]
    given = Path(args.source)
    meta = {
        # What the Convert page records too: the unconverted model, as a reference that
        # resolves from anywhere (the distillation teacher and the recovery baseline).
        "converted_from": str(given.resolve()) if given.exists() else args.source,
        "conversion": report,
        "source": report["source"],
        "source_variant": report["source_variant"],
        "variant": args.to,
        "method": report["method"],
        "options": report["options"],
        "calibration": report["diagnostics"].get("calibration"),
        "calib_text": args.calib_text,
        "command": command_line(args),
        "fidelity": {k: report[k] for k in ("js_divergence_mean", "hidden_cosine",
                                            "loss_before", "loss_after", "loss_diff_se")},
    }
    if out.exists():  # created while we were converting
        raise CheckpointError(f"--out: {out} already exists; choose a new directory")
    save_checkpoint(out, converted.model, tokenizer=converted.tokenizer, meta=meta)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(ConversionReport(**report).summary())
    if converted.meta.get("from_cache"):
        print(f"(read from the conversion cache: {converted.meta['from_cache']})")
    print(f"wrote {out} (checkpoint + report.json)")
    return 0
