"""Converted models kept on disk, so a conversion is computed once per machine.

Converting SmolLM2 or MiniLM to MLA or QV-Ka calibrates on text and takes a minute or more on
a CPU; the Explorer and the CLI ask for the same conversions again and again. The converted
checkpoint (our safetensors format, with the fidelity report in meta.json) is stored under
`$QVKA_CACHE/converted/` keyed by the source, the target and every option, and written
atomically, so a crash or two processes converting at once never leave a broken entry.
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

CACHE_VERSION = 3  # bump when a conversion method changes its output (3: QV refits Q)


def cache_key(source: str, to: str, options: dict[str, Any]) -> str:
    """Stable key of (source, target, options); a directory source adds its weights' mtime."""
    stamp: Any = source
    weights = Path(source) / "model.safetensors"
    if weights.exists():
        stamp = [str(weights.resolve()), weights.stat().st_mtime_ns]
    blob = json.dumps([CACHE_VERSION, stamp, to, sorted(options.items())], default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cache_dir(source: str, to: str, **options: Any) -> Path:
    """Where `convert_cached(source, to, **options)` keeps its result (it may not exist yet)."""
    options = {k: v for k, v in options.items() if v is not None}
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(source).name)
    return cache_root() / "converted" / f"{slug}-{to}-{cache_key(source, to, options)}"


def convert_cached(source: str, to: str, *, progress=None, **options: Any) -> LoadedModel:
    """`load_checkpoint(source)` converted to `to`, from the disk cache when already made.

    The returned model's meta holds the conversion report under "conversion".
    """
    from qvka_core.convert.api import convert

    options = {k: v for k, v in options.items() if v is not None}
    directory = cache_dir(source, to, **options)
    if directory.exists():
        try:
            return load_checkpoint_dir(directory, name=f"{source}->{to}")
        except CheckpointError:
            pass  # an entry from an older layout: rebuild it below
    loaded = load_checkpoint(source)
    if loaded.config.variant == to and not options:
        return loaded
    result = convert(loaded, to=to, progress=progress, **options)
    converted = result.to_loaded(loaded)
    converted.meta["conversion"] = result.report.to_dict()
    try:
        save_checkpoint(directory, converted.model, tokenizer=loaded.tokenizer,
                        meta=converted.meta, overwrite=directory.exists())
    except (CheckpointError, OSError):
        pass  # another process won the race, or the cache is read-only: still usable
    return converted
