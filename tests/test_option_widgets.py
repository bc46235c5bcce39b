"""Variant-option widgets generated from the registry (qvka_app.option_widgets) on the Costs
page and the Fine-tune New-run form: V-shared's n_v_heads and QV-Ka's d_ctx change the
costed KV cache, and a variant registered at runtime gets its own widget on both pages, its
value reaching the configs and the runs' TrainArgs.variant_options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

import qvka_app.costs_view
import qvka_app.runs
from tests.test_variant_registry import toy  # noqa: F401 (fixture)

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TIMEOUT = 90


def no_errors(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def costs_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("pages/costs.py").run()
    at.selectbox(key="cost_preset").set_value("smollm2-135m").run()
    no_errors(at)
    return at


def kv(at: AppTest, variant: str) -> str:
    return at.dataframe[0].value.loc["KV bytes / token", variant]


def test_costs_has_a_widget_for_vshared_heads_and_qvka_context() -> None:
    """SmolLM2-135M: 30 layers, 9 query heads of 64, 3 KV heads, bf16 (2 bytes)."""
    at = costs_page()
    assert "V-shared" in at.number_input(key="cost_n_v_heads").label
    at.number_input(key="cost_n_v_heads").set_value(9).run()
    no_errors(at)
    assert kv(at, "vshared") == "69.1 k"  # 30 x (9 x 64 K + 9 x 64 V) x 2
    at.radio(key="cost_qvka_cache").set_value("vg").run()
    at.number_input(key="cost_d_ctx").set_value(32).run()
    no_errors(at)
    assert kv(at, "qvka") == "13.4 k"  # 30 x (3 x 64 V + 32 G) x 2


def test_costs_option_out_of_bounds_is_refused_by_the_widget() -> None:
    at = costs_page()
    assert at.number_input(key="cost_n_v_heads").min == 1  # the option's minimum


def test_costs_gets_a_widget_for_a_runtime_registered_variant(
        toy: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    seen: list[dict[str, Any]] = []
    real = qvka_app.costs_view.variant_configs

    def spy(*args: Any, **kw: Any) -> Any:
        out = real(*args, **kw)
        seen.append(out)
        return out

    monkeypatch.setattr(qvka_app.costs_view, "variant_configs", spy)
    at = costs_page()
    widget = at.number_input(key="cost_toy_gain")
    assert widget.label == "toy_gain (Toy)" and widget.value == 3 and widget.min == 1
    assert widget.help == "a knob only the toy has"
    widget.set_value(7).run()
    no_errors(at)
    cfgs = seen[-1]
    assert cfgs[toy].attention.option("toy_gain") == 7
    assert "toy_gain" not in dict(cfgs["mha"].attention.options)  # not another variant's knob


def test_finetune_form_gets_the_toy_option_into_its_plans(
        toy: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("QVKA_RUNS", str(tmp_path / "runs"))
    seen: list[list[dict[str, Any]]] = []
    real = qvka_app.runs.train_plans
    monkeypatch.setattr(qvka_app.runs, "train_plans",
                        lambda *a, **kw: seen.append(real(*a, **kw)) or seen[-1])
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("pages/finetune.py").run()
    at.radio(key="ft_base_kind").set_value("preset").run()
    at.multiselect(key="ft_variants").set_value(["mha", toy]).run()
    no_errors(at)
    assert at.number_input(key="ft_toy_gain").label == "toy_gain (Toy)"
    at.number_input(key="ft_toy_gain").set_value(5).run()
    no_errors(at)
    by_variant = {p["train"]["variant"]: p["train"] for p in seen[-1]}
    assert by_variant[toy]["variant_options"] == {"toy_gain": 5}
    assert "variant_options" not in by_variant["mha"]  # mha declares no toy_gain


def test_train_plans_give_each_variant_only_its_own_options(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    monkeypatch.setenv("QVKA_RUNS", str(tmp_path / "runs"))
    plans = qvka_app.runs.train_plans(
        "austen", False, ["vshared", "qvka", "mha"], data="austen", steps=4, batch=2,
        seq_len=16, lr=1e-3, seed=0, distill=False, prefix="t",
        options={"n_v_heads": 2, "d_ctx": 8})
    got = {p["train"]["variant"]: p["train"].get("variant_options") for p in plans}
    assert got == {"vshared": {"n_v_heads": 2}, "qvka": {"d_ctx": 8}, "mha": None}
