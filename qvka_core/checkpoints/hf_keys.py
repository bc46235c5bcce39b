"""One key table per HF family, read in both directions (import in `hf.py`, export in
`qvka_core.export`), so that load ∘ export is the identity.

Each table maps our key -> HF key ("{}" = layer index), optionally with a transform that
has an inverse; layouts follow the HF modeling files (transformers 5.x):

- GPT-2 (`modeling_gpt2.py`): Conv1D stores weights as (in, out), so they are transposed;
  `c_attn` fuses q, k, v along `out` (three blocks of d rows).
- BERT (`modeling_bert.py`, BertModel): post-norm, embedding LayerNorm, token types, pooler.
- Llama / SmolLM2 / Qwen2 (`modeling_llama.py`, `modeling_qwen2.py`): near identity; Qwen2
  has q/k/v biases. Both use half-split ("rotate_half") RoPE, as we do.
- DeepSeek-V2 (`modeling_deepseek_v2.py`): HF applies RoPE to (even, odd) pairs as complex
  numbers. Our RoPE pairs (i, i + d/2), so the rope rows of `q_proj`/`q_b_proj` and
  `kv_a_proj_with_mqa` are permuted (evens first, then odds; the inverse on export):
  scores are unchanged because q and k get the same permutation.
- GPT-NeoX (`modeling_gpt_neox.py`): `query_key_value` fuses q, k, v per head
  ((H, 3, D) rows); half-split RoPE over the whole head (partial_rotary_factor 1).
"""

from __future__ import annotations

from torch import Tensor

from qvka_core.config import ModelConfig


class Transform:
    """A tensor layout change with its inverse: `load` (HF -> ours), `save` (ours -> HF)."""

    def load(self, t: Tensor, cfg: ModelConfig) -> Tensor:
        raise NotImplementedError

    def save(self, t: Tensor, cfg: ModelConfig) -> Tensor:
        raise NotImplementedError

    def __call__(self, t: Tensor, cfg: ModelConfig) -> Tensor:
        return self.load(t, cfg)


class Conv1D(Transform):
    """GPT-2 Conv1D weight (in, out) <-> Linear weight (out, in); biases pass through."""

    def load(self, t: Tensor, cfg: ModelConfig) -> Tensor:
        return t.t() if t.dim() == 2 else t

    save = load  # a transpose is its own inverse


class Fused(Transform):
    """Part `index` of a fused q/k/v tensor. `per_head`: rows are (H, 3, D) (GPT-NeoX),
    else (3, H·D) (GPT-2); `conv1d`: the weight is stored (in, out). Export joins the three
    parts with `join` (several our keys -> one HF key)."""

    def __init__(self, index: int, *, per_head: bool = False, conv1d: bool = False) -> None:
        self.index, self.per_head, self.conv1d = index, per_head, conv1d

    def load(self, t: Tensor, cfg: ModelConfig) -> Tensor:
        if self.conv1d and t.dim() == 2:
            t = t.t()  # (3·d, in)
        if t.shape[0] % 3:
            raise ValueError(f"fused q/k/v dimension {t.shape[0]} is not divisible by 3")
        if not self.per_head:
            return t.chunk(3, dim=0)[self.index]  # (d, in) or (d,)
        h = cfg.n_heads
        if t.shape[0] % (3 * h):
            raise ValueError(f"fused q/k/v dimension {t.shape[0]} is not 3 × {h} heads")
        parts = t.reshape(h, 3, t.shape[0] // (3 * h), *t.shape[1:])  # (H, 3, D, in)
        return parts[:, self.index].reshape(-1, *t.shape[1:])  # (H·D, in)

    def join(self, q: Tensor, k: Tensor, v: Tensor, cfg: ModelConfig) -> Tensor:
        """Inverse of `load` over the three parts (each (H·D, in) or (H·D,))."""
        import torch

        if self.per_head:
            h = cfg.n_heads
            parts = [p.reshape(h, -1, *p.shape[1:]) for p in (q, k, v)]  # (H, D, in)
            fused = torch.stack(parts, dim=1).reshape(-1, *q.shape[1:])  # (H·3·D, in)
        else:
            fused = torch.cat([q, k, v], dim=0)  # (3·d, in)
        return fused.t().contiguous() if self.conv1d and fused.dim() == 2 else fused


def _rope_perm(n_rope: int) -> list[int]:
    """Interleaved pairs (0,1), (2,3), ... -> half-split order: evens then odds."""
    return list(range(0, n_rope, 2)) + list(range(1, n_rope, 2))


def _inverse(perm: list[int]) -> list[int]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return inv


class MlaQRows(Transform):
    """Permute the rope rows of each head of q_proj / q_b_proj, (H·(dn + dr), in)."""

    def _perm(self, t: Tensor, cfg: ModelConfig, inverse: bool) -> Tensor:
        a = cfg.attention
        h, dn, dr = a.n_heads, a.option("qk_nope_head_dim"), a.option("qk_rope_head_dim")
        if t.shape[0] != h * (dn + dr):
            raise ValueError(f"expected {h * (dn + dr)} rows, got {t.shape[0]}")
        rope = _inverse(_rope_perm(dr)) if inverse else _rope_perm(dr)
        perm = list(range(dn)) + [dn + j for j in rope]
        w = t.reshape(h, dn + dr, *t.shape[1:])  # (H, dn + dr, in)
        return w[:, perm].reshape(t.shape)  # (H·(dn + dr), in)

    def load(self, t: Tensor, cfg: ModelConfig) -> Tensor:
        return self._perm(t, cfg, inverse=False)

    def save(self, t: Tensor, cfg: ModelConfig) -> Tensor:
        return self._perm(t, cfg, inverse=True)


class MlaKvRows(Transform):
    """Permute the rope rows (the last dr) of kv_a_proj_with_mqa, (dc + dr, in) or (dc + dr,)."""

    def _perm(self, t: Tensor, cfg: ModelConfig, inverse: bool) -> Tensor:
        a = cfg.attention
        dc, dr = a.option("kv_lora_rank"), a.option("qk_rope_head_dim")
        if t.shape[0] != dc + dr:
            raise ValueError(f"expected {dc + dr} rows, got {t.shape[0]}")
        rope = _inverse(_rope_perm(dr)) if inverse else _rope_perm(dr)
        return t[list(range(dc)) + [dc + j for j in rope]]

    def load(self, t: Tensor, cfg: ModelConfig) -> Tensor:
        return self._perm(t, cfg, inverse=False)

    def save(self, t: Tensor, cfg: ModelConfig) -> Tensor:
        return self._perm(t, cfg, inverse=True)


Entry = str | tuple[str, Transform]


def _wb(ours: str, hf: str, tf: Transform | None = None) -> dict[str, Entry]:
    """Weight and bias entries of one Linear/LayerNorm (the transform applies to both)."""
    if tf is None:
        return {f"{ours}.weight": f"{hf}.weight", f"{ours}.bias": f"{hf}.bias"}
    return {f"{ours}.weight": (f"{hf}.weight", tf), f"{ours}.bias": (f"{hf}.bias", tf)}


_CONV1D = Conv1D()
GPT2_KEYS: dict[str, Entry] = {
    "tok_emb.weight": "wte.weight",
    "pos_emb.weight": "wpe.weight",
    "lm_head.weight": "lm_head.weight",
    **_wb("final_norm", "ln_f"),
    **_wb("layers.{}.attn_norm", "h.{}.ln_1"),
    **_wb("layers.{}.mlp_norm", "h.{}.ln_2"),
    **{k: v for i, n in enumerate("qkv")
       for k, v in _wb(f"layers.{{}}.attn.{n}_proj", "h.{}.attn.c_attn",
                       Fused(i, conv1d=True)).items()},
    **_wb("layers.{}.attn.o_proj", "h.{}.attn.c_proj", _CONV1D),
    **_wb("layers.{}.mlp.up_proj", "h.{}.mlp.c_fc", _CONV1D),
    **_wb("layers.{}.mlp.down_proj", "h.{}.mlp.c_proj", _CONV1D),
}

_BERT_LAYER = "encoder.layer.{}"
BERT_KEYS: dict[str, Entry] = {
    "tok_emb.weight": "embeddings.word_embeddings.weight",
    "pos_emb.weight": "embeddings.position_embeddings.weight",
    "type_emb.weight": "embeddings.token_type_embeddings.weight",
    **_wb("embed_norm", "embeddings.LayerNorm"),
    **_wb("layers.{}.attn.q_proj", f"{_BERT_LAYER}.attention.self.query"),
    **_wb("layers.{}.attn.k_proj", f"{_BERT_LAYER}.attention.self.key"),
    **_wb("layers.{}.attn.v_proj", f"{_BERT_LAYER}.attention.self.value"),
    **_wb("layers.{}.attn.o_proj", f"{_BERT_LAYER}.attention.output.dense"),
    **_wb("layers.{}.attn_norm", f"{_BERT_LAYER}.attention.output.LayerNorm"),
    **_wb("layers.{}.mlp.up_proj", f"{_BERT_LAYER}.intermediate.dense"),
    **_wb("layers.{}.mlp.down_proj", f"{_BERT_LAYER}.output.dense"),
    **_wb("layers.{}.mlp_norm", f"{_BERT_LAYER}.output.LayerNorm"),
    **_wb("pooler", "pooler.dense"),
}

_DECODER_COMMON: dict[str, Entry] = {
    "tok_emb.weight": "embed_tokens.weight",
    "final_norm.weight": "norm.weight",
    "lm_head.weight": "lm_head.weight",
    "layers.{}.attn_norm.weight": "layers.{}.input_layernorm.weight",
    "layers.{}.mlp_norm.weight": "layers.{}.post_attention_layernorm.weight",
    **{f"layers.{{}}.mlp.{n}.{p}": f"layers.{{}}.mlp.{n}.{p}"
       for n in ("gate_proj", "up_proj", "down_proj") for p in ("weight", "bias")},
}

LLAMA_KEYS: dict[str, Entry] = {  # Qwen2 is the same table (its q/k/v biases included)
    **_DECODER_COMMON,
    **{f"layers.{{}}.attn.{n}.{p}": f"layers.{{}}.self_attn.{n}.{p}"
       for n in ("q_proj", "k_proj", "v_proj", "o_proj") for p in ("weight", "bias")},
}

_DS_ATTN = "layers.{}.self_attn"
DEEPSEEK_V2_KEYS: dict[str, Entry] = {
    **_DECODER_COMMON,
    "layers.{}.attn.q_proj.weight": (f"{_DS_ATTN}.q_proj.weight", MlaQRows()),
    **_wb("layers.{}.attn.q_a_proj", f"{_DS_ATTN}.q_a_proj"),
    "layers.{}.attn.q_a_layernorm.weight": f"{_DS_ATTN}.q_a_layernorm.weight",
    "layers.{}.attn.q_b_proj.weight": (f"{_DS_ATTN}.q_b_proj.weight", MlaQRows()),
    **_wb("layers.{}.attn.kv_a_proj_with_mqa", f"{_DS_ATTN}.kv_a_proj_with_mqa", MlaKvRows()),
    "layers.{}.attn.kv_a_layernorm.weight": f"{_DS_ATTN}.kv_a_layernorm.weight",
    "layers.{}.attn.kv_b_proj.weight": f"{_DS_ATTN}.kv_b_proj.weight",
    **_wb("layers.{}.attn.o_proj", f"{_DS_ATTN}.o_proj"),
}

_NEOX_LAYER = "layers.{}"
GPT_NEOX_KEYS: dict[str, Entry] = {
    "tok_emb.weight": "embed_in.weight",
    "lm_head.weight": "embed_out.weight",
    **_wb("final_norm", "final_layer_norm"),
    **_wb("layers.{}.attn_norm", f"{_NEOX_LAYER}.input_layernorm"),
    **_wb("layers.{}.mlp_norm", f"{_NEOX_LAYER}.post_attention_layernorm"),
    **{k: v for i, n in enumerate("qkv")
       for k, v in _wb(f"layers.{{}}.attn.{n}_proj", f"{_NEOX_LAYER}.attention.query_key_value",
                       Fused(i, per_head=True)).items()},
    **_wb("layers.{}.attn.o_proj", f"{_NEOX_LAYER}.attention.dense"),
    **_wb("layers.{}.mlp.up_proj", f"{_NEOX_LAYER}.mlp.dense_h_to_4h"),
    **_wb("layers.{}.mlp.down_proj", f"{_NEOX_LAYER}.mlp.dense_4h_to_h"),
}

KEY_TABLES: dict[str, dict[str, Entry]] = {
    "gpt2": GPT2_KEYS, "bert": BERT_KEYS, "llama": LLAMA_KEYS, "qwen2": LLAMA_KEYS,
    "deepseek_v2": DEEPSEEK_V2_KEYS, "gpt_neox": GPT_NEOX_KEYS,
}
# Prefix of the base model inside task models (GPT2LMHeadModel, BertForMaskedLM, ...);
# keys outside it (the LM heads) stay top-level. An exported BERT is a BertModel: no prefix.
PREFIXES = {"gpt2": "transformer.", "bert": "bert.", "llama": "model.", "qwen2": "model.",
            "deepseek_v2": "model.", "gpt_neox": "gpt_neox."}
EXPORT_PREFIXES = {**PREFIXES, "bert": ""}
HEAD_KEYS = ("lm_head.weight", "embed_out.weight")
# HF keys that are buffers or heads we do not model; anything else left over is an error.
IGNORED = {
    "gpt2": r"\.attn\.(masked_)?bias$",
    "bert": r"^(embeddings\.(position_ids|token_type_ids)$|cls\.)",
    "llama": r"rotary_emb\.inv_freq$",
    "qwen2": r"rotary_emb\.inv_freq$",
    "deepseek_v2": r"rotary_emb\.inv_freq$",
    "gpt_neox": r"(rotary_emb\.inv_freq|\.attention\.(masked_)?bias)$",
}


def template_of(our_key: str) -> tuple[str, str]:
    """(table template, layer index or "") of one of our keys: layers.3.x -> layers.{}.x."""
    parts = our_key.split(".")
    if len(parts) > 2 and parts[0] == "layers" and parts[1].isdigit():
        return ".".join(["layers", "{}", *parts[2:]]), parts[1]
    return our_key, ""


def hf_entry(family: str, our_key: str) -> tuple[str, Transform | None]:
    """(HF key without the model prefix, transform or None) of one of our keys; KeyError if
    the family's table has no entry for it."""
    template, layer = template_of(our_key)
    entry = KEY_TABLES[family][template]
    hf_key, tf = (entry, None) if isinstance(entry, str) else entry
    return hf_key.format(layer), tf
