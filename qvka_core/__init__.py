"""qvka_core: every attention variant of "QV May Be Enough" (arXiv 2603.15665) behind one
interface, with exact cost accounting, checkpoints, conversions and training.

Streamlit-free: the app and the CLI are thin layers over this package. The names below are
imported on first use (PEP 562), so `import qvka_core.config` or `python -m qvka_core --help`
does not load torch; see docs/ARCHITECTURE.md for the layers.
"""

from __future__ import annotations

from qvka_core.lazy import lazy_exports

# public name -> the module that defines it
_EXPORTS = {
    "AttentionConfig": "qvka_core.config",
    "ConfigError": "qvka_core.config",
    "ModelConfig": "qvka_core.config",
    "ModelOutput": "qvka_core.model",
    "Transformer": "qvka_core.model",
    "available_variants": "qvka_core.variants",
    "build_attention": "qvka_core.attention",
    "get_variant": "qvka_core.variants",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
