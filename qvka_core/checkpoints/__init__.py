"""Checkpoints: our safetensors format, HF loaders, the embedded and bundled models."""

from qvka_core.checkpoints.store import (
    FORMAT,
    LoadedModel,
    load_checkpoint_dir,
    save_checkpoint,
)


def load_checkpoint(name_or_dir: str) -> LoadedModel:
    """Load by name (embedded or bundled model) or by directory path."""
    return load_checkpoint_dir(name_or_dir)


__all__ = ["FORMAT", "LoadedModel", "load_checkpoint", "load_checkpoint_dir", "save_checkpoint"]
