"""The train flags are generated from TrainArgs, and job.json stores TrainArgs as data."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from qvka_core.errors import ConfigError, LabError
from qvka_core.jobs.store import read_job, upgrade_job
from qvka_core.train import flags
from qvka_core.train.args import TrainArgs

ROOT = Path(__file__).resolve().parents[1]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train")
    flags.add_train_flags(parser)
    return parser


def test_every_field_is_a_flag_with_its_docstring_as_help() -> None:
    actions = {a.dest: a for a in _parser()._actions}
    for f in dataclasses.fields(TrainArgs):
        action = actions[f.name]
        name = f.name.rstrip("s") if f.name in flags.MAPPING_FIELDS else f.name  # NAME=VALUE
        assert action.option_strings == ["--" + name.replace("_", "-")]
        assert action.help and len(action.help) > 15, f.name
    # Help comes from the field docstrings in args.py (read as text here, not via flags):
    source = (ROOT / "qvka_core" / "train" / "args.py").read_text(encoding="utf-8")
    assert "Global gradient-norm clip; 0 disables." in source
    assert actions["grad_clip"].help.startswith("Global gradient-norm clip; 0 disables.")
    assert "(default: 1.0)" in actions["grad_clip"].help
    assert "(default: 300)" in actions["steps"].help
    assert actions["schedule"].choices == ("cosine", "constant")


def test_train_help_lists_every_flag_with_a_default() -> None:
    out = subprocess.run([sys.executable, "-m", "qvka_core", "train", "--help"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    for flag in ("--n-kv-heads", "--kv-lora-rank", "--embed-scale on|off", "--grad-clip",
                 "--config FILE.json", "--resume", "--grid", "--quiet"):
        assert flag in out
    assert "10 % of steps" in out  # a literal % in a docstring survives argparse's formatting
    assert "(default: cosine)" in out


def test_flags_parse_to_the_same_args_as_the_dataclass() -> None:
    args = flags.parse_train_argv(["--variant", "qv", "--steps", "50", "--embed-scale", "off",
                                   "--lr", "3e-4", "--n-kv-heads", "2"])
    assert args == TrainArgs(variant="qv", steps=50, embed_scale=False, lr=3e-4, n_kv_heads=2)
    with pytest.raises(LabError, match="invalid train option"):
        flags.parse_train_argv(["--steps", "many"])
    with pytest.raises(LabError, match="invalid train option"):
        flags.parse_train_argv(["--schedule", "linear"])


def test_to_argv_is_the_parsers_inverse() -> None:
    fields = {"variant": "qvka", "d_ctx": 16, "embed_scale": True, "lr": 0.002,
              "resume": False, "tokenizer": None, "seed": 3}
    argv = flags.to_argv(fields)
    pairs = set(zip(argv[::2], argv[1::2], strict=True))
    assert pairs == {("--variant", "qvka"), ("--d-ctx", "16"), ("--embed-scale", "on"),
                     ("--seed", "3"), ("--lr", "0.002")}
    back, rest = flags.argv_fields(argv + ["--sleep", "1"])
    assert rest == ["--sleep", "1"]
    assert back == {k: v for k, v in fields.items() if v is not None and k != "resume"}


def test_config_file_gives_values_and_flags_win(tmp_path: Path) -> None:
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"variant": "mqa", "steps": 40, "seed": 7}), encoding="utf-8")
    args = flags.parse_train_argv(["--config", str(cfg), "--steps", "60"])
    assert (args.variant, args.steps, args.seed) == ("mqa", 60, 7)
    # A run's config.json (or a job.json) holds the fields under "train":
    cfg.write_text(json.dumps({"train": {"batch": 4}, "model": {}}), encoding="utf-8")
    assert flags.parse_train_argv(["--config", str(cfg)]).batch == 4
    cfg.write_text(json.dumps({"stpes": 3}), encoding="utf-8")
    with pytest.raises(ConfigError, match="stpes"):
        flags.parse_train_argv(["--config", str(cfg)])
    with pytest.raises(ConfigError, match="not a readable JSON"):
        flags.parse_train_argv(["--config", str(tmp_path / "missing.json")])


def test_cli_refuses_a_bad_config_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "qvka_core", "train", "--config", str(bad)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: --config {bad}: expected a JSON object of train options"]


def test_an_old_job_record_with_argv_reads_as_fields(tmp_path: Path) -> None:
    """job.json files written before the run record (train options as argv) still load."""
    old = {"id": "old", "name": "old", "device": "cpu", "slots": ["cpu"], "seq": 1,
           "argv": ["--init", "austen-qv", "--variant", "qvka", "--steps", "50",
                    "--embed-scale", "on", "--reference", "austen-mha", "--quiet"]}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "job.json").write_text(json.dumps(old), encoding="utf-8")
    job = read_job(tmp_path / "old")
    assert job is not None and "argv" not in job
    assert job["train"] == {"init": "austen-qv", "variant": "qvka", "steps": 50,
                            "embed_scale": True, "reference": "austen-mha"}
    assert job["extra_argv"] == ["--quiet"]  # not a TrainArgs field: kept as given
    assert upgrade_job({"train": {"steps": 5}, "argv": ["--steps", "9"]})["train"] == {
        "steps": 5}  # a current record is left alone
    unreadable = upgrade_job({"argv": ["--steps", "many"]})
    assert unreadable["train"] == {} and unreadable["extra_argv"] == ["--steps", "many"]


def test_submit_stores_train_args_as_data(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from qvka_core import jobs
    from qvka_core.jobs import api, worker

    monkeypatch.setattr(api, "_spawn_worker", lambda run_dir: 0)  # nothing is started
    st = jobs.submit({"variant": "qv", "steps": 7, "seq_len": 32}, name="rec", device="cpu",
                     root=tmp_path)
    job = json.loads((tmp_path / st["id"] / "job.json").read_text(encoding="utf-8"))
    assert "argv" not in job
    stored = TrainArgs.from_dict(job["train"])  # the record is a whole, valid TrainArgs
    assert (stored.variant, stored.steps, stored.seq_len, stored.name) == ("qv", 7, 32, "rec")
    assert stored.warmup == 0 and stored.lr == 2e-3  # resolved once, at submit
    assert st["train"]["steps"] == 7  # job_status hands the record to the pages
    cmd, _ = worker.trainer_command(job, tmp_path / "rec", ["cpu"])
    given = cmd[len(job["trainer"]):]
    assert flags.parse_train_argv(given) == stored.replace(device="cpu", out=str(tmp_path))
    # The same run from argv or from TrainArgs is the same record:
    st2 = jobs.submit(["--variant", "qv", "--steps", "7", "--seq-len", "32"], name="rec2",
                      device="cpu", root=tmp_path)
    st3 = jobs.submit(TrainArgs(variant="qv", steps=7, seq_len=32), name="rec3",
                      device="cpu", root=tmp_path)
    strip = lambda t: {k: v for k, v in t.items() if k != "name"}  # noqa: E731
    assert strip(st2["train"]) == strip(st["train"]) == strip(st3["train"])
    with pytest.raises(LabError, match="set by the job queue"):
        jobs.submit({"steps": 3, "name": "x"}, device="cpu", root=tmp_path)
    with pytest.raises(LabError, match="invalid train option"):
        jobs.submit(["--steps", "3", "--quiet"], device="cpu", root=tmp_path)


def test_jobs_submit_takes_the_train_flags_directly_or_after_dashes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qvka_core.cli import main
    from qvka_core.jobs import api

    monkeypatch.setattr(api, "_spawn_worker", lambda run_dir: 0)  # nothing is started
    base = ["jobs", "--runs", str(tmp_path), "submit", "--device", "cpu"]
    assert main([*base, "--name", "direct", "--variant", "qv", "--steps", "3",
                 "--seq-len", "32"]) == 0
    assert main([*base, "--name", "dashes", "--steps", "9", "--", "--variant", "qv",
                 "--steps", "3", "--seq-len", "32"]) == 0  # after -- wins
    records = [read_job(tmp_path / n)["train"] for n in ("direct", "dashes")]
    for record in records:
        assert (record["variant"], record["steps"], record["seq_len"]) == ("qv", 3, 32)
    assert {k: v for k, v in records[0].items() if k != "name"} == {
        k: v for k, v in records[1].items() if k != "name"}
    # --config and NAME=VALUE options mean the same after -- as before it
    config = tmp_path / "vs.json"
    config.write_text(json.dumps({"variant": "vshared", "variant_options": {"n_v_heads": 2},
                                  "steps": 4, "seq_len": 32}), encoding="utf-8")
    assert main([*base, "--name", "cfg", "--", "--config", str(config)]) == 0
    assert main([*base, "--name", "opt", "--", "--variant", "vshared", "--steps", "4",
                 "--seq-len", "32", "--variant-option", "n_v_heads=2"]) == 0
    for name in ("cfg", "opt"):
        record = read_job(tmp_path / name)["train"]
        assert (record["variant"], record["variant_options"], record["steps"]) == (
            "vshared", {"n_v_heads": 2}, 4), name


def _every_parser(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _every_parser(sub)


@pytest.mark.parametrize("command", ["train", "jobs"])
def test_every_flag_of_train_and_jobs_has_help(command: str) -> None:
    from qvka_core.cli import build_parser

    parser = build_parser(only=command)
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [f"{p.prog} {a.option_strings[0]}" for p in _every_parser(sub.choices[command])
               for a in p._actions if a.option_strings and not a.help]
    assert missing == []


def test_any_variant_option_is_a_named_flag_and_round_trips() -> None:
    """A variant whose option TrainArgs has no field for (vshared's n_v_heads) is trained by
    name: the flag, the run record and the argv shown for it agree, and the model built from
    it has that many V heads (counted on the built module's weights)."""
    from qvka_core.train.flags import parse_train_argv, to_argv
    from qvka_core.train.setup import model_config

    args = parse_train_argv(["--preset", "austen", "--variant", "vshared",
                             "--variant-option", "n_v_heads=2"])
    assert args.variant_options == {"n_v_heads": 2}
    again = parse_train_argv(to_argv(args.to_dict()))
    assert again == args
    from qvka_core.model import Transformer

    cfg = model_config(args, vocab_size=64)
    v_rows = Transformer(cfg).layers[0].attn.v_proj.weight.shape[0]
    assert v_rows == 2 * cfg.attention.head_dim  # two shared V heads, not one per query head
    with pytest.raises(ConfigError, match="unknown option 'nope'"):
        model_config(parse_train_argv(["--preset", "austen", "--variant-option", "nope=1"]), 64)
