"""qvka_core.analysis: hand-checkable statistics, divergence, rollout, long-input helpers,
POS lens, exports, the explore() engine and the figures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from qvka_app import explorer_views as views
from qvka_app.costs_view import compare_table, custom_config, variant_configs
from qvka_core.analysis import (
    block_pool,
    difference,
    divergence_matrix,
    explore,
    export,
    figures,
    group_order,
    grouped_heads,
    head_stats,
    js_divergence_rows,
    lines,
    pos,
    random_model,
    rollout,
    row_entropy,
    top_k_rows,
)
from qvka_core.errors import ConfigError, LabError

SENTENCE = "There is a beautiful girl."


def causal_uniform(t: int) -> np.ndarray:
    a = np.tril(np.ones((t, t)))
    return a / a.sum(-1, keepdims=True)  # (T, T)


# --- statistics -------------------------
def test_entropy_uniform_is_ln_t() -> None:
    assert row_entropy(np.full(7, 1 / 7)) == pytest.approx(math.log(7))
    assert row_entropy(np.eye(3)).tolist() == [0.0, 0.0, 0.0]


def test_head_stats_identity_and_previous_token() -> None:
    t = 5
    prev = np.zeros((t, t))
    prev[0, 0] = 1.0
    prev[np.arange(1, t), np.arange(t - 1)] = 1.0
    df = head_stats(np.stack([np.eye(t), prev])[None])  # (L=1, H=2, T, T)
    ident, shift = df.iloc[0], df.iloc[1]
    assert ident.entropy == 0 and ident.mean_distance == 0 and ident.prev_token == 0
    assert ident.sink == pytest.approx(1 / t)  # only query 0 looks at token 0
    assert shift.prev_token == 1.0 and shift.mean_distance == pytest.approx((t - 1) / t)
    assert list(df.columns) == ["layer", "head", "entropy", "sink", "mean_distance",
                                "prev_token"]


def test_head_stats_uniform_bidirectional_entropy() -> None:
    t = 6
    df = head_stats(np.full((1, 1, t, t), 1 / t))
    assert df.entropy[0] == pytest.approx(math.log(t))
    assert df.sink[0] == pytest.approx(1 / t)


def test_js_identical_zero_disjoint_ln2() -> None:
    p = causal_uniform(4)
    assert js_divergence_rows(p, p) == pytest.approx(np.zeros(4))
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert js_divergence_rows(a, b) == pytest.approx(math.log(2))


def test_divergence_view_is_in_bits_like_the_convert_report() -> None:
    from qvka_core.analysis.explorer import ExplorerResult, VariantRun

    def run(a: np.ndarray) -> VariantRun:  # a: (H, T, T)
        return VariantRun(name="r", variant="mha", tokens=["a", "b"], offsets=[(0, 1), (2, 3)],
                          attentions=[a.astype(np.float16)], groups=[[[0]]], causal=False,
                          stats=head_stats([a]), n_tokens_in_text=2)

    first, second = np.array([[[1.0, 0.0], [1.0, 0.0]]]), np.array([[[0.0, 1.0], [0.0, 1.0]]])
    res = ExplorerResult(runs={"x": run(first), "y": run(second), "z": run(first)}, layer=0,
                         head=None)
    fig, mean = views.divergence(res, "x", "y", views.ViewOptions())
    assert mean == pytest.approx(1.0) and "bits" in fig.layout.title.text  # disjoint: 1 bit
    assert views.divergence(res, "x", "z", views.ViewOptions())[1] == 0


def test_divergence_matrix_shape_and_mismatch() -> None:
    x = np.stack([causal_uniform(4)] * 3)[None].repeat(2, 0)  # (L=2, H=3, T, T)
    m = divergence_matrix(x, x)
    assert m.shape == (2, 3) and np.allclose(m, 0)
    with pytest.raises(LabError):
        divergence_matrix(x, x[:, :2])


def test_difference_signed() -> None:
    a, b = np.eye(2), causal_uniform(2)
    d = difference(a, b)
    assert d[1, 1] == pytest.approx(0.5) and d[1, 0] == pytest.approx(-0.5)


def test_rollout_identity_and_one_layer() -> None:
    t = 4
    eye = np.eye(t)[None, None]  # (1, 1, T, T)
    assert np.allclose(rollout(np.repeat(eye, 3, 0)), np.eye(t))
    a = causal_uniform(t)
    r = rollout(a[None, None])[0]
    assert np.allclose(r, 0.5 * np.eye(t) + 0.5 * a)


def test_rollout_causal_stays_lower_and_rows_sum_one() -> None:
    a = np.stack([causal_uniform(5)] * 2)[None].repeat(3, 0)  # (3, 2, 5, 5)
    r = rollout(a)
    assert np.allclose(np.triu(r[-1], 1), 0)
    assert np.allclose(r.sum(-1), 1)
    bi = rollout(np.full((2, 1, 3, 3), 1 / 3))
    assert np.allclose(bi.sum(-1), 1) and (bi > 0).all()


def test_block_pool_and_labels() -> None:
    m = np.arange(16, dtype=float).reshape(4, 4)
    pooled, labels = block_pool(m, ["a", "b", "c", "d"], 2)
    assert pooled.shape == (2, 2) and np.allclose(pooled.sum(-1), 1)
    assert labels == ["0-1:ab", "2-3:cd"]
    pooled3, labels3 = block_pool(np.eye(5), list("abcde"), 2)
    assert pooled3.shape == (3, 3) and labels3[-1] == "4-4:e"


def test_drop_tokens_renormalises_rows_over_the_keys_left() -> None:
    from qvka_core.analysis.stats import drop_tokens

    m = np.array([[1.0, 0.0, 0.0],  # [CLS] attends to itself
                  [0.5, 0.25, 0.25],  # half on [CLS]: the rest doubles
                  [0.2, 0.0, 0.8]])
    out, toks = drop_tokens(m, ["[CLS]", "a", "b"], [False, True, True])
    assert toks == ["a", "b"]
    assert out.tolist() == [[0.5, 0.5], [0.0, 1.0]]
    only_cls = drop_tokens(np.array([[1.0, 0.0], [1.0, 0.0]]), ["[CLS]", "a"], [False, True])[0]
    assert only_cls.tolist() == [[0.0]]  # all its weight was on [CLS]: a zero row, not NaN


def special_result() -> object:
    """An ExplorerResult over '[CLS] a b [SEP]' (offsets (0, 0) = added by the tokenizer)."""
    from qvka_core.analysis.explorer import ExplorerResult, VariantRun

    rng = np.random.default_rng(0)
    runs = {}
    for label in ("x", "y"):
        a = rng.random((2, 4, 4))
        a /= a.sum(-1, keepdims=True)  # (H, T, T) rows sum to 1
        runs[label] = VariantRun(
            name=label, variant="mha", tokens=["[CLS]", "a", "b", "[SEP]"],
            offsets=[(0, 0), (0, 1), (2, 3), (0, 0)], attentions=[a.astype(np.float16)],
            groups=[[[0], [1]]], causal=False, stats=head_stats([a]), n_tokens_in_text=4)
    return ExplorerResult(runs=runs, layer=0, head=None)


def test_hide_special_tokens_in_every_map_view() -> None:
    res = special_result()
    assert res.runs["x"].special == [True, False, False, True]
    hide = views.ViewOptions(hide_special=True)
    sbs = views.side_by_side(res, hide)
    assert list(sbs.layout.yaxis.ticktext) == ["a", "b"]
    z = np.asarray(sbs.data[0].z)
    assert z.shape == (2, 2) and np.allclose(z.sum(-1), 1)
    assert views.line_tokens(res, hide) == ["a", "b"]
    assert len(views.line_tokens(res, views.ViewOptions())) == 4  # off: all four
    diff = np.asarray(views.difference(res, "x", "y", hide).data[0].z)
    expected = (views.prepare(res.map("x"), res.tokens("x"), hide, res.runs["x"].special)[0]
                - views.prepare(res.map("y"), res.tokens("y"), hide, res.runs["y"].special)[0])
    assert np.allclose(diff, expected) and np.allclose(diff.sum(-1), 0)
    assert np.asarray(views.rollout(res, hide).data[0].z).shape == (2, 2)
    shown = res.pos_pairs("x", "I ran", hide_special=True)  # "I" PRON, "ran" VERB
    assert "SPECIAL" not in shown.index and "SPECIAL" not in shown.columns
    np.testing.assert_allclose(shown.to_numpy().sum(-1), 1)
    kept = views.prepare(res.map("x"), res.tokens("x"), hide, res.runs["x"].special)[0]
    np.testing.assert_allclose(shown.to_numpy(), kept)  # one token per POS: the map itself
    assert "SPECIAL" in res.pos_pairs("x", "I ran").index  # off: the special row stays
    figs, caption = views.pos_lens(res, "I ran", hide)
    assert "special tokens hidden" in caption
    assert "SPECIAL" not in figs["x"].data[0].y


def test_pooled_difference_stays_a_difference_of_distributions(models: dict) -> None:
    """Pooling used to renormalise the difference's rows, which sum to ~0: values of 1e11."""
    res = explore({"mha": models["mha"], "qv": models["qv"]}, "word " * 12)
    d = np.asarray(views.difference(res, "mha", "qv", views.ViewOptions(block=3)).data[0].z)
    assert d.shape == (4, 4) and np.abs(d).max() <= 1.0
    assert np.allclose(d.sum(-1), 0, atol=1e-9)


def test_top_k_rows_keeps_k() -> None:
    m = np.array([[0.1, 0.5, 0.4], [0.6, 0.3, 0.1]])
    out = top_k_rows(m, 1)
    assert out.tolist() == [[0.0, 0.5, 0.0], [0.6, 0.0, 0.0]]
    assert np.array_equal(top_k_rows(m, 5), m)
    with pytest.raises(LabError):
        top_k_rows(m, 0)


def test_group_order_and_names() -> None:
    order, labels = group_order([[0, 1], [2, 3]])
    assert order == [0, 1, 2, 3] and labels[2] == "kv1·h2"
    assert grouped_heads([[0, 1, 2]])[0][0].startswith("shared")
    assert grouped_heads([[0], [1]])[1] == ("head 1 (own KV)", [1])


# --- POS lens -------------------------
def test_pos_alignment_on_paper_sentence() -> None:
    words = pos.tag_words(SENTENCE)
    # word tokens, a subword split of "beautiful", and a special token without a span
    offsets = [(0, 0), (0, 5), (6, 8), (9, 10), (11, 17), (17, 20), (21, 25), (25, 26)]
    tags = pos.align_pos(offsets, words)
    assert tags[0] == pos.SPECIAL
    assert tags[4] == tags[5] == "ADJ" and tags[6] == "NOUN" and tags[7] == "PUNCT"


def test_pos_pair_matrix_has_noun_to_adj() -> None:
    tags = ["PRON", "AUX", "DET", "ADJ", "NOUN", "PUNCT"]
    a = causal_uniform(6)
    df = pos.pos_pair_matrix(a, tags)
    assert df.loc["NOUN", "ADJ"] == pytest.approx(1 / 5)  # "girl" spreads over 5 keys
    assert np.allclose(df.sum(1), 1)
    with pytest.raises(LabError):
        pos.pos_pair_matrix(a, tags[:3])


# --- export -------------------------
def test_export_csv_long_format_and_json(monkeypatch: pytest.MonkeyPatch) -> None:
    attn = [np.stack([causal_uniform(3)] * 2)]  # 1 layer, 2 heads, T=3
    df = export.attention_long(attn, ["a", "b", "c"])
    assert list(df.columns) == export.CSV_COLUMNS
    assert len(df) == 2 * 6  # causal zeros dropped: 6 non-zero weights per head
    row = df[(df.query_index == 2) & (df.key_index == 0)].iloc[0]
    assert row.query_token == "c" and row.key_token == "a" and row.weight == pytest.approx(1 / 3)
    payload = json.loads(export.attention_json(attn, ["a", "b", "c"], meta={"variant": "mha"}))
    assert payload["shape"] == [1, 2, 3, 3] and payload["variant"] == "mha"
    assert export.attention_csv(attn, ["a", "b", "c"]).startswith("layer,head,query_index")
    monkeypatch.setattr(export, "MAX_CSV_ROWS", 10)  # 2 layers x 2 heads x 9 cells > 10
    big = [np.full((2, 3, 3), 1 / 3)] * 2
    csv = export.attention_csv(big, ["a", "b", "c"], layer=1)
    assert csv.count("\n") == 2 * 9 + 1 and "\n1,0,0," in csv  # chosen layer only


# --- explore() on randomly initialised models -------------------------
@pytest.fixture(scope="module")
def models() -> dict:
    return {v: random_model(v) for v in ("mha", "gqa", "mla", "qv")}


def test_explore_runs_every_variant(models: dict) -> None:
    res = explore(models, SENTENCE, layer=1, head=None)
    assert res.tokens("mha") == ["There", "is", "a", "beautiful", "girl", "."]
    for run in res.runs.values():
        assert len(run.attentions) == 4 and run.attentions[0].shape == (8, 6, 6)
        assert np.allclose(run.attentions[2].astype(float).sum(-1), 1, atol=2e-3)
        assert np.allclose(np.triu(run.attentions[0].astype(float), 1), 0)
        assert len(run.stats) == 4 * 8
    assert res.runs["gqa"].groups[0] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert res.runs["mla"].groups[0] == [list(range(8))]
    assert res.divergence("mha", "mha").max() == 0
    assert res.divergence("mha", "qv").shape == (4, 8)
    assert res.map("gqa").shape == (6, 6) and res.rollout("qv").shape == (6, 6)
    df = res.pos_pairs("mha", SENTENCE)
    assert "ADJ" in df.columns and "NOUN" in df.index


def test_explore_user_errors(models: dict) -> None:
    with pytest.raises(LabError, match="layer 9"):
        explore(models, SENTENCE, layer=9)
    with pytest.raises(LabError, match="head"):
        explore(models, SENTENCE, head=8)
    with pytest.raises(LabError, match="text"):
        explore(models, "   ")
    with pytest.raises(LabError):
        explore({}, SENTENCE)


def test_explore_truncates_long_text(models: dict) -> None:
    res = explore({"mha": models["mha"]}, "word " * 400)
    run = res.runs["mha"]
    assert run.truncated and run.n_tokens_in_text == 400 and len(run.tokens) == 256


def test_views_long_input_options(models: dict) -> None:
    res = explore({"mha": models["mha"]}, "word " * 60)
    m, toks = views.prepare(res.map("mha"), res.tokens("mha"),
                            views.ViewOptions(top_k=3, block=4, zoom=(0, 40)))
    assert m.shape == (10, 10) and len(toks) == 10


def test_side_by_side_uses_two_columns_for_long_inputs(models: dict) -> None:
    """Three panels of 26+ tokens were ~150 px wide, their key labels overlapping."""
    three = {v: models[v] for v in ("mha", "gqa", "qv")}
    for text, cols in (("a short sentence here .", 3), ("word " * 26, 2)):
        fig = views.side_by_side(explore(three, text), views.ViewOptions())
        second_panel_starts = fig.layout.xaxis2.domain[0]  # past mid-page only with 2 columns
        assert (second_panel_starts > 0.5) == (cols == 2)


# --- figures -------------------------
def test_heatmap_repeated_tokens_keep_rows() -> None:
    fig = figures.heatmap(causal_uniform(3), ["the", "cat", "the"])
    trace = fig.data[0]
    assert np.asarray(trace.z).shape == (3, 3)
    assert list(fig.layout.yaxis.ticktext) == ["the", "cat", "the"]
    assert "→" in trace.hovertemplate


def test_difference_figure_centred_and_presentation_font() -> None:
    fig = figures.difference_heatmap(np.array([[0.2, -0.1], [0.0, 0.0]]), ["a", "b"],
                                     presentation=True)
    assert fig.data[0].zmid == 0 and fig.data[0].zmin == -fig.data[0].zmax
    assert fig.layout.font.size == 20
    # token labels too, explicitly: Streamlit's chart theme sets tick fonts of its own
    assert fig.layout.xaxis.tickfont.size >= 20 and fig.layout.yaxis.tickfont.size >= 20
    assert fig.layout.hoverlabel.font.size >= 20


def test_overview_grid_mosaic_shape() -> None:
    attn = [np.stack([causal_uniform(4)] * 2)] * 3  # 3 layers, 2 heads, T=4
    fig = figures.overview_grid(attn, [1, 0], ["h1", "h0"])
    assert np.asarray(fig.data[0].z).shape == (3 * 5, 2 * 5)


def drawn_lines(fig) -> set[tuple[int, int, str]]:
    """(query, key, colour) of every line the figure draws, read back from its traces."""
    out = set()
    for tr in fig.data:
        if tr.mode != "lines" or tr.x is None or tr.x[0] is None:
            continue
        ys = np.asarray(tr.y, dtype=float).reshape(-1, 3)  # (lines, [query y, key y, gap])
        out |= {(int(-a), int(-b), tr.line.color) for a, b, _ in ys}
    return out


def test_line_segments_levels_threshold_and_focus() -> None:
    m = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.9, 0.05, 0.05]])
    seg = lines.segments(m, levels=8)
    assert list(zip(*seg[8], strict=True)) == [(0, 0)]  # the largest weight: full opacity
    assert list(zip(*seg[4], strict=True)) == [(1, 0), (1, 1)]  # 0.5 of the max: half
    assert list(zip(*seg[7], strict=True)) == [(2, 0)]  # 0.9 -> round(7.2) = 7
    drawn = {pair for q, k in seg.values() for pair in zip(q, k, strict=True)}
    assert (2, 1) not in drawn  # 0.05 < half a step (1/16): not drawn
    focus = lines.segments(m, focus=1)
    assert {int(q) for qs, _ in focus.values() for q in qs} == {1}
    assert lines.segments(np.zeros((2, 2))) == {}
    assert lines.segments(m, focus=3) == {}  # a query this map does not have: no lines


def test_token_lines_draw_each_weight_between_the_right_tokens() -> None:
    prev = np.eye(4, k=-1)  # each query attends to the token before it
    prev[0, 0] = 1.0
    diag = np.eye(4)
    toks = ["a", "b", "c", "d"]
    fig = lines.token_lines({"mha": [("mean", prev)], "qv": [("mean", diag)]},
                            {"mha": toks, "qv": toks})
    assert {(q, k) for q, k, _ in drawn_lines(fig)} == {(0, 0), (1, 0), (2, 1), (3, 2),
                                                        (1, 1), (2, 2), (3, 3)}
    assert [a.text for a in fig.layout.annotations] == ["mha", "qv"]
    heads = lines.token_lines({"gqa": [("head 0", prev), ("head 1", diag)]}, {"gqa": toks},
                              focus=2)
    got = drawn_lines(heads)
    assert {(q, k) for q, k, _ in got} == {(2, 1), (2, 2)}  # only the focused query
    assert len({c for _, _, c in got}) == 2  # one colour per head
    legend = [tr.name for tr in heads.data if tr.showlegend is not False and tr.name]
    assert legend == ["head 0", "head 1"]
    # one opacity scale across panels: a uniform map stays faint next to a peaked one
    flat = lines.token_lines({"peaked": [("m", diag)], "flat": [("m", np.full((4, 4), 0.25))]},
                             {"peaked": toks, "flat": toks})
    opacity = {round(float(tr.opacity), 3) for tr in flat.data if tr.mode == "lines"}
    assert opacity == {1.0, 0.25}  # diag at 8/8, the uniform 0.25 at round(8 · 0.25) / 8


def test_token_lines_view_follows_layer_head_and_long_input_options(models: dict) -> None:
    alone = explore({"mha": models["mha"]}, SENTENCE, layer=2, head=3)
    one = views.token_lines(alone, views.ViewOptions(top_k=1))
    expected = alone.map("mha").argmax(-1)  # top-1 per query (>= 1/6): one line per query
    assert {(q, k) for q, k, _ in drawn_lines(one)} == {(q, int(expected[q])) for q in range(6)}
    assert "layer 2, head 3" in one.layout.title.text
    res = explore({"mha": models["mha"], "gqa": models["gqa"]}, SENTENCE, layer=2, head=3)
    every = views.token_lines(res, views.ViewOptions(), every_head=True)
    assert "every head" in every.layout.title.text
    names = {tr.name for tr in every.data if tr.mode == "lines"}
    assert names == {f"head {h}" for h in range(8)}
    pooled = views.ViewOptions(block=2)
    shown = views.line_tokens(res, pooled)  # what the focus picker offers
    assert len(shown) == 3 and shown == views.prepare(res.map("gqa"), res.tokens("gqa"),
                                                      pooled)[1]
    assert max(q for q, _, _ in drawn_lines(views.token_lines(res, pooled))) == 2


@pytest.mark.skipif(not figures.export_available()[0], reason="kaleido or Chromium missing")
def test_static_export_png_svg() -> None:
    fig = figures.heatmap(causal_uniform(3), ["a", "b", "c"])
    assert figures.to_image(fig, "png")[:4] == b"\x89PNG"
    assert b"<svg" in figures.to_image(fig, "svg")[:400]


# --- costs view -------------------------
def test_cost_table_and_invalid_dims() -> None:
    base = custom_config(d_model=64, n_heads=4, n_kv_heads=2, n_layers=2, ffn_dim=128,
                         vocab_size=256)
    table = compare_table(variant_configs(base, ["mha", "qv"], causal=True), seq_len=16,
                          batch=1, dtype="bf16", causal_halving=True)
    assert list(table.columns) == ["mha", "qv"]
    # QV keeps the model's 2 KV heads and caches V only: a quarter of MHA's K and V of 4
    assert table.loc["KV bytes / token", "qv"] * 4 == table.loc["KV bytes / token", "mha"]
    with pytest.raises(ConfigError, match="n_heads"):
        custom_config(d_model=63, n_heads=4, n_kv_heads=2, n_layers=2, ffn_dim=128,
                      vocab_size=256)


def test_colour_scales_are_sent_as_rgb_and_presentation_brightens_with_weight() -> None:
    """Streamlit's frontend drew Inferno's '#000004' stop pink: zero weights and the causal
    mask came out brighter than 0.1-0.3 on a projector. Every stop now goes out as rgb()."""
    from qvka_core.analysis import figures

    fig = figures.heatmap(np.eye(3), ["a", "b", "c"], presentation=True)
    stops = [c for _, c in fig.data[0].colorscale]
    assert all(c.startswith("rgb(") for c in stops)
    luminance = [0.2126 * r + 0.7152 * g + 0.0722 * b for r, g, b in
                 (map(int, c[4:-1].split(",")) for c in stops)]
    assert luminance == sorted(luminance) and luminance[0] < 10  # black at 0, rising
    for scale in (figures.SCALE, figures.DIVERGING):
        assert all(c.startswith("rgb(") for _, c in scale)


def test_parameter_chart_gives_every_component_its_own_colour() -> None:
    from qvka_app.costs_view import params_figure, params_long
    from qvka_core.presets import get_preset

    cfgs = variant_configs(get_preset("gpt2"), ["mha", "gqa", "mla", "qvka", "qv"], causal=True)
    fig = params_figure(params_long(cfgs))
    colours = [t.marker.color for t in fig.data]
    assert len(fig.data) > 10 and len(set(colours)) == len(colours)  # plotly's 10 repeated


def test_human_bytes_stays_short() -> None:
    from qvka_app.costs_view import human_bytes

    assert human_bytes(512) == "512 B"
    assert human_bytes(36 * 1024) == "36.0 KiB"
    assert human_bytes(1024**2) == "1.0 MiB"  # Llama-3-8B MHA at fp32 was "1,024.0 KiB", cut off
    assert human_bytes(3.5 * 1024**3) == "3.5 GiB"
    assert human_bytes(5 * 1024**4) == "5,120.0 GiB"


def test_presentation_mode_labels_fewer_tokens_in_its_larger_type() -> None:
    from qvka_core.analysis import figures

    toks = [f"t{i}" for i in range(60)]
    m = np.full((60, 60), 1 / 60)
    shown = {p: len(figures.side_by_side({"a": m}, {"a": toks}, presentation=p)
                    .layout.xaxis.ticktext) for p in (False, True)}
    assert shown[True] <= 20 < shown[False]  # 60 labels at 20 pt overlapped on a projector
