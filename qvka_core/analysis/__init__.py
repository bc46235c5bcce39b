"""Analysis behind the Explorer: statistics, divergence, rollout, long-input helpers, POS
lens, exports and plotly figures. Streamlit-free."""

from qvka_core.analysis.explorer import (
    EXPLORER_MAX_TOKENS,
    ExplorerResult,
    LoadedLike,
    VariantRun,
    WordTokenizer,
    explore,
    grouped_heads,
    random_config,
    random_model,
    run_model,
    token_limit,
)
from qvka_core.analysis.export import attention_csv, attention_json, attention_long
from qvka_core.analysis.stats import (
    block_pool,
    difference,
    divergence_matrix,
    group_order,
    head_stats,
    js_divergence_rows,
    rollout,
    row_entropy,
    select,
    top_k_rows,
)

__all__ = [
    "EXPLORER_MAX_TOKENS",
    "ExplorerResult",
    "LoadedLike",
    "VariantRun",
    "WordTokenizer",
    "attention_csv",
    "attention_json",
    "attention_long",
    "block_pool",
    "difference",
    "divergence_matrix",
    "explore",
    "group_order",
    "grouped_heads",
    "head_stats",
    "js_divergence_rows",
    "random_config",
    "random_model",
    "rollout",
    "row_entropy",
    "run_model",
    "select",
    "token_limit",
    "top_k_rows",
]
