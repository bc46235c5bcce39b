"""Bad inputs, table-driven: every CLI command, every loader on malformed checkpoint
directories, and the pages under bad URL parameters and widget values.

A CLI case passes when the command exits 2 with exactly one line on stderr, starting with
`error:` and naming what was wrong, and left every file in the sandbox as it was. A loader
case passes when loading raises a LabError (never another exception, never a hang) and the
directory is unchanged. The page cases are in tests/test_bad_page_inputs.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from qvka_core.checkpoints import load_checkpoint
from qvka_core.checkpoints.store import save_checkpoint
from qvka_core.cli import main
from qvka_core.config import ModelConfig
from qvka_core.errors import LabError
from qvka_core.model import Transformer
from qvka_core.presets import get_preset

ROOT = Path(__file__).resolve().parents[1]
BIG = str(10**9)
TINY = ["train", "--preset", "tiny", "--steps", "1", "--batch", "2", "--seq-len", "8",
        "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files the bad inputs point at: a plain file, a FIFO, binary text, a directory named
    config.json, an empty runs folder, a tiny valid checkpoint."""
    box = tmp_path_factory.mktemp("bad")
    (box / "afile").write_text("x\n", encoding="utf-8")
    os.mkfifo(box / "fifo")
    (box / "binary.txt").write_bytes(b"text \xff\xfe more")
    (box / "short.txt").write_text("ab", encoding="utf-8")
    # enough characters for a 60-token window in each split, far too few tokens
    (box / "fewtokens.txt").write_text(("the " * 16 + "\n") * 40,
                                       encoding="utf-8")
    (box / "cfgdir" / "config.json").mkdir(parents=True)
    (box / "runs").mkdir()
    (box / "outdir").mkdir()
    save_checkpoint(box / "good", Transformer(get_preset("tiny")))
    return box


def _tree(root: Path) -> dict[str, tuple[str, int]]:
    """Every entry under root: kind and size (a FIFO is never opened)."""
    out = {}
    for p in sorted(root.rglob("*")):
        kind = "link" if p.is_symlink() else "dir" if p.is_dir() else \
            "file" if p.is_file() else "other"
        out[str(p.relative_to(root))] = (kind, p.stat().st_size if kind == "file" else 0)
    return out


def _run_cli(argv: list[str]) -> tuple[int, list[str]]:
    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = main(argv)
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    return rc, [line for line in err.getvalue().splitlines() if line.strip()]


# (id, argv with {box} for the sandbox, a fragment the error line must contain)
CLI_CASES = [
    # train: an option of another variant (it would be dropped, the record would disagree)
    ("train-foreign-option", [*TINY, "--variant", "vshared", "--n-kv-heads", "2"],
     "n_kv_heads does not apply to --variant vshared"),
    ("train-foreign-named-option", [*TINY, "--variant", "mha", "--variant-option",
                                    "n_v_heads=2"], "n_v_heads does not apply to --variant mha"),
    # train: sizes past their caps or the machine's memory
    ("train-n-layers-huge", [*TINY, "--n-layers", "100000000"], "n_layers"),
    ("train-batch-huge", [*TINY, "--batch", BIG], "batch"),
    ("train-threads-huge", [*TINY, "--threads", BIG], "threads"),
    ("train-eval-batches-huge", [*TINY, "--eval-batches", BIG], "eval_batches"),
    ("train-seq-len-huge", [*TINY, "--seq-len", BIG], "seq_len"),
    ("train-steps-huge", [*TINY, "--steps", str(10**12)], "steps"),
    ("train-memory", [*TINY, "--batch", "100000", "--seq-len", "2048"], "memory"),
    ("train-seed-huge", [*TINY, "--seed", str(10**20)], "seed"),
    ("train-seed-negative", [*TINY, "--seed", "-1"], "seed"),
    ("train-steps-zero", [*TINY, "--steps", "0"], "steps"),
    ("train-batch-zero", [*TINY, "--batch", "0"], "batch"),
    ("train-threads-zero", [*TINY, "--threads", "0"], "threads"),
    ("train-warmup-negative", [*TINY, "--warmup", "-1"], "warmup"),
    ("train-steps-not-int", [*TINY, "--steps", "abc"], "--steps"),
    ("train-batch-float", [*TINY, "--batch", "2.5"], "--batch"),
    ("train-unknown-flag", [*TINY, "--bogus", "1"], "bogus"),
    # train: non-finite and out-of-range numbers
    ("train-lr-inf", [*TINY, "--lr", "inf"], "lr"),
    ("train-lr-nan", [*TINY, "--lr", "nan"], "lr"),
    ("train-lr-negative", [*TINY, "--lr", "-1"], "lr"),
    ("train-lr-zero", [*TINY, "--lr", "0"], "lr"),
    ("train-weight-decay-nan", [*TINY, "--weight-decay", "nan"], "weight_decay"),
    ("train-weight-decay-negative", [*TINY, "--weight-decay", "-0.1"], "weight_decay"),
    ("train-grad-clip-inf", [*TINY, "--grad-clip", "inf"], "grad_clip"),
    ("train-temperature-inf", [*TINY, "--temperature", "inf"], "temperature"),
    ("train-temperature-zero", [*TINY, "--temperature", "0"], "temperature"),
    ("train-distill-weight-nan", [*TINY, "--distill-weight", "nan"], "distill_weight"),
    ("train-distill-weight-2", [*TINY, "--distill-weight", "2"], "distill_weight"),
    # train: names, choices, paths
    ("train-name-300", [*TINY, "--name", "a" * 300], "name"),
    ("train-name-slash", [*TINY, "--name", "a/b"], "name"),
    ("train-name-backslash", [*TINY, "--name", "a\\b"], "name"),
    ("train-name-dotdot", [*TINY, "--name", ".."], "name"),
    ("train-name-hidden", [*TINY, "--name", ".hidden"], "name"),
    ("train-name-newline", [*TINY, "--name", "a\nb"], "name"),
    ("train-variant", [*TINY, "--variant", "kqv"], "variant"),
    ("train-position", [*TINY, "--position", "spiral"], "position"),
    ("train-schedule", [*TINY, "--schedule", "linear"], "schedule"),
    ("train-device", [*TINY, "--device", "tpu"], "device"),
    ("train-distill-no-teacher", [*TINY, "--distill", "logits"], "teacher"),
    ("train-out-is-a-file", [*TINY, "--out", "{box}/afile"], "afile"),
    ("train-out-under-a-file", [*TINY, "--out", "{box}/afile/sub"], "afile"),
    ("train-data-fifo", [*TINY, "--out", "{box}/outdir", "--data", "{box}/fifo"], "fifo"),
    ("train-data-binary", [*TINY, "--out", "{box}/outdir", "--data", "{box}/binary.txt"],
     "UTF-8"),
    ("train-data-missing", [*TINY, "--out", "{box}/outdir", "--data", "{box}/nope.txt"],
     "nope.txt"),
    ("train-data-directory", [*TINY, "--out", "{box}/outdir", "--data", "{box}/outdir"],
     "outdir"),
    ("train-data-too-short", [*TINY, "--out", "{box}/outdir", "--data", "{box}/short.txt"],
     "short.txt"),
    ("train-init-missing", [*TINY, "--init", "{box}/nope"], "nope"),
    ("train-init-cfgdir", [*TINY, "--init", "{box}/cfgdir"], "config.json"),
    ("train-resume-no-name", [*TINY, "--resume"], "--name"),
    ("train-resume-missing", [*TINY, "--resume", "--name", "nope", "--out", "{box}/runs"],
     "nope"),
    ("train-grid-steps-mult-zero", ["train", "--grid", "paper-mini", "--steps-mult", "0"],
     "steps-mult"),
    ("train-grid-steps-mult-negative", ["train", "--grid", "paper-mini", "--steps-mult", "-2"],
     "steps-mult"),
    ("train-grid-steps-mult-nan", ["train", "--grid", "paper-mini", "--steps-mult", "nan"],
     "steps-mult"),
    # jobs
    ("jobs-runs-is-a-file", ["jobs", "--runs", "{box}/afile", "submit", "--", "--steps", "1"],
     "afile"),
    ("jobs-list-runs-is-a-file", ["jobs", "--runs", "{box}/afile", "list"], "afile"),
    ("jobs-submit-bad-flag", ["jobs", "--runs", "{box}/runs", "submit", "--", "--bogus", "3"],
     "bogus"),
    ("jobs-submit-bad-int", ["jobs", "--runs", "{box}/runs", "submit", "--", "--steps", "x"],
     "--steps"),
    ("jobs-submit-memory", ["jobs", "--runs", "{box}/runs", "submit", "--device", "cpu", "--",
                            "--preset", "llama3-8b", "--steps", "1"], "memory"),
    ("jobs-submit-too-few-tokens", ["jobs", "--runs", "{box}/runs", "submit", "--",
                                    "--preset", "tiny", "--seq-len", "60", "--data",
                                    "{box}/fewtokens.txt"], "tokens"),
    ("jobs-submit-lr-nan", ["jobs", "--runs", "{box}/runs", "submit", "--", "--lr", "nan"],
     "lr"),
    ("jobs-submit-name-path", ["jobs", "--runs", "{box}/runs", "submit", "--name", "../x",
                               "--", "--steps", "1"], "path"),
    ("jobs-submit-reserved", ["jobs", "--runs", "{box}/runs", "submit", "--", "--out", "/x"],
     "--out"),
    ("jobs-submit-gpus-zero", ["jobs", "--runs", "{box}/runs", "submit", "--gpus", "0", "--",
                               "--steps", "1"], "n_gpus"),
    ("jobs-show-path", ["jobs", "--runs", "{box}/runs", "show", "../etc"], "path"),
    ("jobs-show-missing", ["jobs", "--runs", "{box}/runs", "show", "nope"], "nope"),
    ("jobs-cancel-missing", ["jobs", "--runs", "{box}/runs", "cancel", "nope"], "nope"),
    ("jobs-resume-missing", ["jobs", "--runs", "{box}/runs", "resume", "nope"], "nope"),
    ("jobs-rename-missing", ["jobs", "--runs", "{box}/runs", "rename", "nope", "new"], "nope"),
    ("jobs-delete-no-yes", ["jobs", "--runs", "{box}/runs", "delete", "nope"], "--yes"),
    ("jobs-delete-missing", ["jobs", "--runs", "{box}/runs", "delete", "nope", "--yes"],
     "nope"),
    ("jobs-worker-not-a-job", ["jobs", "_worker", "{box}/outdir"], "job folder"),
    ("jobs-estimate-bad-flag", ["jobs", "estimate", "--", "--bogus"], "bogus"),
    ("jobs-estimate-batch-zero", ["jobs", "estimate", "--", "--batch", "0"], "batch"),
    ("jobs-unknown-action", ["jobs", "explode"], "explode"),
    # costs
    ("costs-preset", ["costs", "--preset", "nope"], "nope"),
    ("costs-foreign-option", ["costs", "--preset", "gpt2", "--variant", "mha",
                              "--n-v-heads", "4"], "--n-v-heads does not apply to --variant mha"),
    ("costs-foreign-option-2", ["costs", "--preset", "gpt2", "--variant", "vshared",
                                "--d-ctx", "8"], "(it applies to: qvka)"),
    ("costs-head-dim", ["costs", "--d-model", "64", "--n-heads", "3", "--n-layers", "1"],
     "n_heads"),
    ("costs-d-model-zero", ["costs", "--d-model", "0", "--n-heads", "2", "--n-layers", "1"],
     "d_model"),
    ("costs-n-layers-huge", ["costs", "--d-model", "64", "--n-heads", "2", "--n-layers",
                             "100000000"], "n_layers"),
    ("costs-variant", ["costs", "--preset", "gpt2", "--variant", "kqv"], "kqv"),
    ("costs-seq-len-zero", ["costs", "--preset", "gpt2", "--seq-len", "0"], "seq"),
    ("costs-batch-negative", ["costs", "--preset", "gpt2", "--batch", "-1"], "batch"),
    ("costs-dtype", ["costs", "--preset", "gpt2", "--dtype", "fp7"], "fp7"),
    ("costs-preset-and-shape", ["costs", "--preset", "gpt2", "--d-model", "64"], "preset"),
    # attention
    ("attention-non-utf8", ["attention", "--checkpoint", "{box}/good", "--text",
                            "caf\udce9"], "UTF-8"),
    ("attention-empty-text", ["attention", "--checkpoint", "{box}/good", "--text", "  "],
     "empty"),
    ("attention-missing", ["attention", "--checkpoint", "{box}/nope", "--text", "hi"], "nope"),
    ("attention-cfgdir", ["attention", "--checkpoint", "{box}/cfgdir", "--text", "hi"],
     "config.json"),
    ("attention-no-tokenizer", ["attention", "--checkpoint", "{box}/good", "--text", "hi"],
     "tokenizer"),
    ("attention-variant", ["attention", "--checkpoint", "{box}/good", "--text", "hi",
                           "--variant", "xyz"], "xyz"),
    ("attention-out-is-dir", ["attention", "--checkpoint", "{box}/good", "--text", "hi",
                              "--out", "{box}/outdir"], "outdir"),
    ("attention-out-is-fifo", ["attention", "--checkpoint", "{box}/good", "--text", "hi",
                               "--out", "{box}/fifo"], "fifo"),
    # paper
    ("paper-summary-out-dir", ["paper", "--runs", "{box}/runs", "summary", "--out",
                               "{box}/outdir"], "directory"),
    ("paper-summary-out-fifo", ["paper", "--runs", "{box}/runs", "summary", "--out",
                                "{box}/fifo"], "fifo"),
    ("paper-grid-seeds-negative", ["paper", "grid", "--seeds", "-1"], "--seeds"),
    ("paper-grid-seeds-huge", ["paper", "grid", "--seeds", str(10**20)], "--seeds"),
    ("paper-grid-steps-mult-zero", ["paper", "grid", "--steps-mult", "0"], "steps-mult"),
    ("paper-grid-steps-mult-inf", ["paper", "grid", "--steps-mult", "inf"], "steps-mult"),
    # convert
    ("convert-target", ["convert", "--from", "{box}/good", "--to", "kqv", "--out",
                        "{box}/runs/c1"], "kqv"),
    ("convert-out-exists", ["convert", "--from", "{box}/good", "--to", "qv", "--out",
                            "{box}/outdir"], "exists"),
    ("convert-out-under-file", ["convert", "--from", "{box}/good", "--to", "qv", "--out",
                                "{box}/afile/x"], "afile"),
    ("convert-from-missing", ["convert", "--from", "{box}/nope", "--to", "qv", "--out",
                              "{box}/runs/c2"], "nope"),
    ("unknown-command", ["explode"], "explode"),
]


@pytest.mark.parametrize("argv,fragment", [pytest.param(a, f, id=i) for i, a, f in CLI_CASES])
def test_cli_bad_input_is_one_error_line(argv: list[str], fragment: str, sandbox: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QVKA_RUNS", str(sandbox / "runs"))
    monkeypatch.setenv("QVKA_FAKE_GPUS", "0")
    argv = [a.replace("{box}", str(sandbox)) for a in argv]
    before = _tree(sandbox)
    rc, lines = _run_cli(argv)
    assert rc == 2, (rc, lines)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert fragment.lower() in lines[0].lower(), lines[0]
    assert _tree(sandbox) == before  # nothing written, nothing removed, no temp file left


# --- loaders: malformed checkpoint directories ----------------------------------------------
def _config(d: Path) -> dict:
    return json.loads((d / "config.json").read_text(encoding="utf-8"))


def _set_model_field(**changes):
    def edit(d: Path) -> None:
        data = _config(d)
        data["model"].update(changes)
        (d / "config.json").write_text(json.dumps(data), encoding="utf-8")
    return edit


def _set_attention_field(**changes):
    def edit(d: Path) -> None:
        data = _config(d)
        data["model"]["attention"].update(changes)
        (d / "config.json").write_text(json.dumps(data), encoding="utf-8")
    return edit


def _write(name: str, text: str):
    def edit(d: Path) -> None:
        (d / name).unlink()
        (d / name).write_text(text, encoding="utf-8")
    return edit


def _replace_with_dir(name: str):
    def edit(d: Path) -> None:
        (d / name).unlink()
        (d / name).mkdir()
    return edit


def _replace_with_fifo(name: str):
    def edit(d: Path) -> None:
        (d / name).unlink()
        os.mkfifo(d / name)
    return edit


def _tensor_edit(fn):
    def edit(d: Path) -> None:
        from safetensors.torch import load_file

        state = load_file(str(d / "model.safetensors"))
        fn(state)
        save_file(state, str(d / "model.safetensors"))
    return edit


def _int_embedding(state: dict) -> None:
    state["tok_emb.weight"] = state["tok_emb.weight"].to(torch.int64)


def _bad_shape(state: dict) -> None:
    state["tok_emb.weight"] = state["tok_emb.weight"][:10]


def _sharded(index: dict | list | str):
    """model.safetensors moved to a shard, with `index` as model.safetensors.index.json."""
    def edit(d: Path) -> None:
        os.replace(d / "model.safetensors", d / "model-00001.safetensors")
        (d / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    return edit


def _shard_outside(absolute: bool):
    """An index whose only shard is a valid weights file *outside* the checkpoint: loading
    it would succeed, so only the confinement rule refuses it."""
    def edit(d: Path) -> None:
        outside = d.parent / "outside.safetensors"
        os.replace(d / "model.safetensors", outside)
        name = str(outside) if absolute else "../outside.safetensors"
        (d / "model.safetensors.index.json").write_text(
            json.dumps({"weight_map": {"tok_emb.weight": name}}), encoding="utf-8")
    return edit


def _fifo_shard(d: Path) -> None:
    (d / "model.safetensors").unlink()
    os.mkfifo(d / "model-00001.safetensors")
    (d / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"tok_emb.weight": "model-00001.safetensors"}}), "utf-8")


def _only_pickle(d: Path) -> None:
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")


LOADER_CASES = [
    ("config-is-directory", _replace_with_dir("config.json")),
    ("config-is-fifo", _replace_with_fifo("config.json")),
    ("config-not-json", _write("config.json", "{not json")),
    ("config-top-level-list", _write("config.json", "[1, 2]")),
    ("config-not-utf8", lambda d: (d / "config.json").write_bytes(b"\xff\xfe{}")),
    ("config-no-format", _write("config.json", json.dumps({"model": {}}))),
    ("config-model-not-mapping", _write("config.json", json.dumps(
        {"format": "qvka-lab/1", "model": [1]}))),
    ("config-n-layers-1e8", _set_model_field(n_layers=100_000_000)),
    ("config-n-layers-negative", _set_model_field(n_layers=-1)),
    ("config-n-layers-string", _set_model_field(n_layers="2")),
    ("config-vocab-huge", _set_model_field(vocab_size=10**12)),
    ("config-norm-eps-negative", _set_model_field(norm_eps=-1)),
    ("config-norm-eps-nan", lambda d: (d / "config.json").write_text(
        (d / "config.json").read_text().replace('"norm_eps": 1e-05', '"norm_eps": NaN'))),
    ("config-dropout-one", _set_model_field(dropout=1.0)),
    ("config-unknown-field", _set_model_field(surprise=1)),
    ("config-attention-not-mapping", _set_model_field(attention="mha")),
    ("config-d-model-huge", _set_attention_field(d_model=10**7)),
    ("config-heads-not-dividing", _set_attention_field(n_heads=3, head_dim=None)),
    ("config-rope-theta-inf", lambda d: (d / "config.json").write_text(
        (d / "config.json").read_text().replace('"rope_theta": 10000.0',
                                                '"rope_theta": Infinity'))),
    ("config-variant-unknown", _set_attention_field(kind="kqv")),
    ("weights-missing", lambda d: (d / "model.safetensors").unlink()),
    ("weights-is-directory", _replace_with_dir("model.safetensors")),
    ("weights-is-fifo", _replace_with_fifo("model.safetensors")),
    ("weights-garbage", lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 64)),
    ("weights-truncated", lambda d: (d / "model.safetensors").write_bytes(
        (d / "model.safetensors").read_bytes()[:200])),
    ("weights-int64-embedding", _tensor_edit(_int_embedding)),
    ("weights-bad-shape", _tensor_edit(_bad_shape)),
    ("weights-missing-tensor", _tensor_edit(lambda s: s.pop("tok_emb.weight"))),
    ("weights-only-pickle", _only_pickle),
    ("meta-not-json", lambda d: (d / "meta.json").write_text("{oops", encoding="utf-8")),
    ("meta-is-fifo", lambda d: os.mkfifo(d / "meta.json")),
    ("index-weight-map-list", _sharded({"weight_map": ["model-00001.safetensors"]})),
    ("index-weight-map-string", _sharded({"weight_map": "model-00001.safetensors"})),
    ("index-not-object", _sharded([1, 2, 3])),
    ("index-shard-absolute", _shard_outside(absolute=True)),
    ("index-shard-dotdot", _shard_outside(absolute=False)),
    ("index-shard-missing", _sharded({"weight_map": {"tok_emb.weight": "nope.safetensors"}})),
    ("index-shard-fifo", _fifo_shard),
]


def _load_with_deadline(directory: Path, seconds: float = 60.0) -> BaseException | None:
    """load_checkpoint in a thread: a FIFO that blocked the reader would fail here, not hang."""
    box: dict[str, BaseException | None] = {"exc": None}

    def target() -> None:
        try:
            load_checkpoint(str(directory))
        except BaseException as exc:  # noqa: BLE001 - inspected by the caller
            box["exc"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        with contextlib.suppress(OSError):  # unblock the reader so the thread can end
            for fifo in directory.iterdir():
                if fifo.is_fifo():
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"loading {directory.name} blocked")
    return box["exc"]


@pytest.mark.parametrize("edit", [pytest.param(e, id=i) for i, e in LOADER_CASES])
def test_loader_refuses_malformed_checkpoint(edit, sandbox: Path, tmp_path: Path) -> None:
    directory = tmp_path / "ckpt"
    shutil.copytree(sandbox / "good", directory)
    edit(directory)
    before = _tree(directory)
    exc = _load_with_deadline(directory)
    assert isinstance(exc, LabError), repr(exc)
    assert "\n" not in str(exc)  # one line when printed
    assert _tree(directory) == before


def test_good_sandbox_checkpoint_loads(sandbox: Path) -> None:
    """The loader cases fail because of their one edit: the unedited copy loads."""
    loaded = load_checkpoint(str(sandbox / "good"))
    assert loaded.config == ModelConfig.from_dict(_config(sandbox / "good")["model"])


def test_checkpoints_listing_does_not_block_on_a_fifo_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "runs"
    (runs / "trap").mkdir(parents=True)
    os.mkfifo(runs / "trap" / "model.safetensors")
    (runs / "trap2" / "checkpoint").mkdir(parents=True)
    os.mkfifo(runs / "trap2" / "checkpoint" / "config.json")
    monkeypatch.setenv("QVKA_RUNS", str(runs))
    done: dict[str, int] = {}
    t = threading.Thread(target=lambda: done.update(rc=_run_cli(["checkpoints"])[0]),
                         daemon=True)
    t.start()
    t.join(60)
    if t.is_alive():
        os.close(os.open(runs / "trap2" / "checkpoint" / "config.json",
                         os.O_WRONLY | os.O_NONBLOCK))
    assert done.get("rc") == 0
