"""Load an export back into the lab as the variant it came from (load ∘ export = identity).

An export directory carries `qvka_lab.json` (the lab config, and under "repeated" the keys
whose rows the twin repeats per head: GQA's K/V for a class without grouping, V-shared's V
for every query head) and `qvka_lab.safetensors`, the lab tensors the twin does not hold as
they are (QV-Ka's W_ctx and W_K,i, MLA latent projections rescaled to DeepseekV2's eps).
A repeated key is taken back as the first copy of each head's rows (the copies are equal).
The lab variant is rebuilt and re-exported in memory; only if that reproduces the stock
tensors in the directory exactly is it used. An export fine-tuned elsewhere since (k_proj no
longer the fold) loads as its stock twin instead, which is what it now computes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from qvka_core.checkpoints.store import FORMAT, LoadedModel
from qvka_core.config import ModelConfig
from qvka_core.errors import CheckpointError, ConfigError

SIDECAR = "qvka_lab.json"
SIDECAR_TENSORS = "qvka_lab.safetensors"


def restore(directory: Path, stock: LoadedModel) -> LoadedModel:
    """The lab model recorded in `directory`'s sidecar, or `stock` if the weights moved on."""
    try:
        data = json.loads((directory / SIDECAR).read_text("utf-8"))
        if data.get("format") != FORMAT:
            return stock
        cfg = ModelConfig.from_dict(data["model"])
    except (OSError, ValueError, KeyError, TypeError, ConfigError):
        stock.meta["restore"] = f"{SIDECAR} unreadable; loaded as the stock twin"
        return stock
    extras = {}
    if (directory / SIDECAR_TENSORS).exists():
        from safetensors.torch import load_file

        extras = load_file(str(directory / SIDECAR_TENSORS))
    repeated = data.get("repeated") if isinstance(data.get("repeated"), dict) else {}
    state = _lab_state(cfg, stock.model.state_dict(), extras, repeated)
    if state is None or not _reproduces(cfg, state, stock):
        stock.meta["restore"] = ("weights differ from the exported lab variant; loaded as the "
                                 "stock twin")
        return stock
    from qvka_core.checkpoints.fastload import build_model

    model = build_model(cfg, state, source=str(directory))
    meta = dict(data.get("meta") or {}, exported_to=str(directory), source="export")
    return LoadedModel(model=model, tokenizer=stock.tokenizer, config=cfg, name=stock.name,
                       meta=meta)


def _lab_state(cfg: ModelConfig, stock: dict[str, Tensor], extras: dict[str, Tensor],
               repeated: dict[str, int]) -> dict[str, Tensor] | None:
    """The sidecar's tensors, the rest from the stock twin (one copy of each repeated head's
    rows); None if any is missing or the wrong shape."""
    from qvka_core.checkpoints.fastload import expected_shapes
    from qvka_core.export.twin import one_copy_rows

    d = cfg.attention.head_dim
    state = {}
    for key, shape in expected_shapes(cfg).items():
        t = extras.get(key, stock.get(key))
        rep = repeated.get(key)
        if key not in extras and t is not None and isinstance(rep, int) and rep > 1:
            if t.shape[0] % (rep * d):
                return None
            t = one_copy_rows(t, rep, d)  # (heads·rep·D, ...) -> (heads·D, ...)
        if t is None or tuple(t.shape) != shape:
            return None
        state[key] = t
    return state


def _reproduces(cfg: ModelConfig, state: dict[str, Tensor], stock: LoadedModel) -> bool:
    from qvka_core.export.twin import stock_twin

    try:
        twin = stock_twin(cfg, state)
    except CheckpointError:
        return False
    ref = stock.model.state_dict()
    return all(k in ref and torch.equal(v.to(ref[k].dtype), ref[k])
               for k, v in twin.state.items())
