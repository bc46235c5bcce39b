"""One layer's attention as plain GQA matrices, K/V head pooling, and model assembly.

Every conversion goes through `DenseAttention`: the source layer written as Q, K, V, O
projections in `nn.Linear` layout (out x in), whatever variant it was, by the function its
spec names (`VariantSpec.dense`). A QV layer has K = V; a QV-Ka layer's derived key is linear
in x, K_i = x·(W_ctx A_i + W_V,i B_i) (+ b_V,i B_i), so it too is an exact K projection.
Targets are then built from these matrices.

KV-head pooling follows GQA uptraining (Ainslie et al. 2023, arXiv 2305.13245 §2.2): the K
and V heads of a group are mean-pooled into one; growing the number of heads replicates
them, which is exact.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import Tensor

from qvka_core.attention.base import AttentionBase
from qvka_core.config import AttentionConfig, ModelConfig
from qvka_core.errors import ConfigError
from qvka_core.model import Transformer
from qvka_core.variants.registry import available_variants, get_variant, resolve


def sources() -> list[str]:
    """Variants `convert` can start from: their spec says how to write a layer densely."""
    return [v for v in available_variants() if get_variant(v).dense is not None]


@dataclass
class DenseAttention:
    """A layer's attention projections in float64, `nn.Linear` layout (out x in).

    H query heads, Hkv key/value heads of width D, model width d.
    """

    n_heads: int
    wq: Tensor  # (H·D, d)
    wk: Tensor  # (Hkv·D, d)
    wv: Tensor  # (Hkv·D, d)
    wo: Tensor  # (d, H·D)
    bq: Tensor | None = None  # (H·D,)
    bk: Tensor | None = None  # (Hkv·D,)
    bv: Tensor | None = None  # (Hkv·D,)
    bo: Tensor | None = None  # (d,)
    extra: dict[str, Tensor] = field(default_factory=dict)  # position-bias state, copied as is

    @property
    def n_kv_heads(self) -> int:
        return self.wk.shape[0] // self.head_dim

    @property
    def head_dim(self) -> int:
        return self.wo.shape[1] // self.n_heads


def _f64(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().to(torch.float64).clone()


def check_source(cfg: ModelConfig | AttentionConfig) -> None:
    kind = cfg.variant if isinstance(cfg, ModelConfig) else cfg.kind  # or an AttentionConfig
    if get_variant(kind).dense is None:
        raise ConfigError(
            f"source variant {kind!r} cannot be converted; supported sources: "
            f"{', '.join(sources())} (a source needs a dense Q/K/V/O form: MLA's decoupled "
            "RoPE key has none)"
        )


def _qvo(attn: AttentionBase) -> dict[str, Tensor | None]:
    return {"wq": _f64(attn.q_proj.weight), "bq": _f64(attn.q_proj.bias),
            "wv": _f64(attn.v_proj.weight), "bv": _f64(attn.v_proj.bias),
            "wo": _f64(attn.o_proj.weight), "bo": _f64(attn.o_proj.bias)}


def gqa_dense(attn: AttentionBase) -> dict[str, Tensor | None]:
    """MHA/GQA/MQA: the projections as they are."""
    return {**_qvo(attn), "wk": _f64(attn.k_proj.weight), "bk": _f64(attn.k_proj.bias)}


def qv_dense(attn: AttentionBase) -> dict[str, Tensor | None]:
    """QV: the key is the value."""
    out = _qvo(attn)
    return {**out, "wk": out["wv"].clone(), "bk": None if out["bv"] is None else out["bv"].clone()}


def qvka_dense(attn: AttentionBase) -> dict[str, Tensor | None]:
    """QV-Ka: the derived key is linear in x, K_i = x·(W_ctx A_i + W_V,i B_i) + b_V,i B_i."""
    cfg, out = attn.cfg, _qvo(attn)
    g, d = cfg.n_kv_heads, cfg.head_dim
    kw = attn.k_weight.detach().to(torch.float64)  # (Hkv, d_ctx + D, D)
    a, b = kw.split([cfg.option("d_ctx"), d], dim=1)  # (Hkv, d_ctx, D), (Hkv, D, D)
    w_ctx = attn.ctx_proj.weight.detach().to(torch.float64)  # (d_ctx, d)
    wv_h = out["wv"].view(g, d, -1)  # (Hkv·D, d) -> (Hkv, D, d)
    # K_i = x (W_ctxᵀ A_i + W_V,iᵀ B_i)  ->  Linear weight A_iᵀ W_ctx + B_iᵀ W_V,i
    wk_h = torch.einsum("hcD,cm->hDm", a, w_ctx) + torch.einsum("heD,hem->hDm", b, wv_h)
    bv = out["bv"]
    # b_K,i = b_V,i B_i: (Hkv·D,) -> (Hkv, D) -> (Hkv·D,)
    bk = None if bv is None else torch.einsum("he,heD->hD", bv.view(g, d), b).reshape(-1)
    return {**out, "wk": wk_h.reshape(g * d, -1), "bk": bk}  # (Hkv, D, d) -> (Hkv·D, d)


def extract_dense(attn: AttentionBase) -> DenseAttention:
    """The layer as Q, K, V, O matrices (float64 copies; the source is never touched), written
    by its variant's `VariantSpec.dense` (a function or "module:function")."""
    cfg = attn.cfg
    check_source(cfg)
    h, g = cfg.n_heads, cfg.n_kv_heads
    extra = {k: v.detach().clone() for k, v in attn.state_dict().items()
             if k.startswith("pos_bias.")}
    if h % g:
        raise ConfigError(f"n_heads ({h}) must be divisible by n_kv_heads ({g})")
    mats = resolve(get_variant(cfg.kind).dense)(attn)
    return DenseAttention(n_heads=h, extra=extra, **mats)


def check_kv_heads(n_heads: int, source_kv: int, target_kv: int) -> None:
    """Target KV heads must divide n_heads and nest with the source's groups."""
    if not isinstance(target_kv, int) or isinstance(target_kv, bool) or target_kv <= 0:
        raise ConfigError(f"n_kv_heads must be a positive integer, got {target_kv!r}")
    if n_heads % target_kv:
        raise ConfigError(f"n_kv_heads ({target_kv}) must divide n_heads ({n_heads})")
    if source_kv % target_kv and target_kv % source_kv:
        raise ConfigError(
            f"n_kv_heads ({target_kv}) does not nest with the source's {source_kv} KV heads: "
            "one must divide the other so that every new group is a union of old groups "
            "(or part of one)"
        )


def _regroup(w: Tensor | None, source_kv: int, target_kv: int) -> Tensor | None:
    """Mean-pool (fewer heads) or replicate (more heads) the rows of a K or V projection."""
    if w is None or source_kv == target_kv:
        return w
    rest = w.shape[1:]
    heads = w.reshape(source_kv, -1, *rest)  # (Hkv·D, ...) -> (Hkv, D, ...)
    if target_kv < source_kv:
        # (Hkv, D, ...) -> (Hkv_new, Hkv / Hkv_new, D, ...) -> mean over each group
        pooled = heads.reshape(target_kv, source_kv // target_kv, *heads.shape[1:]).mean(1)
    else:  # (Hkv, D, ...) -> (Hkv_new, D, ...)
        pooled = heads.repeat_interleave(target_kv // source_kv, dim=0)
    return pooled.reshape(-1, *rest)  # (Hkv_new, D, ...) -> (Hkv_new·D, ...)


def regroup_kv(dense: DenseAttention, target_kv: int) -> DenseAttention:
    """GQA uptraining's conversion (Ainslie et al. 2023): mean-pool K and V heads per group.

    Fewer KV heads: each new head is the mean of the old heads whose query groups it
    unites. More KV heads (e.g. GQA -> MHA): each old head is replicated into every new
    group it covers, which reproduces the source exactly.
    """
    source_kv = dense.n_kv_heads
    check_kv_heads(dense.n_heads, source_kv, target_kv)
    return dataclasses.replace(
        dense,
        wk=_regroup(dense.wk, source_kv, target_kv), bk=_regroup(dense.bk, source_kv, target_kv),
        wv=_regroup(dense.wv, source_kv, target_kv), bv=_regroup(dense.bv, source_kv, target_kv),
    )


def gqa_state(dense: DenseAttention) -> dict[str, Tensor]:
    """State dict of a GQAttention (mha/gqa/mqa) layer."""
    out = {"q_proj.weight": dense.wq, "k_proj.weight": dense.wk, "v_proj.weight": dense.wv,
           "o_proj.weight": dense.wo}
    out.update(_biases(dense, ("q", "k", "v")))
    return {**out, **dense.extra}


def qv_state(dense: DenseAttention) -> dict[str, Tensor]:
    """State dict of a QVAttention layer: the key projection is simply dropped."""
    out = {"q_proj.weight": dense.wq, "v_proj.weight": dense.wv, "o_proj.weight": dense.wo}
    out.update(_biases(dense, ("q", "v")))
    return {**out, **dense.extra}


def _biases(dense: DenseAttention, names: tuple[str, ...]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for n in names:
        b = getattr(dense, f"b{n}")
        if b is not None:
            out[f"{n}_proj.bias"] = b
    if dense.bo is not None:
        out["o_proj.bias"] = dense.bo
    return out


def assemble(source: Transformer, cfg: ModelConfig,
             attn_states: list[dict[str, Tensor]]) -> Transformer:
    """A new model of `cfg`: the source's non-attention weights copied, attention from states.

    The source is only read. Embeddings, norms, MLPs and the head are copied verbatim (the
    new model owns its storage); each layer's attention is loaded strictly from its state.
    """
    ref = next(source.parameters())
    with torch.random.fork_rng(devices=[]):  # building a model must not move the global RNG
        model = Transformer(cfg)
    model.to(device=ref.device, dtype=ref.dtype)
    own = model.state_dict()
    state: dict[str, Tensor] = {
        k: v for k, v in source.state_dict().items() if ".attn." not in k and k in own
    }
    for i, layer_state in enumerate(attn_states):
        for k, v in layer_state.items():
            state[f"layers.{i}.attn.{k}"] = v.to(device=ref.device, dtype=ref.dtype)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:  # a bug in a converter, not a user error
        raise RuntimeError(f"conversion state mismatch: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
    model.load_state_dict(state, strict=True)
    model.eval()
    return model
