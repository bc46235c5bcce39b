"""Conversions between attention variants, each with a fidelity report.

    from qvka_core.convert import convert
    result = convert(load_checkpoint("smollm2-135m"), "mla", kv_lora_rank=128)
    result.model, result.config, result.report.to_dict()
"""

from qvka_core.convert.api import (
    METHODS,
    ConversionResult,
    convert,
    to_kv_sharing,
    to_mla,
    to_qv,
    to_qvka,
)
from qvka_core.convert.cache import convert_cached
from qvka_core.convert.calibration import input_covariances, token_batches
from qvka_core.convert.report import ConversionReport, js_divergence

__all__ = [
    "METHODS",
    "ConversionReport",
    "ConversionResult",
    "convert",
    "convert_cached",
    "input_covariances",
    "js_divergence",
    "to_kv_sharing",
    "to_mla",
    "to_qv",
    "to_qvka",
    "token_batches",
]
