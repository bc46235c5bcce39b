"""Train every bundled Austen checkpoint from scratch: same budget, same seed for all.

    nohup .venv/bin/python scripts/train_bundled.py > bundled.log 2>&1 &
    .venv/bin/python scripts/train_bundled.py --only austen-qv --force
    .venv/bin/python scripts/train_bundled.py --table     # rewrite the README table only
    .venv/bin/python scripts/train_bundled.py --reeval    # re-measure meta.json val metrics

Each model trains with the runner (qvka_core.train.run) into a scratch run directory, then is
exported to assets/checkpoints/<name>/ in float16 (config.json, model.safetensors,
tokenizer.json, meta.json). The exported file is reloaded into an fp32 model and re-evaluated,
so meta.json's val_loss / val_acc are those of the committed fp16 weights.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from qvka_core.checkpoints.store import load_checkpoint_dir, save_checkpoint  # noqa: E402
from qvka_core.data import fixed_windows, token_data  # noqa: E402
from qvka_core.train import BUNDLED, TrainArgs, run  # noqa: E402
from qvka_core.train.engine import evaluate  # noqa: E402
from qvka_core.train.setup import Dist  # noqa: E402

DEST = ROOT / "assets" / "checkpoints"
# 1,000 x 16 x 128 = 2.05 M tokens (~2 epochs of the train split), two thirds of the paper-mini
# budget at which every paper-mini cell ended 0.3-0.5 nats below the bigram (assets/paper_mini/).
BUDGET = {"steps": 1000, "batch": 16, "seq_len": 128, "lr": 3e-3, "warmup": 100, "seed": 0,
          "eval_batches": 8, "checkpoint_every": 250, "log_every": 100}


def train_one(name: str, overrides: dict, runs: Path, threads: int, command: str) -> dict:
    resume = (Path(runs) / name / "checkpoint").exists()  # a killed run continues
    args = TrainArgs(preset="austen", data="austen", out=str(runs), name=name, threads=threads,
                     device="cpu", eval_every=BUDGET["steps"], resume=resume, **BUDGET,
                     **overrides)
    t0 = time.time()
    result = run(args, on_metrics=lambda m: print(f"  {name} {json.dumps(m)}", flush=True))
    wall = time.time() - t0
    if result.state != "completed":
        raise SystemExit(f"{name}: {result.state}: {result.message}")
    trained = load_checkpoint_dir(result.run_dir / "checkpoint")
    half = copy.deepcopy(trained.model).half()
    meta = {"name": name, "steps": result.step, "tokens": result.tokens, "seed": args.seed,
            "wall_s": round(wall, 1), "train_wall_s": round(result.wall_s, 1),
            "unigram_loss": result.unigram_loss, "bigram_loss": result.bigram_loss,
            "val_loss_fp32": result.val_loss,
            "val_acc_fp32": result.val_acc, "dtype": "float16", "data": "austen",
            "train_args": args.to_dict(), "command": command,
            "params": sum(p.numel() for p in trained.model.parameters())}
    dest = DEST / name
    save_checkpoint(dest, half, tokenizer=trained.tokenizer, meta=meta, overwrite=True)
    vl, va = reevaluate(dest)
    print(f"{name}: val {vl:.4f} acc {va:.4f} unigram {result.unigram_loss:.4f} "
          f"wall {wall:.0f}s", flush=True)
    return meta


def reevaluate(dest: Path) -> tuple[float, float]:
    """Evaluate the committed fp16 weights, loaded the way users load them; update meta.json."""
    meta = json.loads((dest / "meta.json").read_text(encoding="utf-8"))
    a = TrainArgs.from_dict(meta["train_args"])
    loaded = load_checkpoint_dir(dest)
    data = token_data("austen", loaded.tokenizer, tokenizer_key="bundled")
    xs, ys = fixed_windows(data.validation, a.eval_batches * a.batch, a.seq_len)
    vl, va = evaluate(loaded.model, xs, ys, a.batch, torch.device("cpu"), Dist(),
                      contextlib.nullcontext())
    meta.update(val_loss=vl, val_acc=va)
    (dest / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n",
                                    encoding="utf-8")
    return vl, va


def write_table() -> None:
    rows = []
    for name in BUNDLED:
        path = DEST / name / "meta.json"
        if path.exists():
            rows.append(json.loads(path.read_text(encoding="utf-8")))
    lines = ["| name | variant | position | params | val loss | val acc | unigram | bigram | "
             "wall s |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for m in rows:
        a = m["train_args"]
        lines.append(f"| {m['name']} | {a['variant']} | {a.get('position') or 'rope'} | "
                     f"{m['params']:,} | {m['val_loss']:.3f} | {m['val_acc']:.3f} | "
                     f"{m['unigram_loss']:.3f} | {_cell(m.get('bigram_loss'))} | "
                     f"{m['wall_s']:.0f} |")
    readme = DEST / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.exists() else ""
    start, end = "<!-- table:start -->", "<!-- table:end -->"
    table = "\n".join([start, *lines, end])
    if start in text and end in text:
        text = text[:text.index(start)] + table + text[text.index(end) + len(end):]
    else:
        text = text + "\n" + table + "\n"
    readme.write_text(text, encoding="utf-8")
    print("\n".join(lines))


def _cell(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="names to train (default: all)")
    ap.add_argument("--force", action="store_true", help="retrain names already exported")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", help="keep the scratch runs here: a killed training resumes from "
                    "its last checkpoint (default: a temporary folder)")
    ap.add_argument("--table", action="store_true", help="only rewrite the README table")
    ap.add_argument("--reeval", action="store_true",
                    help="only re-evaluate the exported checkpoints (meta.json) and the table")
    args = ap.parse_args(argv)
    if args.reeval:
        for name in BUNDLED:
            if (DEST / name / "meta.json").exists():
                print(name, *(f"{v:.4f}" for v in reevaluate(DEST / name)), flush=True)
        args.table = True
    if not args.table:
        torch.set_num_threads(args.threads)
        command = "python scripts/train_bundled.py " + " ".join(argv or sys.argv[1:])
        names = args.only or list(BUNDLED)
        unknown = [n for n in names if n not in BUNDLED]
        if unknown:
            raise SystemExit(f"unknown bundled name(s): {unknown}; valid: {list(BUNDLED)}")
        with contextlib.ExitStack() as stack:
            tmp = args.runs or stack.enter_context(
                tempfile.TemporaryDirectory(prefix="qvka-bundled-"))
            for name in names:
                if (DEST / name / "meta.json").exists() and not args.force:
                    print(f"{name}: exists, skipped (use --force)", flush=True)
                    continue
                train_one(name, BUNDLED[name], Path(tmp), args.threads, command.strip())
                write_table()
    write_table()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
