"""Page widgets for variant options, generated from the registry (`VariantOption`), so that a
variant registered at runtime brings its knobs to the Costs page and the Fine-tune form with
no page edit: int/float -> number_input with the option's bounds, str with choices -> radio
(or selectbox past three choices), bool -> toggle; the help is the option's, the label names
the selected variants that declare it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import streamlit as st

from qvka_core.variants.registry import VariantOption, variant_label, variant_options

PER_ROW = 3


def options_for(variants: Sequence[str], exclude: Sequence[str] = ()) -> list[
        tuple[VariantOption, list[str]]]:
    """Each model-scope option some selected variant declares, with those variants."""
    out = []
    for o in variant_options(scope="model"):
        users = [v for v in o.variants if v in variants]
        if users and o.name not in exclude:
            out.append((o, users))
    return out


def _derived(o: VariantOption) -> bool:
    """A number the variant works out itself (no default, or one recomputed when another
    model is recosted): its box starts empty, and any value typed in is asked for."""
    return o.type in (int, float) and (o.default is None or o.recost is not None)


def _widget(container: Any, o: VariantOption, label: str, key: str) -> Any:
    """One option's widget; None (an empty number box) means "the variant's default"."""
    if o.type is bool:
        return container.toggle(label, value=bool(o.default), key=key, help=o.help)
    if o.type is str and o.choices:
        choices = list(o.choices)
        index = choices.index(o.default) if o.default in choices else 0
        if len(choices) <= 3:
            return container.radio(label, choices, index=index, key=key, help=o.help,
                                   horizontal=True)
        return container.selectbox(label, choices, index=index, key=key, help=o.help)
    if o.type is str:
        return container.text_input(label, value=o.default or "", key=key, help=o.help) or None
    if o.type is float:
        return container.number_input(label, value=None if _derived(o) else float(o.default),
                                      key=key, help=o.help, format="%g",
                                      placeholder="the variant's default")
    return container.number_input(label, min_value=o.minimum, max_value=o.maximum, step=1,
                                  value=None if _derived(o) else int(o.default), key=key,
                                  help=o.help, placeholder="the variant's default")


def option_widgets(variants: Sequence[str], key_prefix: str, *,
                   exclude: Sequence[str] = ()) -> dict[str, Any]:
    """Draw one widget per option of `variants` (PER_ROW a row) and return the options the
    user set: name -> value, leaving out those at the variant's default (so that a checkpoint
    keeps its own value when nothing is asked). Keys are f"{key_prefix}_{name}"."""
    chosen: dict[str, Any] = {}
    found = options_for(variants, exclude)
    for start in range(0, len(found), PER_ROW):
        for col, (o, users) in zip(st.columns(PER_ROW), found[start:start + PER_ROW],
                                   strict=False):
            label = f"{o.name} ({', '.join(variant_label(v) for v in users)})"
            value = _widget(col, o, label, f"{key_prefix}_{o.name}")
            if value is not None and (_derived(o) or value != o.default):
                chosen[o.name] = int(value) if o.type is int else value
    return chosen


def options_of(variant: str, chosen: dict[str, Any]) -> dict[str, Any]:
    """The subset of `chosen` that `variant` declares (another variant's knob does not apply)."""
    names = {o.name for o, _ in options_for([variant])}
    return {k: v for k, v in chosen.items() if k in names}
