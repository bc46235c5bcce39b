"""Which variants `export` writes as a stock Hugging Face class (torch-free, so that
`python -m qvka_core variants` can list them without loading the exporter).

A stock kind is computed by a stock class as it is; a rewritten one becomes a stock kind by
an exact rewrite in `twin.py` (QV, QV-Ka: the key folded into k_proj; V-shared: V repeated
per query head). Any other registered variant is refused in one line.
"""

from __future__ import annotations

STOCK_KINDS = ("mha", "gqa", "mqa", "mla")
REWRITTEN = ("qv", "qvka", "vshared")  # each has its rewrite in twin._REWRITES


def is_exportable(variant: str) -> bool:
    return variant in STOCK_KINDS or variant in REWRITTEN


def exportable_variants() -> list[str]:
    """Registered variants with an exact stock twin, in spectrum order."""
    from qvka_core.variants.registry import available_variants

    return [v for v in available_variants() if is_exportable(v)]
