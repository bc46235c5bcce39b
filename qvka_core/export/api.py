"""`export_checkpoint` / `export_model`: write a lab model as its stock twin, atomically, with
the tokenizer, the model card and the lab's sidecar (the package docstring says what a folder
holds)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from qvka_core.checkpoints.store import FORMAT, LoadedModel, swap_into_place
from qvka_core.errors import CheckpointError
from qvka_core.export.card import lineage, model_card
from qvka_core.export.hf_out import check_round_trip, hf_config, hf_state
from qvka_core.export.restore import SIDECAR, SIDECAR_TENSORS
from qvka_core.export.twin import ARCHITECTURES, TASK, Twin, stock_twin
from qvka_core.export.verify import Fidelity


@dataclass
class ExportResult:
    directory: Path
    family: str
    stock_class: str
    task: str  # the transformers auto class that loads it
    rewrites: list[str]
    fidelity: Fidelity | None


def export_checkpoint(ref: str, out: str | Path, *, overwrite: bool = False,
                      verify: bool = True, command: str | None = None) -> ExportResult:
    """Resolve `ref` (any name or path other commands take) and export it to `out`."""
    from qvka_core.checkpoints import load_checkpoint
    from qvka_core.checkpoints.resolve import find

    loaded = load_checkpoint(ref)
    _, _, directory = find(ref)
    if directory is not None and directory.name == "checkpoint":  # a run given by path
        loaded.name = directory.parent.name
    return export_model(loaded, out, source_dir=directory, overwrite=overwrite, verify=verify,
                        command=command or f"python -m qvka_core export --checkpoint {ref} "
                        f"--out {out}")


def export_model(loaded: LoadedModel, out: str | Path, *, source_dir: Path | None = None,
                 overwrite: bool = False, verify: bool = True,
                 command: str = "qvka_core.export.export_model") -> ExportResult:
    """Write `loaded` as its stock twin into `out` (atomically: temp dir, then rename)."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise CheckpointError(f"{out} already exists; choose another folder or overwrite")
    lab_cfg = loaded.config
    lab_state = loaded.model.state_dict()
    twin = stock_twin(lab_cfg, lab_state)  # refusals raise here, before anything is written
    tok = loaded.tokenizer
    eos = tok.eos_id if tok is not None else None
    cfg_json = hf_config(twin.config, twin.family, eos_id=eos)
    tensors = hf_state(twin.config, twin.state, twin.family)
    check_round_trip(twin.config, twin.state, twin.family, cfg_json, tensors)
    # What the twin does not hold bit for bit (QV-Ka's W_ctx and W_K,i, rescaled projections)
    # goes to the sidecar, so the lab variant can be rebuilt exactly; rows the twin only
    # repeats per head (GQA K/V, V-shared's V) are taken back from the twin (`restore.py`).
    extras = {k: v.detach().contiguous().cpu() for k, v in lab_state.items()
              if k != "lm_head.weight" and k not in twin.repeated
              and not _same(twin.state.get(k), v)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _write(tmp, cfg_json, tensors, loaded, extras, twin)
        task = TASK.get(twin.family, "AutoModelForCausalLM")
        fidelity = None
        if verify:
            from qvka_core.export.verify import compare

            fidelity = compare(loaded.model, tmp, task)
        card = model_card(name=out.name, lab=lab_cfg, twin=twin.config,
                          stock_class=ARCHITECTURES[twin.family], task=task,
                          rewrites=twin.rewrites,
                          lines=[_source_line(loaded), *lineage(loaded.meta, source_dir)],
                          fidelity=fidelity.line() if fidelity else None, command=command)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        for path in tmp.iterdir():  # safetensors and mkdtemp write owner-only files
            os.chmod(path, 0o644)
        swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(directory=out, family=twin.family,
                        stock_class=ARCHITECTURES[twin.family], task=task,
                        rewrites=twin.rewrites, fidelity=fidelity)


def _same(a, b) -> bool:
    return a is not None and a.shape == b.shape and torch.equal(a, b)


def _source_line(loaded: LoadedModel) -> str:
    notes = loaded.config.notes
    return f"source model `{loaded.name}`" + (f": {notes}" if notes else "")


def _write(tmp: Path, cfg_json: dict, tensors: dict, loaded: LoadedModel, extras: dict,
           twin: Twin) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.cpu() for k, v in tensors.items()}
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(cfg_json, indent=2) + "\n", encoding="utf-8")
    if loaded.tokenizer is not None:
        _write_tokenizer(tmp, loaded, twin)
    sidecar = {"format": FORMAT, "model": loaded.config.to_dict(), "family": twin.family,
               "rewrites": twin.rewrites, "repeated": twin.repeated,
               "meta": _jsonable(loaded.meta)}
    (tmp / SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    if extras:
        save_file(extras, str(tmp / SIDECAR_TENSORS), metadata={"format": "pt"})
    os.chmod(tmp, 0o755)  # mkdtemp creates 0700; an export is ordinary shared data


def _write_tokenizer(tmp: Path, loaded: LoadedModel, twin: Twin) -> None:
    tok = loaded.tokenizer
    tok.save(tmp)
    if (tmp / "tokenizer_config.json").exists():
        return
    # A bare `tokenizers` file: tell AutoTokenizer which class wraps it.
    config = {"tokenizer_class": "PreTrainedTokenizerFast",
              "model_max_length": twin.config.max_seq_len}
    if tok.eos_token:
        config["eos_token"] = tok.eos_token
    (tmp / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n",
                                               encoding="utf-8")


def _jsonable(x):
    try:
        return json.loads(json.dumps(x, default=str))
    except (TypeError, ValueError):
        return {}
