"""Load Hugging Face checkpoints (GPT-2, BERT, Llama/SmolLM2, Qwen2, DeepSeek-V2 MLA).

One explicit key table per family maps our key -> HF key ("{}" = layer index), optionally
with a transform; layouts follow the HF modeling files (transformers 5.x):

- GPT-2 (`modeling_gpt2.py`): Conv1D stores weights as (in, out), so they are transposed;
  `c_attn` fuses q, k, v along `out` and is split in three.
- BERT (`modeling_bert.py`, BertModel): post-norm, embedding LayerNorm, token types, pooler.
- Llama / SmolLM2 / Qwen2 (`modeling_llama.py`, `modeling_qwen2.py`): near identity; Qwen2
  has q/k/v biases. Both use half-split ("rotate_half") RoPE, as we do.
- DeepSeek-V2 (`modeling_deepseek_v2.py`): HF applies RoPE to (even, odd) pairs as complex
  numbers. Our RoPE pairs (i, i + d/2), so the rope rows of `q_proj`/`q_b_proj` and
  `kv_a_proj_with_mqa` are permuted once (evens first, then odds): scores are unchanged
  because q and k get the same permutation. Only dense-FFN configurations load; MoE layers
  have no counterpart in our model.

Only safetensors are read; pickle files are refused. Every problem is a CheckpointError
naming the tensor or the file. Config parsing lives in `hf_config.py`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from torch import Tensor

from qvka_core.checkpoints.fastload import build_model, check_state, expected_shapes
from qvka_core.checkpoints.hf_config import FAMILIES, config_from_hf, detect_family
from qvka_core.checkpoints.store import PICKLE_SUFFIXES, LoadedModel, read_config_json
from qvka_core.config import ModelConfig
from qvka_core.errors import CheckpointError
from qvka_core.model import Transformer
from qvka_core.tokenizer import TextTokenizer

Transform = Callable[[Tensor, ModelConfig], Tensor]
Entry = str | tuple[str, Transform]


# --- transforms ---------------------------------------------------------------------------
def _conv1d(t: Tensor, cfg: ModelConfig) -> Tensor:
    """GPT-2 Conv1D weight (in, out) -> Linear weight (out, in)."""
    return t.t() if t.dim() == 2 else t


def _fused(i: int) -> Transform:
    """Part i (q, k, v) of GPT-2's fused c_attn weight (in, 3·d) or bias (3·d,)."""

    def split(t: Tensor, cfg: ModelConfig) -> Tensor:
        t = _conv1d(t, cfg)  # (3·d, in) or (3·d,)
        if t.shape[0] % 3:
            raise ValueError(f"fused q/k/v dimension {t.shape[0]} is not divisible by 3")
        return t.chunk(3, dim=0)[i]  # (d, in) or (d,)

    return split


def _rope_perm(n_rope: int) -> list[int]:
    """Interleaved pairs (0,1), (2,3), ... -> half-split order: evens then odds."""
    return list(range(0, n_rope, 2)) + list(range(1, n_rope, 2))


def _mla_q_rows(t: Tensor, cfg: ModelConfig) -> Tensor:
    """Permute the rope rows of each head of q_proj / q_b_proj, (H·(dn + dr), in)."""
    a = cfg.attention
    h, dn, dr = a.n_heads, a.qk_nope_head_dim, a.qk_rope_head_dim
    if t.shape[0] != h * (dn + dr):
        raise ValueError(f"expected {h * (dn + dr)} rows, got {t.shape[0]}")
    perm = list(range(dn)) + [dn + j for j in _rope_perm(dr)]
    w = t.reshape(h, dn + dr, *t.shape[1:])  # (H, dn + dr, in)
    return w[:, perm].reshape(t.shape)  # (H·(dn + dr), in)


def _mla_kv_rows(t: Tensor, cfg: ModelConfig) -> Tensor:
    """Permute the rope rows (the last dr) of kv_a_proj_with_mqa, (dc + dr, in) or (dc + dr,)."""
    a = cfg.attention
    dc, dr = a.kv_lora_rank, a.qk_rope_head_dim
    if t.shape[0] != dc + dr:
        raise ValueError(f"expected {dc + dr} rows, got {t.shape[0]}")
    return t[list(range(dc)) + [dc + j for j in _rope_perm(dr)]]


# --- key tables: our key -> HF key (after the family prefix is stripped) -------------------
def _wb(ours: str, hf: str, tf: Transform | None = None) -> dict[str, Entry]:
    """Weight and bias entries of one Linear/LayerNorm."""
    if tf is None:
        return {f"{ours}.weight": f"{hf}.weight", f"{ours}.bias": f"{hf}.bias"}
    return {f"{ours}.weight": (f"{hf}.weight", tf), f"{ours}.bias": f"{hf}.bias"}


GPT2_KEYS: dict[str, Entry] = {
    "tok_emb.weight": "wte.weight",
    "pos_emb.weight": "wpe.weight",
    **_wb("final_norm", "ln_f"),
    **_wb("layers.{}.attn_norm", "h.{}.ln_1"),
    **_wb("layers.{}.mlp_norm", "h.{}.ln_2"),
    **{f"layers.{{}}.attn.{n}_proj.weight": ("h.{}.attn.c_attn.weight", _fused(i))
       for i, n in enumerate("qkv")},
    **{f"layers.{{}}.attn.{n}_proj.bias": ("h.{}.attn.c_attn.bias", _fused(i))
       for i, n in enumerate("qkv")},
    **_wb("layers.{}.attn.o_proj", "h.{}.attn.c_proj", _conv1d),
    **_wb("layers.{}.mlp.up_proj", "h.{}.mlp.c_fc", _conv1d),
    **_wb("layers.{}.mlp.down_proj", "h.{}.mlp.c_proj", _conv1d),
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
    "layers.{}.attn.q_proj.weight": (f"{_DS_ATTN}.q_proj.weight", _mla_q_rows),
    **_wb("layers.{}.attn.q_a_proj", f"{_DS_ATTN}.q_a_proj"),
    "layers.{}.attn.q_a_layernorm.weight": f"{_DS_ATTN}.q_a_layernorm.weight",
    "layers.{}.attn.q_b_proj.weight": (f"{_DS_ATTN}.q_b_proj.weight", _mla_q_rows),
    "layers.{}.attn.kv_a_proj_with_mqa.weight": (f"{_DS_ATTN}.kv_a_proj_with_mqa.weight",
                                                 _mla_kv_rows),
    "layers.{}.attn.kv_a_proj_with_mqa.bias": (f"{_DS_ATTN}.kv_a_proj_with_mqa.bias",
                                               _mla_kv_rows),
    "layers.{}.attn.kv_a_layernorm.weight": f"{_DS_ATTN}.kv_a_layernorm.weight",
    "layers.{}.attn.kv_b_proj.weight": f"{_DS_ATTN}.kv_b_proj.weight",
    **_wb("layers.{}.attn.o_proj", f"{_DS_ATTN}.o_proj"),
}

KEY_TABLES: dict[str, dict[str, Entry]] = {
    "gpt2": GPT2_KEYS, "bert": BERT_KEYS, "llama": LLAMA_KEYS, "qwen2": LLAMA_KEYS,
    "deepseek_v2": DEEPSEEK_V2_KEYS,
}
# Prefix of the base model inside task models (GPT2LMHeadModel, BertForMaskedLM, ...).
_PREFIXES = {"gpt2": "transformer.", "bert": "bert.", "llama": "model.", "qwen2": "model.",
             "deepseek_v2": "model."}
# HF keys that are buffers or heads we do not model; anything else left over is an error.
_IGNORED = {
    "gpt2": r"(\.attn\.(masked_)?bias|^lm_head\.weight)$",
    "bert": r"^(embeddings\.(position_ids|token_type_ids)$|cls\.)",
    "llama": r"rotary_emb\.inv_freq$",
    "qwen2": r"rotary_emb\.inv_freq$",
    "deepseek_v2": r"rotary_emb\.inv_freq$",
}
assert set(KEY_TABLES) == set(FAMILIES)


# --- state dicts ---------------------------------------------------------------------------
def convert_hf_state(cfg: ModelConfig, hf_state: dict[str, Tensor], family: str, *,
                     source: str = "HF checkpoint") -> dict[str, Tensor]:
    """Our state dict from an HF one, every tensor checked; pure (inputs untouched)."""
    table = KEY_TABLES[family]
    prefix, ignored = _PREFIXES[family], re.compile(_IGNORED[family])
    hf = {}
    for key, value in hf_state.items():
        key = key[len(prefix):] if key.startswith(prefix) else key
        key = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", key))  # old BERT names
        hf[key] = value
    tied = cfg.tie_embeddings
    ours, names, used, missing, bad = {}, {}, set(), [], []
    for our_key in _our_keys(cfg):
        template = re.sub(r"^layers\.\d+\.", "layers.{}.", our_key)
        layer = our_key.split(".")[1] if template != our_key else ""
        entry = table.get(template)
        if entry is None:
            raise CheckpointError(f"{source}: no HF {family} tensor maps to our {our_key}")
        hf_key, tf = (entry, None) if isinstance(entry, str) else entry
        hf_key = hf_key.format(layer)
        names[our_key] = hf_key
        if hf_key not in hf:
            missing.append(hf_key)
            continue
        used.add(hf_key)
        try:
            ours[our_key] = tf(hf[hf_key], cfg) if tf else hf[hf_key]
        except (ValueError, RuntimeError) as exc:
            bad.append(f"{hf_key} {tuple(hf[hf_key].shape)}: {exc}")
    extra = sorted(k for k in hf if k not in used and not ignored.search(k)
                   and not (tied and k == "lm_head.weight"))
    problems = []
    if missing:
        problems.append("missing tensors: " + ", ".join(missing[:8]))
    if extra:
        problems.append("unexpected tensors: " + ", ".join(extra[:8]))
    if bad:
        problems.append("mis-shaped tensors: " + "; ".join(bad[:8]))
    if problems:
        raise CheckpointError(f"{source} does not match its {family} config: "
                              + " | ".join(problems))
    check_state(cfg, ours, source=source, names=names)
    return ours


def _our_keys(cfg: ModelConfig) -> list[str]:
    return list(expected_shapes(cfg))


def load_hf_state(model: Transformer, hf_state: dict[str, Tensor], family: str, *,
                  source: str = "HF checkpoint") -> None:
    """Copy an HF state dict into an existing model (strict; CheckpointError names tensors)."""
    state = convert_hf_state(model.cfg, hf_state, family, source=source)
    model.load_state_dict(state, strict=False)


def model_from_hf_state(cfg: ModelConfig, hf_state: dict[str, Tensor], family: str, *,
                        source: str = "HF checkpoint") -> Transformer:
    """A new float32 model built on meta and assigned the converted tensors (fast path)."""
    return build_model(cfg, convert_hf_state(cfg, hf_state, family, source=source),
                       source=source)


# --- directories ---------------------------------------------------------------------------
def is_hf_directory(path: str | Path) -> bool:
    """Whether `path/config.json` looks like an HF config (has `model_type`)."""
    try:
        return "model_type" in json.loads((Path(path) / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return False


def read_hf_config(directory: Path) -> ModelConfig:
    """Parse config.json; old diff-only files fall back to transformers' AutoConfig."""
    path = directory / "config.json"
    raw = read_config_json(directory)
    try:
        return config_from_hf(raw)
    except (KeyError, TypeError):
        pass
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    try:
        from transformers import AutoConfig  # lazy: only for incomplete config files

        return config_from_hf(AutoConfig.from_pretrained(str(directory)))
    except (KeyError, TypeError, ValueError, OSError, CheckpointError) as exc:
        raise CheckpointError(f"{path} is not a usable {raw.get('model_type')} config: "
                              f"{exc!r}") from exc


def read_safetensors(directory: Path) -> dict[str, Tensor]:
    """model.safetensors, or the shards listed in model.safetensors.index.json."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.exists():
        files = [single]
    elif index.exists():
        files = _shards(directory, index)
    else:
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise CheckpointError(
                f"{directory} holds only pickle weights ({', '.join(pickles)}); QV-Ka Lab never "
                "unpickles files. Convert them to model.safetensors (e.g. save_pretrained with "
                "safe_serialization=True) and try again."
            )
        raise CheckpointError(f"{directory} has no model.safetensors")
    state: dict[str, Tensor] = {}
    for f in files:
        if not f.is_file():  # a FIFO would block the reader; a directory is not weights
            raise CheckpointError(f"{f} is not a regular file")
        try:
            state.update(load_file(str(f)))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{f} is not a readable safetensors file: {exc}") from exc
    return state


def _shards(directory: Path, index: Path) -> list[Path]:
    """The shard files an index names, each confined to `directory` (no absolute path, no
    '..', no symlink leading out): an index is data and never chooses what is opened."""
    from qvka_core.checkpoints.store import read_json

    data = read_json(index)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map or not all(
            isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index} is not a valid safetensors index: weight_map must "
                              "map tensor names to shard file names")
    root = directory.resolve()
    files = []
    for name in sorted(set(weight_map.values())):
        path = (directory / name).resolve()
        if Path(name).is_absolute() or path.parent != root:
            raise CheckpointError(f"{index}: shard {name!r} is outside the checkpoint "
                                  f"directory {directory}")
        files.append(path)
    return files


def load_tokenizer(directory: Path) -> TextTokenizer | None:
    """The directory's tokenizer: tokenizer.json via `tokenizers` (fast, no transformers
    import; truncation/padding presets removed), else transformers' AutoTokenizer."""
    if (directory / "tokenizer.json").exists():
        tok = TextTokenizer.from_file(directory / "tokenizer.json",
                                      eos_token=_special(directory, "eos_token"))
        tok.backend.no_truncation()
        tok.backend.no_padding()
        return tok
    if any((directory / n).exists() for n in ("vocab.txt", "vocab.json", "tokenizer.model")):
        from transformers import AutoTokenizer

        try:
            return TextTokenizer(AutoTokenizer.from_pretrained(str(directory)))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot load the tokenizer in {directory}: {exc}") from exc
    return None


def _special(directory: Path, name: str) -> str | None:
    for fname in ("special_tokens_map.json", "tokenizer_config.json"):
        try:
            value = json.loads((directory / fname).read_text("utf-8")).get(name)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            return value
    return None


def load_hf_directory(path: str | Path, *, name: str | None = None) -> LoadedModel:
    """An HF model directory (config.json + safetensors [+ tokenizer]) as a LoadedModel."""
    directory = Path(path)
    if not directory.is_dir():
        raise CheckpointError(f"HF model directory {directory} does not exist")
    cfg = read_hf_config(directory)
    family = detect_family(json.loads((directory / "config.json").read_text("utf-8")))
    state = read_safetensors(directory)
    if family == "bert":  # BertModel(add_pooling_layer=False) has no pooler
        has_pooler = any(k.endswith("pooler.dense.weight") for k in state)
        cfg = cfg.replace(pooler=has_pooler)
    model = model_from_hf_state(cfg, state, family, source=str(directory))
    return LoadedModel(model=model, tokenizer=load_tokenizer(directory), config=cfg,
                       name=name or directory.name,
                       meta={"source": "hf", "family": family, "path": str(directory)})
