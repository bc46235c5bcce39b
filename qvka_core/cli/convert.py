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

from qvka_core import limits
from qvka_core.attention.registry import available_variants
from qvka_core.errors import CheckpointError, ConfigError, DataError

HELP = "Convert a checkpoint to another attention variant, with a fidelity report."
MAX_TEXT_BYTES = 50_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", required=True, metavar="NAME_OR_DIR",
                        help="embedded model name (e.g. smollm2-135m) or checkpoint directory")
    parser.add_argument("--to", dest="to", required=True, metavar="VARIANT",
                        help=f"one of: {', '.join(available_variants())}")
    for flag, what in (("n-kv-heads", "KV heads (gqa; qv/qvka optional)"),
                       ("kv-lora-rank", "latent width d_c (mla)"),
                       ("qk-rope-head-dim", "decoupled RoPE key width (mla, even)"),
                       ("d-ctx", "context width of W_ctx (qvka)")):
        parser.add_argument("--" + flag, dest=flag.replace("-", "_"), type=int, metavar="N",
                            help=what)
    parser.add_argument("--latent-norm", choices=("fold", "rms"), default="fold",
                        help="mla: fold the latent RMSNorm (exact) or keep it (scale-matched)")
    parser.add_argument("--qv-fit", choices=("refit", "drop"), default=None,
                        help="qv: fold the least-squares map K ≈ V·M into the queries "
                        "(refit, the default) or just drop K (the lossy post-hoc tying)")
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


def check_cheap(args: argparse.Namespace) -> None:
    """The rules that need no model: a known target variant and positive sizes. The rest
    (e.g. n_kv_heads dividing the source's heads) is checked against the model itself."""
    if args.to not in available_variants():
        raise ConfigError(f"--to: unknown variant {args.to!r}; one of: "
                          f"{', '.join(available_variants())}")
    for name in ("n_kv_heads", "kv_lora_rank", "qk_rope_head_dim", "d_ctx"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got "
                              f"{value}")


def command_line(args: argparse.Namespace) -> str:
    """The equivalent command, for meta.json."""
    parts = ["python", "-m", "qvka_core", "convert", "--from", args.source, "--to", args.to]
    for name in ("n_kv_heads", "kv_lora_rank", "qk_rope_head_dim", "d_ctx", "qv_fit",
                 "calib_text", "eval_text"):
        value = getattr(args, name)
        if value is not None:
            parts += ["--" + name.replace("_", "-"), str(value)]
    if args.latent_norm != "fold":
        parts += ["--latent-norm", args.latent_norm]
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
            args.source, args.to, n_kv_heads=args.n_kv_heads, kv_lora_rank=args.kv_lora_rank,
            qk_rope_head_dim=args.qk_rope_head_dim, d_ctx=args.d_ctx, calib_text=calib,
            eval_text=held_out, latent_norm=args.latent_norm, qv_fit=args.qv_fit,
            progress=progress if show else None)
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
