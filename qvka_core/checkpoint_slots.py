"""A run's checkpoints, complete at every instant (stdlib and psutil: jobs read it without
torch).

    RUN/checkpoints/step-N/            one complete checkpoint per slot
    RUN/checkpoint -> checkpoints/step-N   a relative symlink: the current checkpoint
    RUN/checkpoint/                    (runs written before slots) a real directory; still read,
                                       and moved into a slot by the next save

A save writes the new checkpoint into `checkpoints/.tmp-step-N-<pid>/`, fsyncs it, renames it
to its slot, then switches the pointer with one `os.replace` of a fresh symlink. The previous
slot is deleted only after the switch is durable, so a kill at any instant leaves the old
checkpoint, the new one, or both — never neither. Readers that open `RUN/checkpoint/...` see
one complete checkpoint or the other. Resume takes the newest complete slot (one whose
trainer state also exists), which is the pointer's target except inside the switch itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from qvka_core import machine

POINTER = "checkpoint"
SLOTS = "checkpoints"
_SLOT_RE = re.compile(r"^step-(\d+)(?:\.(\d+))?$")
# Temporary and displaced directories of the pre-slot writer (store.save_checkpoint).
_LEGACY_TMP = re.compile(r"^\.checkpoint\.(old|[A-Za-z0-9_]{8})$")
# Temp files of a killed atomic write (rundir.atomic_write_text, the state writer).
_TMP_FILE = re.compile(r"^\.[\w.-]+\.tmp(\d*)$")


def fsync_path(path: Path) -> None:
    """fsync one file or directory (directories make their entries' renames durable)."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(directory: Path) -> None:
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.is_symlink():
            fsync_path(path)
    fsync_path(directory)


def _meta_step(directory: Path) -> int | None:
    """The step in a checkpoint's meta.json (written last; a slot is complete by its rename)."""
    try:
        step = json.loads((directory / "meta.json").read_text(encoding="utf-8")).get("step")
    except (OSError, ValueError, AttributeError):
        return None
    return step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None


def has_state(run_dir: Path, step: int) -> bool:
    base = Path(run_dir) / "state" / f"step-{step}"
    return base.with_suffix(".json").is_file() and base.with_suffix(".safetensors").is_file()


def candidates(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Every complete checkpoint of a run as (step, directory), oldest first; the pointer's
    target sorts after a slot of the same step."""
    run_dir = Path(run_dir)
    found: list[tuple[int, int, Path]] = []
    slots = run_dir / SLOTS
    if slots.is_dir() and not slots.is_symlink():
        for d in slots.iterdir():
            if _SLOT_RE.match(d.name) and d.is_dir() and not d.is_symlink():
                step = _meta_step(d)
                if step is not None:
                    found.append((step, 0, d))
    pointer = run_dir / POINTER
    if pointer.is_dir():
        step = _meta_step(pointer)
        if step is not None:
            found.append((step, 1, pointer))
    legacy_old = run_dir / ".checkpoint.old"  # a kill inside the pre-slot swap left this
    if not pointer.exists() and legacy_old.is_dir():
        step = _meta_step(legacy_old)
        if step is not None:
            found.append((step, -1, legacy_old))
    return [(s, d) for s, _, d in sorted(found, key=lambda t: (t[0], t[1]))]


def current(run_dir: str | Path, *, need_state: bool = False) -> tuple[int, Path] | None:
    """(step, directory) of the newest complete checkpoint (with its trainer state when
    `need_state`), or None. A run written before slots answers with its `checkpoint/`."""
    found = candidates(run_dir)
    if need_state:
        with_state = [c for c in found if has_state(Path(run_dir), c[0])]
        found = with_state or found[-1:]  # without any state, resume reports what is missing
    return found[-1] if found else None


def _target(run_dir: Path) -> Path | None:
    pointer = run_dir / POINTER
    return pointer.resolve() if pointer.is_dir() else None


def repair(run_dir: str | Path) -> tuple[int, Path] | None:
    """Point `checkpoint` at the newest complete checkpoint that has its trainer state
    (a kill inside a switch can leave the pointer one save behind), then clean orphans.
    Returns (step, pointer) or None when the run has no complete checkpoint."""
    run_dir = Path(run_dir)
    newest = current(run_dir, need_state=True)
    if newest is not None and newest[1].resolve() != _target(run_dir):
        _point(run_dir, newest[1])
    clean_orphans(run_dir)
    found = current(run_dir, need_state=True)
    return (found[0], run_dir / POINTER) if found else None


def clean_orphans(run_dir: str | Path) -> None:
    """Delete temp dirs of interrupted saves and every slot but the current one."""
    run_dir = Path(run_dir)
    slots = run_dir / SLOTS
    target = _target(run_dir)
    for p in [*_entries(run_dir), *_entries(run_dir / "state")]:
        tmp = _TMP_FILE.match(p.name)
        if tmp and p.is_file() and not p.is_symlink() and not _writer_alive(tmp.group(1), p):
            p.unlink(missing_ok=True)
        elif p.name.startswith(f".{POINTER}.tmp-") and p.is_symlink():
            p.unlink(missing_ok=True)
        elif (_LEGACY_TMP.match(p.name) and p.is_dir() and not p.is_symlink()
              and target is not None):
            shutil.rmtree(p, ignore_errors=True)
    if target is None or not slots.is_dir() or slots.is_symlink():
        return
    for p in slots.iterdir():
        if p.is_symlink() or not p.is_dir():
            continue
        if p.name.startswith(".tmp-") or (_SLOT_RE.match(p.name) and p.resolve() != target):
            shutil.rmtree(p, ignore_errors=True)


def switch(run_dir: str | Path, step: int, write: Callable[[Path], None]) -> Path:
    """Write checkpoint `step` with `write(tmp_dir)` beside the current one and make it
    current atomically; returns the new slot. See the module docstring for the order."""
    run_dir = Path(run_dir)
    slots = run_dir / SLOTS
    slots.mkdir(parents=True, exist_ok=True)
    tmp = slots / f".tmp-step-{step}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        fsync_tree(tmp)
        slot = _free_slot(slots, step)
        os.rename(tmp, slot)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_path(slots)
    _point(run_dir, slot)
    clean_orphans(run_dir)
    return slot


def _point(run_dir: Path, slot: Path) -> None:
    """Make `checkpoint` a symlink to `slot` with one atomic replace (a slot outside
    checkpoints/, or a pre-slot `checkpoint/` directory, is first renamed into one)."""
    slots = run_dir / SLOTS
    slots.mkdir(exist_ok=True)
    pointer = run_dir / POINTER
    if slot.parent != slots:  # .checkpoint.old, or a pre-slot checkpoint/ itself
        moved = _free_slot(slots, _meta_step(slot) or 0)
        os.rename(slot, moved)
        fsync_path(run_dir)
        slot = moved
    if pointer.is_dir() and not pointer.is_symlink():  # a pre-slot run: move it into a slot
        os.rename(pointer, _free_slot(slots, _meta_step(pointer) or 0))
        fsync_path(run_dir)
    link = run_dir / f".{POINTER}.tmp-{os.getpid()}"
    link.unlink(missing_ok=True)
    os.symlink(f"{SLOTS}/{slot.name}", link)
    os.replace(link, pointer)  # the switch
    fsync_path(run_dir)


def _writer_alive(pid_text: str, path: Path) -> bool:
    """Whether another live process may still rename this temp file into place (the job
    worker writes job.json the same way): only a dead writer's temp file is an orphan. A
    process under that pid that started after the file was last written reused the number
    (psutil, so macOS keeps the guard too)."""
    if not pid_text or int(pid_text) == os.getpid():
        return False
    try:
        written = path.stat().st_mtime
    except OSError:
        return False  # gone meanwhile: nothing to clean
    return machine.alive(int(pid_text), started_by=written)


def _entries(directory: Path) -> list[Path]:
    return list(directory.iterdir()) if directory.is_dir() and not directory.is_symlink() else []


def _free_slot(slots: Path, step: int) -> Path:
    slot, n = slots / f"step-{step}", 1
    while slot.exists() or slot.is_symlink():
        slot, n = slots / f"step-{step}.{n}", n + 1
    return slot
