"""Convert -> heal -> export -> stock transformers: does the stock twin score the lab's loss?

    .venv/bin/python scripts/export_heal_loss.py                      # SmolLM2 -> QV-Ka
    .venv/bin/python scripts/export_heal_loss.py --steps 8 --d-ctx 32

1. `convert --from SOURCE --to qvka` (least-squares W_ctx, W_K,i; fidelity report),
2. `train --init` that conversion for a few steps, distilled from SOURCE (the healing run),
3. `export` the run's checkpoint to a stock Hugging Face folder,
4. score the run's own validation windows (the bundled corpus, evenly spaced) with the lab
   model and with stock `transformers.AutoModelForCausalLM` on the export; print both.

Everything goes under --work (default: a fresh temporary folder); on a rerun with the same
--work, finished stages (conversion, healing run) are reused. CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _cli(*argv: str) -> None:
    from qvka_core.cli import main

    print("$ python -m qvka_core " + " ".join(argv), flush=True)
    if main(list(argv)) != 0:
        raise SystemExit(f"command failed: {' '.join(argv)}")


@torch.no_grad()
def _mean_loss(forward, xs: torch.Tensor, ys: torch.Tensor, batch: int) -> float:
    total, count = 0.0, 0
    for i in range(0, xs.shape[0], batch):
        logits = forward(xs[i:i + batch]).float()  # (b, T, V)
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                 ys[i:i + batch].reshape(-1), reduction="sum").item()
        count += ys[i:i + batch].numel()
    return total / count


def heal_and_export(source: str, work: Path, *, steps: int, d_ctx: int, seq_len: int,
                    batch: int, eval_batches: int, teacher: str | None = None) -> dict:
    """Run the four stages; returns the losses and paths (also written to work/result.json)."""
    import transformers

    from qvka_core.checkpoints import load_checkpoint
    from qvka_core.data import fixed_windows, token_data

    runs, converted = work / "runs", work / "runs" / "qvka-converted"
    run, export_dir = runs / "heal", work / "exports" / "heal"
    if not (converted / "model.safetensors").exists():  # a rerun on the same --work rescores
        _cli("convert", "--from", source, "--to", "qvka", "--d-ctx", str(d_ctx),
             "--out", str(converted))
    if not (run / "checkpoint" / "model.safetensors").exists():
        _cli("train", "--init", str(converted), "--steps", str(steps), "--seq-len",
             str(seq_len), "--batch", str(batch), "--eval-batches", str(eval_batches),
             "--eval-every", str(steps), "--distill", "logits", "--teacher", teacher or source,
             "--device", "cpu", "--out", str(runs), "--name", "heal", "--quiet")
    _cli("export", "--checkpoint", str(run), "--out", str(export_dir), "--overwrite")

    lab = load_checkpoint(str(run / "checkpoint"))
    data = token_data("austen", lab.tokenizer)
    xs, ys = fixed_windows(data.validation, eval_batches * batch, seq_len)  # the run's windows
    stock = transformers.AutoModelForCausalLM.from_pretrained(
        str(export_dir), dtype=torch.float32).eval()
    result = {
        "source": source, "steps": steps, "d_ctx": d_ctx, "windows": [int(xs.shape[0]), seq_len],
        "run_val_loss": json.loads((run / "checkpoint" / "meta.json").read_text())["val_loss"],
        "lab_val_loss": _mean_loss(lambda x: lab.model.eval()(x).logits, xs, ys, batch),
        "stock_val_loss": _mean_loss(lambda x: stock(input_ids=x).logits, xs, ys, batch),
        "stock_class": type(stock).__name__, "export": str(export_dir),
    }
    (work / "result.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default="smollm2-135m")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--d-ctx", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--eval-batches", type=int, default=4)
    p.add_argument("--work", type=Path, default=None)
    a = p.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="export-heal-"))
    r = heal_and_export(a.source, work, steps=a.steps, d_ctx=a.d_ctx, seq_len=a.seq_len,
                        batch=a.batch, eval_batches=a.eval_batches)
    print(f"\n{r['source']} -> QV-Ka (d_ctx {r['d_ctx']}) -> {r['steps']} healing steps -> "
          f"{r['stock_class']}, on {r['windows'][0]} validation windows × {r['windows'][1]} "
          "tokens:")
    print(f"  lab QV-Ka (run record)  {r['run_val_loss']:.6f} nats/token")
    print(f"  lab QV-Ka (rescored)    {r['lab_val_loss']:.6f} nats/token")
    print(f"  stock {r['stock_class']}  {r['stock_val_loss']:.6f} nats/token  "
          f"(|Δ| {abs(r['stock_val_loss'] - r['lab_val_loss']):.1e})")


if __name__ == "__main__":
    main()
