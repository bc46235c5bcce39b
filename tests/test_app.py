"""Streamlit AppTest: Home, Attention Explorer (every tab) and Costs, their main interactions,
URL state and eight concurrent sessions sharing one cached model per variant."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import qvka_app.explorer
import qvka_app.families
import qvka_app.home
import qvka_app.shared
from qvka_core.variants import available_variants
from tests.test_variant_registry import toy  # noqa: F401 (fixture)

APP = str(Path(__file__).resolve().parents[1] / "app.py")
EXPLORER = str(Path(__file__).resolve().parents[1] / "pages" / "explorer.py")
TIMEOUT = 90


def charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def ticktexts(at: AppTest) -> set[str]:
    out: set[str] = set()
    for spec in charts(at):
        for name, axis in spec.get("layout", {}).items():
            if name.startswith(("xaxis", "yaxis")) and isinstance(axis, dict):
                out.update(axis.get("ticktext") or [])
    return out


def no_errors(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


@pytest.fixture
def explorer() -> AppTest:
    """The Explorer on the random family (independent of which checkpoints are bundled)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["family"] = "random"
    at.run()
    at.switch_page("pages/explorer.py").run()
    return at


def test_home_renders_spectrum_and_paper_table() -> None:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    no_errors(at)
    assert at.title[0].value == "QV-Ka Lab"
    spec = charts(at)[0]
    assert [t["type"] for t in spec["data"]] == ["bar", "bar"]
    assert at.selectbox(key="home_preset").value == "smollm2-135m"
    at.selectbox(key="home_preset").set_value("gpt2").run()
    no_errors(at)


def test_home_intro_names_every_registered_variant(toy: str) -> None:  # noqa: F811
    """The intro's list of variants comes from the registry: V-shared and a runtime toy too."""
    from qvka_core.variants.registry import available_variants, variant_label

    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    no_errors(at)
    intro = next(m.value for m in at.markdown if "QV May Be Enough" in m.value)
    labels = [variant_label(v) for v in available_variants()]
    assert {"V-shared", "Toy"} <= set(labels)
    assert all(label in intro for label in labels), (labels, intro)


def test_explorer_default_sentence(explorer: AppTest) -> None:
    no_errors(explorer)
    assert {"There", "beautiful", "girl"} <= ticktexts(explorer)
    assert explorer.query_params["text"] == ["There is a beautiful girl."] or \
        explorer.query_params["text"] == "There is a beautiful girl."
    assert len(explorer.get("plotly_chart")) >= 5  # every tab renders
    assert explorer.metric[0].label.startswith("Mean Jensen")


def test_explorer_text_variant_layer_head_change(explorer: AppTest) -> None:
    explorer.text_area(key="text").input("Attention heads often attend to the previous token.")
    explorer.run()
    no_errors(explorer)
    assert "previous" in ticktexts(explorer)
    explorer.multiselect(key="variants").set_value(["mla", "qvka", "mqa", "mha"]).run()
    no_errors(explorer)
    sbs = charts(explorer)[0]
    titles = [a["text"] for a in sbs["layout"]["annotations"]]
    assert titles[:4] == ["mla", "qvka", "mqa", "mha"]
    explorer.slider(key="layer").set_value(3).run()
    explorer.selectbox(key="head").set_value("2").run()
    no_errors(explorer)
    assert "layer 3, head 2" in sbs["layout"]["title"]["text"] or \
        "layer 3, head 2" in charts(explorer)[0]["layout"]["title"]["text"]
    assert explorer.query_params["layer"] in ("3", ["3"])


def test_explorer_lines_tab_every_head_and_focus(explorer: AppTest) -> None:
    def lines_chart() -> dict:
        return next(c for c in charts(explorer)
                    if "key lines" in c["layout"].get("title", {}).get("text", ""))

    assert "mean of heads" in lines_chart()["layout"]["title"]["text"]
    explorer.toggle(key="lines_every_head").set_value(True).run()
    no_errors(explorer)
    spec = lines_chart()
    assert "every head" in spec["layout"]["title"]["text"]
    assert {t.get("name") for t in spec["data"] if t.get("mode") == "lines"} == {
        f"head {h}" for h in range(8)}
    focus = next(s for s in explorer.selectbox if s.key.startswith("lines_focus_"))
    focus.set_value(3).run()  # "beautiful": only its lines remain
    no_errors(explorer)
    def ys(trace: dict) -> np.ndarray:  # plotly sends arrays as {"dtype", "bdata"} (base64)
        y = trace["y"]
        if isinstance(y, dict):
            return np.frombuffer(base64.b64decode(y["bdata"]), dtype=y["dtype"])
        return np.asarray(y, dtype=float)

    queries = {-y for t in lines_chart()["data"] if t.get("mode") == "lines"
               for y in ys(t)[0::3] if not np.isnan(y)}
    assert queries == {3}


def test_explorer_match_space_tab_follows_layer_and_head(explorer: AppTest) -> None:
    def match_chart() -> dict:
        return next(c for c in charts(explorer) if any(
            "% of variance" in a.get("text", "") for a in c["layout"].get("annotations", [])))

    spec = match_chart()
    assert [t["name"] for t in spec["data"][:3]] == ["query → its top key", "query", "key"]
    assert sum(t["name"] == "query" for t in spec["data"]) == 3  # one panel per variant
    assert any("head 0 (a mean of heads" in c.value for c in explorer.caption)
    explorer.slider(key="layer").set_value(2).run()
    explorer.selectbox(key="head").set_value("5").run()
    no_errors(explorer)
    assert any(c.value.startswith("Layer 2, head 5.") for c in explorer.caption)
    assert match_chart()["data"][1]["x"] != spec["data"][1]["x"]  # other layer, other head


def test_explorer_url_reproduces_view() -> None:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update({"text": "The cat sat.", "family": "random",
                            "variants": "qv,mha", "layer": "2", "head": "1"})
    at.run()
    at.switch_page("pages/explorer.py").run()
    no_errors(at)
    assert at.text_area(key="text").value == "The cat sat."
    assert at.multiselect(key="variants").value == ["qv", "mha"]
    assert at.slider(key="layer").value == 2 and at.selectbox(key="head").value == "1"


def test_explorer_long_text_is_truncated_with_message(explorer: AppTest) -> None:
    explorer.text_area(key="text").input("word " * 300).run()
    no_errors(explorer)
    assert "first 256" in explorer.warning[0].value


def test_explorer_empty_selection_and_empty_text(explorer: AppTest) -> None:
    explorer.multiselect(key="variants").set_value([]).run()
    no_errors(explorer)
    assert "at least one variant" in explorer.info[0].value
    explorer.multiselect(key="variants").set_value(["mha"]).run()
    explorer.text_area(key="text").input("   ").run()
    assert not explorer.exception
    assert "enter some text" in explorer.error[0].value


def test_presentation_mode(explorer: AppTest) -> None:
    explorer.sidebar.toggle(key="presentation").set_value(True).run()
    no_errors(explorer)
    assert charts(explorer)[0]["layout"]["font"]["size"] == 20


def test_costs_preset_change_and_values() -> None:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("pages/costs.py").run()
    no_errors(at)
    before = at.dataframe[0].value
    at.selectbox(key="cost_preset").set_value("tiny").run()
    no_errors(at)
    after = at.dataframe[0].value
    # every registered variant; the model's own (tiny is a GQA model) is marked
    assert list(after.columns) == [f"{v} (model)" if v == "gqa" else v
                                   for v in available_variants()]
    assert {"mha", "gqa (model)", "mqa", "mla", "qvka", "qv"} <= set(after.columns)
    assert before.loc["params total", "mha"] != after.loc["params total", "mha"]
    assert len(at.get("plotly_chart")) == 4  # roofline, params, KV, FLOPs
    assert "analytically only" in at.info[0].value  # 2048 > tiny's max_seq_len
    at.number_input(key="cost_seq").set_value(64).run()
    at.toggle(key="cost_measure").set_value(True).run()  # tiny is small enough to build
    no_errors(at)
    assert set(at.dataframe[-1].value["variant"]) >= {"mha", "qv"}


def test_costs_keyless_variants_keep_the_grouping_and_qvka_cache_is_a_choice() -> None:
    """SmolLM2 (GQA 9/3): QV caches half the model's GQA, the same as Convert builds;
    one V head per query head is an explicit choice; QV-Ka's V+G cache can be costed."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("pages/costs.py").run()
    at.selectbox(key="cost_preset").set_value("smollm2-135m").run()
    no_errors(at)
    kv = at.dataframe[0].value.loc["KV bytes / token"]
    assert kv["qv"] == "11.5 k" and kv["gqa (model)"] == "23 k"
    metrics = {m.label: m for m in at.metric}
    assert metrics["qv"].delta == "-50%"  # against the model's own GQA
    assert "gqa (model)" in metrics
    at.radio(key="cost_keyless_heads").set_value("one per query head").run()
    assert at.dataframe[0].value.loc["KV bytes / token", "qv"] == "34.6 k"  # 34,560
    at.radio(key="cost_qvka_cache").set_value("vg").run()
    no_errors(at)
    table = at.dataframe[0].value
    assert table.loc["KV bytes / token", "qvka"] == "38.4 k"  # 30 x (9 x 64 + 64) x 2
    assert any(r.startswith("FLOPs · decode token") for r in table.index)


def test_costs_invalid_custom_dims_names_field() -> None:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("pages/costs.py").run()
    at.radio(key="cost_source").set_value("custom").run()
    no_errors(at)
    at.number_input(key="cost_d_model").set_value(577).run()
    assert not at.exception
    assert "d_model" in at.error[0].value and "divisible" in at.error[0].value


@pytest.fixture
def shared_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    """AppTest installs a mock Runtime singleton and a fresh script cache per run, and resets
    the singleton to None afterwards, so overlapping runs in threads would pull it from
    under each other. Give every run one shared mock and one script cache instead (what a
    real server has: one Runtime, many sessions)."""
    from unittest.mock import MagicMock

    from streamlit.runtime import Runtime
    from streamlit.runtime.caching.storage.dummy_cache_storage import (
        MemoryCacheStorageManager,
    )
    from streamlit.runtime.media_file_manager import MediaFileManager
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
    from streamlit.testing.v1 import app_test

    mock = MagicMock(spec=Runtime)
    mock.media_file_mgr = MediaFileManager(MemoryMediaFileStorage("/mock/media"))
    mock.cache_storage_manager = MemoryCacheStorageManager()
    monkeypatch.setattr(Runtime, "_instance", mock)
    # One bytecode cache as on a server (its lock serialises compiles; concurrent compile()
    # calls trip a CPython 3.11 AST recursion-depth check).
    cache = app_test.ScriptCache()
    monkeypatch.setattr(app_test, "ScriptCache", lambda: cache)
    monkeypatch.setattr(app_test, "Runtime", type("PerRunRuntime", (), {"_instance": None}))
    # AppTest resets Streamlit's class-level "pages directory" flag before every run; with
    # eight threads, one session's routing rerun (qvka_app.shared.page_setup) can race another's
    # reset and end that run with nothing drawn. Routing is not what this test is about.
    monkeypatch.setattr(qvka_app.shared, "_leave_pages_directory_mode", lambda: None)


def test_concurrent_sessions_share_one_model_copy(shared_runtime: None) -> None:
    qvka_app.families.load_model.clear()
    qvka_app.explorer.run_cached.clear()
    qvka_app.families.LOAD_CALLS.clear()
    results: dict[int, set[str]] = {}
    failures: list[str] = []

    def session(i: int) -> None:
        try:
            at = AppTest.from_file(EXPLORER, default_timeout=TIMEOUT)
            at.query_params.update({"text": f"Session number{i} reads this.",
                                    "family": "random", "variants": "mha,gqa,qv"})
            at.run()
            if at.exception or at.error:
                failures.append(f"{i}: {[(e.message, e.stack_trace) for e in at.exception]}")
            results[i] = ticktexts(at)
        except Exception as exc:  # collected and asserted below
            failures.append(f"{i}: {exc!r}")

    threads = [threading.Thread(target=session, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    for i, ticks in results.items():
        assert f"number{i}" in ticks and not any(f"number{j}" in ticks for j in range(8)
                                                 if j != i)
    assert dict(qvka_app.families.LOAD_CALLS) == {("random", v): 1 for v in ("mha", "gqa", "qv")}


@pytest.mark.slow
def test_explorer_pretrained_minilm_and_conversion() -> None:
    if "minilm" not in qvka_app.families.family_variants():
        pytest.skip("MiniLM loader or package not available")
    at = AppTest.from_file(APP, default_timeout=600)
    at.query_params.update({"family": "minilm", "variants": "mha,qv", "text": "The cat sat."})
    at.run()
    at.switch_page("pages/explorer.py").run()
    if any(b.key == "ex_convert_go" for b in at.button):  # not cached yet: asked, not done
        at.button(key="ex_convert_go").click().run()
    no_errors(at)
    assert {"[CLS]", "cat", "[SEP]"} <= ticktexts(at)
    at.toggle(key="hide_special").set_value(True).run()  # exBERT's "hide [CLS]/[SEP]"
    no_errors(at)
    sbs = charts(at)[0]
    assert sbs["layout"]["yaxis"]["ticktext"] == ["the", "cat", "sat", "."]  # uncased BERT
    at.run()  # the toggle reaches the URL on the next run, so a link keeps it
    assert at.query_params["hide_special"] in ("1", ["1"])
    link = AppTest.from_file(APP, default_timeout=600)
    link.query_params.update({"family": "minilm", "variants": "mha", "text": "The cat sat.",
                              "hide_special": "1"})
    link.run()
    link.switch_page("pages/explorer.py").run()
    assert link.toggle(key="hide_special").value
    assert charts(link)[0]["layout"]["yaxis"]["ticktext"] == ["the", "cat", "sat", "."]


def test_bundled_losses_reads_meta(tmp_path: Path) -> None:
    run = tmp_path / "austen-qv"
    run.mkdir()
    (run / "meta.json").write_text(json.dumps({"val_loss": 3.21, "val_acc": 0.3}))
    (tmp_path / "austen-mha").mkdir()
    (tmp_path / "austen-mha" / "meta.json").write_text("{}")
    rows = qvka_app.home.bundled_losses(str(tmp_path))
    assert rows[1] == {"model": "austen-qv", "variant": "qv", "val loss": "3.2100",
                       "val acc %": "30.00"}
    assert rows[0]["val loss"] == "not recorded"


def test_explorer_bundled_austen_family() -> None:
    if "austen" not in qvka_app.families.family_variants():
        pytest.skip("no bundled Austen checkpoints")
    at = AppTest.from_file(APP, default_timeout=300).run()
    at.switch_page("pages/explorer.py").run()
    no_errors(at)
    assert at.selectbox(key="family").value == "austen"  # the default when bundled
    variants = qvka_app.families.family_variants()["austen"]
    # the six variants come first, so "select all" (capped at six) picks them, not ablations
    assert variants[:6] == ["mha", "gqa", "mqa", "mla", "qvka", "qv"]
    at.multiselect(key="variants").set_value(variants[:6]).run()
    no_errors(at)
    assert "girl" in {t.strip() for t in ticktexts(at)}


def test_explorer_opens_user_runs_and_saved_conversions(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """'Open in Explorer' targets: a trained run's checkpoint and a saved conversion, by name;
    rewriting a run's checkpoint (training went on) reloads it instead of showing stale maps."""
    import qvka_app.navigation
    from qvka_core.checkpoints import load_checkpoint, save_checkpoint

    monkeypatch.setenv("QVKA_RUNS", str(tmp_path))
    source = load_checkpoint("austen-qv")
    save_checkpoint(tmp_path / "heal-qv" / "checkpoint", source.model, tokenizer=source.tokenizer)
    (tmp_path / "heal-qv" / "config.json").write_text(json.dumps(  # the run healed the conversion
        {"train": {"init": str(tmp_path / "converted" / "mha-to-qv")}}), encoding="utf-8")
    save_checkpoint(tmp_path / "converted" / "mha-to-qv", source.model,
                    tokenizer=source.tokenizer, meta={"converted_from": "austen-mha"})
    qvka_app.families.family_variants.clear()
    # the bundled model the conversion came from is offered beside it, for side-by-side maps
    assert qvka_app.families.family_variants()["runs"] == ["converted/mha-to-qv", "heal-qv",
                                                    "austen-mha"]
    assert qvka_app.navigation.saved_explorer_target(str(tmp_path / "converted" / "mha-to-qv"),
                                          "austen-mha", "qv") == (
        "runs", ["austen-mha", "converted/mha-to-qv"])
    assert qvka_app.navigation.run_explorer_target({"id": "heal-qv", "argv": []}) == (
        "runs", ["austen-mha", "converted/mha-to-qv", "heal-qv"])  # with its lineage

    def open_view(names: tuple[str, ...] = ("heal-qv", "converted/mha-to-qv")) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=TIMEOUT)
        at.query_params.update({"family": "runs", "variants": ",".join(names)})
        at.run()
        at.switch_page("pages/explorer.py").run()
        no_errors(at)
        assert at.multiselect(key="variants").value == list(names)
        assert "girl" in {t.strip() for t in ticktexts(at)}
        return at

    beside = open_view(("austen-mha", "converted/mha-to-qv"))  # a bundled source, beside
    assert beside.metric[0].label.startswith("Mean Jensen")  # a difference needs both loaded

    open_view()
    loads = qvka_app.families.LOAD_CALLS[("runs", "heal-qv")]
    assert loads >= 1
    save_checkpoint(tmp_path / "heal-qv" / "checkpoint", source.model,
                    tokenizer=source.tokenizer, overwrite=True)
    open_view()
    assert qvka_app.families.LOAD_CALLS[("runs", "heal-qv")] == loads + 1


def test_metric_delta_is_dropped_when_nothing_changed() -> None:
    """Streamlit draws any delta, "+0" included, with a coloured arrow."""
    assert qvka_app.shared.delta(0, "+,") is None
    assert qvka_app.shared.delta(-0.0001, "+.3f", " vs 5.388") is None
    assert qvka_app.shared.delta(0.004, "+.0%") is None
    assert qvka_app.shared.delta(-512, "+,", " (-50%)") == "-512 (-50%)"
    assert qvka_app.shared.delta(0.25, "+.0%") == "+25%"
    assert qvka_app.shared.delta(0.0123, "+.3f", " vs 5.388") == "+0.012 vs 5.388"


def test_first_conversion_of_a_base_family_reports_progress(monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    """SmolLM2 -> QV/QV-Ka/MLA calibrates for minutes on a CPU; the Explorer used to show only
    a spinner. The first conversion now drives a progress bar, and runs once."""
    from qvka_core.convert import cache

    calls: list = []

    def fake_convert(source: str, to: str, *, progress=None, **opts):  # noqa: ANN001
        progress(0.5, "calibrating layer 3/6")
        calls.append((source, to, opts))

    monkeypatch.setattr(cache, "convert_cached", fake_convert)
    monkeypatch.setattr(cache, "cache_dir", lambda *a, **k: tmp_path / "not-there")
    monkeypatch.setattr(qvka_app.families, "_CONVERTED", set())
    base = type("Base", (), {"config": type("C", (), {"variant": "mha", "n_heads": 12})()})()
    monkeypatch.setattr(qvka_app.families, "_load_base", lambda name: base)
    qvka_app.families._convert_with_progress("minilm", "gqa")
    qvka_app.families._convert_with_progress("minilm", "gqa")  # the second time: nothing to do
    qvka_app.families._convert_with_progress("minilm", "mha")  # the base's own variant: nothing
    assert calls == [("minilm-l6", "gqa", {"n_kv_heads": 3})]


def test_explorer_difference_matches_heads_and_tables_read(explorer: AppTest) -> None:
    """Issue 11: the Difference tab warns heads are not aligned and matches B's heads to A's;
    KV-groups captions name the layer; Statistics say query 0 is left out."""
    captions = " ".join(c.value for c in explorer.caption)
    assert "not aligned" in captions and "query 0 left out" in captions
    assert "**mha** — layer 0:" in captions
    explorer.toggle(key="diff_match").set_value(True).run()
    explorer.selectbox(key="head").set_value("1").run()
    no_errors(explorer)
    assert any("heads matched to a different index in B" in c.value for c in explorer.caption)
    table = next(d.value for d in explorer.dataframe if "A head 0" in d.value.columns)
    assert sorted(table.iloc[0, 1:]) == list(range(8))  # a permutation of the 8 heads
    assert any(m.label.endswith("heads matched") for m in explorer.metric)
    assert any("matched)" in c["layout"]["title"]["text"] for c in charts(explorer)
               if "−" in c["layout"].get("title", {}).get("text", ""))
