"""The one on-disk conversion cache, shared by the CLI, the Explorer and the Convert page.

A converted checkpoint (our safetensors format, with the fidelity report in meta.json under
"conversion") is stored under `$QVKA_CACHE/converted/` keyed by the source, the target and
every option that changes the result, written atomically, so a crash or two processes
converting at once never leave a broken entry. Options are normalised before keying (None
and default values dropped; calibration and evaluation texts by their sha256), so
`convert --from smollm2-135m --to qvka`, the Explorer's SmolLM2 · qvka and the Convert page's
defaults are one entry, computed once per machine.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from qvka_core.checkpoints import LoadedModel, load_checkpoint, load_checkpoint_dir
from qvka_core.checkpoints.embedded import cache_root
from qvka_core.checkpoints.store import save_checkpoint
from qvka_core.errors import CheckpointError

CACHE_VERSION = 5  # bump when a method changes its output (5: weighted QV-Ka, 4k-token report)
DEFAULTS: dict[str, Any] = {"latent_norm": "fold", "qv_fit": "refit", "qvka_weighting": "query",
                            "ridge": 1e-6}
TEXTS = ("calib_text", "eval_text")


def normal_options(options: dict[str, Any]) -> dict[str, Any]:
    """Options as keyed: None and default values dropped, texts replaced by their sha256."""
    out = {}
    for k, v in options.items():
        if v is None or DEFAULTS.get(k, object()) == v:
            continue
        out[k] = hashlib.sha256(v.encode()).hexdigest()[:16] if k in TEXTS else v
    return out


def source_stamp(source: str) -> Any:
    """What identifies the source's weights: for a named or a directory checkpoint (bundled,
    a run, a folder) its weights file's path, size and mtime, so retrained or rewritten
    weights are a new key; for an embedded model (weights inside a pinned package) its name."""
    from qvka_core.checkpoints.resolve import find

    try:
        directory = find(source)[2]
    except CheckpointError:
        directory = None
    weights = directory / "model.safetensors" if directory is not None else None
    if weights is None or not weights.exists():
        return source
    st = weights.stat()
    return [source, str(weights.resolve()), st.st_size, st.st_mtime_ns]


def cache_key(source: str, to: str, options: dict[str, Any]) -> str:
    """Stable key of (source's weights, target, options)."""
    stamp = source_stamp(source)
    blob = json.dumps([CACHE_VERSION, stamp, to, sorted(normal_options(options).items())],
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cache_dir(source: str, to: str, **options: Any) -> Path:
    """Where `convert_cached(source, to, **options)` keeps its result (it may not exist yet)."""
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(source).name)
    return cache_root() / "converted" / f"{slug}-{to}-{cache_key(source, to, options)}"


def is_cached(source: str, to: str, **options: Any) -> bool:
    return (cache_dir(source, to, **options) / "model.safetensors").exists()


def _read(directory: Path, name: str) -> LoadedModel | None:
    if not directory.exists():
        return None
    try:
        loaded = load_checkpoint_dir(directory, name=name)
    except CheckpointError:
        return None  # an entry from an older layout: rebuilt by the caller
    return loaded if "conversion" in loaded.meta else None


def convert_cached(source: str, to: str, *, progress=None, **options: Any) -> LoadedModel:
    """`load_checkpoint(source)` converted to `to`, from the disk cache when already made.

    The returned model's meta holds the conversion report under "conversion". `options`
    are `convert`'s keyword arguments (calib_text and eval_text included).
    """
    if not normal_options(options) and _same_variant(source, to):
        return load_checkpoint(source)  # nothing to convert
    return cached_conversion(source, to, progress=progress, **options)


def _same_variant(source: str, to: str) -> bool:
    from qvka_core.checkpoints.embedded import EMBEDDED

    if source in EMBEDDED:
        return EMBEDDED[source]["variant"] == to
    return False


def cached_conversion(source: str, to: str, *, progress=None, **options: Any) -> LoadedModel:
    """Like `convert_cached`, but always a conversion (same variant too), so meta holds
    its report under "conversion" (and "from_cache", the entry, when it was read back)."""
    from qvka_core.convert.api import convert

    directory = cache_dir(source, to, **options)
    hit = _read(directory, f"{source}->{to}")
    if hit is not None:
        hit.meta["from_cache"] = str(directory)
        return hit
    loaded = load_checkpoint(source)
    result = convert(loaded, to=to, progress=progress,
                     **{k: v for k, v in options.items() if v is not None})
    converted = result.to_loaded(loaded)
    converted.meta["conversion"] = result.report.to_dict()
    try:
        save_checkpoint(directory, converted.model, tokenizer=loaded.tokenizer,
                        meta=converted.meta, overwrite=directory.exists())
    except (CheckpointError, OSError):
        pass  # another process won the race, or the cache is read-only: still usable
    return converted


def cached_result(source: str, to: str, *, progress=None, **options: Any):
    """A `ConversionResult` (model, config, report) through the same cache: the Convert page
    and the CLI's `convert --out` read what the Explorer computed, and the other way round."""
    from qvka_core.convert.api import ConversionResult
    from qvka_core.convert.report import ConversionReport

    loaded = cached_conversion(source, to, progress=progress, **options)
    report = ConversionReport(**loaded.meta["conversion"])
    return ConversionResult(model=loaded.model, config=loaded.config, report=report)
