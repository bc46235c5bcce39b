"""Export a lab model to a stock Hugging Face class, exactly (issue 14).

    export_checkpoint("runs/smollm2-qvka", "exports/smollm2-qvka")

writes a directory that `transformers` loads with AutoModelForCausalLM (AutoModel for a BERT
encoder) and no remote code: the stock config.json, model.safetensors, tokenizer files and
a README.md model card, plus the lab's sidecar (`qvka_lab.json`, and for QV-Ka
`qvka_lab.safetensors`) so that loading the directory back into the lab gives the source
model again. `twin.py` says which rewrites are exact and refuses the rest in one line.
"""

from __future__ import annotations

from qvka_core.lazy import lazy_exports

# public name -> the module that defines it; imported on first use (PEP 562), so that
# `exportable` (what `python -m qvka_core variants` lists) loads no torch.
_EXPORTS = {
    "ExportResult": "qvka_core.export.api",
    "export_checkpoint": "qvka_core.export.api",
    "export_model": "qvka_core.export.api",
    "Twin": "qvka_core.export.twin",
    "pick_family": "qvka_core.export.twin",
    "stock_twin": "qvka_core.export.twin",
    "exportable_variants": "qvka_core.export.exportable",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
