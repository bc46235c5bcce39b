"""The Explorer's match space: the captured vectors are the ones the kernel scores, and the
picture is unchanged by every transformation that leaves softmax unchanged."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from qvka_core.analysis import random_model, vectors
from qvka_core.attention.base import MATCHED
from qvka_core.config import AttentionConfig, ModelConfig
from qvka_core.errors import LabError
from qvka_core.model import Transformer

SENTENCE = "There is a beautiful girl who reads by the window."


def _same_up_to_axis_signs(a: np.ndarray, b: np.ndarray) -> bool:
    """PCA axes have arbitrary signs: compare column by column, either way round."""
    return all(np.allclose(a[:, i], b[:, i], atol=1e-8) or
               np.allclose(a[:, i], -b[:, i], atol=1e-8) for i in range(a.shape[1]))


def test_plane_is_invariant_under_what_softmax_ignores() -> None:
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(9, 16)), rng.normal(size=(9, 16)) * 3 + 1
    base_q, base_k, share = vectors.joint_plane(q, k)
    c = rng.normal(size=16) * 5  # every key moved by one vector: each query's scores shift alike
    for q2, k2 in ((q, k + c), (q * 7.0, k / 7.0)):
        moved_q, moved_k, moved_share = vectors.joint_plane(q2, k2)
        both = np.concatenate([base_q, base_k])
        assert _same_up_to_axis_signs(both, np.concatenate([moved_q, moved_k]))
        np.testing.assert_allclose(moved_share, share)
    assert 0 < share[1] <= share[0] and share.sum() <= 1


def test_plane_of_identical_sets_puts_each_query_on_its_key() -> None:
    rng = np.random.default_rng(1)
    q = rng.normal(size=(6, 8))
    qxy, kxy, share = vectors.joint_plane(q, q.copy())
    np.testing.assert_allclose(qxy, kxy, atol=1e-10)
    one_q, one_k, one_share = vectors.joint_plane(q[:1], q[:1])  # one token: a single point
    assert one_q.shape == (1, 2) and np.allclose(one_q, one_k) and one_share.sum() == 0


@pytest.mark.parametrize("variant", ["mha", "gqa", "mqa", "qv", "qvka"])
def test_captured_vectors_reproduce_the_model_probabilities(variant: str) -> None:
    """softmax(q·kᵀ/√d, causal) of every head, from the captured vectors, is what the model
    returned: the picture shows the vectors really matched (GQA heads read their shared key)."""
    loaded = random_model(variant)
    mv = vectors.capture(loaded, SENTENCE, layer=2)
    t = len(mv.tokens)
    causal = np.tril(np.ones((t, t), dtype=bool))
    for h in range(mv.queries.shape[0]):
        q, k, p = mv.head(h)
        scores = np.where(causal, q @ k.T / np.sqrt(q.shape[-1]), -np.inf)
        expected = np.exp(scores - scores.max(1, keepdims=True))
        np.testing.assert_allclose(expected / expected.sum(1, keepdims=True), p, atol=1e-5)
    assert MATCHED.get() is None  # the hook is off again


def test_capture_in_one_thread_is_invisible_to_another_using_the_same_model() -> None:
    """Streamlit sessions share one cached model across threads."""
    loaded = random_model("mha")
    attn = loaded.model.layers[0].attn
    inside, seen_elsewhere = threading.Event(), []

    def other_session() -> None:
        inside.wait(10)
        seen_elsewhere.append(MATCHED.get())
        loaded.model(torch.tensor([[1, 2, 3]]), impl="eager")  # must not land in our list

    t = threading.Thread(target=other_session)
    t.start()
    with vectors._matching(attn) as calls:
        inside.set()
        t.join(10)
    assert seen_elsewhere == [None] and calls == []


def test_mla_head_keys_reproduce_its_argmax() -> None:
    mv = vectors.capture(random_model("mla"), SENTENCE, layer=1)
    for h in range(mv.queries.shape[0]):
        q, k, p = mv.head(h)
        scores = np.where(np.tril(np.ones_like(p, dtype=bool)), q @ k.T, -np.inf)
        assert (scores.argmax(1) == p.argmax(1)).all()


def _qv_model(position: str) -> Transformer:
    attn = AttentionConfig(kind="qv", d_model=64, n_heads=4, position=position)
    torch.manual_seed(0)
    return Transformer(ModelConfig(vocab_size=50, max_seq_len=32, n_layers=1, attention=attn,
                                   ffn_dim=128)).eval()


def test_qv_matches_queries_against_the_values_themselves() -> None:
    ids = torch.arange(10)[None]  # (1, T)
    for position, rotated in (("sinusoidal", False), ("rope", True)):
        model = _qv_model(position)
        with vectors._matching(model.layers[0].attn) as calls, torch.inference_mode():
            model(ids, impl="eager")
        _, k, v = calls[0]  # (1, H, T, D) each
        if rotated:  # RoPE rotates each value: same lengths, other directions
            torch.testing.assert_close(k.norm(dim=-1), v.norm(dim=-1))
            assert not torch.allclose(k, v)
        else:
            assert torch.equal(k, v)


def test_figure_draws_queries_keys_and_each_query_to_its_top_key() -> None:
    runs = {v: vectors.capture(random_model(v), SENTENCE, layer=0) for v in ("mha", "qv")}
    fig = vectors.figure(runs, head=1)
    assert [t.name for t in fig.data] == ["query → its top key", "query", "key"] * 2
    lines, queries, keys = fig.data[3:6]  # the QV panel
    top = runs["qv"].probs[1].argmax(1)
    for j, t in enumerate(top):  # each segment runs from query j to key top[j]
        assert (lines.x[3 * j], lines.y[3 * j]) == (queries.x[j], queries.y[j])
        assert (lines.x[3 * j + 1], lines.y[3 * j + 1]) == (keys.x[t], keys.y[t])
    assert "girl" in queries.text and "%" in fig.layout.annotations[1].text


def test_capture_rejects_bad_input() -> None:
    loaded = random_model("mha")
    with pytest.raises(LabError, match="layer must be in 0..3"):
        vectors.capture(loaded, SENTENCE, layer=4)
    with pytest.raises(LabError, match="enter some text"):
        vectors.capture(loaded, "   ", layer=0)
    with pytest.raises(LabError, match="head must be in 0..7"):
        vectors.capture(loaded, SENTENCE, layer=0).head(8)


def test_hiding_special_tokens_drops_their_points_and_picks_top_keys_among_the_rest() -> None:
    rng = np.random.default_rng(0)
    probs = np.array([[[0.7, 0.1, 0.2, 0.0], [0.6, 0.1, 0.3, 0.0], [0.5, 0.4, 0.1, 0.0],
                       [0.9, 0.05, 0.05, 0.0]]])  # (1, T, T): everyone looks at [CLS] most
    mv = vectors.MatchVectors(tokens=["[CLS]", "a", "b", "[SEP]"],
                              queries=rng.normal(size=(1, 4, 8)), keys=rng.normal(size=(1, 4, 8)),
                              probs=probs, special=(True, False, False, True))
    full = vectors.figure({"x": mv}, head=0)
    assert len(full.data[1].x) == 4 and list(full.data[0].x[1::3]) == [full.data[2].x[0]] * 4
    hidden = vectors.figure({"x": mv}, head=0, hide_special=True)
    lines, queries, keys = hidden.data
    assert list(queries.text) == ["a", "b"] and list(keys.text) == ["a", "b"]
    # "a" looks most at "b" (0.3 > 0.1), "b" at "a" (0.4 > 0.1), once [CLS] is gone
    assert (lines.x[1], lines.x[4]) == (keys.x[1], keys.x[0])
