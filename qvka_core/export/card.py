"""The export's README.md model card: what it is, where it came from, what it keeps and gives up.

Lineage is read from the records the lab writes: a conversion's meta.json / report.json
(source, method, fidelity) and a training run's checkpoint meta.json plus its run
config.json (steps, init checkpoint, distillation), followed back through `init`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qvka_core import paths
from qvka_core.accounting import (
    kv_cache_bytes_per_token,
    kv_cache_elems_per_token,
    param_breakdown,
)
from qvka_core.config import ModelConfig
from qvka_core.variants.registry import get_variant


def lineage(meta: dict[str, Any], directory: Path | None, depth: int = 0) -> list[str]:
    """Oldest-last lines describing how the model was made (best effort, never raises)."""
    if depth > 6:
        return []
    lines: list[str] = []
    report = _report(meta, directory)
    if meta.get("run"):
        run_dir = directory.parent if directory is not None and directory.name == "checkpoint" \
            else None
        lines += _run_lines(str(meta["run"]), meta, run_dir, depth)
    elif meta.get("converted_from") or report:
        src = meta.get("converted_from") or (report or {}).get("source", "?")
        method = meta.get("method") or (report or {}).get("method", "?")
        target = (report or {}).get("target_variant", "")
        lines.append(f"converted from `{src}`" + (f" to {target}" if target else "")
                     + f" by {method}" + (f" — {_fidelity(report)}" if report else ""))
        if isinstance(meta.get("source_meta"), dict):
            lines += lineage(meta["source_meta"], None, depth + 1)
    return lines


def _report(meta: dict[str, Any], directory: Path | None) -> dict[str, Any] | None:
    if isinstance(meta.get("conversion"), dict):
        return meta["conversion"]
    if directory is not None and (directory / "report.json").exists():
        try:
            return json.loads((directory / "report.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None
    return None


def _fidelity(r: dict[str, Any]) -> str:
    parts = []
    if r.get("js_divergence_mean") is not None:
        parts.append(f"attention JS divergence {r['js_divergence_mean']:.4f} bits")
    if r.get("hidden_cosine") is not None:
        parts.append(f"final hidden cosine {r['hidden_cosine']:.4f}")
    if r.get("loss_before") is not None and r.get("loss_after") is not None:
        parts.append(f"LM loss {r['loss_before']:.3f} -> {r['loss_after']:.3f} nats/token")
    return ", ".join(parts) or "no fidelity figures recorded"


def _run_lines(run: str, meta: dict[str, Any], run_dir: Path | None, depth: int) -> list[str]:
    from qvka_core.checkpoints.resolve import find
    from qvka_core.checkpoints.store import read_json

    line = f"trained by run `{run}` to step {meta.get('step', '?')}"
    if isinstance(meta.get("val_loss"), (int, float)):
        line += f", validation loss {meta['val_loss']:.4f} nats/token"
    train: dict[str, Any] = {}
    try:
        train = read_json((run_dir or paths.runs_root() / run) / "config.json").get("train") or {}
    except Exception:  # a missing or foreign run record only shortens the lineage
        pass
    if train.get("distill") not in (None, "none"):
        line += f", distilled ({train['distill']}) from `{train.get('teacher')}`"
    lines = [line]
    init = train.get("init")
    if init:
        lines.append(f"initialised from `{init}`")
        try:
            _, _, directory = find(str(init))
            if directory is not None and (directory / "meta.json").exists():
                lines += lineage(read_json(directory / "meta.json"), directory, depth + 1)
            elif directory is not None:
                lines += lineage({}, directory, depth + 1)
        except Exception:  # the init checkpoint may have been deleted since
            pass
    return lines


def costs_rows(lab: ModelConfig, twin: ModelConfig) -> list[str]:
    """Markdown rows: parameters and KV cache of the lab variant beside the export's."""
    def total(c: ModelConfig) -> int:
        return sum(param_breakdown(c).values())

    return [
        "| | lab model | this export |",
        "|---|---:|---:|",
        f"| attention variant | {lab.variant} | {twin.variant} ({twin.attention.n_kv_heads} KV "
        "heads)" + " |",
        f"| parameters | {total(lab):,} | {total(twin):,} |",
        f"| KV cache per token (bf16, all layers) | {kv_cache_bytes_per_token(lab):,} B | "
        f"{kv_cache_bytes_per_token(twin):,} B |",
    ]


def vshared_cache_note(lab: ModelConfig, twin: ModelConfig, stock_class: str) -> str:
    """V-shared's export is larger in cache than the lab model: say by how much (accounting)."""
    h, g = lab.attention.n_heads, lab.attention.option("n_v_heads")
    ours, theirs = kv_cache_elems_per_token(lab), kv_cache_elems_per_token(twin)
    return (
        f"An exported V-shared model computes exactly what the lab model computes, but its "
        f"KV cache is **larger** than the lab's: stock `{stock_class}` caches one V head per "
        f"query head ({h} V heads a layer, {theirs['v']:,} V elements per token over all "
        f"layers) where the lab's V-shared caches its {g} shared V head{'s' * (g != 1)} "
        f"({ours['v']:,}); K is the same ({ours['k']:,}). In bf16 that is "
        f"{kv_cache_bytes_per_token(twin):,} B per token for this export against "
        f"{kv_cache_bytes_per_token(lab):,} B in the lab. Load the directory back into QV-Ka "
        "Lab (`--checkpoint DIR`) to get the shared V and its cache again.")


def model_card(*, name: str, lab: ModelConfig, twin: ModelConfig, stock_class: str, task: str,
               rewrites: list[str], lines: list[str], fidelity: str | None,
               command: str) -> str:
    family = get_variant(lab.variant).family
    if family == "keyless":
        keeps = (
            "An exported QV or QV-Ka model runs anywhere this stock class runs (transformers, "
            "vLLM, lm-eval, ...), with the same logits and attention, but it caches K **and** "
            "V like its stock class: the KV-cache saving of the key-less variant lives in the "
            "lab's own attention, not in this export. Load the directory back into QV-Ka Lab "
            "(`--checkpoint DIR`) to get the lab variant and its cache again.")
    elif family == "v-sharing":
        keeps = vshared_cache_note(lab, twin, stock_class)
    else:
        keeps = ("The export computes exactly what the lab model computes; its KV cache is the "
                 "stock class's.")
    out = [
        f"# {name} — exported from QV-Ka Lab",
        "",
        f"A `{lab.variant}` model from QV-Ka Lab written as a stock Hugging Face "
        f"`{stock_class}` (no remote code).",
        "",
        "```python",
        f"from transformers import {task}, AutoTokenizer",
        f'model = {task}.from_pretrained("path/to/this/folder")',
        "```",
        "",
        "## What was exported",
        "",
        *(f"- {r}" for r in (rewrites or ["weights as they are (only the key names and "
                                           "layouts of the stock class changed)"])),
        "",
        keeps,
        "",
        *costs_rows(lab, twin),
        "",
        "## Fidelity",
        "",
        fidelity or "not checked at export time",
        "",
        "## Lineage",
        "",
        *(f"- {line}" for line in (lines or ["no conversion or training records found"])),
        f"- exported with `{command}`",
        "",
        "The lab's own config (with the rows this twin only repeats per head) and the lab "
        "tensors it does not hold as they are (QV-Ka's W_ctx and W_K,i, say) are kept in "
        "`qvka_lab.json` / `qvka_lab.safetensors`; stock transformers ignores both.",
        "",
    ]
    return "\n".join(out)
