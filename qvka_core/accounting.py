"""Analytic cost accounting from a `ModelConfig` alone: parameters, FLOPs, KV cache, intensity.

Nothing here allocates a model, so an 8B or 236B config costs in well under a millisecond.
Every number is checked against a built model in tests/test_accounting.py.

Conventions (stated once, used everywhere):
- FLOPs = 2 x MACs (one multiply-add = 2 FLOPs), as FlopCounterMode, Kaplan et al. and
  torchtitan count; fvcore's "flops" are MACs. `to_dict(include_macs=True)` adds MACs.
- Only matrix multiplies are counted: projections, QK^T / PV, MLP, LM head, pooler. Softmax,
  norms, activations, RoPE and position biases are not (FlopCounterMode ignores them too).
- Attention projections: 2·proj_macs per token (notes/paper.md §6, "2 x projection params").
- Scores and weighted sum per query: 2·L·H·d_qk and 2·L·H·d_v, L = attended positions
  (paper.md §6: 4·L·h·d_h in total). L = S without causal halving, else the causal average
  (S+1)/2 (exact per step: S(S+1)/2 query-key pairs).
- Training = 3 x forward (backward = 2 x forward): torchtitan's "6N + attention term"
  convention (EleutherAI Transformer Math 101: C ≈ 6PD, here with the attention term kept).
- Decode arithmetic intensity (Zadouri et al. 2025, arXiv 2505.21487): attention FLOPs of one
  decode step per byte of KV cache read = 2·decode_macs_per_cached_token / cache bytes per
  token per layer. MHA in bf16 -> 1, GQA -> group size, QV (K = V tied) -> 2 x group size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from qvka_core.config import ModelConfig
from qvka_core.errors import ConfigError
from qvka_core.variants.registry import get_variant


def norm_params(kind: str, dim: int, bias: bool = True) -> int:
    """Weights of one norm: RMSNorm a scale; LayerNorm a scale and (with bias) a shift."""
    return dim if kind == "rmsnorm" else dim * (2 if bias else 1)


DTYPE_BYTES: dict[str, int] = {"fp32": 4, "bf16": 2, "fp16": 2}


def dtype_bytes(dtype: str) -> int:
    if dtype not in DTYPE_BYTES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPE_BYTES)}, got {dtype!r}")
    return DTYPE_BYTES[dtype]


# --- parameters -----------------------------------------------------------------------------
def param_breakdown(cfg: ModelConfig) -> dict[str, int]:
    """Parameters by component, summed over layers; the total equals numel of `Transformer(cfg)`.

    Tied head weights are counted once, under "embeddings" (as `.parameters()` does).
    """
    a, d, n = cfg.attention, cfg.d_model, cfg.n_layers
    norm = norm_params(cfg.norm, d, cfg.norm_bias)
    emb = cfg.vocab_size * d + cfg.type_vocab_size * d
    if cfg.position == "learned":
        emb += cfg.max_seq_len * d
    if cfg.embed_norm:
        emb += norm
    out: dict[str, int] = {"embeddings": emb}
    for name, count in get_variant(a.kind).params(a).items():
        out[f"attention/{name}"] = n * count
    if cfg.position == "agf":
        out["attention/pos_bias"] = n * a.n_heads  # one learnable α_h per head (positions.py)
    n_in = 2 if cfg.mlp == "swiglu" else 1  # gate + up, or up
    mlp = n_in * d * cfg.ffn_dim + cfg.ffn_dim * d
    if cfg.mlp_bias:
        mlp += n_in * cfg.ffn_dim + d
    out["mlp"] = n * mlp
    out["norms"] = n * 2 * norm + (norm if cfg.final_norm else 0)
    head = 0
    if cfg.lm_head:
        head = (0 if cfg.tie_embeddings else cfg.vocab_size * d)
        head += cfg.vocab_size if cfg.lm_head_bias else 0  # a bias is never tied
    out["lm_head"] = head
    out["pooler"] = d * d + d if cfg.pooler else 0
    return out


def attention_params(cfg: ModelConfig) -> int:
    return sum(v for k, v in param_breakdown(cfg).items() if k.startswith("attention/"))


# --- FLOPs ----------------------------------------------------------------------------------
def _attended_pairs(seq_len: int, causal_halving: bool) -> int:
    """Query-key pairs per sequence and layer: S² (full) or S(S+1)/2 (causal)."""
    return seq_len * (seq_len + 1) // 2 if causal_halving else seq_len * seq_len


def flops_breakdown(
    cfg: ModelConfig, *, seq_len: int, batch: int = 1, causal_halving: bool | None = None
) -> dict[str, float]:
    """Forward/training FLOPs per token and per step (batch x seq_len), by component.

    Per-token lines are per processed token, summed over layers; per-step totals add the
    pooler (once per sequence). See the module docstring for the conventions.
    """
    _check_positive(seq_len=seq_len, batch=batch)
    halving = cfg.causal if causal_halving is None else causal_halving
    a, d, n = cfg.attention, cfg.d_model, cfg.n_layers
    spec = get_variant(a.kind)
    d_qk, d_v = spec.score_dims(a)
    pairs = _attended_pairs(seq_len, halving)
    n_in = 2 if cfg.mlp == "swiglu" else 1
    per_step_tokens = batch * seq_len
    step = {
        "projections": per_step_tokens * n * 2 * spec.proj_macs(a),
        "attention_scores": batch * n * 2 * pairs * a.n_heads * d_qk,
        "attention_values": batch * n * 2 * pairs * a.n_heads * d_v,
        "mlp": per_step_tokens * n * 2 * (n_in + 1) * d * cfg.ffn_dim,
        "lm_head": per_step_tokens * 2 * d * cfg.vocab_size if cfg.lm_head else 0,
        "pooler": batch * 2 * d * d if cfg.pooler else 0,
    }
    out: dict[str, float] = {}
    for name in ("projections", "attention_scores", "attention_values", "mlp", "lm_head"):
        out[name] = _num(step[name] / per_step_tokens)
    fwd_step = sum(step.values())
    out["pooler_per_step"] = step["pooler"]
    out["forward_per_token"] = _num(fwd_step / per_step_tokens)
    out["training_per_token"] = _num(3 * fwd_step / per_step_tokens)
    out["forward_per_step"] = fwd_step
    out["training_per_step"] = 3 * fwd_step
    return out


def decode_flops_per_token(cfg: ModelConfig, context_len: int) -> int:
    """Weights-inclusive FLOPs to generate one token with `context_len` positions cached.

    2·(projection + MLP + head MACs) + 2·decode_macs_per_cached_token·(context + 1) per layer
    (kipply's "≈ 2P per token" plus the attention term, which includes QV-Ka's key recompute
    when it caches V and G). The step attends to the new token as well as the cached ones,
    as FlopCounterMode measures (tests/test_accounting.py).
    """
    a, d = cfg.attention, cfg.d_model
    spec = get_variant(a.kind)
    n_in = 2 if cfg.mlp == "swiglu" else 1
    per_layer = spec.proj_macs(a) + (n_in + 1) * d * cfg.ffn_dim
    per_layer += spec.decode_macs_per_cached_token(a) * (context_len + 1)
    per_layer -= spec.decode_recompute_macs(a)  # the new token's key: derived, not projected
    head = d * cfg.vocab_size if cfg.lm_head else 0
    return 2 * (cfg.n_layers * per_layer + head)


# --- KV cache -------------------------------------------------------------------------------
def kv_cache_elems_per_token(cfg: ModelConfig) -> dict[str, int]:
    """Cached elements per token, summed over layers, by tensor (e.g. MLA: latent, k_rope)."""
    a = cfg.attention
    return {k: cfg.n_layers * v for k, v in get_variant(a.kind).kv_cache_elems(a).items()}


def kv_cache_bytes_per_token(cfg: ModelConfig, dtype: str = "bf16") -> int:
    """Bytes of KV cache per token, all layers (Σ tensors · n_layers · bytes per element)."""
    return sum(kv_cache_elems_per_token(cfg).values()) * dtype_bytes(dtype)


def decode_intensity(cfg: ModelConfig, dtype: str = "bf16") -> float:
    """Attention FLOPs per byte of KV cache read at one decode step (Zadouri et al. 2025).

    Independent of context length and batch: every cached position costs the same MACs and
    bytes. Weights are excluded (they are amortised over the batch; see hardware.py).
    """
    a = cfg.attention
    spec = get_variant(a.kind)
    cache_bytes = sum(spec.kv_cache_elems(a).values()) * dtype_bytes(dtype)
    return 2 * spec.decode_macs_per_cached_token(a) / cache_bytes


# --- the report -----------------------------------------------------------------------------
@dataclass(frozen=True)
class CostReport:
    variant: str
    name: str
    dtype: str
    seq_len: int
    batch: int
    causal_halving: bool
    params_total: int
    params: dict[str, int]
    attention_params: int
    kv_cache_elems_per_token: dict[str, int]
    kv_cache_bytes_per_token: int
    kv_cache_bytes: int
    flops: dict[str, float]
    decode_flops_per_token: int
    arithmetic_intensity: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self, include_macs: bool = False) -> dict[str, Any]:
        """JSON-serialisable dict; `include_macs` adds "macs" (= FLOPs / 2) per line."""
        out = asdict(self)
        if include_macs:
            out["macs"] = {k: _num(v / 2) for k, v in self.flops.items()}
        return out


def costs(
    cfg: ModelConfig,
    *,
    seq_len: int = 2048,
    batch: int = 1,
    dtype: str = "bf16",
    causal_halving: bool | None = None,
) -> CostReport:
    """Every analytic cost of `cfg` at `seq_len` x `batch` in `dtype` (default: bf16).

    causal_halving defaults to `cfg.causal` (decoders attend to (S+1)/2 positions on average).
    """
    _check_positive(seq_len=seq_len, batch=batch)
    halving = cfg.causal if causal_halving is None else bool(causal_halving)
    params = param_breakdown(cfg)
    per_token = kv_cache_bytes_per_token(cfg, dtype)
    notes = [
        "FLOPs = 2 x MACs, matmuls only; training = 3 x forward (6N + attention term).",
        f"attention scores over {'(S+1)/2 (causal average)' if halving else 'S'} positions.",
        "lm_head FLOPs counted even when its weight is tied to the embeddings.",
    ]
    if seq_len > cfg.max_seq_len:
        notes.append(f"seq_len {seq_len} exceeds the model's max_seq_len {cfg.max_seq_len}.")
    if not cfg.causal:
        notes.append("bidirectional encoder: it does not decode; KV figures are hypothetical.")
    if cfg.notes:
        notes.append(cfg.notes)
    return CostReport(
        variant=cfg.variant,
        name=cfg.name,
        dtype=dtype,
        seq_len=seq_len,
        batch=batch,
        causal_halving=halving,
        params_total=sum(params.values()),
        params=params,
        attention_params=sum(v for k, v in params.items() if k.startswith("attention/")),
        kv_cache_elems_per_token=kv_cache_elems_per_token(cfg),
        kv_cache_bytes_per_token=per_token,
        kv_cache_bytes=per_token * seq_len * batch,
        flops=flops_breakdown(cfg, seq_len=seq_len, batch=batch, causal_halving=halving),
        decode_flops_per_token=decode_flops_per_token(cfg, seq_len),
        arithmetic_intensity=decode_intensity(cfg, dtype),
        notes=notes,
    )


def _num(x: float) -> float | int:
    """Keep integers integral (exact JSON), fractions as floats."""
    return int(x) if float(x).is_integer() else float(x)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
