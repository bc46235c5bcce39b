"""Explorer views from issue 11: KV-groups rows name the layer, the Statistics table leaves out
a causal model's query 0 and rounds per column, and the Difference tab matches heads."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from qvka_app import explorer_views as views
from qvka_core.analysis import head_stats, headmatch
from qvka_core.analysis.explorer import ExplorerResult, VariantRun


def causal_random(rng: np.random.Generator, n_layers: int, n_heads: int, t: int
                  ) -> list[np.ndarray]:
    """Per layer (H, T, T) random causal attention rows (sharp enough to tell heads apart)."""
    logits = rng.normal(size=(n_layers, n_heads, t, t)) * 3.0
    logits = np.where(np.tril(np.ones((t, t), bool)), logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return list(p / p.sum(-1, keepdims=True))


def run_of(attentions: list[np.ndarray], *, causal: bool = True) -> VariantRun:
    t = attentions[0].shape[-1]
    groups = [[[h] for h in range(attentions[0].shape[0])] for _ in attentions]
    return VariantRun(name="r", variant="mha", tokens=[f"t{i}" for i in range(t)],
                      offsets=[(2 * i, 2 * i + 1) for i in range(t)], groups=groups,
                      attentions=[a.astype(np.float16) for a in attentions], causal=causal,
                      stats=head_stats(attentions, first_query=int(causal)),
                      n_tokens_in_text=t)


# --- head matching --------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_assignment_is_the_brute_force_optimum(seed: int) -> None:
    cost = np.random.default_rng(seed).random((6, 6))
    best = min(itertools.permutations(range(6)),
               key=lambda p: sum(cost[i, p[i]] for i in range(6)))
    perm = headmatch.assign(cost)
    assert sorted(perm) == list(range(6))  # a permutation
    assert cost[np.arange(6), perm].sum() == pytest.approx(sum(cost[i, best[i]]
                                                              for i in range(6)))


def test_head_cost_is_the_mean_row_js_divergence() -> None:
    from qvka_core.analysis.stats import js_divergence_rows

    rng = np.random.default_rng(4)
    a, b = causal_random(rng, 1, 3, 5)[0], causal_random(rng, 1, 4, 5)[0]
    cost = headmatch.head_cost(a, b)
    assert cost.shape == (3, 4)
    for i in range(3):
        for j in range(4):  # the KL form of JS, row by row, then the mean over queries
            assert cost[i, j] == pytest.approx(js_divergence_rows(a[i], b[j]).mean(), abs=1e-6)


def test_matching_a_permuted_model_recovers_the_inverse_and_zero_difference() -> None:
    rng = np.random.default_rng(1)
    a = causal_random(rng, n_layers=3, n_heads=6, t=7)
    sigmas = [rng.permutation(6) for _ in a]
    b = [layer[sigma] for layer, sigma in zip(a, sigmas, strict=True)]  # B head j = A head σ(j)
    res = ExplorerResult(runs={"A": run_of(a), "B": run_of(b)}, layer=1, head=2)
    opts = views.ViewOptions()
    perms, table = views.head_matching(res, "A", "B")
    for li, sigma in enumerate(sigmas):
        assert list(perms[li]) == list(np.argsort(sigma))  # σ⁻¹
    assert list(table.loc[1, [f"A head {i}" for i in range(6)]]) == list(np.argsort(sigmas[1]))
    unmatched = views.divergence(res, "A", "B", opts)[1]
    matched = views.divergence(res, "A", "B", opts, perms)[1]
    assert unmatched > 0.05 and matched == pytest.approx(0.0, abs=1e-6)
    diff = np.asarray(views.difference(res, "A", "B", opts, perms).data[0].z, dtype=float)
    raw = np.asarray(views.difference(res, "A", "B", opts).data[0].z, dtype=float)
    assert np.nanmax(np.abs(diff)) < 1e-3 < np.nanmax(np.abs(raw))  # float16 maps
    summary = views.matching_summary(perms, unmatched, matched, res.head)
    moved = sum(int((s != np.arange(6)).sum()) for s in sigmas)
    assert summary.startswith(f"{moved} of 18 heads")


def test_the_difference_tab_warns_that_heads_are_not_aligned() -> None:
    assert "not aligned" in views.ALIGNMENT_NOTE and "head i" in views.ALIGNMENT_NOTE


# --- statistics -----------------------------------------------------------------------------
def test_causal_stats_leave_out_query_zero() -> None:
    t = 5
    uniform = np.tril(np.ones((t, t))) / np.arange(1, t + 1)[:, None]  # row i: 1/(i+1)
    full = head_stats(uniform[None, None])
    kept = head_stats(uniform[None, None], first_query=1)
    # by hand over queries 1..4: entropy ln(i+1), sink 1/(i+1)
    assert kept["entropy"][0] == pytest.approx(np.mean([math.log(i + 1) for i in range(1, t)]))
    assert kept["sink"][0] == pytest.approx(np.mean([1 / (i + 1) for i in range(1, t)]))
    assert full["sink"][0] == pytest.approx(np.mean([1 / (i + 1) for i in range(t)]))
    assert kept["prev_token"][0] == pytest.approx(full["prev_token"][0])  # always from q1


def test_stats_table_rounds_each_column_and_caption_says_query_zero() -> None:
    rng = np.random.default_rng(2)
    res = ExplorerResult(runs={"A": run_of(causal_random(rng, 2, 3, 6))}, layer=1, head=None)
    table = views.stats_table(res)
    assert list(table["layer"].unique()) == [1]
    for col, digits in views.STATS_DECIMALS.items():
        values = table[col].to_numpy()
        assert np.allclose(values, np.round(values, digits), atol=0, rtol=0)
        assert not np.allclose(values, np.round(values, digits - 1))  # not fewer decimals
    assert "query 0 left out" in views.stats_caption(res)
    bidirectional = ExplorerResult(runs={"A": run_of(causal_random(rng, 1, 2, 4),
                                                     causal=False)}, layer=0, head=None)
    assert "every query row" in views.stats_caption(bidirectional)


# --- KV groups ------------------------------------------------------------------------------
def test_kv_groups_rows_name_the_selected_layer() -> None:
    rng = np.random.default_rng(3)
    res = ExplorerResult(runs={"A": run_of(causal_random(rng, 4, 2, 5))}, layer=3, head=None)
    fig, caption = views.groups(res, "A", views.ViewOptions())
    assert list(fig.layout.yaxis.ticktext) == ["layer 3"]
    assert caption.startswith("layer 3:")


def test_kv_groups_name_what_the_heads_share() -> None:
    """V-shared heads keep their own K and share only V: its groups must not read "KV"."""
    import dataclasses

    rng = np.random.default_rng(4)
    run = run_of(causal_random(rng, 1, 4, 5))
    vshared = dataclasses.replace(run, variant="vshared", groups=[[[0, 1], [2, 3]]])
    res = ExplorerResult(runs={"V": vshared}, layer=0, head=None)
    fig, caption = views.groups(res, "V", views.ViewOptions())
    assert caption == "layer 0: V head 0: heads 0, 1; V head 1: heads 2, 3"
    assert fig.layout.title.text.endswith("heads grouped by shared V")
    mla = dataclasses.replace(run, variant="mla", groups=[[[0, 1, 2, 3]]])
    _, caption = views.groups(ExplorerResult(runs={"M": mla}, layer=0, head=None), "M",
                              views.ViewOptions())
    assert "shared latent (all heads)" in caption
