"""Name resolution for `load_checkpoint` and the listing behind `python -m qvka_core checkpoints`.

Order: embedded names (minilm-l6, smollm2-135m), bundled `austen-<variant>[-<position>]`
under assets/checkpoints/, user files in the runs folder ($QVKA_RUNS, else runs/): a run's
runs/<name>/checkpoint, a model saved straight to runs/<name> (`convert --out`), a Convert
page save runs/converted/<name>; then any directory path (ours or an HF model directory).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qvka_core import limits, paths
from qvka_core.checkpoints import embedded
from qvka_core.checkpoints.store import FORMAT, LoadedModel, read_config_json
from qvka_core.config import ModelConfig
from qvka_core.errors import CheckpointError, ConfigError

BUNDLED_DIR = paths.ASSETS / "checkpoints"


def _bundled() -> dict[str, Path]:
    if not BUNDLED_DIR.is_dir():
        return {}
    return {p.parent.name: p.parent for p in sorted(BUNDLED_DIR.glob("*/config.json"))}


def _runs() -> dict[str, Path]:
    root = paths.runs_root()
    if not root.is_dir():
        return {}
    runs = {p.parent.parent.name: p.parent
            for p in sorted(root.glob("*/checkpoint/config.json"))}
    # A checkpoint written straight to runs/<name> (`convert --out runs/<name>`); a run
    # directory's own config.json is a run record, not a checkpoint, and is skipped.
    for p in sorted(root.glob("*/model.safetensors")):
        if p.parent.name not in runs and _is_checkpoint(p.parent):
            runs[p.parent.name] = p.parent
    # Models saved by the Convert page: runs/converted/<name>, named "converted/<name>".
    runs.update({f"converted/{p.parent.name}": p.parent
                 for p in sorted(root.glob("converted/*/config.json"))})
    return runs


def _is_checkpoint(directory: Path) -> bool:
    if not (directory / "config.json").is_file():  # a FIFO is never opened: it would block
        return False
    try:
        data = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def user_checkpoints() -> dict[str, Path]:
    """name -> directory of the user's trained runs and saved conversions."""
    return _runs()


def checkpoint_stamp(name: str) -> str:
    """A token that changes whenever a run's or saved conversion's weights are rewritten."""
    directory = _runs().get(name)
    weights = directory / "model.safetensors" if directory else None
    return str(weights.stat().st_mtime_ns) if weights and weights.exists() else ""


def find(name_or_dir: str, variant: str | None = None) -> tuple[str, str, Path | None]:
    """(name, source, directory) for a name or a path; directory None for embedded."""
    key = str(name_or_dir).strip()
    if not key:
        raise CheckpointError("checkpoint name is empty")
    if key in embedded.EMBEDDED:
        return key, "embedded", None
    bundled = _bundled()
    if key == "austen" and variant and f"austen-{variant}" in bundled:
        key = f"austen-{variant}"
    if key in bundled:
        return key, "bundled", bundled[key]
    runs = _runs()
    if key in runs:
        return key, "run", runs[key]
    path = Path(key).expanduser()
    if path.is_dir():
        if (path / "checkpoint" / "config.json").exists():  # a run folder given by path
            return path.resolve().name, "path", path / "checkpoint"
        return path.resolve().name, "path", path
    available = [*embedded.EMBEDDED, *bundled, *runs]
    raise CheckpointError(
        f"unknown checkpoint {key!r}: not a name and not a directory. Available: "
        + (", ".join(available) if available else "none")
    )


def load(name_or_dir: str, variant: str | None = None) -> LoadedModel:
    from qvka_core.checkpoints.hf import load_hf_directory

    name, source, directory = find(name_or_dir, variant)
    if variant and source == "embedded":
        from qvka_core.convert import convert_cached  # slow conversions: once per machine

        return convert_cached(name, variant)
    if directory is None:
        loaded = embedded.load_embedded(name)
    elif directory_kind(directory) == "hf":
        loaded = load_hf_directory(directory, name=name)
    else:
        loaded = load_ours(directory, name=name)
    loaded.meta.setdefault("source", source)
    if variant and variant != loaded.config.variant:
        loaded = convert_loaded(loaded, variant)
    return loaded


def directory_kind(directory: Path) -> str:
    """"ours" (format qvka-lab/1) or "hf" (has model_type), judged from config.json."""
    path = directory / "config.json"
    data = read_config_json(directory)
    if data.get("format") == FORMAT:
        return "ours"
    if "model_type" in data:
        return "hf"
    raise CheckpointError(
        f"{path} is neither a QV-Ka Lab config (format {FORMAT!r}) nor an HF config "
        "(no model_type)"
    )


def load_ours(directory: Path, *, name: str) -> LoadedModel:
    """Our format, built on meta and assigned (fast); same checks as `store.load_state`."""
    from qvka_core.checkpoints.fastload import build_model
    from qvka_core.checkpoints.hf import read_safetensors
    from qvka_core.checkpoints.store import read_config, read_json
    from qvka_core.tokenizer import TextTokenizer

    cfg = read_config(directory)
    limits.check_model(cfg, source=f"{directory / 'config.json'}")  # before any allocation
    model = build_model(cfg, read_safetensors(directory),
                        source=str(directory / "model.safetensors"))
    tokenizer = None
    meta = read_json(directory / "meta.json") if (directory / "meta.json").exists() else {}
    if (directory / "tokenizer.json").exists():
        tokenizer = TextTokenizer.from_file(directory / "tokenizer.json",
                                            eos_token=meta.get("eos_token"))
        tokenizer.backend.no_truncation()
        tokenizer.backend.no_padding()
    return LoadedModel(model=model, tokenizer=tokenizer, config=cfg, name=name, meta=meta)


def convert_loaded(loaded: LoadedModel, variant: str) -> LoadedModel:
    """Convert to another variant with `qvka_core.convert`, when that module exists."""
    import importlib
    import importlib.util

    if importlib.util.find_spec("qvka_core.convert") is None:
        raise CheckpointError(
            f"converting {loaded.name} ({loaded.config.variant}) to {variant!r} needs "
            "qvka_core.convert, which is not available in this version"
        )
    convert = importlib.import_module("qvka_core.convert")
    result = convert.convert(loaded, to=variant)
    if isinstance(result, LoadedModel):
        return result
    return result.to_loaded(loaded)  # ConversionResult: model, config, fidelity report


def list_checkpoints() -> list[dict[str, Any]]:
    """Everything loadable by name; reads config.json files only (no weights)."""
    rows = [dict(info, name=name, source="embedded") for name, info in embedded.EMBEDDED.items()]
    for source, entries in (("bundled", _bundled()), ("run", _runs())):
        for name, directory in entries.items():
            rows.append(_describe(name, source, directory))
    return rows


def _describe(name: str, source: str, directory: Path) -> dict[str, Any]:
    from qvka_core.accounting import param_breakdown

    row: dict[str, Any] = {"name": name, "source": source, "path": str(directory),
                           "variant": None, "params_total": None, "description": ""}
    try:
        data = read_config_json(directory)  # a directory or FIFO: an error, never a read
        if data.get("format") != FORMAT:
            raise CheckpointError(f"not a {FORMAT} config")
        cfg = ModelConfig.from_dict(data["model"])
        row.update(variant=cfg.variant, position=cfg.position,
                   params_total=sum(param_breakdown(cfg).values()),
                   description=cfg.notes or f"{cfg.name}: {cfg.n_layers} layers, "
                   f"d_model {cfg.d_model}, {cfg.n_heads} heads")
    except (OSError, ValueError, KeyError, TypeError, ConfigError, CheckpointError) as exc:
        row["description"] = f"unreadable config: {exc}"
    return row
