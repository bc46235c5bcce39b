"""The models the Convert and Fine-tune pages start from (built-in models, the user's runs,
saved conversions: each once), conversions cached in this process on top of the machine's
disk cache, and saving a converted model. Cached models are shared by every session:
nothing here mutates one."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from qvka_app import runinfo
from qvka_core import jobs
from qvka_core.errors import RunError
from qvka_core.jobs import runs_root  # $QVKA_RUNS, else the checkout's runs/ (created)

_LOCK = threading.Lock()


def convert_targets() -> list[str]:
    """Variants the Convert page offers: those whose spec has a converter."""
    from qvka_core.variants.registry import convertible_variants

    return convertible_variants()


def without_converter() -> list[str]:
    """Registered variants `convert` cannot build (left out of the Convert page's list)."""
    from qvka_core.variants.registry import available_variants

    return [v for v in available_variants() if v not in convert_targets()]


def convert_options(to: str) -> list[Any]:
    """The Convert page's widgets for `to`: the `VariantOption`s its conversion takes
    (integers as number boxes, choices as radios), in the spec's order."""
    from qvka_core.variants.registry import get_variant

    spec = get_variant(to)
    names = spec.conversion.options if spec.conversion is not None else ()
    return [o for o in spec.options if o.name in names]


def converted_dirs() -> dict[str, Path]:
    """name -> directory of the models saved by the Convert page (runs/converted/<name>)."""
    base = runs_root() / "converted"
    return {p.parent.name: p.parent for p in sorted(base.glob("*/config.json"))}


def checkpoint_choices() -> dict[str, str]:
    """Label -> checkpoint reference (name or directory) for every source a page can use, each
    once: built-in models by name, the user's runs as "run: ID" (not while one is training:
    its checkpoint is being rewritten), saved conversions as "converted: NAME"."""
    from qvka_core.checkpoints import list_checkpoints

    statuses = {s["id"]: s for s in jobs.list_jobs(runs_root())}
    out = {}
    for c in list_checkpoints():
        name = c["name"]
        if c["source"] != "run":
            out[name] = name
        elif not name.startswith("converted/"):
            status = statuses.get(name)  # None: trained from the command line, not queued
            if status is None:
                out[f"run: {name}"] = c["path"]
            elif status["state"] not in jobs.ACTIVE:
                out[f"run: {name}"] = str(Path(status["run_dir"]) / "checkpoint")
    out.update({f"converted: {n}": str(d) for n, d in converted_dirs().items()})
    return out


def load_source(ref: str) -> Any:
    """A LoadedModel from the app's one model cache (`qvka_app.models`); never mutate it."""
    from qvka_app.models import load_shared

    return load_shared(ref)


@st.cache_resource(show_spinner=False)
def _conversions() -> OrderedDict[tuple[Any, ...], Any]:
    """Process-wide LRU of conversion results, keyed by primitives (see `conversion`)."""
    return OrderedDict()


def conversion(ref: str, to: str, opts: tuple[tuple[str, Any], ...], calib: str | None,
               progress: Callable[[float, str], None] | None = None) -> Any:
    """A ConversionResult for (source, target, options, calibration text): from the on-disk
    conversion cache the Explorer and the CLI share (computed once per machine), then kept in
    this process (8). Not an st.cache_resource call because `progress` writes to the page."""
    from qvka_core.convert.cache import cached_result

    key = (ref, to, opts, None if calib is None else hashlib.sha256(calib.encode()).hexdigest())
    cache = _conversions()
    with _LOCK:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
    result = cached_result(ref, to, calib_text=calib, progress=progress, **dict(opts))
    result.model.eval().requires_grad_(False)
    with _LOCK:
        cache[key] = result
        while len(cache) > 8:
            cache.popitem(last=False)
    return result


def loss_help(ref: str, report: dict[str, Any]) -> str:
    """Why the report's "before" loss may differ from the figure shown for the model elsewhere
    (Home, the checkpoint list): a short held-out sample vs the whole validation split."""
    text = (f"Before conversion: {report['loss_before']:.3f}, on the same "
            f"{report['eval_tokens']} held-out tokens as the loss after.")
    if report.get("loss_diff_se") is not None:
        text += (f" Paired standard error of the change, over its {report['eval_windows']} "
                 f"windows: {report['loss_diff_se']:.3f} nats.")
    card = runinfo.checkpoint_meta(ref).get("val_loss")
    if card is not None:
        text += f" The model's own record, over its whole validation split, is {card:.3f}."
    return text


def save_converted(ref: str, result: Any, name: str) -> Path:
    """Write a converted model to runs/converted/<sanitised name>; RunError if taken."""
    from qvka_core.checkpoints import save_checkpoint

    slug = jobs.slugify(name)
    directory = runs_root() / "converted" / slug
    if directory.exists():
        raise RunError(f"a converted model named {slug!r} already exists; choose another name")
    source = load_source(ref)
    src_val = runinfo.checkpoint_meta(ref).get("val_loss")
    meta = {"name": slug, "converted_from": ref, "variant": result.config.variant,
            "source_val_loss": src_val, "conversion": result.report.to_dict()}
    return save_checkpoint(directory, result.model, tokenizer=source.tokenizer, meta=meta)

