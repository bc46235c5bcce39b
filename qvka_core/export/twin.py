"""The stock twin of a lab model: the same function written with q/k/v/o projections only.

Every rewrite here is exact (the twin computes the same logits and attention):

- QV (paper §§4-7): scores against V, and under RoPE rotates the scoring copy of V exactly as
  Llama rotates K, so the twin's key projection is the value projection: k_proj := v_proj.
- QV-Ka (paper §2.6): K_i = [x·W_ctx ; V_i]·W_K,i with W_K,i = [A_i ; B_i] is linear in x:
  K_i = x·(W_ctx·A_i + W_V,i·B_i) + b_V,i·B_i, one ordinary key projection per KV head;
  RoPE then rotates it, as the lab rotates the derived key.
- KV heads shared in groups, for a stock class without grouping (GPT-2, BERT, GPT-NeoX):
  each KV head is repeated for its query heads, which is what the kernel does anyway.
- V-shared (paper §8): K already has one head per query head; each of the n_v_heads V heads
  is repeated for its group of query heads (V_{g(i)} for head i), so the twin is plain MHA.
- MLA's latent RMSNorm eps, whatever it is, becomes DeepseekV2's fixed 1e-6 by scaling the
  latent projections (RMSNorm(c; ε) = RMSNorm(s·c; s²·ε)).
- Biases a stock class always has are zero-filled.

What the twin gives up is the cache: it stores K and V like its stock class. Rows repeated
per head are recorded in `Twin.repeated`; `restore.py` takes one copy back (exact).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from qvka_core.config import ModelConfig
from qvka_core.errors import CheckpointError
from qvka_core.export.exportable import exportable_variants, is_exportable

# Per family: does its attention group KV heads, and which bias flags it fixes.
_GROUPED = {"llama": True, "qwen2": True, "deepseek_v2": False, "gpt2": False, "bert": False,
            "gpt_neox": False}
HF_LATENT_EPS = 1e-6  # DeepseekV2RMSNorm's default, used for q_a_ and kv_a_layernorm
TASK = {"bert": "AutoModel"}  # everything else loads with AutoModelForCausalLM
ARCHITECTURES = {"gpt2": "GPT2LMHeadModel", "bert": "BertModel", "llama": "LlamaForCausalLM",
                 "qwen2": "Qwen2ForCausalLM", "deepseek_v2": "DeepseekV2ForCausalLM",
                 "gpt_neox": "GPTNeoXForCausalLM"}


@dataclass
class Twin:
    family: str
    config: ModelConfig  # the stock layout, as a lab config (kind mha/gqa/mqa/mla)
    state: dict[str, Tensor]  # our key names, full state (a tied head stored once)
    rewrites: list[str] = field(default_factory=list)  # what was rewritten, for the card
    # our key -> how many times each head's rows were repeated (the lab tensor is one copy)
    repeated: dict[str, int] = field(default_factory=dict)


def _refuse(cfg: ModelConfig, why: str) -> CheckpointError:
    return CheckpointError(f"cannot export {cfg.name} ({cfg.variant}, {cfg.position}) to a "
                           f"stock Hugging Face class: {why}")


def pick_family(cfg: ModelConfig) -> str:
    """The stock family whose computation equals this lab layout, or a one-line refusal."""
    pos = cfg.position
    if not is_exportable(cfg.variant):
        raise _refuse(cfg, f"no exact stock rewrite of {cfg.variant} attention yet (exportable: "
                      f"{', '.join(exportable_variants())})")
    if pos == "agf":
        raise _refuse(cfg, "no stock class adds AGF's learned −α_h·ln(1 + |i − j|) logit bias")
    if pos == "alibi":
        raise _refuse(cfg, "no stock class of a GPT-2/BERT/Llama/NeoX layout adds ALiBi biases")
    if pos == "sinusoidal":
        raise _refuse(cfg, "no stock class adds fixed sinusoidal positions to √d-scaled "
                      "embeddings")
    if pos == "none":
        raise _refuse(cfg, "no stock class of these layouts runs without positions")
    if cfg.lm_head_bias:
        raise _refuse(cfg, "no stock class of these layouts has an LM-head bias")
    if not cfg.causal:
        width = cfg.attention.n_heads * cfg.attention.head_dim
        _need(cfg, pos == "learned" and width == cfg.d_model and cfg.norm == "layernorm"
              and not cfg.prenorm and cfg.embed_norm and not cfg.final_norm
              and not cfg.lm_head and cfg.mlp == "gelu" and cfg.variant != "mla",
              "an encoder exports only in BERT's layout (post-norm LayerNorm, learned "
              "positions, GELU MLP, embedding norm, no LM head)")
        return "bert"
    _need(cfg, cfg.prenorm and cfg.final_norm and cfg.lm_head and not cfg.embed_norm
          and not cfg.type_vocab_size and not cfg.pooler,
          "a decoder exports only in a pre-norm layout with a final norm and an LM head")
    if cfg.variant == "mla":
        _need(cfg, pos == "rope" and cfg.norm == "rmsnorm" and cfg.mlp == "swiglu",
              "MLA exports only from a Llama layout (RMSNorm, SwiGLU, RoPE), as DeepseekV2")
        a = cfg.attention
        _need(cfg, not ((a.qkv_bias or a.o_bias) and a.option("q_lora_rank") is None),
              "DeepseekV2 has one attention_bias flag and no q_proj bias without q_lora_rank")
        _need(cfg, cfg.activation == "silu", "DeepseekV2's MLP is SwiGLU with SiLU")
        return "deepseek_v2"
    if pos == "rope" and cfg.norm == "rmsnorm" and cfg.mlp == "swiglu":
        _need(cfg, cfg.activation == "silu", "Llama's MLP is SwiGLU with SiLU")
        a = cfg.attention
        return "qwen2" if a.qkv_bias and not a.o_bias and not cfg.mlp_bias else "llama"
    width = cfg.attention.n_heads * cfg.attention.head_dim
    if cfg.norm == "layernorm" and cfg.mlp == "gelu" and width == cfg.d_model:
        return "gpt_neox" if pos == "rope" else "gpt2"
    raise _refuse(cfg, f"no stock class has a {cfg.norm} + {cfg.mlp} MLP + {pos} layout"
                  + ("" if width == cfg.d_model else f" with n_heads·head_dim ({width}) "
                     f"!= d_model ({cfg.d_model})"))


def _need(cfg: ModelConfig, ok: bool, why: str) -> None:
    if not ok:
        raise _refuse(cfg, why)


def stock_twin(cfg: ModelConfig, state: dict[str, Tensor]) -> Twin:
    """The exact stock twin of a lab model (config + our-format state)."""
    family = pick_family(cfg)
    state = {k: v.detach() for k, v in state.items()}
    if cfg.tie_embeddings:
        state.pop("lm_head.weight", None)
    twin = Twin(family=family, config=cfg, state=state)
    if cfg.variant in _REWRITES:
        _REWRITES[cfg.variant](twin)
    a = twin.config.attention
    if a.kind == "mla" and a.option("latent_norm_eps") != HF_LATENT_EPS:
        _rescale_latent_eps(twin)
    if a.kind != "mla" and a.n_kv_heads < a.n_heads and not _GROUPED[family]:
        _repeat_kv_heads(twin)
    _fill_biases(twin)
    return twin


def _layers(cfg: ModelConfig) -> range:
    return range(cfg.n_layers)


def _fold_keys(twin: Twin) -> None:
    cfg, s = twin.config, twin.state
    a = cfg.attention
    g, d = a.n_kv_heads, a.head_dim
    for i in _layers(cfg):
        p = f"layers.{i}.attn."
        w_v = s[p + "v_proj.weight"]  # (Hkv·D, d_model)
        b_v = s.get(p + "v_proj.bias")  # (Hkv·D,) or None
        if cfg.variant == "qv":
            s[p + "k_proj.weight"] = w_v.clone()
            if b_v is not None:
                s[p + "k_proj.bias"] = b_v.clone()
            continue
        w_ctx = s.pop(p + "ctx_proj.weight")  # (d_ctx, d_model)
        k_w = s.pop(p + "k_weight")  # (Hkv, d_ctx + D, D): [A_i ; B_i]
        a_i, b_i = k_w.split([a.option("d_ctx"), d], dim=1)  # (Hkv, d_ctx, D), (Hkv, D, D)
        w_v_heads = w_v.view(g, d, -1)  # (Hkv, D, d_model)
        # Row e of K_i's projection: Σ_c A_i[c, e]·W_ctx[c] + Σ_f B_i[f, e]·W_V,i[f].
        w_k = (torch.einsum("gce,cm->gem", a_i, w_ctx)
               + torch.einsum("gfe,gfm->gem", b_i, w_v_heads))  # (Hkv, D, d_model)
        s[p + "k_proj.weight"] = w_k.reshape(g * d, -1)  # (Hkv·D, d_model)
        if b_v is not None:
            s[p + "k_proj.bias"] = torch.einsum("gf,gfe->ge", b_v.view(g, d), b_i).reshape(-1)
    kind = "mha" if a.n_kv_heads == a.n_heads else ("mqa" if a.n_kv_heads == 1 else "gqa")
    twin.rewrites.append(
        "k_proj := v_proj (QV scores against its values; RoPE rotates that copy as it rotates K)"
        if cfg.variant == "qv" else
        "k_proj := W_ctx·A_i + W_V,i·B_i per KV head (QV-Ka's derived key is linear in x)")
    twin.config = cfg.with_variant(kind, n_kv_heads=a.n_kv_heads)


def _rescale_latent_eps(twin: Twin) -> None:
    """DeepseekV2's latent RMSNorms have eps 1e-6, fixed. RMSNorm(c; ε)·w equals
    RMSNorm(s·c; s²·ε)·w for any s > 0, so scaling the latent projections by
    s = sqrt(1e-6 / ε) moves any ε (e.g. the 2^26 of a conversion that folds the norm away)
    to 1e-6 exactly; the norm weights stay."""
    cfg, st = twin.config, twin.state
    a = cfg.attention
    scale = math.sqrt(HF_LATENT_EPS / a.option("latent_norm_eps"))
    for i in _layers(cfg):
        p = f"layers.{i}.attn."
        for key in (p + "kv_a_proj_with_mqa.weight", p + "kv_a_proj_with_mqa.bias"):
            if key in st:
                t = st[key].clone()
                t[: a.option("kv_lora_rank")] *= scale  # the latent rows; the RoPE key rows stay
                st[key] = t
        for key in (p + "q_a_proj.weight", p + "q_a_proj.bias"):
            if key in st:
                st[key] = st[key] * scale
    eps = a.option("latent_norm_eps")
    twin.rewrites.append(f"latent RMSNorm eps {eps:g} -> DeepseekV2's {HF_LATENT_EPS:g} "
                         f"exactly, the latent projections scaled by {scale:.3g}")
    twin.config = cfg.with_attention(latent_norm_eps=HF_LATENT_EPS)


def repeat_head_rows(t: Tensor, heads: int, rep: int) -> Tensor:
    """Each head's rows repeated `rep` times in place: (heads·D, ...) -> (heads·rep·D, ...)."""
    rest = t.shape[1:]
    rows = t.reshape(heads, -1, *rest)  # (heads, D, ...)
    return rows.repeat_interleave(rep, dim=0).reshape(-1, *rest)  # (heads·rep·D, ...)


def one_copy_rows(t: Tensor, rep: int, head_dim: int) -> Tensor:
    """Inverse of `repeat_head_rows`: the first of each head's `rep` copies."""
    rest = t.shape[1:]
    copies = t.reshape(-1, rep, head_dim, *rest)  # (heads, rep, D, ...)
    return copies[:, 0].reshape(-1, *rest)  # (heads·D, ...)


def _repeat_projections(twin: Twin, names: tuple[str, ...], heads: int, rep: int) -> None:
    s = twin.state
    for i in _layers(twin.config):
        for name in names:
            for part in ("weight", "bias"):
                key = f"layers.{i}.attn.{name}.{part}"
                if key in s:
                    s[key] = repeat_head_rows(s[key], heads, rep)
                    twin.repeated[key] = rep


def _repeat_kv_heads(twin: Twin) -> None:
    a = twin.config.attention
    _repeat_projections(twin, ("k_proj", "v_proj"), a.n_kv_heads, a.group_size)
    twin.rewrites.append(f"each of the {a.n_kv_heads} KV heads repeated for its "
                         f"{a.group_size} query heads ({twin.family} has no KV grouping)")
    twin.config = twin.config.with_variant("mha")


def _replicate_values(twin: Twin) -> None:
    """V-shared -> MHA: head i's V is its group's V_{g(i)} (what the lab's kernel expands to);
    K keeps its head per query head. Exact; the stock cache then holds n_heads V heads."""
    a = twin.config.attention
    g = a.option("n_v_heads")
    rep = a.n_heads // g
    _repeat_projections(twin, ("v_proj",), g, rep)
    twin.rewrites.append(f"each of the {g} shared V heads repeated for its {rep} query heads "
                         "(K already has one head per query head), as plain multi-head "
                         "attention")
    twin.config = twin.config.with_variant("mha")


# exportable.REWRITTEN's rewrites into a stock kind (exportable.STOCK_KINDS need none).
_REWRITES = {"qv": _fold_keys, "qvka": _fold_keys, "vshared": _replicate_values}


def _fill_biases(twin: Twin) -> None:
    """Zero biases where the stock class has one and the lab model has none."""
    cfg, fam, s = twin.config, twin.family, twin.state
    a = cfg.attention
    want_qkv, want_o = a.qkv_bias, a.o_bias
    want_mlp, want_norm = cfg.mlp_bias, cfg.norm_bias
    if fam in ("gpt2", "bert"):
        want_qkv = want_o = want_mlp = want_norm = True
    elif fam == "gpt_neox":
        want_qkv = want_o = a.qkv_bias or a.o_bias
        want_mlp = want_norm = True
    elif fam in ("llama", "deepseek_v2"):
        want_qkv = want_o = a.qkv_bias or a.o_bias
    new = cfg.with_attention(qkv_bias=want_qkv, o_bias=want_o).replace(
        mlp_bias=want_mlp, norm_bias=want_norm,
        type_vocab_size=max(cfg.type_vocab_size, int(fam == "bert")))  # BERT has token types
    if new == cfg:
        return
    from qvka_core.checkpoints.fastload import expected_shapes

    filled = []
    for key, shape in expected_shapes(new).items():
        if key not in s:
            s[key] = torch.zeros(shape, dtype=s["tok_emb.weight"].dtype)
            filled.append(key)
    if filled:
        names = sorted({k.rsplit(".", 2)[-2] for k in filled})
        twin.rewrites.append(f"zero tensors added for {', '.join(names)} ({fam} always has "
                             "them)")
    twin.config = new
