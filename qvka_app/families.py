"""Which models the Explorer and Decode offer (families of variants), loaded once through the
app's one model cache, and a base family's first conversion to a variant (asked for, with a
progress bar). Nothing here mutates a cached model."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import streamlit as st

from qvka_app.models import load_shared
from qvka_app.runinfo import origin
from qvka_core.analysis import explorer as _explore
from qvka_core.convert import warm as _warm
from qvka_core.errors import LabError
from qvka_core.variants import available_variants, convertible_variants

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


def model_stamp(family: str, name: str) -> str:
    """Cache key part that changes when a user checkpoint is rewritten (training goes on)."""
    if family != "runs":
        return ""
    from qvka_core.checkpoints.resolve import checkpoint_stamp

    return checkpoint_stamp(name)


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
            out[fam] = convertible_variants()
    user = sorted(_checkpoint_names("run"))
    if user:  # "variants" of this family are checkpoint names; the models they came from too
        origins = {o for o in map(origin, user) if o is not None} - set(user)
        out["runs"] = user + sorted(origins)
    return out


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


def load_shown(family: str, variant: str) -> Any:
    """load_model, after a first conversion shown with a progress bar."""
    if family in _BASES:
        _convert_with_progress(family, variant)
    with st.spinner(f"Loading {family} · {variant}…"):
        return load_model(family, variant, model_stamp(family, variant))
