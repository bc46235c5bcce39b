"""Conversions between attention variants, each with a fidelity report.

    from qvka_core.convert import convert
    result = convert(load_checkpoint("smollm2-135m"), "mla", kv_lora_rank=128)
    result.model, result.config, result.report.to_dict()

Names are imported on first use (PEP 562), so a light submodule (e.g. `convert.warm`'s family
list, read by `warm --help`) loads no torch.
"""

from qvka_core.lazy import lazy_exports

_EXPORTS = {
    "METHODS": "qvka_core.convert.api",
    "ConversionResult": "qvka_core.convert.api",
    "convert": "qvka_core.convert.api",
    "to_kv_sharing": "qvka_core.convert.api",
    "to_mla": "qvka_core.convert.api",
    "to_qv": "qvka_core.convert.api",
    "to_qvka": "qvka_core.convert.api",
    "convert_cached": "qvka_core.convert.cache",
    "input_covariances": "qvka_core.convert.calibration",
    "token_batches": "qvka_core.convert.calibration",
    "ConversionReport": "qvka_core.convert.report",
    "js_divergence": "qvka_core.convert.report",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
