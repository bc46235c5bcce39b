"""Analysis behind the Explorer: statistics, divergence, rollout, long-input helpers, POS
lens, exports and plotly figures. Streamlit-free.

Names are imported on first use (PEP 562): the Costs page's figures (`analysis.figures`)
load no torch.
"""

from qvka_core.lazy import lazy_exports

_EXPORTS = {
    "EXPLORER_MAX_TOKENS": "qvka_core.analysis.explorer",
    "ExplorerResult": "qvka_core.analysis.explorer",
    "LoadedLike": "qvka_core.analysis.explorer",
    "VariantRun": "qvka_core.analysis.explorer",
    "WordTokenizer": "qvka_core.analysis.explorer",
    "explore": "qvka_core.analysis.explorer",
    "grouped_heads": "qvka_core.analysis.explorer",
    "random_config": "qvka_core.analysis.explorer",
    "random_model": "qvka_core.analysis.explorer",
    "run_model": "qvka_core.analysis.explorer",
    "token_limit": "qvka_core.analysis.explorer",
    "attention_csv": "qvka_core.analysis.export",
    "attention_json": "qvka_core.analysis.export",
    "attention_long": "qvka_core.analysis.export",
    "block_pool": "qvka_core.analysis.stats",
    "difference": "qvka_core.analysis.stats",
    "divergence_matrix": "qvka_core.analysis.stats",
    "group_order": "qvka_core.analysis.stats",
    "head_stats": "qvka_core.analysis.stats",
    "js_divergence_rows": "qvka_core.analysis.stats",
    "rollout": "qvka_core.analysis.stats",
    "row_entropy": "qvka_core.analysis.stats",
    "select": "qvka_core.analysis.stats",
    "top_k_rows": "qvka_core.analysis.stats",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
