"""App-layer glue for the Convert, Fine-tune and Paper pages: cached sources and conversions,
saving converted models, uploads, job launching and chart data. Pages import this and
app_shared; the logic that is not Streamlit-specific lives in qvka_core (jobs, runview, paper).
Cached models are shared by every session: nothing here mutates one.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from qvka_core import jobs, runview
from qvka_core.errors import DataError, LabError, RunError

ROOT = Path(__file__).parent
MAX_UPLOAD_BYTES = 5 * 1024 * 1024  # uploaded training text (the CLI allows 50 MB files)
PRESET_BASES = ["austen"]  # from-scratch bases that train on CPU with the bundled tokenizer
_LOCK = threading.Lock()


runs_root = jobs.runs_root  # $QVKA_RUNS, else the checkout's runs/ (read on every call)


# --- checkpoints and conversions ----------------------------------------------------------------
def convert_targets() -> list[str]:
    """Variants the Convert page offers: those whose spec has a converter."""
    from qvka_core.variants.registry import convertible_variants

    return convertible_variants()


def without_converter() -> list[str]:
    """Registered variants `convert` cannot build (left out of the Convert page's list)."""
    from qvka_core.variants.registry import available_variants

    return [v for v in available_variants() if v not in convert_targets()]


def convert_options(to: str) -> list[Any]:
    """The Convert page's widgets for `to`: the `VariantOption`s its conversion takes
    (integers as number boxes, choices as radios), in the spec's order."""
    from qvka_core.variants.registry import get_variant

    spec = get_variant(to)
    names = spec.conversion.options if spec.conversion is not None else ()
    return [o for o in spec.options if o.name in names]


def converted_dirs() -> dict[str, Path]:
    """name -> directory of the models saved by the Convert page (runs/converted/<name>)."""
    base = runs_root() / "converted"
    return {p.parent.name: p.parent for p in sorted(base.glob("*/config.json"))}


def checkpoint_choices() -> dict[str, str]:
    """Label -> checkpoint reference (name or directory) for every source a page can use, each
    once: built-in models by name, the user's runs as "run: ID" (not while one is training:
    its checkpoint is being rewritten), saved conversions as "converted: NAME"."""
    from qvka_core.checkpoints import list_checkpoints

    statuses = {s["id"]: s for s in jobs.list_jobs(runs_root())}
    out = {}
    for c in list_checkpoints():
        name = c["name"]
        if c["source"] != "run":
            out[name] = name
        elif not name.startswith("converted/"):
            status = statuses.get(name)  # None: trained from the command line, not queued
            if status is None:
                out[f"run: {name}"] = c["path"]
            elif status["state"] not in jobs.ACTIVE:
                out[f"run: {name}"] = str(Path(status["run_dir"]) / "checkpoint")
    out.update({f"converted: {n}": str(d) for n, d in converted_dirs().items()})
    return out


def load_source(ref: str) -> Any:
    """A LoadedModel from the app's one model cache (`app_models`); never mutate it."""
    from app_models import load_shared

    return load_shared(ref)


@st.cache_resource(show_spinner=False)
def _conversions() -> OrderedDict[tuple[Any, ...], Any]:
    """Process-wide LRU of conversion results, keyed by primitives (see `conversion`)."""
    return OrderedDict()


def conversion(ref: str, to: str, opts: tuple[tuple[str, Any], ...], calib: str | None,
               progress: Callable[[float, str], None] | None = None) -> Any:
    """A ConversionResult for (source, target, options, calibration text): from the on-disk
    conversion cache the Explorer and the CLI share (computed once per machine), then kept in
    this process (8). Not an st.cache_resource call because `progress` writes to the page."""
    from qvka_core.convert.cache import cached_result

    key = (ref, to, opts, None if calib is None else hashlib.sha256(calib.encode()).hexdigest())
    cache = _conversions()
    with _LOCK:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
    result = cached_result(ref, to, calib_text=calib, progress=progress, **dict(opts))
    result.model.eval().requires_grad_(False)
    with _LOCK:
        cache[key] = result
        while len(cache) > 8:
            cache.popitem(last=False)
    return result


def loss_help(ref: str, report: dict[str, Any]) -> str:
    """Why the report's "before" loss may differ from the figure shown for the model elsewhere
    (Home, the checkpoint list): a short held-out sample vs the whole validation split."""
    text = (f"Before conversion: {report['loss_before']:.3f}, on the same "
            f"{report['eval_tokens']} held-out tokens as the loss after.")
    if report.get("loss_diff_se") is not None:
        text += (f" Paired standard error of the change, over its {report['eval_windows']} "
                 f"windows: {report['loss_diff_se']:.3f} nats.")
    card = runview.checkpoint_meta(ref).get("val_loss")
    if card is not None:
        text += f" The model's own record, over its whole validation split, is {card:.3f}."
    return text


def save_converted(ref: str, result: Any, name: str) -> Path:
    """Write a converted model to runs/converted/<sanitised name>; RunError if taken."""
    from qvka_core.checkpoints import save_checkpoint

    slug = jobs.slugify(name)
    directory = runs_root() / "converted" / slug
    if directory.exists():
        raise RunError(f"a converted model named {slug!r} already exists; choose another name")
    source = load_source(ref)
    src_val = runview.checkpoint_meta(ref).get("val_loss")
    meta = {"name": slug, "converted_from": ref, "variant": result.config.variant,
            "source_val_loss": src_val, "conversion": result.report.to_dict()}
    return save_checkpoint(directory, result.model, tokenizer=source.tokenizer, meta=meta)


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
                distill: bool, prefix: str, control: bool = False) -> list[dict[str, Any]]:
    """One {name, train (TrainArgs fields), teacher} per variant, every run under the same
    budget.

    Preset base: trained from scratch (preset=base, variant=v). Checkpoint base:
    init=base, converted on load when v differs from the checkpoint's variant; its
    unconverted source is the `reference` (and, with `distill`, the teacher; RunError if
    there is none). With `control`, one more run fine-tunes that unconverted source itself
    under the same budget and data: how much of a healed conversion's recovery is only
    fine-tuning on this text."""
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
            own = runview.checkpoint_variant(base)
            train = {"init": base, **({"variant": v} if v != own else {})}
        else:
            train = {"preset": base, "variant": v}
        teacher = runview.unconverted_source(base, v) if from_checkpoint else None
        if distill:
            if teacher is None:
                raise RunError(f"distillation needs an unconverted source: {base!r} with "
                               f"variant {v!r} is not a converted model (turn distillation off)")
            train.update(distill="logits", teacher=teacher)
        if teacher is not None:  # the recovery baseline, measured on the run's own windows
            train["reference"] = teacher
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
        own = runview.checkpoint_variant(base) if kind == "checkpoint" else None
        st.session_state["ft_variants"] = [own] if own else ["mha", "qv"]
        st.session_state["ft_variants_for"] = [kind, base]


# --- chart data ---------------------------------------------------------------------------------
def metrics_frame(run_ids: list[str]) -> pd.DataFrame:
    """Long table run, step, tokens, split, loss for overlaid curves. The train split is the
    cross-entropy (`ce`) when distilling, not the distillation objective, so that it reads on
    the validation loss's scale; "original" is the unconverted source's validation loss on
    the run's own windows (`ref_val_loss`), drawn flat across the run."""
    rows = []
    for rid, recs in jobs.compare(run_ids, root=runs_root()).items():
        for r in recs:
            train = r.get("ce", r.get("loss"))
            for split, value in (("train", train), ("validation", r.get("val_loss"))):
                if value is not None:
                    rows.append({"run": rid, "step": r["step"], "tokens": r.get("tokens", 0),
                                 "split": split, "loss": float(value)})
        ref = next((r["ref_val_loss"] for r in recs if r.get("ref_val_loss") is not None), None)
        if ref is not None and recs:
            rows += [{"run": rid, "step": r["step"], "tokens": r.get("tokens", 0),
                      "split": "original", "loss": float(ref)} for r in (recs[0], recs[-1])]
    return pd.DataFrame(rows, columns=["run", "step", "tokens", "split", "loss"])


def recovery_frame(statuses: list[dict[str, Any]]) -> tuple[pd.DataFrame, list[str]]:
    """(run, tokens, share of the original's loss) for converted-model runs and their
    controls (the original fine-tuned under the same budget: its own step-0 loss is the
    original's), and notes."""
    rows, notes = [], []
    for s in statuses:
        train = runview.train_record(s)
        init, variant = train.get("init"), train.get("variant")
        metrics = jobs.read_metrics(s["run_dir"])
        control = (init is not None and train.get("reference") == init
                   and runview.unconverted_source(init, variant) is None)  # not converted
        if control:
            original = next((r["ref_val_loss"] for r in metrics
                             if r.get("ref_val_loss") is not None), None)
            how = f"{init} on its own windows (control: the original fine-tuned)"
        else:
            original, how = runview.original_loss(init, variant, metrics)
        if init is None or original is None:
            continue
        label = f"{s['id']} (control)" if control else s["id"]
        notes.append(f"{label}: {how} = {original:.3f}")
        rows += [{"run": label, **r} for r in runview.recovery(metrics, original)]
    return pd.DataFrame(rows, columns=["run", "tokens", "share"]), notes


def loss_chart(frame: pd.DataFrame, x: str = "step") -> Any:
    """Loss against step (or, with x="share", against each run's share of its tokens, see
    app_runs_view.with_share), one legend entry (colour) per run and split, dashed by split.

    (A dash or shape legend for the split does not render under Streamlit's Vega theme with
    point overlays, so run and split share the colour legend.)"""
    import altair as alt

    frame = frame.assign(series=frame["run"] + " · " + frame["split"])
    axis = (alt.X("share:Q", title="share of the run's tokens",
                  axis=alt.Axis(format=".0%", values=[0, 0.25, 0.5, 0.75, 1]),
                  scale=alt.Scale(domain=[0, 1]))
            if x == "share" else alt.X("step:Q", axis=alt.Axis(tickMinStep=1, format="d")))
    return alt.Chart(frame).mark_line(point=True).encode(
        x=axis,
        y=alt.Y("loss:Q", scale=alt.Scale(zero=False), title="loss (nats/token)"),
        color=alt.Color("series:N", title="run · split", legend=alt.Legend(labelLimit=400)),
        strokeDash=alt.StrokeDash("split:N", legend=None),
        tooltip=["run", "split", "step", "tokens", "loss"]).properties(
        usermeta={"embedOptions": {"renderer": "svg"}})


def recovery_chart(frame: pd.DataFrame) -> Any:
    """Validation loss as a share of the original's against tokens seen, one line per run."""
    import altair as alt

    return alt.Chart(frame).mark_line(point=True).encode(
        x=alt.X("tokens:Q", title="tokens seen", axis=alt.Axis(tickMinStep=1, format=",d")),
        y=alt.Y("share:Q", scale=alt.Scale(zero=False), title="val loss / original's"),
        color="run:N", tooltip=list(frame.columns))


def default_lr(base_kind: str) -> float:
    """The runner's own default: fine-tuning a checkpoint vs training a preset from scratch."""
    from qvka_core.train.args import FINETUNE_LR, SCRATCH_LR

    return FINETUNE_LR if base_kind == "checkpoint" else SCRATCH_LR


def lr_input(container: Any, base_kind: str) -> float:
    """Learning-rate box whose default follows the base; one widget key per base kind."""
    return float(container.number_input("Learning rate", 1e-6, 1.0, default_lr(base_kind),
                                        format="%.5f", key=f"ft_lr_{base_kind}"))


# --- navigation ------------------------------------------------------------------------------
EXPLORER_NOTE = ("Opens this checkpoint in the Explorer's 'Your checkpoints' family, next to "
                 "the model it started from.")


def run_explorer_target(status: dict[str, Any]) -> tuple[str, list[str]] | None:
    """The Explorer view of a run: its own checkpoint once one is written, after the models it
    came from (e.g. SmolLM2, its QV-Ka conversion, the healed run), else the built-in view
    closest to it."""
    from qvka_core.checkpoints.resolve import user_checkpoints

    init = runview.train_record(status).get("init")
    if status["id"] in user_checkpoints():  # with its lineage: original, converted, healed
        chain: list[str] = []
        name: str | None = status["id"]
        while name and name not in chain and len(chain) < 3:
            chain.insert(0, name)
            name = runview.origin(name)
        return "runs", chain
    source = runview.unconverted_source(init, None) or init
    return runview.explorer_target(source, runview.run_row(status)["variant"]) if source else None


def saved_explorer_target(saved: str | None, source: str,
                          variant: str) -> tuple[str, list[str]] | None:
    """The Explorer view of a conversion: once saved, the saved model beside its source."""
    if saved:
        name = f"converted/{Path(saved).name}"
        return "runs", [n for n in (runview.origin(name), name) if n]
    return runview.explorer_target(source, variant)


def open_in_explorer(family: str, variants: list[str]) -> None:
    """Seed the Explorer's widget keys (also on a second visit) and switch to it."""
    st.session_state["family"], st.session_state["variants"] = family, variants
    st.switch_page("pages/explorer.py",
                   query_params={"family": family, "variants": ",".join(variants)})
