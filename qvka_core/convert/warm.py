"""Every conversion the pages offer, made ahead of time (`python -m qvka_core warm`).

The Explorer shows each embedded pretrained family (MiniLM, SmolLM2) as every registered
variant, converting on first use; a talk cannot wait for that. `warm` loads each base once
(SmolLM2's first load also writes its bf16 cache) and fills the shared conversion cache
(`convert.cache`) with exactly the entries the Explorer will ask for, so afterwards every
family opens from disk.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qvka_core.variants.gqa import default_kv_heads
from qvka_core.variants.registry import convertible_variants, get_variant

FAMILY_BASES = {"minilm": "minilm-l6", "smollm2": "smollm2-135m"}
BASE_VARIANT = {"minilm-l6": "mha", "smollm2-135m": "gqa"}
# Seconds to convert (calibrate + fit + report) on an idle 2-core CPU, measured with
# benchmarks/convert_speed.py; a machine shared with other work takes several times longer.
ESTIMATE_S = {
    "minilm-l6": {"mha": 3, "gqa": 3, "mqa": 3, "mla": 12, "qv": 12, "qvka": 15},
    "smollm2-135m": {"mha": 10, "gqa": 10, "mqa": 10, "mla": 25, "qv": 25, "qvka": 30},
}


def gqa_groups(n_heads: int) -> int:
    """KV heads for the Explorer's GQA: the largest divisor of n_heads that is ≤ n_heads/4."""
    return default_kv_heads(n_heads, n_heads)


def family_options(n_heads: int, variant: str) -> dict[str, int]:
    """The options the Explorer converts a base with (the cache key's options)."""
    return {"n_kv_heads": gqa_groups(n_heads)} if variant == "gqa" else {}


def estimate_s(base: str, variant: str) -> float:
    """Measured seconds where known; else a calibrating conversion is costed like QV-Ka and
    one without calibration (a weight rewrite) like MHA's."""
    known = ESTIMATE_S.get(base, {})
    if variant in known:
        return float(known[variant])
    conv = get_variant(variant).conversion
    slow = conv is None or conv.calibrate({})
    return float(known.get("qvka" if slow else "mha", 30))


@dataclass
class WarmItem:
    family: str
    base: str
    variant: str
    options: dict[str, Any]
    state: str = "pending"  # pending | cached | converted
    seconds: float = 0.0


def plan(families: list[str] | None = None) -> list[WarmItem]:
    """The (family, variant) conversions the Explorer offers, base variants left out."""
    from qvka_core.checkpoints import load_checkpoint
    from qvka_core.convert.cache import is_cached  # here: `warm --help` reads FAMILY_BASES

    items = []
    for fam in families or list(FAMILY_BASES):
        base = FAMILY_BASES[fam]
        n_heads = load_checkpoint(base).config.n_heads  # SmolLM2: builds its cache once
        for v in convertible_variants():  # a variant without a converter is not offered
            if v != BASE_VARIANT[base]:
                opts = family_options(n_heads, v)
                item = WarmItem(fam, base, v, opts)
                if is_cached(base, v, **opts):
                    item.state = "cached"
                items.append(item)
    return items


def warm(items: list[WarmItem],
         progress: Callable[[float, str], None] | None = None) -> list[WarmItem]:
    """Convert every pending item into the cache; progress(fraction, message) as it goes."""
    from qvka_core.convert.cache import convert_cached

    report = progress or (lambda f, m: None)
    todo = [it for it in items if it.state == "pending"]
    weights = [estimate_s(it.base, it.variant) for it in todo]
    total, done = max(sum(weights), 1e-9), 0.0
    for it, w in zip(todo, weights, strict=True):
        label = f"{it.base} → {it.variant}"
        t0 = time.perf_counter()
        convert_cached(it.base, it.variant, **it.options, progress=lambda f, m, lo=done, w=w,
                       label=label: report((lo + w * min(1.0, f)) / total, f"{label}: {m}"))
        it.state, it.seconds = "converted", time.perf_counter() - t0
        done += w
        report(done / total, f"{label}: done in {it.seconds:.0f} s")
    report(1.0, "every conversion is cached")
    return items
