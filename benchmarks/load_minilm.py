"""Load-time benchmark: our loader vs transformers, in one process, alternating, median.

    .venv/bin/python benchmarks/load_minilm.py [--repeats 7] [--build-smollm2]

MiniLM: `load_checkpoint("minilm-l6")` (model + tokenizer) against
`AutoModel.from_pretrained(dir, attn_implementation="eager")` (model only, the stricter
baseline) and AutoModel + AutoTokenizer. Imports are done before timing. Target: ratio of
ours to HF AutoModel <= 1.2. SmolLM2: cached `load_checkpoint("smollm2-135m")` (target
< 3 s); the cache is built first only with --build-smollm2 (~15 s, 1.2 GB RAM).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from qvka_core.checkpoints import embedded, load_checkpoint  # noqa: E402


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--build-smollm2", action="store_true")
    args = ap.parse_args()
    hf_logging.disable_progress_bar()
    d = str(embedded.minilm_dir())
    runs = {
        "ours: load_checkpoint (model+tokenizer)": lambda: load_checkpoint("minilm-l6"),
        "hf: AutoModel": lambda: AutoModel.from_pretrained(d, attn_implementation="eager"),
        "hf: AutoModel+AutoTokenizer": lambda: (
            AutoModel.from_pretrained(d, attn_implementation="eager"),
            AutoTokenizer.from_pretrained(d)),
    }
    for fn in runs.values():  # warm-up: page cache, lazy imports
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():  # alternating, so drift hits all equally
            times[name].append(_timed(fn)[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"MiniLM-L6 load, median of {args.repeats} (torch threads {torch.get_num_threads()})")
    for name, t in med.items():
        print(f"  {name:<42} {t * 1000:8.1f} ms")
    ours = med["ours: load_checkpoint (model+tokenizer)"]
    ratio = ours / med["hf: AutoModel"]
    print(f"  ratio ours / hf AutoModel = {ratio:.2f} (target <= 1.2): "
          f"{'OK' if ratio <= 1.2 else 'SLOWER'}")

    loaded, hf = load_checkpoint("minilm-l6"), runs["hf: AutoModel"]().eval()
    ids = torch.tensor([loaded.tokenizer.encode("The quick brown fox jumps over the dog.").ids])
    with torch.no_grad():
        a = loaded.model(ids, impl="eager", return_attentions=True).attentions
        b = hf(input_ids=ids, output_attentions=True).attentions
    err = max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))
    print(f"  parity: max |attention ours - hf eager| = {err:.2e}")

    cache = embedded.smollm2_cache_dir()
    if not (cache / "config.json").exists():
        if not args.build_smollm2:
            print(f"SmolLM2: no cache at {cache}; rerun with --build-smollm2 to build it")
            return 0
        t, _ = _timed(lambda: load_checkpoint("smollm2-135m"))
        print(f"SmolLM2 first load (GGUF -> cache): {t:.1f} s")
    sm = [_timed(lambda: load_checkpoint("smollm2-135m"))[0] for _ in range(3)]
    t = statistics.median(sm)
    print(f"SmolLM2 cached load, median of 3: {t:.2f} s (target < 3 s): "
          f"{'OK' if t < 3 else 'SLOWER'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
