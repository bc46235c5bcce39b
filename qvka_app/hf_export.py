"""The Export button of the Convert and Fine-tune pages: a checkpoint written as its exact
stock Hugging Face twin under runs/exports/, checked with stock transformers, offered as a
.zip when small."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import streamlit as st

from qvka_app.shared import guarded
from qvka_core.jobs.store import slugify
from qvka_core.paths import runs_root

EXPORT_ZIP_MAX_BYTES = 64 * 1024 * 1024  # larger exports: the folder path only
EXPORT_HELP = ("Write this model as its exact stock Hugging Face twin (Llama, Qwen2, "
               "DeepseekV2, GPT-2, BERT or GPT-NeoX; no remote code) into runs/exports/")


def run_checkpoint(run_id: str) -> str | None:
    """The run's checkpoint name once it has one (what `export_button` takes), else None."""
    from qvka_core.checkpoints.resolve import user_checkpoints

    return run_id if run_id in user_checkpoints() else None


def export_button(ref: str | None, key: str, container: Any = None) -> None:
    """An Export button for checkpoint `ref` (None: disabled), written to
    runs/exports/<its name>; the result (folder, stock class, fidelity, a .zip when small)
    stays shown under it until `ref` changes."""
    box = container if container is not None else st
    if box.button("Export to Hugging Face", key=key, disabled=ref is None,
                  help=EXPORT_HELP if ref else "save or train a checkpoint first"):
        with st.spinner("Exporting and checking it with stock transformers…"), guarded(False):
            from qvka_core.export import export_checkpoint

            out = runs_root() / "exports" / slugify(Path(ref).name)
            result = export_checkpoint(ref, out, overwrite=True)
            st.session_state[f"{key}_done"] = {
                "ref": ref, "path": str(out), "stock": result.stock_class, "task": result.task,
                "fidelity": result.fidelity.line() if result.fidelity else "",
                "zip": _zip_folder(out)}
    done = st.session_state.get(f"{key}_done")
    if not done or done["ref"] != ref:
        return
    st.success(f"Exported to {done['path']} — stock {done['stock']}: "
               f"`transformers.{done['task']}.from_pretrained(\"{done['path']}\")`")
    st.caption(f"{done['fidelity']}. The folder's README.md is the model card.")
    if done["zip"] is not None:
        st.download_button("Download the export (.zip)", data=done["zip"],
                           file_name=f"{Path(done['path']).name}.zip", mime="application/zip",
                           key=f"{key}_zip", on_click="ignore")


def _zip_folder(folder: Any) -> bytes | None:
    """The folder as zip bytes (stored, not deflated: weights barely compress), if small."""
    files = [p for p in Path(folder).rglob("*") if p.is_file()]
    if sum(p.stat().st_size for p in files) > EXPORT_ZIP_MAX_BYTES:
        return None
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for p in files:
            archive.write(p, f"{Path(folder).name}/{p.relative_to(folder)}")
    return buffer.getvalue()
