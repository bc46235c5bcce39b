"""Load Hugging Face checkpoints (GPT-2, BERT, Llama/SmolLM2, Qwen2, DeepSeek-V2 MLA, GPT-NeoX).

The key tables (one per family, shared with the exporter) and their layouts are in
`hf_keys.py`; config parsing lives in `hf_config.py`.

Only safetensors are read; pickle files are refused. Every problem is a CheckpointError
naming the tensor or the file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from torch import Tensor

from qvka_core.checkpoints.fastload import build_model, check_state, expected_shapes
from qvka_core.checkpoints.hf_config import FAMILIES, config_from_hf, detect_family
from qvka_core.checkpoints.hf_keys import IGNORED, KEY_TABLES, PREFIXES, hf_entry
from qvka_core.checkpoints.store import PICKLE_SUFFIXES, LoadedModel, read_config_json
from qvka_core.config import ModelConfig
from qvka_core.errors import CheckpointError
from qvka_core.model import Transformer
from qvka_core.tokenizer import TextTokenizer

assert set(KEY_TABLES) == set(FAMILIES)


# --- state dicts ---------------------------------------------------------------------------
def convert_hf_state(cfg: ModelConfig, hf_state: dict[str, Tensor], family: str, *,
                     source: str = "HF checkpoint") -> dict[str, Tensor]:
    """Our state dict from an HF one, every tensor checked; pure (inputs untouched)."""
    table = KEY_TABLES[family]
    prefix, ignored = PREFIXES[family], re.compile(IGNORED[family])
    hf = {}
    for key, value in hf_state.items():
        key = key[len(prefix):] if key.startswith(prefix) else key
        key = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", key))  # old BERT names
        hf[key] = value
    # A tied head is stored once, as the embedding; a copy of it in the file is not an error.
    tied_head = table.get("lm_head.weight") if cfg.tie_embeddings else None
    ours, names, used, missing, bad = {}, {}, set(), [], []
    for our_key in _our_keys(cfg):
        try:
            hf_key, tf = hf_entry(family, our_key)
        except KeyError:
            raise CheckpointError(
                f"{source}: no HF {family} tensor maps to our {our_key}") from None
        names[our_key] = hf_key
        if hf_key not in hf:
            missing.append(hf_key)
            continue
        used.add(hf_key)
        try:
            ours[our_key] = tf.load(hf[hf_key], cfg) if tf else hf[hf_key]
        except (ValueError, RuntimeError) as exc:
            bad.append(f"{hf_key} {tuple(hf[hf_key].shape)}: {exc}")
    extra = sorted(k for k in hf if k not in used and not ignored.search(k)
                   and k != tied_head)
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
    loaded = LoadedModel(model=model, tokenizer=load_tokenizer(directory), config=cfg,
                         name=name or directory.name,
                         meta={"source": "hf", "family": family, "path": str(directory)})
    if (directory / "qvka_lab.json").exists():  # a lab export: back to its own variant
        from qvka_core.export.restore import restore

        return restore(directory, loaded)
    return loaded
