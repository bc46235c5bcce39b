"""The variant registry: name -> `VariantSpec`, and what a variant owns besides its maths.

A variant is one package under `qvka_core/variants/` whose `__init__` registers a spec with
`register_variant(VariantSpec(...))` and whose `attention.py` holds its `AttentionBase`
subclass. This module imports no torch. The spec carries everything the rest of the lab needs:
the accounting formulas, its options (`VariantOption`: CLI flags, page widgets, recost and
demo defaults, validation), its conversion from the dense intermediate (`Conversion`, or None:
then `convert` refuses it in one line) and its place on the spectrum. Config validation, the
model, the accounting, the CLI, the pages and the contract tests ask the registry, so a new
variant needs no other edit.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from qvka_core.errors import ConfigError

if TYPE_CHECKING:
    from qvka_core.attention.base import AttentionBase
    from qvka_core.config import AttentionConfig


def linear_params(n_in: int, n_out: int, bias: bool) -> int:
    """Parameters of one `nn.Linear(n_in, n_out, bias=bias)`: the formulas' building block."""
    return n_in * n_out + int(bias) * n_out


def projection_params(c: AttentionConfig, *, k_heads: int | None, v_heads: int) -> dict[str, int]:
    """q/k/v/o projections of head width `c.head_dim`: H query heads, `k_heads` key heads
    (None: no key projection, as in QV and QV-Ka) and `v_heads` value heads."""
    h, d, m = c.n_heads, c.head_dim, c.d_model
    out = {"q_proj": linear_params(m, h * d, c.qkv_bias)}
    if k_heads is not None:
        out["k_proj"] = linear_params(m, k_heads * d, c.qkv_bias)
    out["v_proj"] = linear_params(m, v_heads * d, c.qkv_bias)
    out["o_proj"] = linear_params(h * d, m, c.o_bias)
    return out


def _no_overrides(cfg: AttentionConfig) -> dict:
    return {}


def _no_rules(cfg: AttentionConfig) -> None:
    return None


def _error(message: str) -> ConfigError:
    return ConfigError(message)


@dataclass(frozen=True)
class VariantOption:
    """One knob a variant owns: e.g. QV-Ka's `d_ctx`, MLA's `kv_lora_rank`.

    Attributes:
        name: the config/CLI name (`--d-ctx` on the command line).
        type: int, float, str or bool.
        help: one line for `--help` and the page widget.
        default: None when the variant derives it (e.g. d_ctx -> head_dim in `normalize`).
        choices: allowed values (str options), or None.
        minimum, maximum: integer bounds (inclusive), or None. Rules relative to the model
            (d_ctx <= d_model) live in the spec's `validate`.
        recost: cfg -> value used when another model is re-costed as this variant
            (`presets.recost`), or None to keep the config's value / the default.
        demo: the value the Random family shows (None: the default).
        scope: "model" (an architecture field, stored in the config) or "convert" (only a
            conversion knob, e.g. how QV drops K).
        variants: the variants declaring it (filled by `register_variant`/`variant_options`).
    """

    name: str
    type: type
    help: str
    default: Any = None
    choices: tuple[Any, ...] | None = None
    minimum: int | None = None
    maximum: int | None = None
    recost: Callable[[AttentionConfig], Any] | None = None
    demo: Any = None
    scope: Literal["model", "convert"] = "model"
    variants: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> None:
        """ConfigError naming the option and its rule when `value` is not allowed."""
        if value is None:
            return
        if self.type is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise _error(f"{self.name} must be an integer, got {value!r}")
        if self.type is float and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise _error(f"{self.name} must be a number, got {value!r}")
        if self.type is bool and not isinstance(value, bool):
            raise _error(f"{self.name} must be true or false, got {value!r}")
        if self.type is str and not isinstance(value, str):
            raise _error(f"{self.name} must be a string, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise _error(f"{self.name} must be one of {', '.join(map(str, self.choices))}, "
                         f"got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise _error(f"{self.name} must be at least {self.minimum}, got {value!r}")
        if self.maximum is not None and value > self.maximum:
            raise _error(f"{self.name} must be at most {self.maximum}, got {value!r}")


@dataclass(frozen=True)
class Conversion:
    """How `convert` builds this variant from the dense intermediate (`convert.weights`).

    Attributes:
        method: one line for the report (the recipe and its reference).
        run: job -> Transformer, or "module:function" resolved by the converter (so that code
            living in `qvka_core.convert` is not imported from here). The job
            (`convert.api.ConvertJob`) hands out the source's layers as dense Q/K/V/O
            matrices, the options with their defaults, calibration statistics when
            `calibrate` asks for them, and `assemble(cfg, states)`.
        options: names of the variant options (either scope) this conversion accepts.
        calibrate: options -> whether calibration statistics are needed.
    """

    method: str
    run: Callable[[Any], Any] | str
    options: tuple[str, ...] = ()
    calibrate: Callable[[dict[str, Any]], bool] = field(default=lambda opts: False)


@dataclass(frozen=True)
class Explainer:
    """What Home shows of a variant: its attention as a formula, one sentence, and the three
    facts its small diagram draws.

    Attributes:
        formula: LaTeX, as the paper writes it (arXiv 2603.15665 §2 for the built-ins).
        text: one or two sentences: what it drops or shares, and why.
        projects: what each token's input x is projected to (e.g. ("Q", "K", "V")).
        scores: what a query is scored against (e.g. "Q·Kᵀ").
        caches: what a decoder keeps per token and layer (e.g. ("K", "V")).
    """

    formula: str
    text: str
    projects: tuple[str, ...]
    scores: str
    caches: tuple[str, ...]


@dataclass(frozen=True)
class VariantSpec:
    """Everything the rest of the lab needs to know about one attention variant.

    Attributes:
        name: registry key, lowercase (e.g. "gqa").
        module: the `AttentionBase` subclass, or "module:Class" naming it (imported only when
            a model is built, so specs stay torch-free). Its `kv_groups()` is the head
            grouping the Explorer draws; its `__init__` any special weight init.
        description: one line for `python -m qvka_core variants` and the pages.
        family: the spectrum group ("kv-sharing", "latent", "keyless", "v-sharing").
        normalize: cfg -> {field or option: value} applied before the shared checks
            (e.g. mqa -> 1 kv head).
        validate: cfg -> None, raises `ConfigError` for variant-specific rules.
        params: cfg -> {component: count} for the attention projections of one layer.
        proj_macs: cfg -> multiply-adds per token in projections (training/prefill path).
        score_dims: cfg -> (d_qk, d_v): widths of the score and value matmuls per head.
        kv_cache_elems: cfg -> {tensor: elements per token per layer} actually cached.
        decode_macs_per_cached_token: cfg -> multiply-adds per cached position at one decode
            step (score + value + any recomputation), used for arithmetic intensity.
        decode_recompute_macs: cfg -> the part of decode_macs_per_cached_token that
            recomputes a key from cached tensors (QV-Ka's "vg" cache); the new token's key
            is derived the same way at decode, not by its projection.
        spectrum_rank: position on the paper's spectrum MHA -> ... -> QV (for ordering).
        options: the knobs it owns (`VariantOption`), in display order.
        conversion: how `convert` builds it, or None (no converter: refused in one line).
        label: display name ("QV-Ka"); default the name in capitals.
        dense: layer -> {"wq", "wk", "wv", "wo", "bq", "bk", "bv", "bo"}: the layer as dense
            float64 Q/K/V/O matrices in `nn.Linear` layout, K and V with the same number of
            heads (a function or "module:function"); None: not a conversion source.
        explainer: its formula and diagram for Home (`Explainer`); None: the description.
        shares: what the query heads of one `kv_groups()` group share, for the Explorer's
            labels ("KV"; QV's and V-shared's heads share V, MLA's the latent).
    """

    name: str
    module: type[AttentionBase] | str
    description: str
    family: str
    params: Callable[[AttentionConfig], dict[str, int]]
    proj_macs: Callable[[AttentionConfig], int]
    score_dims: Callable[[AttentionConfig], tuple[int, int]]
    kv_cache_elems: Callable[[AttentionConfig], dict[str, int]]
    decode_macs_per_cached_token: Callable[[AttentionConfig], int]
    normalize: Callable[[AttentionConfig], dict] = field(default=_no_overrides)
    validate: Callable[[AttentionConfig], None] = field(default=_no_rules)
    decode_recompute_macs: Callable[[AttentionConfig], int] = field(default=lambda c: 0)
    spectrum_rank: int = 100
    options: tuple[VariantOption, ...] = ()
    conversion: Conversion | None = None
    label: str = ""
    dense: Callable[[Any], dict[str, Any]] | str | None = None
    explainer: Explainer | None = None
    shares: str = "KV"

    @property
    def display(self) -> str:
        return self.label or self.name.upper()

    def option(self, name: str) -> VariantOption | None:
        return next((o for o in self.options if o.name == name), None)

    def model_options(self) -> tuple[VariantOption, ...]:
        return tuple(o for o in self.options if o.scope == "model")


_REGISTRY: dict[str, VariantSpec] = {}
_OPTION_NAMES: set[str] | None = None  # every declared option name (reset on (un)register)


def register_variant(spec: VariantSpec) -> VariantSpec:
    """Add `spec`; a name already registered is a KeyError (unregister it first)."""
    if spec.name in _REGISTRY:
        raise KeyError(f"variant {spec.name!r} is already registered")
    names = [o.name for o in spec.options]
    if len(names) != len(set(names)):
        raise ValueError(f"variant {spec.name!r} declares an option twice: {names}")
    spec = replace(spec, options=tuple(replace(o, variants=(spec.name,)) for o in spec.options))
    _REGISTRY[spec.name] = spec
    _forget_option_names()
    return spec


def resolve(ref: Callable | str) -> Callable:
    """A function, or one named "module:function" (imported only when called for, so a spec
    can name code of a higher layer, e.g. `qvka_core.convert`, without importing it)."""
    if callable(ref):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def unregister_variant(name: str) -> None:
    """Remove a variant (tests that register a toy one at runtime clean up with this)."""
    _REGISTRY.pop(name, None)
    _forget_option_names()


def _forget_option_names() -> None:
    global _OPTION_NAMES
    _OPTION_NAMES = None


def is_option_name(name: str) -> bool:
    """Whether some registered variant declares an option `name` (either scope)."""
    global _OPTION_NAMES
    if _OPTION_NAMES is None:
        _ensure_loaded()
        _OPTION_NAMES = {o.name for s in _REGISTRY.values() for o in s.options}
    return name in _OPTION_NAMES


def _ensure_loaded() -> None:
    # Importing the package registers the built-in variants exactly once.
    import qvka_core.variants  # noqa: F401


def available_variants() -> list[str]:
    """Registered variant names, in spectrum order (MHA first, QV last)."""
    _ensure_loaded()
    return [s.name for s in sorted(_REGISTRY.values(), key=lambda s: s.spectrum_rank)]


def get_variant(name: str) -> VariantSpec:
    _ensure_loaded()
    if name not in _REGISTRY:
        raise _error(
            f"unknown variant {name!r}; valid variants: {', '.join(available_variants())}"
        )
    return _REGISTRY[name]


def variant_label(name: str) -> str:
    """Display name from the spec ("QV-Ka", "V-shared"); a name not registered, upper-cased."""
    _ensure_loaded()
    spec = _REGISTRY.get(name)
    return spec.display if spec is not None else name.upper()


def convertible_variants() -> list[str]:
    """Variants `convert` can build (their spec has a `Conversion`), in spectrum order."""
    return [v for v in available_variants() if get_variant(v).conversion is not None]


def conversion_for(to: str) -> Conversion:
    """The target's `Conversion`; a variant without one is refused in one line."""
    conv = get_variant(to).conversion  # unknown variant -> ConfigError listing the valid ones
    if conv is None:
        raise _error(f"no conversion to {to}; variants with a converter: "
                     f"{', '.join(convertible_variants())}")
    return conv


def conversion_options(to: str, **given: Any) -> dict[str, Any]:
    """The options `convert` passes to `to`'s converter, checked against its spec: a value
    for an option the conversion does not take is refused (a declared default is ignored),
    each value must satisfy its option's rule; conversion options get their defaults."""
    conv = conversion_for(to)
    spec = get_variant(to)
    every = {o.name: o for o in variant_options(scope=None)}
    for name, value in given.items():
        if value is None or name in conv.options:
            continue
        if name not in every:
            raise _error(f"unknown conversion option {name!r}")
        if value == every[name].default:
            continue  # e.g. latent_norm="fold" passed for every target
        takers = [v for v in convertible_variants()
                  if name in get_variant(v).conversion.options]
        raise _error(f"{name} does not apply to --to {to} (it applies to: "
                     f"{', '.join(takers)})")
    out: dict[str, Any] = {}
    for name in conv.options:
        opt = spec.option(name)
        value = given.get(name)
        if opt is not None:
            opt.check(value)
            if value is None and opt.scope == "convert":
                value = opt.default
        out[name] = value
    return out


def variant_options(scope: str | None = "model") -> list[VariantOption]:
    """Every variant option, one entry per name, in spectrum order of first declaration.

    The contract for generated CLIs and forms (costs, convert, train): each entry has
    `name` (the config / TrainArgs field and the flag `--name-with-dashes`), `type`,
    `default` (None = the variant derives it), `help`, `choices`, `minimum`/`maximum`,
    `scope` ("model": an architecture knob, "convert": a conversion knob) and `variants`
    (every variant declaring it, e.g. n_kv_heads -> gqa, qv, qvka). `scope=None` lists both
    scopes. A value given for a variant not in `variants` does not apply to it. Train code
    (`train.setup.model_config`) reads each model-scope option by name from the run's args
    (`getattr(args, name, None)`; None = the variant's default).
    """
    merged: dict[str, VariantOption] = {}
    for v in available_variants():
        for o in get_variant(v).options:
            if scope is not None and o.scope != scope:
                continue
            if o.name in merged:
                merged[o.name] = replace(merged[o.name], variants=merged[o.name].variants + (v,))
            else:
                merged[o.name] = o
    return list(merged.values())


def refuse_foreign_option(name: str, chosen: list[str], shown: str | None = None) -> None:
    """ConfigError unless one of the `chosen` variants declares option `name` (a value for
    another variant's knob would be dropped silently); `shown` is how the user wrote it."""
    takers = next(o.variants for o in variant_options(scope=None) if o.name == name)
    if not set(takers) & set(chosen):
        raise _error(f"{shown or name} does not apply to --variant {', '.join(chosen)} (it "
                     f"applies to: {', '.join(takers)})")


def demo_options(kind: str) -> dict[str, Any]:
    """The options the Random family gives `kind` (each option's `demo` value)."""
    return {o.name: o.demo for o in get_variant(kind).model_options() if o.demo is not None}


class DemoConfigs(Mapping):
    """A live view: variant -> `AttentionConfig` keyword arguments of its demo options.

    Live, so a variant registered at runtime appears (the Random family reads it)."""

    def __getitem__(self, kind: str) -> dict[str, Any]:
        if kind not in _REGISTRY:
            raise KeyError(kind)
        demo = demo_options(kind)
        return {"options": demo} if demo else {}

    def __iter__(self) -> Iterator[str]:
        return iter(available_variants())

    def __len__(self) -> int:
        return len(available_variants())
