"""Bad inputs to the pages (the CLI and loader cases are in tests/test_bad_inputs.py): the
Explorer under bad URL parameters renders with no exception; uploads are accepted whatever
their name and refused (one DataError, no temp file) for bad content; a double press on
Launch queues once; the Costs measurement refuses huge sizes before allocating."""

from __future__ import annotations

from pathlib import Path

import pytest

from qvka_core.presets import get_preset

ROOT = Path(__file__).resolve().parents[1]


EXPLORER_URLS = [
    {"layer": "-5"}, {"layer": "abc"}, {"layer": "99999999999999999999"}, {"layer": "1e3"},
    {"head": "-1"}, {"head": "abc"}, {"head": "999"}, {"variants": "kqv,zzz"},
    {"variants": ",,,"}, {"family": "nope"}, {"hide_special": "maybe"},
    {"text": "\x00\x01 control"}, {"text": "x" * 5000}, {"variants": "mha,mha,gqa"},
    {"variants": "mha,gqa,mqa,mla,qvka,qv,vshared,zzz"},  # more than the widget takes
]


@pytest.mark.parametrize("params", EXPLORER_URLS, ids=lambda p: "-".join(
    f"{k}={v[:12]}" for k, v in p.items()))
def test_explorer_bad_url_parameters_render_without_exception(params: dict) -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params["family"] = "random"
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    at.switch_page("pages/explorer.py").run()
    assert not at.exception, [e.message for e in at.exception]


def _page_from_url(page: str, params: dict[str, str]):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    at.switch_page(page).run()
    return at


def test_explorer_url_with_more_variants_than_allowed_keeps_six_and_says_which_left() -> None:
    """Seven Austen variants in the URL (the widget takes six): no exception, the first six
    kept in the URL's order, one warning naming the seventh."""
    from qvka_app.families import family_variants

    seven = ["mha", "gqa", "mqa", "mla", "qvka", "qv", "vshared"]
    if not set(seven) <= set(family_variants().get("austen", [])):
        pytest.skip("the bundled Austen family lacks one of the seven variants")
    at = _page_from_url("pages/explorer.py", {"family": "austen", "variants": ",".join(seven)})
    assert not at.exception, [e.message for e in at.exception]
    assert at.multiselect(key="variants").value == seven[:6]
    warnings = [w.value for w in at.warning if "left out" in w.value]
    assert len(warnings) == 1 and "vshared" in warnings[0], [w.value for w in at.warning]


def test_costs_url_with_an_unknown_preset_renders() -> None:
    at = _page_from_url("pages/costs.py", {"cost_preset": "no-such-preset"})
    assert not at.exception, [e.message for e in at.exception]


@pytest.mark.parametrize("filename", ["日本語.txt", "a..b.txt", "..txt", ".hidden.txt",
                                      "../../etc/passwd.txt", "con.txt", "  .txt"])
def test_upload_accepted_whatever_its_name(filename: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import qvka_app.runs

    monkeypatch.setenv("QVKA_RUNS", str(tmp_path / "runs"))
    text = "It is a truth universally acknowledged. " * 20
    stored = qvka_app.runs.stage_upload(filename, text.encode("utf-8"))
    assert stored.parent == tmp_path / "runs" / "uploads"
    assert stored.read_text(encoding="utf-8") == text
    assert not stored.name.startswith(".") and "/" not in stored.name


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00binary", b"\x00" * 100],
                         ids=["empty", "not-utf8", "nul-bytes"])
def test_upload_bad_content_is_one_data_error(content: bytes, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import qvka_app.runs
    from qvka_core.errors import DataError

    monkeypatch.setenv("QVKA_RUNS", str(tmp_path / "runs"))
    with pytest.raises(DataError):
        qvka_app.runs.stage_upload("notes.txt", content)
    assert not any((tmp_path / "runs" / "uploads").glob("*"))  # no temp file left


def test_double_press_on_launch_queues_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import qvka_app.runs

    queued: list[int] = []
    monkeypatch.setattr(qvka_app.runs, "launch", lambda plans, d, n: queued.append(1) or [{}])
    fake_state: dict = {}
    monkeypatch.setattr(qvka_app.runs.st, "session_state", fake_state)
    plans = [{"name": "ft-qv", "argv": ["--variant", "qv"], "teacher": None}]
    assert qvka_app.runs.launch_once(plans, "cpu", 1) == [{}]
    assert qvka_app.runs.launch_once(plans, "cpu", 1) is None  # the second press of a double click
    other = [{"name": "ft-mha", "argv": ["--variant", "mha"], "teacher": None}]
    assert qvka_app.runs.launch_once(other, "cpu", 1) == [{}]  # a different form still launches
    assert queued == [1, 1]


COSTS_WIDGETS = [("cost_batch", 10**9), ("cost_seq", 10**9)]


@pytest.mark.parametrize("key,value", COSTS_WIDGETS)
def test_costs_measure_refuses_huge_sizes_inline(key: str, value: int) -> None:
    """Measure on CPU at a huge batch or sequence: an inline message, never an allocation."""
    from qvka_core.errors import ConfigError
    from qvka_core.measure import measure

    cfg = get_preset("tiny")
    batch, seq = (value, 8) if key == "cost_batch" else (1, 200)
    if key == "cost_seq":
        with pytest.raises(ConfigError, match="seq_len"):
            measure(cfg, seq_len=value, batch=1)
    with pytest.raises(ConfigError, match="batch"):
        measure(cfg, seq_len=seq, batch=batch if key == "cost_batch" else 10**7)
