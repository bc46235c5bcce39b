"""AppTest for the Convert, Fine-tune and Paper pages: rendering, a real conversion, a tiny
real CPU fine-tune through the job queue, upload validation, name sanitising, and the paper
tables over a fake finished grid. Every spawned job is cancelled and waited for."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import qvka_app.paper
import qvka_app.runinfo
import qvka_app.runs
import qvka_app.runs_view
import qvka_app.shared
import qvka_app.sources
from qvka_core import jobs, paper

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TIMEOUT = 90
PAGES = ["pages/convert.py", "pages/finetune.py", "pages/paper.py"]


def no_errors(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private runs root; on teardown every queued/running job is cancelled and awaited."""
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("QVKA_RUNS", str(root))
    # page_setup reroutes a page run that did not come through app.py's router once per
    # session (a deep link on a fresh server); AppTest runs pages through app.py already, and
    # the extra rerun would swallow the first button click.
    monkeypatch.setattr(qvka_app.shared, "_leave_pages_directory_mode", lambda: None)
    yield root
    for status in jobs.list_jobs(root):
        if status["state"] in jobs.ACTIVE:
            try:
                jobs.cancel(status["id"], root=root)
            except Exception:  # noqa: BLE001 - it may have finished meanwhile
                pass
    for status in jobs.list_jobs(root):
        jobs.wait_for(status["run_dir"], jobs.TERMINAL, timeout_s=120)


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    return at.switch_page(page).run()


@pytest.mark.parametrize("page", PAGES)
def test_pages_render(runs: Path, page: str) -> None:
    at = open_page(page)
    no_errors(at)
    assert at.title[0].value


def test_convert_austen_mha_to_qv_report_save_and_heal(runs: Path) -> None:
    at = open_page("pages/convert.py")
    at.selectbox(key="cv_source").set_value("austen-mha")
    at.selectbox(key="cv_to").set_value("qv")
    at.button(key="cv_run").click().run()
    no_errors(at)
    metrics = {m.label: m for m in at.metric}
    assert {"Mean JS divergence (bits)", "Hidden-state cosine", "Loss after (nats)",
            "Parameters", "KV cache bytes/token"} <= set(metrics)
    assert 0 < float(metrics["Hidden-state cosine"].value) <= 1
    assert metrics["KV cache bytes/token"].value == "512"  # K dropped: half of MHA's 1,024
    assert metrics["Parameters"].delta.startswith("-")
    assert "whole validation split" in metrics["Loss after (nats)"].proto.help
    assert any(c.value.startswith("Convert will use: qv_fit = refit") for c in at.caption)
    assert at.get("vega_lite_chart"), "per-layer divergence chart"
    assert any("R² of K ≈ V·M" in c.value for c in at.caption)  # QV refits its queries

    at.text_input(key="cv_name").set_value("../escape").run()
    at.button(key="cv_save").click().run()
    assert "looks like a path" in at.error[0].value
    assert not (runs.parent / "escape").exists()
    at.text_input(key="cv_name").set_value("My Healed QV!").run()
    at.button(key="cv_save").click().run()
    saved = runs / "converted" / "my-healed-qv"
    assert (saved / "config.json").exists()
    assert json.loads((saved / "meta.json").read_text())["converted_from"] == "austen-mha"

    at.button(key="cv_heal").click().run()
    assert at.session_state["ft_base"] == "converted: my-healed-qv"
    assert at.session_state["ft_variants"] == ["qv"]

    # Heal it with distillation: the run scores the unconverted austen-mha on its own
    # validation windows, and the curves and the recovery chart are measured against that.
    at = tiny_form(at.switch_page("pages/finetune.py").run(), ["qv"])
    assert at.selectbox(key="ft_base").value == "converted: my-healed-qv"
    at.toggle(key="ft_distill").set_value(True).run()
    at.text_input(key="ft_name").set_value("heal").run()
    at.button(key="ft_launch").click().run()
    no_errors(at)
    final = jobs.wait_for(runs / "heal-qv", jobs.TERMINAL, timeout_s=180)
    assert final["state"] == "completed", final["message"]
    recs = jobs.read_metrics(runs / "heal-qv")
    ref = recs[0]["ref_val_loss"]
    assert ref != pytest.approx(recs[0]["val_loss"], rel=1e-3)  # K dropped: not the same model
    frame = qvka_app.runs_view.metrics_frame(["heal-qv"])
    assert frame[frame.split == "original"].loss.tolist() == [ref, ref]
    train = frame[frame.split == "train"]
    assert train.loss.tolist() == [r["ce"] for r in recs if "ce" in r]  # CE, not the KD loss
    recovery, notes = qvka_app.runs_view.recovery_frame(jobs.list_jobs(runs))
    assert notes == [f"heal-qv: austen-mha on this run's validation windows = {ref:.3f}"]
    assert recovery.share.tolist() == [r["val_loss"] / ref for r in recs if "val_loss" in r]
    at.run()
    no_errors(at)
    assert any("Recovery of converted models" in c.value for c in at.caption)
    row = at.dataframe[0].value.set_index("run").loc["heal-qv"]
    assert row["base"] == "converted: my-healed-qv"
    assert qvka_app.runinfo.ref_label(str(runs / "t-qv" / "checkpoint")) == "run: t-qv"
    assert qvka_app.runinfo.ref_label("austen-qv") == "austen-qv"
    assert float(row["vs orig."]) == pytest.approx(recs[-1]["val_loss"] / ref, abs=5e-4)


def test_heal_with_a_control_run_of_the_unconverted_original(runs: Path) -> None:
    """Recovery needs a control: the original fine-tuned under the same budget and data.
    Its step-0 loss is the original's own (share 1.0), and the chart has both runs."""
    at = open_page("pages/finetune.py")
    at.selectbox(key="ft_base").set_value("austen-mha").run()
    at = tiny_form(at, ["qv"])  # austen-mha converted to QV on load
    at.toggle(key="ft_control").set_value(True).run()
    at.text_input(key="ft_name").set_value("heal").run()
    assert any("Runs: heal-qv, heal-control" in c.value for c in at.caption)
    at.button(key="ft_launch").click().run()
    no_errors(at)
    for name in ("heal-qv", "heal-control"):
        assert jobs.wait_for(runs / name, jobs.TERMINAL, timeout_s=240)["state"] == "completed"
    control = jobs.read_metrics(runs / "heal-control")
    args = json.loads((runs / "heal-control" / "config.json").read_text())["train"]
    assert args["init"] == "austen-mha" and args["variant"] is None and args["steps"] == 10
    recovery, notes = qvka_app.runs_view.recovery_frame(jobs.list_jobs(runs))
    assert set(recovery.run) == {"heal-qv", "heal-control (control)"}
    first = recovery[recovery.run == "heal-control (control)"].share.iloc[0]
    assert first == pytest.approx(1.0, abs=1e-6)  # the same model, the same windows
    assert control[0]["ref_val_loss"] == pytest.approx(control[0]["val_loss"], abs=1e-6)
    assert any("control" in n for n in notes)


def tiny_form(at: AppTest, variants: list[str]) -> AppTest:
    at.number_input(key="ft_steps").set_value(10)
    at.number_input(key="ft_batch").set_value(2)
    at.number_input(key="ft_seq").set_value(32)
    at.multiselect(key="ft_variants").set_value(variants)
    return at.run()


def test_finetune_form_refuses_what_the_trainer_would(runs: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    monkeypatch.setattr(importlib.import_module("qvka_core.jobs.estimate"), "memory_bytes",
                        lambda kind: 2**20)  # a 1 MiB machine: every run is too big
    at = open_page("pages/finetune.py")
    assert any("more than this machine's 0.0 GiB" in w.value for w in at.warning)
    at.number_input(key="ft_seq").set_value(4096).run()  # austen-qv has 128 positions
    assert any("exceeds the model's max_seq_len 128" in e.value for e in at.error)
    assert at.button(key="ft_launch").disabled
    at.number_input(key="ft_seq").set_value(64).run()
    no_errors(at)
    assert not at.button(key="ft_launch").disabled


def test_finetune_launch_tiny_cpu_run(runs: Path) -> None:
    at = tiny_form(open_page("pages/finetune.py"), ["qv"])
    no_errors(at)
    assert any("Estimate per run" in c.value for c in at.caption)
    at.text_input(key="ft_name").set_value("t").run()
    at.button(key="ft_launch").click().run()
    no_errors(at)
    assert "Queued t-qv" in at.success[0].value
    assert "t-qv" in list(at.dataframe[0].value["run"])
    final = jobs.wait_for(runs / "t-qv", jobs.TERMINAL, timeout_s=180)
    assert final["state"] == "completed", final["message"]
    at.run()
    no_errors(at)
    table = at.dataframe[0].value.set_index("run")
    assert table.loc["t-qv", "state"] == "completed"
    assert float(table.loc["t-qv", "val loss"]) > 0  # shown as text, 3 decimals
    chart = at.get("vega_lite_chart")[0]
    assert "t-qv" in chart.proto.datasets[0].data.SerializeToString().decode("latin-1")
    labels = list(qvka_app.sources.checkpoint_choices())  # the finished run, listed once
    assert labels.count("run: t-qv") == 1 and "t-qv" not in labels


def test_finetune_variants_follow_the_chosen_model(runs: Path) -> None:
    at = open_page("pages/finetune.py")
    assert at.selectbox(key="ft_base").value == "austen-qv"
    assert at.multiselect(key="ft_variants").value == ["qv"]
    at.multiselect(key="ft_variants").set_value(["qv", "mha"]).run()
    at.number_input(key="ft_steps").set_value(7).run()
    assert at.multiselect(key="ft_variants").value == ["qv", "mha"]  # the user's pick stays
    at.selectbox(key="ft_base").set_value("austen-qvka").run()
    no_errors(at)
    assert at.multiselect(key="ft_variants").value == ["qvka"]  # never QV on a QV-Ka model
    assert any("ft-qvka" in c.value for c in at.caption)
    assert at.expander[0].proto.expanded


def test_new_run_form_keeps_its_state_across_edits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qvka_app.runs.st, "session_state", {})
    assert qvka_app.runs.form_open(preselected=True, has_runs=True)  # sent here to heal a model
    assert qvka_app.runs.form_open(preselected=False, has_runs=True)  # the next edit: still open
    monkeypatch.setattr(qvka_app.runs.st, "session_state", {})
    assert not qvka_app.runs.form_open(preselected=False, has_runs=True)  # runs to watch: closed
    assert qvka_app.runs.form_open(preselected=True, has_runs=True)


def test_saved_models_are_listed_once(runs: Path) -> None:
    from qvka_core.checkpoints import load_checkpoint, save_checkpoint

    src = load_checkpoint("austen-mha")
    save_checkpoint(runs / "converted" / "mine", src.model, tokenizer=src.tokenizer)
    save_checkpoint(runs / "cli-run" / "checkpoint", src.model, tokenizer=src.tokenizer)
    choices = qvka_app.sources.checkpoint_choices()
    assert choices["converted: mine"] == str(runs / "converted" / "mine")
    assert choices["run: cli-run"] == str(runs / "cli-run" / "checkpoint")  # CLI, not queued
    assert not {"converted/mine", "cli-run"} & set(choices)
    assert "austen-mha" in choices and "smollm2-135m" in choices


@pytest.mark.parametrize(("payload", "message"), [
    (b"\x00\x01\x02binary", "binary"),
    (b"   \n", "empty"),
    (b"x" * 200, "too large"),
    (b"caf\xe9 au lait\n" * 3, "not valid UTF-8"),
])
def test_upload_validation(runs: Path, monkeypatch: pytest.MonkeyPatch, payload: bytes,
                           message: str) -> None:
    monkeypatch.setattr(qvka_app.runs, "MAX_UPLOAD_BYTES", 100)
    at = open_page("pages/finetune.py")
    at.radio(key="ft_data").set_value("Upload a .txt file").run()
    at.file_uploader(key="ft_upload").set_value(("notes.txt", payload, "text/plain")).run()
    assert not at.exception
    assert message in at.error[0].value
    assert at.button(key="ft_launch").disabled
    assert not list((runs / "uploads").glob("*.txt")) if (runs / "uploads").exists() else True


def test_upload_valid_text_is_staged(runs: Path) -> None:
    at = open_page("pages/finetune.py")
    at.radio(key="ft_data").set_value("Upload a .txt file").run()
    at.file_uploader(key="ft_upload").set_value(("Short.txt", b"Emma. " * 50, "text/plain"))
    at.run()  # valid text, but its 5 % validation part cannot hold one window of 64 tokens
    assert any("too few for one window" in e.value for e in at.error)
    assert at.button(key="ft_launch").disabled
    text = "Emma smiled at her sister. " * 300  # one line, 8 kB
    at.file_uploader(key="ft_upload").set_value(("My Notes.txt", text.encode(), "text/plain"))
    at.run()
    no_errors(at)
    staged = list((runs / "uploads").glob("my-notes-*.txt"))
    assert len(staged) == 1 and staged[0].read_text() == text
    assert not at.button(key="ft_launch").disabled


def test_run_names_sanitised(runs: Path) -> None:
    at = tiny_form(open_page("pages/finetune.py"), ["qv", "mqa"])
    at.text_input(key="ft_name").set_value("../../etc").run()
    assert "looks like a path" in at.error[0].value
    assert at.button(key="ft_launch").disabled
    at.text_input(key="ft_name").set_value("My Run!").run()
    no_errors(at)
    assert any("Runs: my-run-qv, my-run-mqa" in c.value for c in at.caption)


def fake_grid(root: Path) -> None:
    """Finished paper-mini runs for QV/QKV x sin/agf x 2 seeds (status + metrics only)."""
    for cell, base in (("qkv", 4.0), ("qv", 4.2)):
        for pos, shift in (("sin", 0.0), ("agf", -0.1)):
            for seed in (0, 1):
                d = root / f"{paper.GRID_NAME}-{cell}-{pos}-s{seed}"
                d.mkdir()
                (d / "status.json").write_text(json.dumps({"state": "completed", "step": 150}))
                loss = base + shift + 0.01 * seed
                (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in (
                    {"step": 0, "tokens": 0, "val_loss": 8.3, "val_acc": 0.0,
                     "unigram_loss": 6.4, "bigram_loss": 4.6},
                    {"step": 150, "tokens": 1000, "val_loss": loss,
                     "val_acc": 0.3 - loss / 100})) + "\n")


def test_paper_tables_claims_and_curves(runs: Path) -> None:
    at = open_page("pages/paper.py")
    no_errors(at)
    paper_df = at.dataframe[0].value
    assert len(paper_df) == 6 and 70.7305 in list(paper_df["valid acc %"])
    assert any("30 runs" in c.value for c in at.caption)  # the paper's 6 cells x 5 seeds

    fake_grid(runs)
    qvka_app.paper.paper_results.clear()
    at.run()
    no_errors(at)
    ours = at.dataframe[1].value
    assert len(ours) == 4 and set(ours["n"]) == {2}
    assert "±" in ours["val loss (nats)"][0]
    assert set(ours["below bigram"]) >= {"+0.595", "+0.695"}  # 4.6 - 4.005, 4.6 - 3.905
    text = " ".join(m.value for m in at.markdown)
    assert "(1) QV is slightly behind QKV" in text and "95 % CI" in text
    pairs = at.dataframe[2].value
    assert "qv/sinusoidal − qkv/sinusoidal" in list(pairs["a − b"])
    (curves,) = at.get("vega_lite_chart")  # the learning curves, one layered chart
    assert "tokens" in curves.proto.spec


def test_loss_chart_names_run_and_split_in_its_legend() -> None:
    """A dash legend for the split did not render (train, validation and original showed as
    the same black dot): each (run, split) now has its own legend entry."""
    import pandas as pd

    frame = pd.DataFrame({"run": ["a", "a", "a"], "step": [1, 1, 2], "tokens": [8, 8, 16],
                          "split": ["train", "validation", "original"],
                          "loss": [5.0, 5.1, 5.2]})
    spec = qvka_app.runs_view.loss_chart(frame).to_dict()
    assert spec["encoding"]["color"]["field"] == "series"
    values = next(iter(spec["datasets"].values()))
    assert {v["series"] for v in values} == {"a · train", "a · validation", "a · original"}
    assert spec["encoding"]["x"]["axis"]["format"] == "d"  # whole steps on the axis


def test_finetune_page_cancel_then_resume(runs: Path) -> None:
    """The page's own buttons: Cancel stops a running job at its next step with a checkpoint,
    Resume requeues it from there, and the table follows."""
    at = tiny_form(open_page("pages/finetune.py"), ["qv"])
    at.number_input(key="ft_steps").set_value(100_000).run()  # long enough to catch running
    at.text_input(key="ft_name").set_value("long").run()
    at.button(key="ft_launch").click().run()
    no_errors(at)
    run_dir = runs / "long-qv"
    jobs.wait_for(run_dir, ("running",), timeout_s=120)
    deadline = time.monotonic() + 120
    while not jobs.read_metrics(run_dir) and time.monotonic() < deadline:
        time.sleep(0.2)  # past start-up: a step has been taken
    at.run()
    at.selectbox(key="ft_manage").set_value("long-qv").run()
    at.button(key="ft_cancel").click().run()
    no_errors(at)
    final = jobs.wait_for(run_dir, jobs.TERMINAL, timeout_s=120)
    assert final["state"] == "cancelled" and final["resumable"], final
    stopped_at = final["step"]
    assert (run_dir / "checkpoint" / "model.safetensors").exists()  # the final checkpoint
    at.run()
    assert at.dataframe[0].value.set_index("run").loc["long-qv", "state"] == "cancelled"
    at.button(key="ft_resume").click().run()
    no_errors(at)
    resumed = jobs.wait_for(run_dir, ("running",), timeout_s=120)
    assert resumed["step"] >= stopped_at  # from the checkpoint, not from scratch
    steps = [m["step"] for m in jobs.read_metrics(run_dir)]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # no step logged twice


def test_paper_page_grid_defaults_to_the_papers_cells_and_five_seeds(
        runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rerun controls launch the paper's 6 cells x 5 seeds by default; QV-Ka under
    sinusoidal PE is a toggle."""
    calls: list = []
    monkeypatch.setattr(qvka_app.paper, "launch_grid",
                        lambda *a, **k: calls.append((a, k)) or ([], []))
    at = open_page("pages/paper.py")
    assert any(c.value.startswith("30 runs") for c in at.caption)
    at.toggle(key="pp_qvka_both").set_value(True).run()
    assert any(c.value.startswith("40 runs") for c in at.caption)
    at.button(key="pp_launch").click().run()
    no_errors(at)
    assert calls == [((1.0, 5, "cpu"), {"qvka_both": True})]
