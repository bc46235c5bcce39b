"""Figure and table layout for talks: labels never drawn over a neighbour, numbers short
enough for narrow screens, the roofline as a chart."""

from __future__ import annotations

import numpy as np

from qvka_app import costs_view
from qvka_core.analysis import figures


def test_compact_numbers_fit_a_narrow_column() -> None:
    cells = [124_439_808, 36_864, 9_999, 284.8e6, 3e12, 22.667, float("nan"), "bandwidth"]
    assert [costs_view.compact_number(x) for x in cells] == [
        "124.4 M", "36.9 k", "9,999", "284.8 M", "3 T", "22.7", "—", "bandwidth"]


def test_side_by_side_labels_only_the_outer_panels_when_tokens_are_shared() -> None:
    toks = ["There", "is", "a", "beautiful", "girl", "."]
    maps = {v: np.eye(6) for v in ("mha", "gqa", "mqa", "mla", "qv")}  # 2 rows of 3
    fig = figures.side_by_side(maps, {v: toks for v in maps}, cols=3)
    y = [fig.layout[f"yaxis{i if i > 1 else ''}"].showticklabels for i in range(1, 6)]
    x = [fig.layout[f"xaxis{i if i > 1 else ''}"].showticklabels for i in range(1, 6)]
    assert y == [True, False, False, True, False]  # first column only
    assert x == [False, False, True, True, True]  # the lowest panel of each column
    other = figures.side_by_side({"a": np.eye(2), "b": np.eye(3)},
                                 {"a": ["x", "y"], "b": ["p", "q", "r"]})
    assert other.layout.yaxis2.showticklabels is not False  # own tokens: own labels


def test_presentation_sizes_every_text_of_a_figure() -> None:
    fig = figures.matrix_figure(np.ones((2, 2)), x_title="key", y_title="query",
                                presentation=True)
    assert fig.data[0].textfont.size >= 20  # cell numbers (they were ~5 px)
    assert fig.layout.xaxis.title.font.size >= 20 and fig.layout.legend.font.size >= 20
    assert fig.layout.xaxis.automargin and fig.layout.yaxis.automargin  # exports not clipped


def test_roofline_chart_draws_each_gpu_ridge_point() -> None:
    from qvka_core.presets import get_preset

    cfgs = costs_view.variant_configs(get_preset("gpt2"), ["mha", "qv"], causal=True)
    fig = costs_view.roofline_figure(cfgs, seq_len=2048, batch=8, dtype="bf16")
    bars = [t for t in fig.data if t.type == "bar"]
    assert list(bars[0].x) == ["mha", "qv"]
    ridges = {t.name.split(" ridge")[0]: t.y[0] for t in fig.data if t.type == "scatter"}
    assert abs(ridges["H100 SXM"] - 989.4e12 / 3.35e12) < 1  # datasheet: dense bf16 / HBM3
    assert bars[0].y[1] > bars[0].y[0]  # QV reads half the cache: more FLOPs per byte


def test_sidebar_export_sizes_are_the_exporter_sizes() -> None:
    import qvka_app.present

    assert list(qvka_app.present.EXPORT_SIZES) == list(figures.EXPORT_SIZES)
    fig = figures.heatmap(np.eye(2), ["a", "b"])
    assert figures.export_size(fig, "16:9 slide") == (1920, 1080)
    assert figures.export_size(fig, "figure")[0] == figures.EXPORT_WIDTH  # never kaleido's 700


def test_tables_become_html_tables_in_presentation_mode() -> None:
    """A dataframe grid draws on a canvas at a fixed size; presentation mode shows an HTML table
    instead, whose type its CSS enlarges."""
    from streamlit.testing.v1 import AppTest

    def script() -> None:
        import pandas as pd
        import streamlit as st

        import qvka_app.present

        st.session_state.setdefault(qvka_app.present.KEY, False)
        qvka_app.present.table(pd.DataFrame({"run": ["a", "b"], "loss": [3.9, 3.6]}), key="t")

    at = AppTest.from_function(script)
    at.run()
    assert len(at.dataframe) == 1 and len(at.table) == 0
    at.session_state["presentation"] = True
    at.run()
    assert len(at.table) == 1 and len(at.dataframe) == 0
    assert list(at.table[0].value.index) == ["a", "b"]  # the first column labels the rows
    import qvka_app.present

    assert '[data-testid="stTable"] td' in qvka_app.present._CSS
