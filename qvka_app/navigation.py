"""Between pages: a run or a saved conversion opened in the Explorer beside the models it
came from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from qvka_app import runinfo

EXPLORER_NOTE = ("Opens this checkpoint in the Explorer's 'Your checkpoints' family, next to "
                 "the model it started from.")


def run_explorer_target(status: dict[str, Any]) -> tuple[str, list[str]] | None:
    """The Explorer view of a run: its own checkpoint once one is written, after the models it
    came from (e.g. SmolLM2, its QV-Ka conversion, the healed run), else the built-in view
    closest to it."""
    from qvka_core.checkpoints.resolve import user_checkpoints

    init = runinfo.train_record(status).get("init")
    if status["id"] in user_checkpoints():  # with its lineage: original, converted, healed
        chain: list[str] = []
        name: str | None = status["id"]
        while name and name not in chain and len(chain) < 3:
            chain.insert(0, name)
            name = runinfo.origin(name)
        return "runs", chain
    source = runinfo.unconverted_source(init, None) or init
    return runinfo.explorer_target(source, runinfo.run_row(status)["variant"]) if source else None


def saved_explorer_target(saved: str | None, source: str,
                          variant: str) -> tuple[str, list[str]] | None:
    """The Explorer view of a conversion: once saved, the saved model beside its source."""
    if saved:
        name = f"converted/{Path(saved).name}"
        return "runs", [n for n in (runinfo.origin(name), name) if n]
    return runinfo.explorer_target(source, variant)


def open_in_explorer(family: str, variants: list[str]) -> None:
    """Seed the Explorer's widget keys (also on a second visit) and switch to it."""
    st.session_state["family"], st.session_state["variants"] = family, variants
    st.switch_page("pages/explorer.py",
                   query_params={"family": family, "variants": ",".join(variants)})
