"""Frozen, validated configuration for attention layers and whole models.

Two dataclasses: `AttentionConfig` (what the attention slot of one layer needs) and
`ModelConfig` (the transformer around it). Both are validated once, in `__post_init__`;
every error is a `ConfigError` naming the field and the rule it broke. Variant-specific
rules (e.g. `mha` forces `n_kv_heads = n_heads`) live with the variant, in its registry
entry, so adding a variant never touches this file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from qvka_core import limits
from qvka_core.errors import ConfigError

Position = Literal["rope", "sinusoidal", "learned", "agf", "alibi", "none"]
POSITIONS: tuple[str, ...] = ("rope", "sinusoidal", "learned", "agf", "alibi", "none")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _positive(name: str, value: Any) -> None:
    """A positive integer within its sanity cap (qvka_core.limits.MAX)."""
    limits.check_int(name, value)


@dataclass(frozen=True, kw_only=True)
class AttentionConfig:
    """One attention layer. Field names follow HF/DeepSeek where a convention exists."""

    kind: str = "mha"
    d_model: int
    n_heads: int
    n_kv_heads: int | None = None  # None -> n_heads (the variant may force it)
    head_dim: int | None = None  # None -> d_model // n_heads
    causal: bool = True
    position: Position = "rope"
    rope_theta: float = 10000.0
    qkv_bias: bool = False
    o_bias: bool = False
    dropout: float = 0.0
    options: tuple[tuple[str, Any], ...] = ()
    """The variant's own knobs (its spec's `VariantSpec.options`: QV-Ka's `d_ctx`, MLA's
    `kv_lora_rank`, V-shared's `n_v_heads`, ...), as sorted (name, value) pairs with the
    spec's defaults filled in; a dict or a list of pairs (config.json) is accepted. Read one
    with `cfg.option(name)`. A name the variant does not declare is a ConfigError."""

    def __post_init__(self) -> None:
        from qvka_core.variants.registry import get_variant  # late: registry imports us

        spec = get_variant(self.kind)  # raises ConfigError listing the valid names
        options = self._take_options(spec)
        _positive("d_model", self.d_model)
        _positive("n_heads", self.n_heads)
        if self.head_dim is None:
            _require(
                self.d_model % self.n_heads == 0,
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}) "
                "unless head_dim is given",
            )
            self._set("head_dim", self.d_model // self.n_heads)
        _positive("head_dim", self.head_dim)
        if self.n_kv_heads is None:
            self._set("n_kv_heads", self.n_heads)
        _require(
            self.position in POSITIONS,
            f"position must be one of {', '.join(POSITIONS)}, got {self.position!r}",
        )
        _require(
            0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout!r}"
        )
        limits.check_finite("dropout", self.dropout)
        limits.check_finite("rope_theta", self.rope_theta, positive=True)
        self._set("options", tuple(sorted(options.items())))
        for name, value in spec.normalize(self).items():
            if name in _ATTENTION_FIELDS:
                self._set(name, value)
            elif value is not None:
                options[name] = value
        self._set("options", tuple(sorted(options.items())))
        _positive("n_kv_heads", self.n_kv_heads)
        for opt in spec.model_options():  # caps only; spec.validate has the variant's rules
            value = self.option(opt.name)
            if opt.type is int and isinstance(value, int) and not isinstance(value, bool):
                limits.check_int(opt.name, value, minimum=0)
        _require(
            self.n_heads % self.n_kv_heads == 0,
            f"n_heads ({self.n_heads}) must be divisible by n_kv_heads ({self.n_kv_heads})",
        )
        spec.validate(self)
        for opt in spec.model_options():  # type, choices and bounds the spec declares
            opt.check(self.option(opt.name))

    def _take_options(self, spec: Any) -> dict[str, Any]:
        """`options` as a dict of the spec's options, defaults filled (an option that is a
        field, n_kv_heads, is moved to it); a name the spec does not declare is a ConfigError
        naming it and the variant's options."""
        raw = self.options
        try:
            given = dict(raw.items() if isinstance(raw, dict) else raw)
        except (TypeError, ValueError):
            raise ConfigError("options must be a mapping of variant option names to values "
                              f"(or a list of [name, value] pairs), got {raw!r}") from None
        declared = {o.name: o for o in spec.model_options()}
        foreign = sorted(set(given) - set(declared))
        if foreign:
            mine = ", ".join(declared) or "none"
            raise ConfigError(f"option(s) {', '.join(foreign)} do not apply to {spec.name} "
                              f"(its options: {mine})")
        out: dict[str, Any] = {}
        for name, opt in declared.items():
            value = given.get(name)
            if name in _ATTENTION_FIELDS:  # n_kv_heads: a field that specs declare as an option
                if value is not None:
                    field_value = getattr(self, name)
                    _require(field_value in (None, value), f"{name} is given twice with "
                             f"different values ({field_value!r} and {value!r} in options)")
                    self._set(name, value)
                continue
            if value is None:
                value = opt.default
            if value is not None:
                out[name] = value
        return out

    def option(self, name: str) -> Any:
        """The value of variant option `name`, or None (not set, or another variant's); a
        name no registered variant declares is a ConfigError (a typo must not read None)."""
        options = dict(self.options)
        if name in options:
            return options[name]
        from qvka_core.variants.registry import is_option_name

        if not is_option_name(name):
            raise ConfigError(f"unknown variant option {name!r}")
        return None

    @classmethod
    def make(cls, **fields_and_options: Any) -> AttentionConfig:
        """A config from fields and variant options alike, by name:
        `AttentionConfig.make(kind="qvka", d_model=64, n_heads=8, d_ctx=16)` puts `d_ctx` in
        `options` (None leaves an option at its default)."""
        fields = {k: v for k, v in fields_and_options.items() if k in _ATTENTION_FIELDS}
        named = {k: v for k, v in fields_and_options.items() if k not in _ATTENTION_FIELDS}
        base = fields.pop("options", ())
        return cls(**fields, options=_with_named_options(base, named))

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    @property
    def group_size(self) -> int:
        """Query heads per KV head."""
        return self.n_heads // self.n_kv_heads

    def replace(self, **changes: Any) -> AttentionConfig:
        """A new validated config; variant-derived fields are re-derived from scratch.

        `changes` may name variant options (e.g. `d_ctx=16`, `n_v_heads=2`); they go to
        `options`, None removing one (back to its default). Changing `kind` drops the old
        variant's options."""
        named = {k: changes.pop(k) for k in list(changes) if k not in _ATTENTION_FIELDS}
        kind = changes.get("kind", self.kind)
        if named or kind != self.kind:
            base = changes.get("options", self.options if kind == self.kind else ())
            changes["options"] = _with_named_options(base, named)
        return dataclasses.replace(self, **changes)


_ATTENTION_FIELDS = frozenset(f.name for f in dataclasses.fields(AttentionConfig))


def _with_named_options(base: Any, named: dict[str, Any]) -> dict[str, Any]:
    """`base` options (a mapping or pairs) updated by variant options given by name, None
    putting one back to its default; a name no variant declares is a ConfigError."""
    from qvka_core.variants.registry import is_option_name

    unknown = sorted(k for k in named if not is_option_name(k))
    _require(not unknown, f"unknown attention field(s): {', '.join(unknown)}")
    merged = {**dict(base.items() if isinstance(base, dict) else base), **named}
    return {k: v for k, v in merged.items() if v is not None}


# Variant knobs that were flat AttentionConfig fields in config.json files written before
# they moved into `options` (all kept their name but norm_eps), and the value every other
# variant carried for them, which is dropped.
_FLAT_OPTIONS = ("d_ctx", "qvka_cache", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
                 "qk_rope_head_dim", "v_head_dim", "mla_absorb_decode", "norm_eps")
_RENAMED = {"norm_eps": "latent_norm_eps"}
_FLAT_FILLERS = {"qvka_cache": "kv", "mla_absorb_decode": True, "norm_eps": 1e-6}


def _lift_flat_options(attn: dict[str, Any]) -> dict[str, Any]:
    """An attention mapping from an older config.json with its flat variant knobs moved into
    `options` (those of its own variant); None and the other variants' fillers are dropped."""
    from qvka_core.variants.registry import get_variant

    attn = dict(attn)
    flat = {k: attn.pop(k) for k in list(attn) if k in _FLAT_OPTIONS}
    if not flat:
        return attn
    mine = {o.name for o in get_variant(attn.get("kind", "mha")).model_options()}
    options = dict(attn.get("options") or ())
    for old, value in flat.items():
        new = _RENAMED.get(old, old)
        if new in mine and value is not None:
            if options.get(new, value) != value:
                raise ConfigError(f"config.attention.{old} ({value!r}) disagrees with its "
                                  f"options entry ({options[new]!r})")
            options[new] = value
        elif value is not None and value != _FLAT_FILLERS.get(old):
            raise ConfigError(f"config.attention.{old} does not apply to {attn.get('kind')!r}")
    attn["options"] = options
    return attn


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """A transformer whose attention slot is filled from the variant registry.

    It can mirror GPT-2 (pre-norm, learned positions, fused biases), BERT (post-norm encoder
    with token types and an embedding LayerNorm), Llama/Qwen2 (RMSNorm, SwiGLU, RoPE) and the
    attention part of DeepSeek-V2 (MLA).
    """

    attention: AttentionConfig
    n_layers: int
    vocab_size: int
    ffn_dim: int
    max_seq_len: int = 2048
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_eps: float = 1e-5
    norm_bias: bool = True
    prenorm: bool = True
    mlp: Literal["gelu", "swiglu"] = "gelu"
    activation: Literal["gelu", "gelu_tanh", "silu", "relu"] = "gelu"
    mlp_bias: bool = False
    tie_embeddings: bool = True
    lm_head: bool = True  # False for encoders whose checkpoint has no head (MiniLM)
    lm_head_bias: bool = False
    type_vocab_size: int = 0  # BERT token-type embeddings
    embed_norm: bool = False  # BERT LayerNorm after the embeddings
    pooler: bool = False  # BERT pooler (dense + tanh on the first token)
    final_norm: bool = True  # pre-norm models normalise before the head
    embed_scale: bool | None = None
    """Token embeddings scaled by sqrt(d_model) and initialised at d^-1/2 (Vaswani et al.
    §3.4). None: only under sinusoidal positions (the bundled models); True/False force it,
    so a comparison of position schemes can keep one embedding init and scale."""
    dropout: float = 0.0
    name: str = "custom"
    notes: str = ""  # provenance, e.g. "MoE FFN costed as dense active parameters"
    extra: tuple[tuple[str, Any], ...] = field(default=())  # free-form, hashable metadata

    def __post_init__(self) -> None:
        _require(
            isinstance(self.attention, AttentionConfig),
            "attention must be an AttentionConfig",
        )
        for name in ("n_layers", "vocab_size", "ffn_dim", "max_seq_len"):
            _positive(name, getattr(self, name))
        limits.check_int("type_vocab_size", self.type_vocab_size, minimum=0)
        limits.check_finite("norm_eps", self.norm_eps, positive=True)
        limits.check_finite("dropout", self.dropout)
        _require(
            not (self.tie_embeddings and not self.lm_head),
            "tie_embeddings needs lm_head=True",
        )
        _require(
            0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout!r}"
        )

    # Convenience views of the attention fields the model itself needs.
    @property
    def d_model(self) -> int:
        return self.attention.d_model

    @property
    def n_heads(self) -> int:
        return self.attention.n_heads

    @property
    def variant(self) -> str:
        return self.attention.kind

    @property
    def scales_embeddings(self) -> bool:
        """Whether token embeddings are scaled by sqrt(d_model) (see `embed_scale`)."""
        return self.position == "sinusoidal" if self.embed_scale is None else self.embed_scale

    @property
    def causal(self) -> bool:
        return self.attention.causal

    @property
    def position(self) -> str:
        return self.attention.position

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def with_attention(self, **changes: Any) -> ModelConfig:
        """Same model with some attention fields changed (validated again)."""
        return dataclasses.replace(self, attention=self.attention.replace(**changes))

    def with_variant(self, kind: str, **changes: Any) -> ModelConfig:
        """Same dimensions, attention swapped to `kind` (paper: one spectrum, one model).

        `n_kv_heads` is carried over only when the target variant accepts sharing; `mha` and
        `mqa` force their own value.
        """
        return self.with_attention(kind=kind, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of `to_dict`; unknown keys are an error naming them."""
        data = dict(data)
        attn = data.pop("attention", None)
        _require(isinstance(attn, dict), "config.attention must be a mapping")
        attn = _lift_flat_options(attn)
        known_a = {f.name for f in dataclasses.fields(AttentionConfig)}
        known_m = {f.name for f in dataclasses.fields(cls)} - {"attention"}
        unknown = sorted((set(attn) - known_a) | (set(data) - known_m))
        _require(not unknown, f"unknown config field(s): {', '.join(unknown)}")
        if "extra" in data:
            data["extra"] = tuple(tuple(x) for x in data["extra"])
        return cls(attention=AttentionConfig(**attn), **data)
