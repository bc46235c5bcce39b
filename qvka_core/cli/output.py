"""What every `--json` prints: strict JSON (RFC 8259 has no NaN or Infinity, so a
non-finite number, e.g. the loss of a diverged run, is written as null)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from qvka_core.errors import ConfigError


def finite(obj: Any) -> Any:
    """`obj` with every non-finite float replaced by None (dicts, lists, tuples walked)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def json_text(obj: Any, *, indent: int | None = 2, ensure_ascii: bool = True) -> str:
    return json.dumps(finite(obj), indent=indent, default=str, allow_nan=False,
                      ensure_ascii=ensure_ascii)


def check_output_file(path: str, flag: str) -> Path:
    """An output FILE path: not a directory, not a FIFO or device (never opened)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{flag} {path} is a directory; give a file name")
    if p.exists() and not p.is_file():
        raise ConfigError(f"{flag} {path} is not a regular file")
    return p
