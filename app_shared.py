"""The one seam between Streamlit and qvka_core: cached loaders, cached results, URL state,
presentation mode, error display and figure downloads. Pages import only this (and
streamlit); nothing here mutates a cached model.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import streamlit as st

from app_present import (
    ensure_routed,
    export_size,
    is_presenting,  # noqa: F401 (re-exported for the pages)
    table,  # noqa: F401 (re-exported for the pages)
)

# A deep link on a fresh server runs its page without app.py: reroute before torch loads.
ensure_routed()

from app_models import load_shared  # noqa: E402
from qvka_core.analysis import (  # noqa: E402
    costs_view,  # noqa: F401 (re-exported for the pages)
    figures,
    vectors,  # noqa: F401 (re-exported)
    views,  # noqa: F401 (re-exported)
)
from qvka_core.analysis import explorer as _explore  # noqa: E402
from qvka_core.analysis import export as exports  # noqa: E402, F401 (re-exported)
from qvka_core.analysis.explorer import EXPLORER_MAX_TOKENS  # noqa: E402, F401 (re-exported)
from qvka_core.convert import warm as _warm  # noqa: E402
from qvka_core.errors import LabError  # noqa: E402
from qvka_core.variants import available_variants, convertible_variants  # noqa: E402

# --- model families ---------------------------------------------------------------------------
FAMILIES: dict[str, str] = {  # short: the select box is a third of the page wide
    "random": "Random init, every variant",
    "austen": "Austen: one trained model per variant",
    "minilm": "MiniLM-L6 encoder + conversions",
    "smollm2": "SmolLM2-135M + conversions",
    "runs": "Your checkpoints (runs/)",
}
_BASES = dict(_warm.FAMILY_BASES)  # family -> embedded base model
LOAD_CALLS: Counter[tuple[str, str]] = Counter()  # (family, variant) -> real loads (tests)
_CONVERTED: set[tuple[str, str]] = set()  # base conversions made by this process
_LOAD_LOCK = threading.Lock()


def _checkpoint_names(source: str | None = None) -> set[str]:
    try:
        from qvka_core.checkpoints import list_checkpoints  # type: ignore[attr-defined]

        return {c["name"] for c in list_checkpoints() if source in (None, c["source"])}
    except Exception:  # loader not built yet, or assets missing: family just not offered
        return set()


def _stamp(family: str, name: str) -> str:
    """Cache key part that changes when a user checkpoint is rewritten (training goes on)."""
    if family != "runs":
        return ""
    from qvka_core.checkpoints.resolve import checkpoint_stamp

    return checkpoint_stamp(name)


def _can_convert() -> bool:
    try:
        from qvka_core.convert import convert  # type: ignore[import-not-found] # noqa: F401

        return True
    except Exception:
        return False


@st.cache_data(ttl=10, show_spinner=False)  # new runs appear within seconds
def family_variants() -> dict[str, list[str]]:
    """Family -> variants it can show now (random always; others when their files exist)."""
    names = _checkpoint_names()
    out: dict[str, list[str]] = {"random": list(_explore.RANDOM_VARIANTS)}
    rank = {v: i for i, v in enumerate(available_variants())}
    # The six variants first (so "select all", capped at six, takes them), then the
    # position-scheme ablations: mha, gqa, ..., qv, mha-agf, mha-sinusoidal, qv-agf, ...
    austen = sorted((n.removeprefix("austen-") for n in names if n.startswith("austen-")),
                    key=lambda x: ("-" in x, rank.get(x.split("-")[0], 99), x))
    if austen:
        out["austen"] = austen
    for fam, base in _BASES.items():
        if base in names:
            out[fam] = convertible_variants() if _can_convert() else [_base_variant(fam)]
    user = sorted(_checkpoint_names("run"))
    if user:  # "variants" of this family are checkpoint names; the models they came from too
        from qvka_core.runview import origin

        origins = {o for o in map(origin, user) if o is not None} - set(user)
        out["runs"] = user + sorted(origins)
    return out


def _base_variant(family: str) -> str:
    return {"minilm": "mha", "smollm2": "gqa"}.get(family, "mha")


@st.cache_resource(show_spinner=False, max_entries=24)
def load_model(family: str, variant: str, stamp: str = "") -> Any:
    """A loaded-like model (eval, no grads). Cached per (family, variant); never mutate it."""
    with _LOAD_LOCK:
        LOAD_CALLS[(family, variant)] += 1
    if family == "random":
        return _explore.random_model(variant)

    if family == "austen":
        loaded = load_shared(f"austen-{variant}", stamp)
    elif family == "runs":
        loaded = load_shared(variant, stamp)  # a run or saved conversion, by name
    elif family in _BASES:
        loaded = _load_base(_BASES[family])
        if variant != loaded.config.variant:
            from qvka_core.convert import convert_cached

            # A new model (the base is untouched), computed once per machine, then from disk.
            loaded = convert_cached(_BASES[family], variant, **_convert_opts(loaded, variant))
    else:
        raise LabError(f"unknown model family {family!r}; valid: {', '.join(FAMILIES)}")
    loaded.model.eval().requires_grad_(False)
    return loaded


def _convert_opts(base: Any, variant: str) -> dict[str, int]:
    return _warm.family_options(base.config.n_heads, variant)


def _needs_conversion(family: str, variant: str) -> bool:
    """Whether showing (family, variant) would convert: a base family's variant that is
    neither its own nor in the shared disk cache (nor made by this process)."""
    from qvka_core.convert.cache import cache_dir

    if family not in _BASES or (family, variant) in _CONVERTED:
        return False
    base = _load_base(_BASES[family])
    return variant != base.config.variant and not cache_dir(
        _BASES[family], variant, **_convert_opts(base, variant)).exists()


def _convert_with_progress(family: str, variant: str) -> None:
    """A base family's first conversion to `variant` on this machine, with a progress bar
    (calibrating takes minutes on a CPU); load_model then reads it from the disk cache."""
    from qvka_core.convert.cache import convert_cached

    if not _needs_conversion(family, variant):
        return
    base = _load_base(_BASES[family])
    bar = st.progress(0.0, text=f"Converting {_BASES[family]} to {variant}, once per machine…")
    try:
        convert_cached(_BASES[family], variant, **_convert_opts(base, variant),
                       progress=lambda f, m: bar.progress(min(1.0, f), text=(
                           f"Converting {_BASES[family]} to {variant} (once per machine): {m}")))
        _CONVERTED.add((family, variant))  # also when the disk cache could not be written
    finally:
        bar.empty()


def confirm_conversions(family: str, variants: list[str]) -> bool:
    """True when every variant can be shown now. Otherwise say what is missing, how long it
    takes and what is cached, and convert only on a button press (a press elsewhere, e.g.
    Cancel, interrupts a conversion at its next step: nothing half-done is cached)."""
    pending = [v for v in variants if _needs_conversion(family, v)]
    if not pending:
        return True
    base = _BASES[family]
    ready = [v for v in variants if v not in pending]
    eta = sum(_warm.estimate_s(base, v) for v in pending)
    st.warning(f"**{base}** is not converted to {', '.join(pending)} on this machine yet: "
               f"about {eta:.0f} s on an idle CPU, several times that on a busy one. "
               + (f"Cached already: {', '.join(ready)}. " if ready else "")
               + "`./lab warm` (or Home's *Prepare every model*) converts every family "
               "ahead of time.")
    c1, c2 = st.columns(2)
    go = c1.button(f"Convert {len(pending)} now (≈ {eta:.0f} s)", key="ex_convert_go",
                   type="primary")
    c2.button("Show only the cached variants" if ready else "Cancel", key="ex_convert_cancel",
              on_click=_keep_variants, args=(ready,))
    if not go:
        return False
    for v in pending:
        _convert_with_progress(family, v)
    return True


def _keep_variants(variants: list[str]) -> None:
    st.session_state["variants"] = variants


def warm_all() -> list[Any]:
    """Home's button: every family x variant the Explorer offers, into the disk cache."""
    bar = st.progress(0.0, text="Looking at what is cached…")
    try:
        items = _warm.plan([f for f in _BASES if f in family_variants()])
        _warm.warm(items, lambda f, m: bar.progress(min(1.0, f), text=m))
    finally:
        bar.empty()
    return items


def _load_base(name: str) -> Any:
    return load_shared(name)


@st.cache_data(show_spinner="Running the models…", max_entries=96)
def run_cached(family: str, variant: str, text: str, stamp: str = "") -> _explore.VariantRun:
    """One forward of (family, variant) on text; cached across sessions."""
    return _explore.run_model(load_model(family, variant, stamp), text)


def explorer(family: str, variants: list[str], text: str, layer: int, head: int | None
             ) -> _explore.ExplorerResult:
    models = {v: _load_shown(family, v) for v in variants}
    return _explore.explore(models, text, layer, head,
                            run=lambda label, _m, t: run_cached(family, label, t,
                                                                _stamp(family, label)))


@st.cache_data(show_spinner="Capturing queries and keys…", max_entries=48)
def _match_vectors(family: str, variant: str, text: str, layer: int, stamp: str = ""
                   ) -> vectors.MatchVectors:
    return vectors.capture(load_model(family, variant, stamp), text, layer)


def match_space(family: str, variants: list[str], text: str, layer: int, head: int | None,
                opts: views.ViewOptions) -> Any:
    """The Explorer's match-space figure: each variant's queries and matched keys in a plane."""
    vecs = {v: _match_vectors(family, v, text, layer, _stamp(family, v)) for v in variants}
    return vectors.figure(vecs, 0 if head is None else head, presentation=opts.presentation,
                          hide_special=opts.hide_special)


def _load_shown(family: str, variant: str) -> Any:
    """load_model, after a first conversion shown with a progress bar."""
    if family in _BASES:
        _convert_with_progress(family, variant)
    with st.spinner(f"Loading {family} · {variant}…"):
        return load_model(family, variant, _stamp(family, variant))


def model_shape(family: str, variant: str) -> tuple[int, int, int]:
    """(layers, heads, token limit) of a model, for widget ranges."""
    m = _load_shown(family, variant)
    return m.config.n_layers, m.config.n_heads, _explore.token_limit(m)


# --- URL state -------------------------------------------------------------------------------
def init_from_url(defaults: dict[str, Any], parsers: dict[str, Callable[[str], Any]]) -> None:
    """On a session's first visit, seed widget keys from the query params (else defaults)."""
    flag = "_url_seeded_" + "_".join(sorted(defaults))
    if st.session_state.get(flag):
        return
    st.session_state[flag] = True
    for key, default in defaults.items():
        raw = st.query_params.get(key)
        value = default
        if raw is not None:
            try:
                value = parsers.get(key, str)(raw)
            except (ValueError, TypeError):
                value = default
        st.session_state.setdefault(key, value)


def clamp_int(value: Any, low: int, high: int) -> int:
    """A URL or widget value as an int in [low, high] (garbage -> low): ?layer=-5 is layer 0."""
    try:
        return max(low, min(high, int(value)))
    except (TypeError, ValueError, OverflowError):
        return low


def sync_to_url(**values: Any) -> None:
    """Write the page state into the URL so that a link reproduces the view."""
    for key, value in values.items():
        text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
        if st.query_params.get(key) != text:
            st.query_params[key] = text


def split_list(raw: str) -> list[str]:
    return [x for x in raw.split(",") if x]


# --- presentation mode, errors, downloads ---------------------------------------------------------
def _leave_pages_directory_mode() -> None:
    ensure_routed()  # every run: a page reached without app.py's router (app_present)


def page_setup() -> bool:
    """Every page calls this first: the router check. Returns whether presentation mode is
    on (its toggle is app.py's, so that it survives page changes; see app_present)."""
    _leave_pages_directory_mode()
    return is_presenting()


def delta(diff: float, fmt: str, extra: str = "") -> str | None:
    """A metric's delta text, or None when `diff` rounds to zero in `fmt` (Streamlit draws
    any delta, +0 included, with a coloured arrow)."""
    text = format(diff, fmt)
    return text + extra if text.strip("+-0.,%") else None


def show_error(exc: BaseException) -> None:
    st.error(str(exc))


@contextmanager
def guarded(stop: bool = True) -> Iterator[None]:
    """Show a LabError as a message (no traceback); stop the script unless `stop=False`
    (inside a tab, so that the other tabs still render)."""
    try:
        yield
    except LabError as exc:
        show_error(exc)
        if stop:
            st.stop()


def show_figure(fig: Any, name: str, key: str, *, data: dict[str, str] | None = None) -> None:
    """Plot a figure with PNG/SVG (and optional CSV/JSON) downloads under it."""
    # The modebar's camera exports in the browser itself (PNG, no server round trip).
    st.plotly_chart(fig, key=f"chart_{key}", config={
        "displaylogo": False, "toImageButtonOptions": {"format": "png", "filename": name,
                                                       "scale": 2}})
    ok, reason = figures.export_available()
    cols = st.columns(2 + len(data or {}) + (0 if ok else 1))
    if ok:
        for col, fmt, mime in ((cols[0], "png", "image/png"), (cols[1], "svg", "image/svg+xml")):
            col.download_button(f"{fmt.upper()}", data=_exporter(fig, fmt),
                                file_name=f"{name}.{fmt}", mime=mime, key=f"dl_{fmt}_{key}",
                                on_click="ignore")
    else:
        cols[0].download_button("HTML", data=fig.to_html(include_plotlyjs="cdn"),
                                file_name=f"{name}.html", key=f"dl_html_{key}",
                                on_click="ignore")
        cols[1].caption(reason)
    for i, (ext, payload) in enumerate((data or {}).items()):
        cols[2 + i].download_button(ext.upper(), data=payload, file_name=f"{name}.{ext}",
                                    key=f"dl_{ext}_{key}", on_click="ignore")


def _exporter(fig: Any, fmt: str) -> Callable[[], bytes]:
    size = export_size()

    def make() -> bytes:  # deferred: runs only when the user clicks
        return figures.to_image(fig, fmt, size=size)

    return make



# --- costs (guarded: the accounting modules may be missing in a partial build) ---------------
def preset_options() -> list[str]:
    try:
        from qvka_core.presets import preset_names

        return preset_names()
    except ImportError:
        return ["random"]


@st.cache_data(show_spinner=False)
def spectrum_table(preset: str) -> Any:
    """DataFrame of the spectrum on `preset`, or None if accounting is not available."""
    try:
        from qvka_core.analysis import costs_view
        from qvka_core.presets import get_preset
    except ImportError:
        return None
    return costs_view.spectrum(get_preset(preset))


def spectrum_figure(df: Any, presentation: bool) -> Any:
    from qvka_core.analysis.costs_view import spectrum_figure as fig

    return fig(df, presentation)


@st.cache_data(ttl=60, show_spinner=False)
def bundled_losses(directory: str) -> list[dict[str, Any]]:
    """Validation loss of each bundled checkpoint that has a meta.json."""
    import json
    from pathlib import Path

    rows = []
    for meta_path in sorted(Path(directory).glob("*/meta.json")):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        metrics = meta.get("metrics", {}) if isinstance(meta.get("metrics"), dict) else {}
        loss = next((src[k] for src in (meta, metrics)
                     for k in ("val_loss", "valid_loss", "validation_loss") if k in src), None)
        acc = meta.get("val_acc", metrics.get("val_acc"))
        rows.append({"model": meta_path.parent.name,
                     "variant": meta.get("variant", meta_path.parent.name.removeprefix("austen-")),
                     "val loss": "not recorded" if loss is None else f"{loss:.4f}",
                     "val acc %": "" if acc is None else f"{100 * acc:.2f}"})
    return rows


@st.cache_data(show_spinner=False, max_entries=64)
def cost_base(source: str, preset: str, dims: tuple[tuple[str, int], ...],
              causal: bool) -> Any:
    """The model the Costs page re-costs: a preset or the user's dimensions."""
    from qvka_core.analysis import costs_view
    from qvka_core.presets import get_preset

    return get_preset(preset) if source == "preset" else costs_view.custom_config(
        **dict(dims), causal=causal)


def cost_configs(source: str, preset: str, dims: tuple[tuple[str, int], ...],
                 variants: tuple[str, ...], causal: bool, n_kv_heads: int | None = None,
                 qvka_cache: str | None = None) -> dict[str, Any]:
    """Variant -> ModelConfig on a preset's or the user's dimensions (ConfigError if bad)."""
    from qvka_core.analysis import costs_view

    return costs_view.variant_configs(cost_base(source, preset, dims, causal), list(variants),
                                      causal=causal, n_kv_heads=n_kv_heads,
                                      qvka_cache=qvka_cache)


@st.cache_data(show_spinner="Measuring on CPU…", max_entries=16)
def measured(source: str, preset: str, dims: tuple[tuple[str, int], ...],
             variants: tuple[str, ...], causal: bool, seq_len: int, batch: int, dtype: str,
             n_kv_heads: int | None = None, qvka_cache: str | None = None) -> Any:
    """Measured-vs-formula table (None when the model is too big to build on CPU)."""
    cfgs = cost_configs(source, preset, dims, variants, causal, n_kv_heads, qvka_cache)
    return costs_view.measured_table(cfgs, seq_len=seq_len, batch=batch, dtype=dtype)


def gpu_options() -> list[str]:
    try:
        from qvka_core.hardware import gpu_names

        return gpu_names()
    except ImportError:
        return []


# --- export to a stock Hugging Face class ------------------------------------------------------
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
    from qvka_core.jobs.store import slugify
    from qvka_core.paths import runs_root

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
    import io
    import zipfile

    files = [p for p in Path(folder).rglob("*") if p.is_file()]
    if sum(p.stat().st_size for p in files) > EXPORT_ZIP_MAX_BYTES:
        return None
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for p in files:
            archive.write(p, f"{Path(folder).name}/{p.relative_to(folder)}")
    return buffer.getvalue()
