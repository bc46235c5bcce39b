"""paper.py: the paper's numbers, the paper-mini grid, aggregation to mean ± sd, claims()."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from qvka_core import jobs, paper
from qvka_core.errors import RunError
from qvka_core.jobs.store import atomic_write_json

FAKE = [sys.executable, str(Path(__file__).parent / "fixtures" / "fake_trainer.py")]
TINY = {"steps": 4, "batch": 2, "seq_len": 16, "warmup": 1, "eval_every": 4,
        "eval_batches": 1, "log_every": 2, "checkpoint_every": 4}


def test_paper_tables_match_notes() -> None:
    acc = {(r["cell"], r["position"]): r["valid_acc"] for r in paper.PAPER_TABLES}
    assert acc[("qv", "sinusoidal")] == 70.0756 and acc[("qkv", "agf")] == 70.7305
    assert round(acc[("qv", "sinusoidal")] - acc[("qkv", "sinusoidal")], 3) == -0.516
    assert round(acc[("qvka2x", "agf")] - acc[("qkv", "agf")], 3) == -0.039
    assert "[S]" in paper.SOURCE


def test_grid_is_full_with_equal_budgets_and_parses() -> None:
    from qvka_core.cli import _Parser
    from qvka_core.cli import train as train_cli
    from qvka_core.train.setup import model_config

    runs = paper.grid_runs()
    assert len(runs) == (2 * 2 + 2) * 5 and len({r["name"] for r in runs}) == 30
    assert {r["position"] for r in runs if r["cell"].startswith("qvka")} == {"agf"}
    assert len(paper.grid_runs(qvka_both=True)) == 40
    parser = _Parser(prog="train")
    train_cli.add_arguments(parser)
    budgets = set()
    for r in runs:
        a = train_cli.build_args(parser.parse_args(r["argv"] + ["--name", r["name"]]))
        budgets.add((a.steps, a.batch, a.seq_len, a.lr, a.data, a.preset, a.eval_every,
                     a.eval_batches, a.checkpoint_every, a.embed_scale, a.n_heads))
        cfg = model_config(a, 4096)
        assert (cfg.n_heads, cfg.attention.head_dim, cfg.scales_embeddings) == (16, 8, True)
        if r["cell"].startswith("qvka"):
            assert a.d_ctx == (8 if r["cell"] == "qvka1x" else 16) and a.variant == "qvka"
    assert len(budgets) == 1
    (steps, *_), = budgets
    assert steps * 16 * 128 > 3_000_000  # ~3 M tokens per run
    longer = paper.grid_runs(steps_mult=2)[0]["argv"]
    assert longer[longer.index("--steps") + 1] == str(2 * steps)
    assert longer[longer.index("--eval-every") + 1] == str(2 * steps // paper.EVAL_POINTS)
    assert longer[longer.index("--checkpoint-every") + 1] == str(2 * steps // paper.CHECKPOINTS)
    argvs = paper.grid_argvs(out="somewhere", seeds=[0], cells=["qv"], positions=["agf"])
    assert argvs == [paper.grid_runs(seeds=[0], cells=["qv"], positions=["agf"])[0]["argv"]
                     + ["--out", "somewhere", "--name", "paper-mini-qv-agf-s0"]]
    with pytest.raises(RunError, match="unknown"):
        paper.grid_runs(cells=["qk"])
    with pytest.raises(RunError, match="empty"):
        paper.grid_runs(cells=["qvka1x"], positions=["sin"])
    for bad in ({"seeds": [-1]}, {"seeds": []}, {"steps_mult": 0}, {"steps_mult": -2},
                {"steps_mult": float("nan")}):
        with pytest.raises(RunError):
            paper.grid_runs(**bad)


def test_key_side_shares_are_the_papers() -> None:
    """notes/paper.md §6: QV-Ka's key side is ~19 % (d_ctx = d_h) and ~31 % (2·d_h) of W_K
    at d 1024, 16 heads of 64; the grid's 16 heads of 8 at d 128 keep both ratios."""
    assert paper.key_side_share(paper.HEAD_DIM) == pytest.approx(196_608 / 1_048_576)
    assert paper.key_side_share(2 * paper.HEAD_DIM) == pytest.approx(327_680 / 1_048_576)


def _fake_run(root: Path, name: str, loss: float, acc: float, state: str = "completed",
              unigram: float = 6.4, bigram: float = 4.6) -> None:
    d = root / name
    d.mkdir(parents=True)
    atomic_write_json(d / "status.json", {"state": state, "step": 10})
    (d / "metrics.jsonl").write_text(
        json.dumps({"step": 0, "tokens": 0, "val_loss": 9.0, "val_acc": 0.0,
                    "unigram_loss": unigram, "bigram_loss": bigram}) + "\n"
        + json.dumps({"step": 5, "tokens": 50, "val_loss": 6.0, "val_acc": 0.1,
                      "tokens_per_s": 1000.0}) + "\n"
        + json.dumps({"step": 10, "tokens": 100, "val_loss": loss, "val_acc": acc,
                      "tokens_per_s": 1200.0, "elapsed_s": 60.0}) + "\n")


def test_untrained_grid_supports_no_claim(tmp_path: Path) -> None:
    """A grid whose cells are not below the bigram (models that have not learned which word
    follows which) supports no claim, however small its differences."""
    for cell in ("qkv", "qv", "qvka2x"):
        for pos in ("sin", "agf"):
            for seed, eps in enumerate((-0.01, 0.0, 0.01)):
                _fake_run(tmp_path, f"paper-mini-{cell}-{pos}-s{seed}", 4.7 + eps, 0.01)
    verdicts = paper.claims(paper.aggregate(tmp_path))
    assert [v["verdict"] for v in verdicts] == ["insufficient training"] * 3
    assert "bigram" in verdicts[0]["text"] and "4.700 ≥ 4.600" in verdicts[0]["text"]


SEED_NOISE = (-0.03, 0.01, 0.04, -0.02, 0.0)  # shared by every cell of a seed (paired)


def _results(tmp_path: Path, means: dict[str, float], jitter: float = 0.0) -> dict:
    """Cells with per-seed losses mean + SEED_NOISE[s] (+ a cell-specific wobble)."""
    for i, (key, loss) in enumerate(means.items()):
        cell, pos = key.split("/")
        for seed, noise in enumerate(SEED_NOISE):
            wobble = jitter * ((seed * 7 + i * 3) % 5 - 2) / 2
            _fake_run(tmp_path, f"paper-mini-{cell}-{pos}-s{seed}", loss + noise + wobble,
                      0.3 - loss / 100)
    return paper.aggregate(tmp_path)


def test_aggregate_mean_sd_curve_and_incomplete(tmp_path: Path) -> None:
    _fake_run(tmp_path, "paper-mini-qv-sin-s0", 4.0, 0.30)
    _fake_run(tmp_path, "paper-mini-qv-sin-s1", 4.2, 0.32)
    _fake_run(tmp_path, "paper-mini-qv-sin-s2", 9.9, 0.99, state="running")
    _fake_run(tmp_path, "unrelated-run", 1.0, 1.0)
    res = paper.aggregate(tmp_path)
    cell = res["cells"]["qv/sinusoidal"]
    assert cell["n"] == 2 and cell["seeds"] == [0, 1]
    assert cell["val_loss_mean"] == pytest.approx(4.1)
    assert cell["val_loss_sd"] == pytest.approx(0.1414, abs=1e-4)
    assert cell["val_acc_mean"] == pytest.approx(31.0)
    assert (cell["unigram_loss"], cell["bigram_loss"]) == (6.4, 4.6)
    assert cell["curve"] == [{"tokens": 0, "mean": 9.0, "min": 9.0, "max": 9.0},
                             {"tokens": 50, "mean": 6.0, "min": 6.0, "max": 6.0},
                             {"tokens": 100, "mean": pytest.approx(4.1), "min": 4.0,
                              "max": 4.2}]
    assert cell["tokens_per_s"] == pytest.approx(1100.0)
    assert res["incomplete"] == ["paper-mini-qv-sin-s2"]


def test_claims_supported_when_the_pattern_holds(tmp_path: Path) -> None:
    """Seed noise (±0.04) far above the gaps is shared by the cells of a seed: the paired
    intervals resolve gaps of 0.02-0.1 nats that unpaired means could not."""
    res = _results(tmp_path, {"qkv/sin": 4.00, "qv/sin": 4.10, "qkv/agf": 3.98,
                              "qv/agf": 4.03, "qvka2x/agf": 3.985}, jitter=0.002)
    verdicts = {c["id"]: c for c in paper.claims(res)}
    one = verdicts[1]
    assert one["verdict"].startswith("supported") and one["difference"] == pytest.approx(0.1)
    assert one["paired"]["df"] == 4 and one["paired"]["lo"] > 0
    assert "95 % CI" in one["text"]
    assert verdicts[2]["verdict"].startswith("supported") and "50%" in verdicts[2]["verdict"]
    assert verdicts[3]["verdict"].startswith("supported: within ±0.02")


def test_claims_unresolved_contradicted_and_insufficient(tmp_path: Path) -> None:
    res = _results(tmp_path, {"qkv/sin": 4.00, "qv/sin": 4.01}, jitter=0.1)
    verdicts = {c["id"]: c["verdict"] for c in paper.claims(res)}
    assert verdicts[1] == "not resolved at this scale"  # 0.01 nats under 0.1 of wobble
    assert verdicts[2] == verdicts[3] == "insufficient data"
    ahead = _results(tmp_path / "b", {"qkv/sin": 4.10, "qv/sin": 4.00, "qkv/agf": 4.0,
                                      "qv/agf": 4.0, "qvka2x/agf": 4.2}, jitter=0.002)
    v = {c["id"]: c["verdict"] for c in paper.claims(ahead)}
    assert v[1] == "contradicted: QV is ahead of QKV"
    assert v[3] == "contradicted: behind QKV by more than 0.02 nats"


def test_claim_verdicts_follow_paired_t_intervals(tmp_path: Path) -> None:
    """The verdict is the interval's, computed here independently: a t interval with n − 1
    degrees of freedom (t_0.975,4 = 2.776) on the per-seed differences."""
    import statistics

    res = _results(tmp_path, {"qkv/sin": 4.0, "qv/sin": 4.02}, jitter=0.02)
    diffs = [r["val_loss"] - q["val_loss"] for r, q in zip(
        res["cells"]["qv/sinusoidal"]["runs"], res["cells"]["qkv/sinusoidal"]["runs"],
        strict=True)]
    half = 2.776 * statistics.stdev(diffs) / len(diffs) ** 0.5
    claim = paper.claims(res)[0]
    assert claim["paired"]["lo"] == pytest.approx(statistics.fmean(diffs) - half)
    expected = "not resolved at this scale" if statistics.fmean(diffs) - half <= 0 else None
    assert expected is None or claim["verdict"] == expected


def test_grid_through_the_queue_and_summary(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    rows = paper.submit_grid(root=root, trainer=FAKE, seeds=[0, 1], cells=["qkv", "qv"],
                             positions=["sin"], budget=TINY)
    assert [r["seq"] for r in rows] == [1, 2, 3, 4]
    for r in rows:
        assert jobs.wait_for(r["run_dir"], timeout_s=30)["state"] == "completed"
    out = tmp_path / "summary.json"
    data = paper.summary(root, command="test", out=out)
    assert set(data["cells"]) == {"qkv/sinusoidal", "qv/sinusoidal"}
    assert json.loads(out.read_text())["claims"][0]["id"] == 1


@pytest.mark.slow
def test_tiny_real_grid_in_process(tmp_path: Path) -> None:
    """2 cells x 2 seeds with the real runner, a few steps each; then mean ± sd and claims."""
    done = paper.run_grid_local(tmp_path, seeds=[0, 1], cells=["qkv", "qv"], positions=["sin"],
                                budget=TINY)
    assert [d["state"] for d in done] == ["completed"] * 4
    res = paper.aggregate(tmp_path)
    for key in ("qkv/sinusoidal", "qv/sinusoidal"):
        cell = res["cells"][key]
        assert cell["n"] == 2 and cell["val_loss_sd"] is not None and cell["val_loss_mean"] > 0
    claims = paper.claims(res)
    # four steps do not beat the bigram: no claim is judged
    assert all(c["val_loss_mean"] > c["bigram_loss"] for c in res["cells"].values())
    assert claims[0]["verdict"] == "insufficient training", claims[0]
    assert paper.run_grid_local(tmp_path, seeds=[0, 1], cells=["qkv", "qv"],
                                positions=["sin"], budget=TINY) == []  # finished runs skipped


def test_train_grid_cli_passes_qvka_both_and_records_it(tmp_path: Path, capsys,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from qvka_core.cli import main

    seen: dict = {}
    monkeypatch.setattr(paper, "run_grid_local", lambda out, **kw: seen.update(kw) or [
        {"name": "paper-mini-qv-agf-s0", "state": "completed", "val_loss": 5.5}])
    monkeypatch.setattr(paper, "summary",
                        lambda root, command, **kw: seen.update(command=command) or {})
    assert main(["train", "--grid", "paper-mini", "--qvka-both", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out  # a short text, not ~330 lines of JSON
    assert out.startswith("paper-mini-qv-agf-s0: completed, val_loss 5.5000\n")
    assert "{" not in out and "written to" in out
    assert seen["qvka_both"] is True
    assert seen["command"] == "python -m qvka_core train --grid paper-mini --qvka-both"
    assert len(paper.grid_runs(qvka_both=seen["qvka_both"])) == 40
    assert seen["shard"] == (0, 1)


def test_grid_shards_split_the_runs_and_an_interrupted_run_resumes(tmp_path: Path) -> None:
    names = [r["name"] for r in paper.grid_runs()]
    assert sorted(names[0::2] + names[1::2]) == sorted(names)
    with pytest.raises(RunError, match="shard"):
        paper.run_grid_local(tmp_path, shard=(2, 2))
    kw = {"seeds": [0], "cells": ["qv"], "positions": ["agf"], "budget": {**TINY, "steps": 6}}
    run_dir = tmp_path / "paper-mini-qv-agf-s0"
    run_dir.mkdir()
    (run_dir / "CANCEL").touch()  # stopped after its first step, as a killed session would
    (first,) = paper.run_grid_local(tmp_path, **kw)
    assert first["state"] == "cancelled"
    (again,) = paper.run_grid_local(tmp_path, **kw)  # resumed from its checkpoint
    assert again["state"] == "completed"
    steps = [json.loads(ln)["step"] for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 6  # no step lost or logged twice
