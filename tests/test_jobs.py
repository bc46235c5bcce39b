"""Job system: queue order and concurrency, cancel, crash + resume, restart view, names, delete.

Most cases use tests/fixtures/fake_trainer.py (same run-directory contract as the real
runner, no torch, milliseconds per step); `test_real_runner_*` uses `python -m qvka_core
train` with a tiny budget. Every process a test starts is killed (by process group) after it.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from qvka_core import jobs
from qvka_core.errors import LabError, RunError
from qvka_core.jobs.store import atomic_write_json, pid_alive, read_job

FAKE = [sys.executable, str(Path(__file__).parent / "fixtures" / "fake_trainer.py")]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh runs root; afterwards every worker/trainer started under it is killed."""
    path = tmp_path / "runs"
    monkeypatch.setenv("QVKA_RUNS", str(path))
    yield path
    for run_dir in path.iterdir() if path.exists() else []:
        job = read_job(run_dir) or {}
        for pid in (job.get("train_pid"), job.get("worker_pid")):
            if pid and pid_alive(pid, run_dir.name):
                try:
                    os.killpg(pid, signal.SIGKILL) if pid == job.get("worker_pid") \
                        else os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass


def fake_submit(name: str, steps: int = 6, sleep: float = 0.02, **kw: object) -> dict:
    return jobs.submit(["--steps", str(steps), "--sleep", str(sleep)], name=name, device="cpu",
                       trainer=FAKE, **kw)


def metric_times(run_dir: str) -> tuple[float, float]:
    recs = jobs.read_metrics(run_dir)
    return recs[0]["time"], recs[-1]["time"]


def test_concurrent_submits_run_one_at_a_time_in_order(root: Path) -> None:
    results: list[dict] = []
    threads = [threading.Thread(target=lambda n=n: results.append(fake_submit(f"t{n}")))
               for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seqs = sorted(r["seq"] for r in results)
    assert seqs == [1, 2, 3]
    assert {r["state"] for r in results} <= {"queued", "waiting", "running"}
    final = [jobs.wait_for(r["run_dir"], timeout_s=30) for r in results]
    assert all(s["state"] == "completed" for s in final)
    spans = sorted((s["seq"], *metric_times(s["run_dir"])) for s in final)
    for (_, _, end), (_, start, _) in itertools.pairwise(spans):
        assert start > end  # strictly sequential on the one CPU slot, in submission order


def test_concurrent_submits_from_two_processes(root: Path) -> None:
    code = ("import sys; from qvka_core import jobs; r = jobs.submit(['--steps', '3'], "
            f"name=sys.argv[1], device='cpu', trainer={FAKE!r}); print(r['seq'])")
    procs = [subprocess.Popen([sys.executable, "-c", code, f"p{i}"], cwd=REPO,
                              stdout=subprocess.PIPE, text=True) for i in range(2)]
    seqs = sorted(int(p.communicate(timeout=60)[0].strip()) for p in procs)
    assert seqs == [1, 2]
    for i in range(2):
        assert jobs.wait_for(root / f"p{i}", timeout_s=30)["state"] == "completed"


def test_gpu_slots_run_in_parallel_one_job_per_gpu(root: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QVKA_FAKE_GPUS", "2")  # scheduling only; the fake trainer needs no GPU
    subs = [jobs.submit(["--steps", "20", "--sleep", "0.03"], name=f"gpu{i}", device="cuda",
                        trainer=FAKE) for i in range(3)]
    final = [jobs.wait_for(s["run_dir"], timeout_s=30) for s in subs]
    assert [f["state"] for f in final] == ["completed"] * 3
    assigned = [f["assigned"] for f in final]
    assert sorted(assigned[:2]) == [["cuda:0"], ["cuda:1"]]
    (a0, a1), (b0, b1) = metric_times(final[0]["run_dir"]), metric_times(final[1]["run_dir"])
    assert a0 < b1 and b0 < a1  # the first two overlapped, one per GPU
    c0 = metric_times(final[2]["run_dir"])[0]
    assert c0 > min(a1, b1)  # the third waited for a free GPU
    log = (root / "gpu0" / "log.txt").read_text()
    assert "--device cuda" in log


def test_multi_gpu_job_is_torchrun_on_exactly_its_gpus(root: Path) -> None:
    """What a 2-GPU job runs (the DDP test runs this same prefix with gloo on the CPU)."""
    from qvka_core.jobs.worker import trainer_command

    prefix = jobs.api.trainer_prefix(2)
    assert prefix[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                          "2", "-m", "qvka_core", "train"]
    assert jobs.api.trainer_prefix(1)[1:] == ["-m", "qvka_core", "train"]
    job = {"argv": ["--steps", "5"], "trainer": prefix}
    cmd, env = trainer_command(job, root / "ddp", ["cuda:2", "cuda:3"])
    assert cmd[:len(prefix)] == prefix
    assert cmd[len(prefix):] == ["--steps", "5", "--device", "cuda", "--out", str(root),
                                 "--name", "ddp"]
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3"  # each rank's LOCAL_RANK indexes into these
    cpu_cmd, cpu_env = trainer_command(job, root / "c", ["cpu"])
    assert cpu_cmd[cpu_cmd.index("--device") + 1] == "cpu"
    assert cpu_env.get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")


def test_cancel_queued_and_running(root: Path) -> None:
    a = fake_submit("long", steps=400, sleep=0.02)
    b = fake_submit("behind")
    assert jobs.job_status(b["run_dir"])["state"] in ("queued", "waiting")
    assert jobs.cancel("behind")["state"] == "cancelled"
    jobs.wait_for(a["run_dir"], states=("running",), timeout_s=20)
    time.sleep(0.3)
    jobs.cancel("long")
    st = jobs.wait_for(a["run_dir"], timeout_s=20)
    assert st["state"] == "cancelled" and 0 < st["step"] < 400
    assert st["resumable"]
    assert jobs.job_status(b["run_dir"])["state"] == "cancelled"
    assert not (Path(b["run_dir"]) / "metrics.jsonl").exists()  # it never ran
    with pytest.raises(RunError, match="nothing to cancel"):
        jobs.cancel("long")


def test_resumed_run_no_longer_reads_as_its_old_final_state(root: Path) -> None:
    st = fake_submit("again", steps=400, sleep=0.02)
    jobs.wait_for(st["run_dir"], states=("running",), timeout_s=20)
    jobs.cancel("again")
    # Right after the trainer writes its final status, its worker may still be exiting:
    # resuming or deleting then would race the old worker's last write of job.json.
    first = jobs.job_status(st["run_dir"])
    if first["state"] == "cancelled" and first["exiting"]:
        assert not first["resumable"]
        with pytest.raises(RunError, match="still stopping|cancel it"):
            jobs.delete("again")
    assert jobs.wait_for(st["run_dir"], timeout_s=20)["resumable"]
    jobs.resume("again")
    resumed = jobs.job_status(st["run_dir"])
    assert resumed["state"] in ("queued", "waiting", "running")  # not the old "cancelled"
    assert jobs.cancel("again")["state"] in ("cancelled", "running")  # cancellable again
    jobs.wait_for(st["run_dir"], timeout_s=30)


def test_kill_trainer_then_resume_keeps_metrics(root: Path) -> None:
    st = fake_submit("crashy", steps=60, sleep=0.03)
    run_dir = Path(st["run_dir"])
    deadline = time.time() + 60  # generous: CI machines are shared and slow under load
    while len(jobs.read_metrics(run_dir)) < 12 and time.time() < deadline:
        time.sleep(0.05)
    os.kill(read_job(run_dir)["train_pid"], signal.SIGKILL)
    crashed = jobs.wait_for(run_dir, timeout_s=10)
    assert crashed["state"] == "crashed"
    assert "resumable from step" in crashed["message"] and crashed["resume_from"] >= 10
    assert len(jobs.read_metrics(run_dir)) >= 12  # metrics up to the crash are shown
    results: list[object] = []

    def press_resume() -> None:
        try:
            results.append(jobs.resume("crashy"))
        except RunError as exc:
            results.append(exc)

    threads = [threading.Thread(target=press_resume) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(r, RunError) for r in results) == 1  # two tabs: one resume wins
    done = jobs.wait_for(run_dir, timeout_s=30)
    assert done["state"] == "completed"
    assert [r["step"] for r in jobs.read_metrics(run_dir)] == list(range(1, 61))
    assert len(read_job(run_dir)["attempts"]) == 1


def test_restart_view_recomputes_states_from_disk(root: Path) -> None:
    def make(name: str, job: dict, status: dict | None) -> Path:
        d = root / name
        d.mkdir(parents=True)
        base = {"id": name, "name": name, "argv": [], "device": "cpu", "slots": ["cpu"],
                "seq": len(list(root.iterdir())), "submitted_ts": 0.0, "trainer": FAKE}
        atomic_write_json(d / "job.json", {**base, **job})
        if status:
            atomic_write_json(d / "status.json", status)
        return d

    dead = 2**22 + 12345  # beyond the default pid_max: never a live pid
    make("done", {"started_at": "x", "finished_at": "y", "exit_code": 0, "train_pid": dead},
         {"state": "completed", "step": 5})
    d = make("crashed", {"started_at": "x", "train_pid": dead, "worker_pid": dead},
             {"state": "running", "step": 7})
    (d / "checkpoint").mkdir()
    atomic_write_json(d / "checkpoint" / "meta.json", {"step": 5})
    make("orphan", {"worker_pid": dead}, None)
    make("plain", {}, None)
    (root / "plain" / "job.json").unlink()  # a `train` run without job.json
    atomic_write_json(root / "plain" / "status.json", {"state": "running", "pid": dead})
    # `train` runs whose status names a live pid: this process, started at pid_created, or a
    # record of an earlier process under the same number (a recycled pid).
    import psutil

    me = psutil.Process().create_time()
    for name, created in (("plain-live", me), ("plain-recycled", me - 3600)):
        (root / name).mkdir()
        atomic_write_json(root / name / "status.json",
                          {"state": "running", "pid": os.getpid(), "pid_created": created})
    states = {r["id"]: (r["state"], r["message"]) for r in jobs.list_jobs()}
    assert states["plain-live"][0] == "running" and states["plain-recycled"][0] == "crashed"
    assert states["done"][0] == "completed"
    assert states["crashed"] == ("crashed", "crashed at step 7 — resumable from step 5")
    assert states["orphan"][0] == "crashed" and "requeue" in states["orphan"][1]
    assert states["plain"][0] == "crashed"


def test_final_state_with_a_live_trainer_keeps_the_page_refreshing(root: Path) -> None:
    """A run whose trainer wrote "completed" but has not exited yet is still busy: the
    Fine-tune page stopped polling at that moment and never showed the run's actions."""
    from qvka_app import runinfo

    d = root / "late"
    d.mkdir(parents=True)
    trainer = subprocess.Popen(["sh", "-c", "sleep 30", d.name])  # "late" is in its cmdline
    try:
        atomic_write_json(d / "job.json", {
            "id": "late", "name": "late", "argv": [], "device": "cpu", "slots": ["cpu"],
            "seq": 1, "submitted_ts": 0.0, "trainer": FAKE, "started_at": "x",
            "train_pid": trainer.pid})
        atomic_write_json(d / "status.json", {"state": "completed", "step": 3})
        exiting = jobs.job_status(d)
        assert exiting["state"] == "completed" and exiting["exiting"]
        assert runinfo.busy(exiting) and not exiting["resumable"]
    finally:
        trainer.kill()
        trainer.wait()
    done = jobs.job_status(d)
    assert done["state"] == "completed" and not runinfo.busy(done)
    queued = {**done, "state": "queued", "exiting": False}
    assert runinfo.busy(queued)


@pytest.mark.parametrize("bad", ["", "  ", ".", "..", "../x", "/etc", "a/b", ".hidden",
                                 "a\\b", "---", "x" * 80])
def test_bad_names_rejected(root: Path, bad: str) -> None:
    with pytest.raises(RunError):
        fake_submit(bad)
    assert not any(p.is_dir() for p in root.iterdir() if not p.name.startswith("."))


def test_names_slugified_unique_and_renamed(root: Path) -> None:
    assert jobs.slugify("My Run #1 (QV)") == "my-run-1-qv"
    st = fake_submit("My Run", steps=2)
    assert st["id"] == "my-run"
    with pytest.raises(RunError, match="already exists"):
        fake_submit("my run")
    other = fake_submit("other", steps=2)
    with pytest.raises(RunError, match="already used"):
        jobs.rename(other["id"], "my-run")
    assert jobs.rename(other["id"], "Renamed")["name"] == "renamed"
    assert (root / "other").is_dir()  # the directory (id) never changes
    assert jobs.show("renamed")["id"] == "other"  # commands accept the new name too
    assert jobs.run_dir_of("renamed", root) == root / "other"
    with pytest.raises(RunError, match="already"):
        fake_submit("renamed")
    with pytest.raises(RunError):
        jobs.show("../other")


def test_delete_refuses_while_running(root: Path) -> None:
    st = fake_submit("busy", steps=400, sleep=0.02)
    with pytest.raises(RunError, match="cancel it"):
        jobs.delete("busy")
    cli = [sys.executable, "-m", "qvka_core", "jobs", "--runs", str(root), "delete", "busy"]
    assert subprocess.run(cli, cwd=REPO, capture_output=True).returncode == 2  # needs --yes
    jobs.cancel("busy")
    jobs.wait_for(st["run_dir"], timeout_s=20)
    subprocess.run([*cli, "--yes"], cwd=REPO, check=True, capture_output=True)
    assert not (root / "busy").exists()


def test_submit_rejects_reserved_and_invalid_options(root: Path) -> None:
    with pytest.raises(RunError, match="--out"):
        jobs.submit(["--out", "x"], name="x", device="cpu")
    with pytest.raises(LabError, match="warmup"):  # the train parser's own rules, before queueing
        jobs.submit(["--steps", "5", "--warmup", "30"], name="y", device="cpu")
    with pytest.raises(RunError, match="no CUDA|does not exist"):
        jobs.submit(["--steps", "5", "--warmup", "1"], name="z", device="cuda:7")
    # What the trainer would refuse once it reads the model's config is refused here already
    with pytest.raises(LabError, match="seq_len 4096 exceeds the model's max_seq_len 128"):
        jobs.submit(["--init", "austen-qv", "--seq-len", "4096", "--steps", "1"], name="w",
                    device="cpu")
    with pytest.raises(LabError, match="no-such-model"):
        jobs.submit(["--init", "no-such-model", "--steps", "1"], name="v", device="cpu")
    assert not any((root / n).exists() for n in ("x", "y", "w", "v"))
    jobs.preflight(["--preset", "austen", "--seq-len", "4096"])  # from scratch: any length


def test_submit_refuses_a_data_file_the_trainer_would(root: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A missing, binary or too short --data file used to be queued (exit 0) and fail later."""
    from qvka_core.cli import main

    binary, short, ok = tmp_path / "bin.txt", tmp_path / "short.txt", tmp_path / "ok.txt"
    binary.write_bytes(b"\x00\x01\x02 binary")
    short.write_text("Only a few words here.", encoding="utf-8")
    ok.write_text(" ".join(f"w{i}" for i in range(2000)), encoding="utf-8")  # one long line
    for path, why in ((tmp_path / "missing.txt", "does not exist|not found|no such"),
                      (binary, "binary"), (short, "too few for one window")):
        with pytest.raises(LabError, match=why):
            jobs.preflight(["--data", str(path), "--seq-len", "32", "--steps", "1"])
        code = main(["jobs", "submit", "--name", "bad", "--", "--data", str(path),
                     "--seq-len", "32", "--steps", "1"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert not (root / "bad").exists()
    jobs.preflight(["--data", str(ok), "--seq-len", "32", "--steps", "1"])


def test_estimate_warns_when_memory_exceeds_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    estimate_mod = importlib.import_module("qvka_core.jobs.estimate")  # the module

    ram = estimate_mod.memory_bytes("cpu")
    assert ram and ram > 2**30  # this machine's RAM, read from the OS
    argv = ["--init", "austen-qv", "--batch", "8", "--seq-len", "64"]
    small = jobs.estimate(argv)
    assert small["warning"] is None and small["memory_capacity_bytes"] == ram
    distilled = jobs.estimate(argv + ["--distill", "logits", "--teacher", "austen-mha"])
    assert distilled["memory_total_bytes"] > small["memory_total_bytes"]  # the teacher counts
    monkeypatch.setattr(estimate_mod, "memory_bytes", lambda kind: small["memory_total_bytes"])
    big = jobs.estimate(["--init", "austen-qv", "--batch", "64", "--seq-len", "64"])
    assert "more than this machine's" in big["warning"] and "RAM" in big["warning"]


def test_estimate_is_labelled_and_positive() -> None:
    est = jobs.estimate(["--preset", "austen", "--variant", "qv", "--steps", "100"])
    assert est["estimate"] is True and "estimate" in est["label"]
    assert est["seconds"] > est["startup_s"] and est["memory_total_bytes"] > 16 * est["params"]
    gpu = jobs.estimate(["--steps", "100"], device="cuda", gpu="H200")
    assert gpu["seconds"] < est["seconds"] and "35%" in gpu["throughput_basis"]


def test_estimate_calibrates_on_completed_runs(tmp_path: Path) -> None:
    from qvka_core.train.bundled import austen_config

    d = tmp_path / "past"
    d.mkdir()
    atomic_write_json(d / "status.json", {"state": "completed", "step": 10})
    atomic_write_json(d / "config.json", {"train": {"seq_len": 64, "device": "cpu"},
                                          "model": austen_config().to_dict()})
    (d / "metrics.jsonl").write_text(json.dumps({"step": 10, "tokens": 64_000,
                                                 "elapsed_s": 10.0}) + "\n")
    argv = ["--preset", "austen", "--steps", "10", "--batch", "100", "--seq-len", "64",
            "--warmup", "1", "--eval-every", "100", "--eval-batches", "1"]
    est = jobs.estimate(argv, root=tmp_path)
    assert est["measured_flops"] > 0
    # 64,000 tokens took 10 s there; 10 x 100 x 64 = the same tokens here (+ one eval pass)
    assert 10 < est["measured_seconds"] - est["startup_s"] < 12
    assert jobs.estimate(argv, root=tmp_path / "none")["measured_seconds"] is None


def _runner_accepts_queue_files(tmp: Path) -> bool:
    """Does the runner start a fresh run in a directory that already holds job.json/log.txt?"""
    from qvka_core.train.args import TrainArgs
    from qvka_core.train.engine import _prepare_dir
    from qvka_core.train.rundir import RunDir

    d = tmp / "probe"
    d.mkdir()
    (d / "job.json").write_text("{}")
    (d / "log.txt").write_text("")
    try:
        _prepare_dir(TrainArgs(out=str(tmp), name="probe"), RunDir(d))
    except RunError:
        return False
    return True


@pytest.mark.slow
def test_real_runner_kill_and_resume(root: Path, tmp_path: Path) -> None:
    """The real `python -m qvka_core train`: kill -9 mid-run, resume, no metric lost."""
    if not _runner_accepts_queue_files(tmp_path):
        pytest.xfail("the runner refuses a fresh run directory holding the queue's job.json and "
                     "log.txt (qvka_core/train/engine.py _prepare_dir); see the jobs report")
    argv = ["--preset", "austen", "--variant", "qv", "--position", "agf", "--steps", "24",
            "--batch", "4", "--seq-len", "32", "--warmup", "2", "--log-every", "2",
            "--eval-every", "12", "--eval-batches", "1", "--checkpoint-every", "8"]
    t0 = time.time()
    st = jobs.submit(argv, name="real", device="cpu")
    run_dir = Path(st["run_dir"])
    deadline = t0 + 60
    while time.time() < deadline:
        steps = [r["step"] for r in jobs.read_metrics(run_dir)]
        if (steps and steps[-1] >= 10) or jobs.job_status(run_dir)["state"] in jobs.TERMINAL:
            break
        time.sleep(0.1)
    assert jobs.job_status(run_dir)["state"] == "running", jobs.log_tail(run_dir)
    os.kill(read_job(run_dir)["train_pid"], signal.SIGKILL)
    crashed = jobs.wait_for(run_dir, timeout_s=20)
    # the newest complete checkpoint at the kill: step 8, or 16 on a fast machine (steps
    # 10 -> 16 can pass between two polls)
    saved = json.loads((run_dir / "checkpoint" / "meta.json").read_text())["step"]
    assert saved in (8, 16)
    assert crashed["state"] == "crashed" and crashed["resume_from"] == saved, crashed
    jobs.resume("real")
    done = jobs.wait_for(run_dir, timeout_s=90)
    assert done["state"] == "completed", jobs.log_tail(run_dir)
    steps = [r["step"] for r in jobs.read_metrics(run_dir)]
    assert steps == sorted(set(steps)) and set(range(0, 25, 2)) <= set(steps), steps
    assert json.loads((run_dir / "status.json").read_text())["step"] == 24


def test_page_polls_fast_only_while_a_run_awaits_its_first_point(root: Path) -> None:
    from qvka_app import runinfo

    assert runinfo.poll_seconds([]) is None
    first = fake_submit("first", steps=300, sleep=0.02)
    second = fake_submit("second", steps=2)
    jobs.wait_for(first["run_dir"], ("running",), timeout_s=20)
    deadline = time.time() + 20
    while not jobs.job_status(first["run_dir"])["last_metrics"] and time.time() < deadline:
        time.sleep(0.05)
    behind = jobs.job_status(second["run_dir"])
    assert behind["state"] in ("queued", "waiting") and not behind["starting"]
    # one run training with metrics, one waiting for the slot: the calm pace
    assert runinfo.poll_seconds(jobs.list_jobs()) == 2.0
    fresh = {**behind, "state": "running", "last_metrics": None}
    assert runinfo.poll_seconds([fresh]) == 1.0  # started, no point yet: quick
    jobs.cancel("first")
    for st in (first, second):
        jobs.wait_for(st["run_dir"], timeout_s=30)
    assert runinfo.poll_seconds(jobs.list_jobs()) is None  # all done: no polling


def test_submit_refuses_a_job_past_the_device_memory_unless_forced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Llama-3-8B on the CPU estimates far past this machine's RAM: refused with the estimate
    and the memory; --force-memory queues it and tells the trainer to skip its own check."""
    from qvka_core.jobs import api, worker

    monkeypatch.setenv("QVKA_FAKE_GPUS", "0")
    monkeypatch.setattr(api, "_spawn_worker", lambda run_dir: 0)  # nothing is started
    argv = ["--preset", "llama3-8b", "--steps", "1"]
    with pytest.raises(LabError, match=r"peak memory is an estimated .*GiB.*this machine has"):
        jobs.submit(argv, name="big", device="cpu", root=tmp_path)
    assert not (tmp_path / "big").exists()
    st = jobs.submit(argv, name="big", device="cpu", root=tmp_path, force_memory=True)
    job = read_job(tmp_path / st["id"])
    assert job["force_memory"] is True
    _, env = worker.trainer_command(job, tmp_path / st["id"], ["cpu"])
    assert env[worker.FORCE_MEMORY_ENV] == "1"
