"""The app's one model cache: a checkpoint reference -> its LoadedModel, shared by every page
and session (the Explorer's families, Convert's and Fine-tune's sources, Decode), so a model
two pages use is held once. Models from it are in eval mode without gradients: never mutate
one (conversions and fine-tunes make new models)."""

from __future__ import annotations

from typing import Any

import streamlit as st


def load_shared(ref: str, stamp: str = "") -> Any:
    """`load_checkpoint(ref)` once per process (`stamp`: the checkpoint's mtime, where the
    caller has one, so a rewritten checkpoint is read again)."""
    return _load(str(ref), str(stamp))  # always positional: one cache key per (ref, stamp)


@st.cache_resource(show_spinner="Loading the model…", max_entries=24)
def _load(ref: str, stamp: str) -> Any:
    from qvka_core.checkpoints import load_checkpoint

    loaded = load_checkpoint(ref)
    loaded.model.eval().requires_grad_(False)
    return loaded
