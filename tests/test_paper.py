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

    runs = paper.grid_runs()
    assert len(runs) == (2 * 2 + 2) * 3 and len({r["name"] for r in runs}) == 18
    assert {r["position"] for r in runs if r["cell"].startswith("qvka")} == {"agf"}
    assert len(paper.grid_runs(qvka_both=True)) == 24
    parser = _Parser(prog="train")
    train_cli.add_arguments(parser)
    budgets = set()
    for r in runs:
        a = train_cli.build_args(parser.parse_args(r["argv"] + ["--name", r["name"]]))
        budgets.add((a.steps, a.batch, a.seq_len, a.lr, a.data, a.preset))
        if r["cell"].startswith("qvka"):
            assert a.d_ctx == (32 if r["cell"] == "qvka1x" else 64) and a.variant == "qvka"
    assert len(budgets) == 1
    assert paper.grid_runs(steps_mult=4)[0]["argv"][paper.grid_runs()[0]["argv"].index(
        "--steps") + 1] == "600"
    argvs = paper.grid_argvs(out="somewhere", seeds=[0], cells=["qv"], positions=["agf"])
    assert argvs == [paper.grid_runs(seeds=[0], cells=["qv"], positions=["agf"])[0]["argv"]
                     + ["--out", "somewhere", "--name", "paper-mini-qv-agf-s0"]]
    with pytest.raises(RunError, match="unknown"):
        paper.grid_runs(cells=["qk"])
    with pytest.raises(RunError, match="empty"):
        paper.grid_runs(cells=["qvka1x"], positions=["sin"])


def _fake_run(root: Path, name: str, loss: float, acc: float, state: str = "completed",
              unigram: float = 6.4) -> None:
    d = root / name
    d.mkdir(parents=True)
    atomic_write_json(d / "status.json", {"state": state, "step": 10})
    (d / "metrics.jsonl").write_text(
        json.dumps({"step": 5, "val_loss": 9.0, "val_acc": 0.0}) + "\n"
        + json.dumps({"step": 10, "val_loss": loss, "val_acc": acc, "unigram_loss": unigram})
        + "\n")


def test_untrained_grid_supports_no_claim(tmp_path: Path) -> None:
    """A 3-step grid (val loss ~7.8, worse than the 6.4 unigram baseline) said claim (3) was
    'supported: indistinguishable from QKV' because untrained models are all alike."""
    for cell in ("qkv", "qv", "qvka2x"):
        for pos in ("sin", "agf"):
            for seed, eps in enumerate((-0.01, 0.0, 0.01)):
                _fake_run(tmp_path, f"paper-mini-{cell}-{pos}-s{seed}", 7.8 + eps, 0.01)
    verdicts = paper.claims(paper.aggregate(tmp_path))
    assert [v["verdict"] for v in verdicts] == ["insufficient training"] * 3
    assert "unigram" in verdicts[0]["text"] and "7.800 ≥ 6.400" in verdicts[0]["text"]


def _results(tmp_path: Path, means: dict[str, tuple[float, float]], spread: float) -> dict:
    for key, (loss, acc) in means.items():
        cell, pos = key.split("/")
        for seed, eps in enumerate((-spread, 0.0, spread)):
            _fake_run(tmp_path, f"paper-mini-{cell}-{pos}-s{seed}", loss + eps, acc - eps / 10)
    return paper.aggregate(tmp_path)


def test_aggregate_mean_sd_and_incomplete(tmp_path: Path) -> None:
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
    assert res["incomplete"] == ["paper-mini-qv-sin-s2"]


def test_claims_supported_when_the_pattern_holds(tmp_path: Path) -> None:
    res = _results(tmp_path, {"qkv/sin": (4.00, 0.30), "qv/sin": (4.10, 0.29),
                              "qkv/agf": (3.98, 0.30), "qv/agf": (4.03, 0.295),
                              "qvka2x/agf": (3.985, 0.30)}, spread=0.005)
    verdicts = {c["id"]: c for c in paper.claims(res)}
    assert verdicts[1]["verdict"] == "supported" and verdicts[1]["difference"] > 0
    assert "nats" in verdicts[1]["text"] and "±" in verdicts[1]["text"]
    assert verdicts[2]["verdict"] == "supported" and "50%" in verdicts[2]["text"]
    assert verdicts[3]["verdict"].startswith("supported")


def test_claims_within_noise_and_insufficient(tmp_path: Path) -> None:
    res = _results(tmp_path, {"qkv/sin": (4.00, 0.30), "qv/sin": (4.01, 0.30)}, spread=0.2)
    verdicts = {c["id"]: c["verdict"] for c in paper.claims(res, metric="val_acc")}
    assert verdicts[1] == "not supported: QV is not behind; within noise"  # equal accuracy
    assert verdicts[2] == verdicts[3] == "insufficient data"
    behind = _results(tmp_path / "b", {"qkv/sin": (4.00, 0.30), "qv/sin": (4.01, 0.29)},
                      spread=0.2)  # QV 1 point behind, seed spread far larger
    verdict = {c["id"]: c["verdict"] for c in paper.claims(behind, metric="val_acc")}[1]
    assert verdict == "not shown: QV is behind, as in the paper, but within noise"


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
    learned = all(c["val_loss_mean"] < c["unigram_loss"] for c in res["cells"].values())
    if learned:
        assert claims[0]["verdict"] != "insufficient data" and claims[0]["se"] is not None
    else:  # a few steps rarely beat word frequencies: then no claim is judged
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
    assert len(paper.grid_runs(qvka_both=seen["qvka_both"])) == 24
