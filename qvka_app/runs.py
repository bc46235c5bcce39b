"""Glue of the Fine-tune page's New-run form: uploaded text checked and stored, one plan per
variant under one budget (checked as the trainer would), the calibrated estimate, and
launching detached jobs (a double click queues once)."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import streamlit as st

from qvka_app import runinfo
from qvka_app.option_widgets import options_of
from qvka_core import jobs
from qvka_core.errors import DataError, LabError, RunError
from qvka_core.jobs import runs_root  # $QVKA_RUNS, else the checkout's runs/ (created)

MAX_UPLOAD_BYTES = 5 * 1024 * 1024  # uploaded training text (the CLI allows 50 MB files)
PRESET_BASES = ["austen"]  # from-scratch bases that train on CPU with the bundled tokenizer


# --- uploads ------------------------------------------------------------------------------------
def safe_stem(filename: str) -> str:
    """A file name for an upload whatever its own name ('日本語.txt', 'a..b.txt'): its
    slug when it has one, else "upload"; the content hash beside it keeps files apart."""
    try:
        return jobs.slugify(Path(str(filename)).stem or "upload")[:40]
    except LabError:
        return "upload"


def stage_upload(filename: str, data: bytes) -> Path:
    """Validate an uploaded text file and store it under runs/uploads/ (atomic); DataError if it
    is too large, empty, binary or not UTF-8. Same bytes -> same file."""
    from qvka_core.data import read_text_file

    if len(data) > MAX_UPLOAD_BYTES:
        raise DataError(f"{filename!r} is too large: {len(data):,} bytes > the page's limit "
                        f"of {MAX_UPLOAD_BYTES:,} (train larger files from the command line)")
    stem = safe_stem(filename)
    target = runs_root() / "uploads" / f"{stem}-{hashlib.sha256(data).hexdigest()[:12]}.txt"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(data)
        try:
            read_text_file(tmp, max_bytes=MAX_UPLOAD_BYTES)
        except DataError as exc:
            raise DataError(str(exc).replace(str(tmp), repr(filename))) from None
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


# --- launching ----------------------------------------------------------------------------------
def _unique(base: str, used: set[str]) -> str:
    name, k = base, 1
    while name in used:
        k += 1
        name = f"{base}-{k}"
    used.add(name)
    return name


def train_plans(base: str, from_checkpoint: bool, variants: list[str], *, data: str,
                steps: int, batch: int, seq_len: int, lr: float, seed: int,
                distill: bool, prefix: str, control: bool = False,
                options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One {name, train (TrainArgs fields), teacher} per variant, every run under the same
    budget.

    Preset base: trained from scratch (preset=base, variant=v). Checkpoint base:
    init=base, converted on load when v differs from the checkpoint's variant; its
    unconverted source is the `reference` (and, with `distill`, the teacher; RunError if
    there is none). With `control`, one more run fine-tunes that unconverted source itself
    under the same budget and data: how much of a healed conversion's recovery is only
    fine-tuning on this text. `options` (variant option -> value, the form's generated
    widgets) become each run's `variant_options`, those its variant declares."""
    if not variants:
        raise RunError("choose at least one variant")
    root = runs_root()
    used = {p.name for p in root.iterdir()} if root.is_dir() else set()
    budget = {"data": data, "steps": steps, "batch": batch, "seq_len": seq_len, "lr": lr,
              "seed": seed, "warmup": max(1, steps // 10), "eval_every": max(1, steps // 8),
              "eval_batches": 2, "log_every": max(1, steps // 40),
              "checkpoint_every": max(1, steps // 4)}
    plans = []
    for v in variants:
        if from_checkpoint:
            own = runinfo.checkpoint_variant(base)
            train = {"init": base, **({"variant": v} if v != own else {})}
        else:
            train = {"preset": base, "variant": v}
        teacher = runinfo.unconverted_source(base, v) if from_checkpoint else None
        if distill:
            if teacher is None:
                raise RunError(f"distillation needs an unconverted source: {base!r} with "
                               f"variant {v!r} is not a converted model (turn distillation off)")
            train.update(distill="logits", teacher=teacher)
        if teacher is not None:  # the recovery baseline, measured on the run's own windows
            train["reference"] = teacher
        if own_options := options_of(v, options or {}):
            train["variant_options"] = own_options
        name = _unique(f"{jobs.slugify(prefix)[:50]}-{v}", used)
        train.update(budget)
        jobs.preflight(train)  # what the trainer would refuse: refused in the form
        plans.append({"name": name, "train": train, "teacher": teacher})
    if control:
        sources = {p["teacher"] for p in plans if p["teacher"]}
        if not sources:
            raise RunError(f"a control needs a converted model: {base!r} has no unconverted "
                           "source to fine-tune beside it")
        for source in sorted(sources):
            train = {"init": source, "reference": source, **budget}
            jobs.preflight(train)
            plans.append({"name": _unique(f"{jobs.slugify(prefix)[:42]}-control", used),
                          "train": train, "teacher": None, "control": source})
    return plans


def estimate(plan: dict[str, Any], device: str, n_gpus: int) -> dict[str, Any]:
    """jobs.estimate plus a time calibrated on the closest runs finished here."""
    from qvka_core.jobs.estimate import calibrated_estimate

    kind = "cuda" if device.startswith("cuda") or (device == "auto" and
                                                  jobs.devices()["cuda"]) else "cpu"
    return calibrated_estimate(plan["train"], device=kind, n_gpus=n_gpus, root=runs_root())


def estimate_lines(plans: list[dict[str, Any]], device: str,
                   n_gpus: int) -> tuple[str, str | None]:
    """The form's estimate caption (its time calibrated on runs finished here, or labelled
    uncalibrated) and a warning when the estimated memory exceeds the machine's."""
    from qvka_core.jobs.estimate import count_label

    est = estimate(plans[0], device, n_gpus)
    sec = est["calibrated_seconds"] or est["seconds"]
    caption = (f"Estimate per run ({est['device']}): ~{sec:,.0f} s — {est['basis']}. "
               f"~{est['memory_total_bytes'] / 2**20:,.0f} MiB, {count_label(est['params'])} "
               f"params, {est['tokens']:,} tokens. Runs: " + ", ".join(p["name"] for p in plans))
    return caption, (f"Estimate: {est['warning']}." if est["warning"] else None)


LAUNCH_DEBOUNCE_S = 10.0


def launch_once(plans: list[dict[str, Any]], device: str, n_gpus: int
                ) -> list[dict[str, Any]] | None:
    """`launch`, unless this session queued exactly these plans in the last 10 s (a double
    click on Launch reruns the page twice with the button pressed). None when skipped."""
    import json
    import time

    key = hashlib.sha256(json.dumps([plans, device, n_gpus], sort_keys=True,
                                    default=str).encode()).hexdigest()
    last = st.session_state.get("_last_launch")
    if last and last[0] == key and time.time() - last[1] < LAUNCH_DEBOUNCE_S:
        return None
    st.session_state["_last_launch"] = (key, time.time())
    return launch(plans, device, n_gpus)


def launch(plans: list[dict[str, Any]], device: str, n_gpus: int) -> list[dict[str, Any]]:
    """Queue every plan (detached jobs that outlive the page); returns their statuses."""
    return [jobs.submit(p["train"], name=p["name"], device=device, n_gpus=n_gpus,
                        root=runs_root(), tags={"page": "finetune", **(
                            {"control": p["control"]} if p.get("control") else {})})
            for p in plans]


# --- the launch form -----------------------------------------------------------------------------
def form_open(preselected: bool, has_runs: bool) -> bool:
    """Whether the New-run form is expanded: open at first (or when a conversion was just sent
    here to heal) and then kept as it is, so that editing a field never collapses it."""
    if preselected or "ft_form_open" not in st.session_state:
        st.session_state["ft_form_open"] = preselected or not has_runs
    return bool(st.session_state["ft_form_open"])


def follow_base(kind: str, base: str) -> None:
    """Reset the Variants box to the chosen model's own variant whenever the model changes,
    so that a run never silently converts it to the variant picked for the previous model."""
    if st.session_state.get("ft_variants_for") != [kind, base] or not st.session_state.get(
            "ft_variants"):
        own = runinfo.checkpoint_variant(base) if kind == "checkpoint" else None
        st.session_state["ft_variants"] = [own] if own else ["mha", "qv"]
        st.session_state["ft_variants_for"] = [kind, base]


def default_lr(base_kind: str) -> float:
    """The runner's own default: fine-tuning a checkpoint vs training a preset from scratch."""
    from qvka_core.train.args import FINETUNE_LR, SCRATCH_LR

    return FINETUNE_LR if base_kind == "checkpoint" else SCRATCH_LR


def lr_input(container: Any, base_kind: str) -> float:
    """Learning-rate box whose default follows the base; one widget key per base kind."""
    return float(container.number_input("Learning rate", 1e-6, 1.0, default_lr(base_kind),
                                        format="%.5f", key=f"ft_lr_{base_kind}"))

