"""Fidelity of the key-less conversions of SmolLM2-135M before and after a change of method,
judged on the same >= 4,096 held-out tokens of six texts, with paired standard errors.

    # 1. in the old tree (e.g. `git archive main | tar -x -C /tmp/before`): convert, save
    PYTHONPATH=/tmp/before .venv/bin/python benchmarks/convert_fidelity.py --save /tmp/fid/before
    # 2. here: convert with the current methods, save, then score everything side by side
    PYTHONPATH=. .venv/bin/python benchmarks/convert_fidelity.py --save /tmp/fid/after
    .venv/bin/python benchmarks/convert_fidelity.py --score /tmp/fid/before /tmp/fid/after

--score prints, per saved model, its loss against SmolLM2's on the same windows (paired SE
over windows) and, for each name present in both folders, after vs before paired directly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

if __name__ == "__main__" and "--score" in sys.argv:  # scoring always uses this tree's code
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CASES = {  # name -> (target, options); qvka-none only where the tree has the option
    "qv": ("qv", {}),
    "qvka": ("qvka", {"d_ctx": 64}),
    "qvka-none": ("qvka", {"d_ctx": 64, "qvka_weighting": "none"}),
    "qvka-128": ("qvka", {"d_ctx": 128}),
}
SOURCE = "smollm2-135m"


def save(out: Path, names: list[str]) -> None:
    import inspect

    import torch

    from qvka_core.checkpoints import load_checkpoint, save_checkpoint
    from qvka_core.convert import convert

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    loaded = load_checkpoint(SOURCE)
    known = set(inspect.signature(convert).parameters)
    for name in names:
        to, opts = CASES[name]
        if not set(opts) <= known:
            print(f"{name}: skipped (this tree has no {sorted(set(opts) - known)})")
            continue
        result = convert(loaded, to, **opts)
        save_checkpoint(out / name, result.model, tokenizer=loaded.tokenizer,
                        meta={"report": result.report.to_dict()}, overwrite=True)
        t = result.report.timings_s
        print(f"{name}: saved; calibrate + fit {t.get('calibrate_s', 0) + t['convert_s']:.1f} s",
              flush=True)


def score(folders: list[Path]) -> None:
    from qvka_core.checkpoints import load_checkpoint, load_checkpoint_dir
    from qvka_core.convert.fidelity import compare, held_out_windows

    src = load_checkpoint(SOURCE)
    windows, where = held_out_windows(None, src.tokenizer, vocab_size=src.config.vocab_size,
                                      max_seq_len=src.config.max_seq_len)
    print(f"{sum(w.numel() for _, w in windows)} tokens in {len(windows)} windows of {where}")
    models: dict[tuple[str, str], object] = {}
    rows = []
    for folder in folders:
        for d in sorted(p for p in folder.iterdir() if (p / "model.safetensors").exists()):
            m = load_checkpoint_dir(d).model.eval()
            models[(folder.name, d.name)] = m
            f = compare(src.model, m, windows)
            rows.append({"tree": folder.name, "model": d.name, **{k: f[k] for k in (
                "loss_before", "loss_after", "loss_diff_se", "js_divergence_mean",
                "hidden_cosine")}})
            print(f"{folder.name:>8} {d.name:10s} loss {f['loss_before']:.3f} -> "
                  f"{f['loss_after']:.3f} ({f['loss_after'] - f['loss_before']:+.3f} ± "
                  f"{f['loss_diff_se']:.3f}) JS {f['js_divergence_mean']:.3f} cos "
                  f"{f['hidden_cosine']:.3f}", flush=True)
    if len(folders) == 2:
        a, b = (f.name for f in folders)
        for (tree, name), m in models.items():
            if tree == b and (a, name) in models:
                f = compare(models[(a, name)], m, windows)
                print(f"{name}: {b} - {a} = {f['loss_after'] - f['loss_before']:+.4f} ± "
                      f"{f['loss_diff_se']:.4f} nats (paired over {f['eval_windows']} windows)")
        for name in ("qvka",):
            if (b, name) in models and (b, name + "-none") in models:
                f = compare(models[(b, name + "-none")], models[(b, name)], windows)
                print(f"query-energy weighting ({b}): {f['loss_after'] - f['loss_before']:+.4f}"
                      f" ± {f['loss_diff_se']:.4f} nats vs unweighted")
    print(json.dumps(rows))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", type=Path, metavar="DIR")
    parser.add_argument("--score", type=Path, nargs="+", metavar="DIR")
    parser.add_argument("--case", action="append", choices=sorted(CASES))
    args = parser.parse_args()
    if args.save:
        save(args.save, args.case or list(CASES))
    if args.score:
        score(args.score)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
