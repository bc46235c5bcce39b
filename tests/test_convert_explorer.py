"""Changing the Explorer's family never starts a long conversion unasked: it says what is
missing, how long it takes and what is cached, and converts only on a button press."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import qvka_app.families
import qvka_core.convert.api as convert_api
from qvka_core.convert.warm import ESTIMATE_S

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture
def no_conversion(tmp_path, monkeypatch) -> list:
    monkeypatch.setenv("QVKA_CACHE", str(tmp_path))  # nothing converted on this "machine"
    monkeypatch.setattr(qvka_app.families, "_CONVERTED", set())
    calls: list = []
    monkeypatch.setattr(convert_api, "convert", lambda *a, **k: calls.append(a) or 1 / 0)
    return calls


def test_family_change_asks_before_converting_and_cancel_keeps_cached(no_conversion) -> None:
    if "minilm" not in qvka_app.families.family_variants():
        pytest.skip("MiniLM package not available")
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update({"family": "minilm", "variants": "mha,qv,qvka", "text": "The cat."})
    at.run()
    at.switch_page("pages/explorer.py").run()
    assert not at.exception
    warning = " ".join(w.value for w in at.warning)
    assert "not converted to qv, qvka" in warning and "Cached already: mha" in warning
    eta = ESTIMATE_S["minilm-l6"]["qv"] + ESTIMATE_S["minilm-l6"]["qvka"]
    assert f"about {eta:.0f} s" in warning  # the measured estimates of both, summed
    labels = {b.key: b.label for b in at.button}
    assert labels["ex_convert_go"].startswith("Convert 2 now")
    assert not at.get("plotly_chart")  # nothing drawn, nothing converted
    at.button(key="ex_convert_cancel").click().run()
    assert not at.exception and not at.warning
    assert at.session_state["variants"] == ["mha"]
    assert at.get("plotly_chart")  # the cached (base) variant is shown at once
    assert no_conversion == []
