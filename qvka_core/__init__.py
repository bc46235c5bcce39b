"""qvka_core: every attention variant of "QV May Be Enough" (arXiv 2603.15665) behind one
interface, with exact cost accounting, checkpoints, conversions and training.

Streamlit-free: the app and the CLI are thin layers over this package.
"""

from qvka_core.attention import available_variants, build_attention, get_variant
from qvka_core.config import AttentionConfig, ConfigError, ModelConfig
from qvka_core.model import ModelOutput, Transformer

__all__ = [
    "AttentionConfig",
    "ConfigError",
    "ModelConfig",
    "ModelOutput",
    "Transformer",
    "available_variants",
    "build_attention",
    "get_variant",
]
