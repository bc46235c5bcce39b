"""Build a `Transformer` straight from a state dict, fast and strictly checked.

The model is created on the meta device (no memory, no random init: the N(0, 0.02) init
of a 135M-parameter model costs more than reading its weights) and the loaded tensors
are assigned in place (`load_state_dict(assign=True)`, PyTorch >= 2.1). Models with
non-persistent buffers (sinusoidal table, ALiBi slopes) take the ordinary path instead,
since those buffers are computed in `__init__` and would stay on meta.

Every missing, unexpected or mis-shaped tensor is named in one `CheckpointError`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from qvka_core.config import ModelConfig
from qvka_core.errors import CheckpointError
from qvka_core.model import Transformer


class _SkipInit(TorchFunctionMode):
    """Skip every `torch.nn.init` call (they all dispatch through __torch_function__).

    On meta, `normal_` has no kernel and is decomposed through torch._refs, which imports
    torch._dynamo (1-3 s, once); the values would be discarded anyway. Torch-function modes
    are thread-local, so models built concurrently in other threads are unaffected.
    """

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init":
            return kwargs.get("tensor", args[0] if args else None)
        return func(*args, **kwargs)


def meta_model(cfg: ModelConfig) -> Transformer:
    """A `Transformer` for `cfg` on the meta device: no memory, no random init."""
    with torch.device("meta"), _SkipInit():
        return Transformer(cfg)


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Our state-dict keys and shapes for `cfg` (a tied head is stored once, as tok_emb)."""
    return dict(_shapes(cfg))


@lru_cache(maxsize=32)
def _shapes(cfg: ModelConfig) -> tuple[tuple[str, tuple[int, ...]], ...]:
    shapes = {k: tuple(v.shape) for k, v in meta_model(cfg).state_dict().items()}
    if cfg.tie_embeddings:
        shapes.pop("lm_head.weight", None)
    return tuple(shapes.items())


def check_state(cfg: ModelConfig, state: dict[str, Tensor], *, source: str,
                names: dict[str, str] | None = None) -> None:
    """Raise a CheckpointError naming every missing, unexpected or mis-shaped tensor.

    `names` maps our key -> the key in the source file, so errors name what the user has.
    """
    names = names or {}
    expected = expected_shapes(cfg)
    given = {k: v for k, v in state.items() if not (cfg.tie_embeddings and k == "lm_head.weight")}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    mismatched = [
        f"{names.get(k, k)} {tuple(given[k].shape)} != expected {expected[k]}"
        for k in sorted(set(given) & set(expected))
        if tuple(given[k].shape) != expected[k]
    ]
    problems = []
    if missing:
        problems.append("missing tensors: " + _few([names.get(k, k) for k in missing]))
    if unexpected:
        problems.append("unexpected tensors: " + _few(unexpected))
    if mismatched:
        problems.append("shape mismatch: " + "; ".join(mismatched[:8]))
    not_float = [f"{names.get(k, k)} ({given[k].dtype})" for k in sorted(given)
                 if not given[k].is_floating_point()]
    if not_float:
        problems.append("weights must be floating point: " + _few(not_float))
    if problems:
        raise CheckpointError(f"{source} does not match its config: " + " | ".join(problems))


def build_model(cfg: ModelConfig, state: dict[str, Tensor], *, source: str,
                names: dict[str, str] | None = None) -> Transformer:
    """A float32 `Transformer` in eval mode holding `state` (checked first)."""
    check_state(cfg, state, source=source, names=names)
    state = {
        k: (v.float() if v.is_floating_point() else v).contiguous()
        for k, v in state.items()
        if not (cfg.tie_embeddings and k == "lm_head.weight")
    }
    model = meta_model(cfg)
    if any(True for _ in model.buffers()):  # non-persistent buffers: build for real
        model = Transformer(cfg)
        model.load_state_dict(state, strict=False)
    else:
        model.load_state_dict(state, strict=False, assign=True)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.tok_emb.weight  # assign=True replaced the Parameter
    meta = [n for n, p in model.named_parameters() if p.is_meta]
    if meta:  # check_state makes this impossible; keep the invariant explicit
        raise CheckpointError(f"{source}: tensors left unloaded: {_few(meta)}")
    return model.eval()


def _few(items: list[str], n: int = 8) -> str:
    return ", ".join(items[:n]) + (f" ... ({len(items)} in all)" if len(items) > n else "")
