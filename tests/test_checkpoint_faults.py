"""Fault injection: the trainer is killed (os._exit, in a subprocess) just before each
filesystem mutation of a checkpoint save; resuming must lose no metric and log no step twice.

Three writers are covered: the slot writer (qvka_core.checkpoint_slots), a pre-slot run whose
real checkpoint/ directory is migrated by the killed save, and the pre-slot writer itself
(two renames), whose leftover .checkpoint.old must still be found.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qvka_core import checkpoint_slots as slots
from qvka_core.checkpoints.store import load_checkpoint_dir
from qvka_core.jobs.status import checkpoint_step
from qvka_core.train import TrainArgs, read_metrics, run
from tests import test_train

ROOT = Path(__file__).resolve().parents[1]
FAULT = ROOT / "tests" / "fixtures" / "fault_trainer.py"
STEPS, EVERY = 15, 5  # checkpoints at 5, 10, 15; the faults hit the save at step 10
LOGGED = [0, *range(5, STEPS + 1, 5)]
_one_thread, text_file = test_train._one_thread, test_train.text_file  # shared fixtures


def _fields(text_file: str, out: Path) -> dict:
    return dict(preset="tiny", variant="mha", n_layers=1, data=text_file, steps=STEPS, batch=4,
                seq_len=16, lr=3e-3, warmup=2, eval_every=EVERY, eval_batches=1,
                log_every=EVERY, checkpoint_every=EVERY, out=str(out), name="run",
                device="cpu")


def _trainer(fields: dict, kill_at: int, mode: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(FAULT), json.dumps(fields), str(kill_at), "2",
                           mode], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("mode", ["slots", "legacy", "old-writer"])
def test_kill_at_each_step_of_the_switch_loses_no_metric(
        mode: str, text_file: str, tmp_path: Path) -> None:
    killed_at = []
    for kill_at in range(1, 40):
        fields = _fields(text_file, tmp_path / f"k{kill_at}")
        run_dir = Path(fields["out"]) / "run"
        proc = _trainer(fields, kill_at, mode)
        if proc.returncode == 0:  # past the last mutation of the save: the run completed
            assert json.loads(proc.stdout.splitlines()[-1])["state"] == "completed"
            break
        assert proc.returncode == 9, proc.stderr[-2000:]
        killed_at.append(kill_at)
        before = read_metrics(run_dir)
        # Whatever instant it died at, a complete checkpoint is on disk and the status sees it.
        found = slots.current(run_dir, need_state=True)
        assert found is not None and found[0] in (EVERY, 2 * EVERY), (kill_at, found)
        assert checkpoint_step(run_dir) == found[0]

        resumed = run(TrainArgs(**fields).replace(resume=True))
        assert resumed.state == "completed" and resumed.step == STEPS
        after = read_metrics(run_dir)
        assert [m["step"] for m in after] == LOGGED, (kill_at, [m["step"] for m in after])
        for old in before:  # nothing up to the checkpoint resumed from was lost or changed
            if old["step"] <= found[0]:
                assert old in after
        assert load_checkpoint_dir(run_dir / "checkpoint").meta["step"] == STEPS
        _assert_clean(run_dir)
    assert len(killed_at) >= (5 if mode == "old-writer" else 7), killed_at  # all steps hit
    assert killed_at == list(range(1, len(killed_at) + 1))


def _assert_clean(run_dir: Path) -> None:
    """One slot, the pointer at it, no temp or displaced directory, one state."""
    assert (run_dir / "checkpoint").is_symlink()
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == [f"step-{STEPS}"]
    leftovers = [p.name for p in run_dir.iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers
    assert sorted(p.name for p in (run_dir / "state").iterdir()) == [
        f"step-{STEPS}.json", f"step-{STEPS}.safetensors"]


def test_pre_slot_run_still_loads_and_resumes(text_file: str, tmp_path: Path) -> None:
    """A run written before slots (a real checkpoint/ directory) loads and resumes."""
    fields = _fields(text_file, tmp_path) | {"steps": 10}
    first = run(TrainArgs(**fields))
    run_dir = first.run_dir
    target = (run_dir / "checkpoint").resolve()
    (run_dir / "checkpoint").unlink()
    os.rename(target, run_dir / "checkpoint")  # the old layout: checkpoint/ is the directory
    (run_dir / "checkpoints").rmdir()
    assert load_checkpoint_dir(run_dir / "checkpoint").meta["step"] == 10
    assert checkpoint_step(run_dir) == 10
    resumed = run(TrainArgs(**fields).replace(resume=True, steps=STEPS))
    assert resumed.state == "completed" and resumed.step == STEPS
    assert [m["step"] for m in read_metrics(run_dir)] == LOGGED
    _assert_clean(run_dir)


def test_a_temp_file_is_kept_only_while_its_writer_lives(tmp_path: Path) -> None:
    """clean_orphans leaves a live writer's temp file, and removes a dead writer's and one whose
    pid now names a process started after the file was written (a recycled pid)."""
    run_dir = tmp_path / "run"
    (run_dir / "state").mkdir(parents=True)
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    try:
        live = run_dir / f".status.json.tmp{writer.pid}"
        recycled = run_dir / "state" / f".step-5.json.tmp{writer.pid}"
        dead = run_dir / f".job.json.tmp{gone.pid}"
        for path in (live, recycled, dead):
            path.write_text("{}", encoding="utf-8")
        hour_ago = time.time() - 3600  # written an hour before `writer` started
        os.utime(recycled, (hour_ago, hour_ago))
        slots.clean_orphans(run_dir)
        assert live.exists()
        assert not recycled.exists() and not dead.exists()
    finally:
        writer.kill()
        writer.wait()
    slots.clean_orphans(run_dir)  # its writer is gone now
    assert not live.exists()
