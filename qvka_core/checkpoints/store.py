"""Our checkpoint format: a directory in the HF convention, nothing ever unpickled.

    <dir>/config.json        {"format": "qvka-lab/1", "model": ModelConfig.to_dict()}
    <dir>/model.safetensors  the state dict (a tied head is stored once, as tok_emb.weight)
    <dir>/tokenizer.json     optional, `tokenizers` format (or HF tokenizer files)
    <dir>/meta.json          optional: provenance, metrics, the command that made it

Writes go to a temporary sibling directory that is renamed into place, so a crash never
leaves a half-written checkpoint and an existing one is replaced only when asked.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from qvka_core import limits
from qvka_core.config import ModelConfig
from qvka_core.errors import CheckpointError, ConfigError
from qvka_core.model import Transformer
from qvka_core.tokenizer import TextTokenizer

FORMAT = "qvka-lab/1"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


@dataclass
class LoadedModel:
    """A model ready to use: weights, tokenizer, config and provenance."""

    model: Transformer
    tokenizer: TextTokenizer | None
    config: ModelConfig
    name: str
    meta: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(directory: str | Path, model: Transformer, *,
                    tokenizer: TextTokenizer | None = None, meta: dict[str, Any] | None = None,
                    overwrite: bool = False) -> Path:
    """Write a checkpoint atomically (temp dir + rename). Returns the directory."""
    directory = Path(directory)
    if directory.exists() and not overwrite:
        raise CheckpointError(f"{directory} already exists; choose another name or overwrite")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        write_checkpoint_files(tmp, model, tokenizer=tokenizer, meta=meta)
        swap_into_place(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def write_checkpoint_files(directory: Path, model: Transformer, *,
                           tokenizer: TextTokenizer | None = None,
                           meta: dict[str, Any] | None = None) -> None:
    """The files of a checkpoint, into an existing (empty) directory; not atomic by itself."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.cfg.tie_embeddings:
        state.pop("lm_head.weight", None)  # same storage as tok_emb.weight
    save_file(state, str(directory / "model.safetensors"))
    _write_json(directory / "config.json", {"format": FORMAT, "model": model.cfg.to_dict()})
    if tokenizer is not None:
        tokenizer.save(directory)
    if meta is not None:
        _write_json(directory / "meta.json", meta)
    _make_readable(directory)  # mkdtemp creates 0700; a checkpoint is ordinary shared data


def swap_into_place(tmp: Path, directory: Path) -> None:
    """Rename a finished temp directory to `directory`; an existing one is swapped out first,
    then dropped."""
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, directory)


def load_checkpoint_dir(directory: str | Path, *, name: str | None = None) -> LoadedModel:
    """Load a checkpoint written by `save_checkpoint`; every failure is a CheckpointError."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    weights = directory / "model.safetensors"
    if weights.exists() and not weights.is_file():  # a FIFO would block the reader
        raise CheckpointError(f"{weights} is not a regular file")
    if not weights.exists():
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise CheckpointError(
                f"{directory} holds only pickle files ({', '.join(pickles)}); QV-Ka Lab never "
                "unpickles files. Convert them to model.safetensors."
            )
        raise CheckpointError(f"{directory} has no model.safetensors")
    cfg = read_config(directory)
    limits.check_model(cfg, source=f"{directory / 'config.json'}")  # before any allocation
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {exc}") from exc
    model = build_with_state(cfg, state, source=str(weights))
    model.eval()
    tokenizer = None
    if (directory / "tokenizer.json").exists():
        tokenizer = TextTokenizer.from_file(directory / "tokenizer.json")
    meta = read_json(directory / "meta.json") if (directory / "meta.json").exists() else {}
    return LoadedModel(model=model, tokenizer=tokenizer, config=cfg,
                       name=name or directory.name, meta=meta)


def read_config(directory: str | Path) -> ModelConfig:
    path = Path(directory) / "config.json"
    data = read_config_json(directory)
    if data.get("format") != FORMAT or not isinstance(data.get("model"), dict):
        raise CheckpointError(
            f"{path} is not a QV-Ka Lab config (expected format {FORMAT!r}); "
            "HF model directories are loaded through qvka_core.checkpoints.load_checkpoint"
        )
    try:
        return ModelConfig.from_dict(data["model"])
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{path}: {exc}") from exc


def build_with_state(cfg: ModelConfig, state: dict[str, torch.Tensor], *,
                     source: str) -> Transformer:
    """The model of `cfg` holding `state`, without drawing random weights first.

    Built on the meta device (no allocation, no init: the init was 1.25 s of a 1.4 s
    SmolLM2 load), checked as strictly as `load_state`, then handed the file's tensors cast to
    the model's dtype; the tied head is re-tied and the non-persistent buffers (sinusoidal
    table, ALiBi slopes) are computed on the CPU. Anything left on the meta device falls back
    to the plain build-then-copy path, so the result is the same either way (tested)."""
    from qvka_core.positions import alibi_slopes, sinusoidal_table

    with torch.device("meta"):
        model = Transformer(cfg)
    _check_state(model, state, source)
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    tied = cfg.lm_head and cfg.tie_embeddings
    state = {k: v.to(dtypes[k]) for k, v in state.items()
             if k in dtypes and not (tied and k == "lm_head.weight")}
    model.load_state_dict(state, strict=False, assign=True)
    if tied:
        model.lm_head.weight = model.tok_emb.weight
    for module in model.modules():
        for name, buf in list(module._buffers.items()):
            if buf is None or not buf.is_meta:
                continue
            if name == "pos_table":
                module._buffers[name] = sinusoidal_table(cfg.max_seq_len, cfg.d_model)
            elif name == "slopes":
                module._buffers[name] = alibi_slopes(buf.shape[0])
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        model = Transformer(cfg)  # an unknown buffer: the plain path
        load_state(model, state, source=source)
    return model


def _check_state(model: Transformer, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load: every missing, unexpected or mis-shaped tensor is named in the error."""
    expected = model.state_dict()
    if model.cfg.tie_embeddings:
        expected.pop("lm_head.weight", None)
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    problems = []
    not_float = [f"{k} ({v.dtype})" for k, v in sorted(state.items())
                 if not v.is_floating_point()]
    if not_float:
        problems.append(f"weights must be floating point: {_first(not_float)}")
    if missing:
        problems.append(f"missing tensors: {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {_first(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch (file != config): {'; '.join(mismatched[:8])}")
    if problems:
        raise CheckpointError(f"{source} does not match its config: " + " | ".join(problems))


def load_state(model: Transformer, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Strict load: every missing, unexpected or mis-shaped tensor is named in the error."""
    _check_state(model, state, source)
    if model.cfg.tie_embeddings:
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}
    model.load_state_dict(state, strict=False)


def _first(names: list[str], n: int = 8) -> str:
    return ", ".join(names[:n]) + (" ..." if len(names) > n else "")


def _make_readable(directory: Path) -> None:
    os.chmod(directory, 0o755)
    for path in directory.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    """A JSON file; malformed text is a CheckpointError naming the file."""
    if path.exists() and not path.is_file():  # a directory, a FIFO (never opened: it blocks)
        raise CheckpointError(f"{path} is not a regular file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from exc


def read_config_json(directory: str | Path) -> dict[str, Any]:
    """A checkpoint directory's config.json as a mapping (ours or HF's); every failure —
    missing, malformed, not an object — is a CheckpointError naming the file."""
    path = Path(directory) / "config.json"
    if not path.exists():
        raise CheckpointError(f"{directory} has no config.json, so it is not a checkpoint")
    data = read_json(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not valid JSON: top level is not an object")
    return data
