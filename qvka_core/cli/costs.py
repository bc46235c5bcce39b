"""`python -m qvka_core costs ...`: analytic parameters, FLOPs, KV cache and decode intensity.

The model is a preset (`--preset NAME`) or custom dimensions (`--d-model --n-layers --n-heads`,
a Llama-style decoder: pre-norm RMSNorm, SwiGLU, RoPE, untied head, ffn 4·d, vocab 32000 by
default). Shape flags cannot be combined with --preset (rejected); the variant options can
(one flag per option of a registered variant, from its spec: --n-kv-heads for gqa, qv and
qvka, --d-ctx and --qvka-cache for qvka, --kv-lora-rank ... for mla, --n-v-heads for
vshared), and apply only to the variants declaring them. Each --variant is the same model
recosted (`presets.recost`): qv and qvka keep the model's own KV grouping unless
--n-kv-heads says otherwise.
"""

from __future__ import annotations

import argparse
from typing import Any

from qvka_core.accounting import CostReport, costs
from qvka_core.cli.options import add_option_flags
from qvka_core.cli.output import json_text
from qvka_core.config import AttentionConfig, ModelConfig
from qvka_core.errors import ConfigError
from qvka_core.presets import get_preset, preset_names, recost
from qvka_core.variants.registry import (
    VariantOption,
    available_variants,
    refuse_foreign_option,
    variant_options,
)

HELP = "Analytic costs (params, FLOPs, KV cache, intensity) of a model under each variant."

SHAPE_FLAGS = ("d_model", "n_layers", "n_heads", "head_dim", "ffn_dim", "vocab_size")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help=f"one of: {', '.join(preset_names())}")
    for name in SHAPE_FLAGS:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=int, metavar="N")
    add_option_flags(parser, variant_options(scope="model"))
    parser.add_argument("--variant", action="append", dest="variants", metavar="V",
                        help="repeatable; default: every registered variant "
                        f"({', '.join(available_variants())})")
    parser.add_argument("--seq-len", type=int, default=2048, metavar="N")
    parser.add_argument("--batch", type=int, default=1, metavar="N")
    parser.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="bf16")
    parser.add_argument("--json", action="store_true", help="a JSON list, one object per variant")
    parser.add_argument("--macs", action="store_true", help="show multiply-adds (FLOPs / 2)")
    parser.add_argument("--no-causal-halving", action="store_true",
                        help="score all S positions even for causal models")


def base_config(args: argparse.Namespace) -> ModelConfig:
    """The preset, or a Llama-style decoder from the shape flags."""
    given = [f for f in SHAPE_FLAGS if getattr(args, f) is not None]
    if args.preset is not None:
        if given:
            flags = ", ".join("--" + f.replace("_", "-") for f in given)
            raise ConfigError(f"--preset cannot be combined with shape flags ({flags}); "
                              "use a preset or dimensions, not both")
        return get_preset(args.preset)
    missing = [f for f in ("d_model", "n_layers", "n_heads") if getattr(args, f) is None]
    if missing:
        flags = ", ".join("--" + f.replace("_", "-") for f in missing)
        raise ConfigError(f"costs needs --preset NAME or all of --d-model, --n-layers, "
                          f"--n-heads (missing {flags})")
    attn = AttentionConfig(kind="mha", d_model=args.d_model, n_heads=args.n_heads,
                           head_dim=args.head_dim)
    return ModelConfig(
        attention=attn, n_layers=args.n_layers,
        vocab_size=32000 if args.vocab_size is None else args.vocab_size,
        ffn_dim=4 * args.d_model if args.ffn_dim is None else args.ffn_dim,
        max_seq_len=max(2048, args.seq_len if args.seq_len > 0 else 1), norm="rmsnorm",
        mlp="swiglu", activation="silu", tie_embeddings=False, name="custom",
    )


def build_configs(args: argparse.Namespace) -> list[ModelConfig]:
    """One config per requested variant; every user error is a ConfigError."""
    valid = available_variants()
    variants = args.variants or valid
    for v in variants:
        if v not in valid:  # before any config is built
            raise ConfigError(f"unknown variant {v!r}; valid variants: {', '.join(valid)}")
    base = base_config(args)
    options = {o.name: o for o in variant_options(scope="model")}
    knobs = {k: v for k in options if (v := getattr(args, k, None)) is not None}
    for name, value in knobs.items():  # each knob checked even if its variants are not shown
        options[name].check(value)
        if args.variants:
            refuse_foreign_option(name, variants, options[name].flag)
        first = options[name].variants[0]
        recost(base, first, **_knobs_for(first, knobs, options))
    return [recost(base, v, **_knobs_for(v, knobs, options)) for v in variants]


def _knobs_for(variant: str, knobs: dict[str, Any],
               options: dict[str, VariantOption]) -> dict[str, Any]:
    return {k: v for k, v in knobs.items() if variant in options[k].variants}


def _human(x: float, unit: str = "", base: int = 1000) -> str:
    suffixes = ["", "K", "M", "G", "T", "P", "E"] if base == 1000 else \
        ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
    i = 0
    while abs(x) >= base and i < len(suffixes) - 1:
        x /= base
        i += 1
    return f"{x:.4g} {suffixes[i]}{unit}".rstrip()


def table(reports: list[CostReport], *, macs: bool) -> str:
    div, word = (2, "MACs") if macs else (1, "FLOPs")
    rows: list[tuple[str, list[str]]] = [
        ("params total", [f"{r.params_total:,}" for r in reports]),
        ("attention params", [f"{r.attention_params:,}" for r in reports]),
        ("KV bytes/token", [f"{r.kv_cache_bytes_per_token:,}" for r in reports]),
        (f"KV @ {reports[0].seq_len}x{reports[0].batch}",
         [_human(r.kv_cache_bytes, "B", 1024) for r in reports]),
        (f"fwd {word}/token", [_human(r.flops["forward_per_token"] / div) for r in reports]),
        (f"train {word}/token", [_human(r.flops["training_per_token"] / div) for r in reports]),
        (f"decode {word}/token @ {reports[0].seq_len}",
         [_human(r.decode_flops_per_token / div) for r in reports]),
        ("decode FLOP/byte KV", [f"{r.arithmetic_intensity:.3g}" for r in reports]),
    ]
    head = ["", *[r.variant for r in reports]]
    widths = [max(len(head[0]), *(len(n) for n, _ in rows))]
    for i in range(len(reports)):
        widths.append(max(len(head[i + 1]), *(len(vals[i]) for _, vals in rows)))
    lines = ["  ".join(h.rjust(w) if j else h.ljust(w) for j, (h, w) in
                       enumerate(zip(head, widths, strict=True)))]
    for name, vals in rows:
        cells = [name.ljust(widths[0])]
        cells += [v.rjust(w) for v, w in zip(vals, widths[1:], strict=True)]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    configs = build_configs(args)
    halving = False if args.no_causal_halving else None
    reports = [costs(c, seq_len=args.seq_len, batch=args.batch, dtype=args.dtype,
                     causal_halving=halving) for c in configs]
    if args.json:
        out: list[dict[str, Any]] = [r.to_dict(include_macs=args.macs) for r in reports]
        print(json_text(out, indent=2))
        return 0
    r0 = reports[0]
    print(f"{configs[0].name} · seq_len {r0.seq_len} · batch {r0.batch} · {r0.dtype} · "
          f"causal halving {'on' if r0.causal_halving else 'off'}")
    print(table(reports, macs=args.macs))
    if configs[0].notes:
        print(f"note: {configs[0].notes}")
    return 0
