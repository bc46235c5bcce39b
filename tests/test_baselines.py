"""Count baselines (unigram, interpolated bigram) against a brute-force count in the test,
and the trainer recording them on exactly the windows it scores."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import torch

from qvka_core.baselines import LAMBDAS, bigram_loss, unigram_loss
from qvka_core.config import AttentionConfig, ModelConfig
from qvka_core.model import Transformer


def _brute_bigram(train: list[int], xs: list[int], ys: list[int], vocab: int) -> float:
    uni = Counter(train)
    total = len(train) + vocab  # add-one
    pairs = Counter(zip(train[:-1], train[1:], strict=True))
    ctx = Counter(train[:-1])
    best = math.inf
    for lam in LAMBDAS:
        loss = 0.0
        for x, y in zip(xs, ys, strict=True):
            pu = (uni[y] + 1) / total
            p = lam * pairs[(x, y)] / ctx[x] + (1 - lam) * pu if ctx[x] else pu
            loss -= math.log(p)
        best = min(best, loss / len(xs))
    return best


def test_baselines_equal_a_brute_force_count() -> None:
    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 7, (500,), generator=g)
    val = torch.randint(0, 9, (65,), generator=g)  # ids 7, 8 never seen in training
    x, y = val[:-1].reshape(4, 16), val[1:].reshape(4, 16)
    counts = Counter(train.tolist())
    expect_uni = -sum(math.log((counts[t] + 1) / (500 + 9)) for t in y.flatten().tolist()) / 64
    assert unigram_loss(train, y, 9) == pytest_approx(expect_uni)
    loss, lam = bigram_loss(train, x, y, 9)
    assert loss == pytest_approx(_brute_bigram(train.tolist(), x.flatten().tolist(),
                                               y.flatten().tolist(), 9))
    assert lam in LAMBDAS


def test_unigram_of_uniform_counts_is_log_v_and_unseen_tokens_stay_finite() -> None:
    train = torch.arange(8).repeat(100)
    assert unigram_loss(train, torch.tensor([0, 3, 7]), 8) == pytest_approx(math.log(8))
    assert unigram_loss(torch.zeros(10, dtype=torch.long), torch.tensor([5]), 8) < 50


def test_bigram_learns_a_deterministic_successor() -> None:
    train = torch.arange(300) % 5  # 0 1 2 3 4 0 1 ...: each token has one successor
    x = torch.tensor([[0, 1, 2, 3]])
    y = torch.tensor([[1, 2, 3, 4]])
    loss, lam = bigram_loss(train, x, y, 5)
    assert lam == max(LAMBDAS) and loss < 0.1 < unigram_loss(train, y, 5)


def pytest_approx(value: float):
    import pytest

    return pytest.approx(value, rel=1e-9)


def test_embed_scale_decouples_embedding_scale_from_positions() -> None:
    def build(position: str, scale: bool | None) -> Transformer:
        torch.manual_seed(0)
        return Transformer(ModelConfig(
            attention=AttentionConfig(d_model=64, n_heads=4, position=position),
            n_layers=1, vocab_size=100, ffn_dim=64, max_seq_len=16, embed_scale=scale))

    assert build("sinusoidal", None).cfg.scales_embeddings  # the bundled default
    assert not build("agf", None).cfg.scales_embeddings
    agf = build("agf", True)
    assert agf.cfg.scales_embeddings
    assert abs(agf.tok_emb.weight.std().item() - 64 ** -0.5) < 0.01  # init d^-1/2
    ids = torch.tensor([[3, 4]])
    emb = agf.embed(ids, 0, None)
    assert torch.allclose(emb, agf.tok_emb(ids) * 8.0)  # scaled by sqrt(64)
    assert not build("sinusoidal", False).cfg.scales_embeddings


def test_trainer_records_baselines_on_its_own_windows(tmp_path: Path) -> None:
    from qvka_core.data import fixed_windows, load_tokenizer, token_data
    from qvka_core.train import TrainArgs, read_metrics, run

    text = tmp_path / "t.txt"
    text.write_text("".join(f"Line {i}: the cat sat on the mat, and the dog ran.\n"
                            for i in range(400)), encoding="utf-8")
    args = TrainArgs(preset="tiny", variant="mha", n_layers=1, n_heads=2, data=str(text),
                     steps=2, batch=4, seq_len=16, eval_every=2, eval_batches=2,
                     checkpoint_every=0, out=str(tmp_path), name="r", device="cpu")
    r = run(args)
    first = read_metrics(r.run_dir)[0]
    data = token_data(str(text), load_tokenizer())
    vx, vy = fixed_windows(data.validation, 8, 16)
    assert first["unigram_loss"] == pytest_approx(unigram_loss(data.train, vy,
                                                               data.vocab_size))
    assert first["bigram_loss"] == pytest_approx(bigram_loss(data.train, vx, vy,
                                                             data.vocab_size)[0])
    assert r.bigram_loss == first["bigram_loss"]
