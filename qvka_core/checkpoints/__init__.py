"""Checkpoints: our safetensors format, HF loaders, the embedded and bundled models.

`load_checkpoint(name_or_dir)` resolves, in order: embedded names (minilm-l6, smollm2-135m),
bundled `austen-<variant>[-<position>]`, user runs (runs/<name>/checkpoint), any directory
(our format or an HF model directory). `list_checkpoints()` lists the named ones cheaply.
"""

from __future__ import annotations

from typing import Any

from qvka_core.checkpoints.store import (
    FORMAT,
    LoadedModel,
    load_checkpoint_dir,
    save_checkpoint,
)


def load_checkpoint(name_or_dir: str, *, variant: str | None = None) -> LoadedModel:
    """Load by name or directory; with `variant`, convert to it (needs qvka_core.convert).

    Raises CheckpointError for an unknown name (listing what is available) or a bad file.
    """
    from qvka_core.checkpoints.resolve import load

    return load(name_or_dir, variant)


def list_checkpoints() -> list[dict[str, Any]]:
    """Named checkpoints: name, variant, params_total, source, description (no weights read)."""
    from qvka_core.checkpoints.resolve import list_checkpoints as _list

    return _list()


__all__ = [
    "FORMAT",
    "LoadedModel",
    "list_checkpoints",
    "load_checkpoint",
    "load_checkpoint_dir",
    "save_checkpoint",
]
