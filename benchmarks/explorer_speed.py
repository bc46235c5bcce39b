"""Explorer speed: warm server-side script time for a 40-token sentence x 6 variants, the
core's eager forward per variant, and (if the MiniLM loader exists) our eager forward with
attention weights against HF's eager `output_attentions=True` on the same weights.

    .venv/bin/python benchmarks/explorer_speed.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from qvka_core.analysis import random_model, run_model  # noqa: E402

VARIANTS = ["mha", "gqa", "mqa", "mla", "qvka", "qv"]
SENTENCE = ("The old captain slowly told the young sailors a long story about storms , "
            "wrecks and distant islands , while the fire burned low and the wind kept "
            "howling outside the small wooden house by the grey sea .")


def timeit(fn, repeats: int) -> float:
    """Median wall seconds of `fn()` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_apptest(repeats: int) -> None:
    from streamlit.testing.v1 import AppTest

    import qvka_app.explorer

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.query_params.update({"text": SENTENCE, "variants": ",".join(VARIANTS)})
    at.run()
    at.switch_page("pages/explorer.py")
    t = time.perf_counter()
    at.run()
    cold = time.perf_counter() - t
    assert not at.exception, at.exception
    n_tok = len(qvka_app.explorer.run_cached("random", "mha", SENTENCE).tokens)
    warm = timeit(lambda: at.run(), repeats)  # cached forwards: views and figures only
    texts = iter(f"{SENTENCE} {i}" for i in range(1000))

    def new_text() -> None:
        at.text_area(key="text").input(next(texts))
        at.run()

    fresh = timeit(new_text, repeats)  # models warm, 6 new forwards
    print(f"Explorer script run, {n_tok} tokens x {len(VARIANTS)} variants (random family):")
    print(f"  first run (builds models, imports spaCy): {cold:6.2f} s")
    print(f"  warm rerun, results cached:               {warm:6.2f} s")
    print(f"  warm run, new text (6 forwards + views):  {fresh:6.2f} s")


def bench_core(repeats: int) -> None:
    models = {v: random_model(v) for v in VARIANTS}
    n_tok = len(models["mha"].tokenizer.encode(SENTENCE).ids)
    print(f"Core eager forward with weights, random 4-layer d=128 models, {n_tok} tokens:")
    for v, m in models.items():
        s = timeit(lambda m=m: run_model(m, SENTENCE), repeats)
        print(f"  {v:5s} {1000 * s:7.1f} ms")


def bench_minilm(repeats: int) -> None:
    try:
        from transformers import AutoModel

        from qvka_core.checkpoints import load_checkpoint
        from qvka_core.checkpoints.embedded import minilm_dir
    except ImportError as exc:
        print(f"MiniLM comparison skipped: {exc}")
        return
    ours = load_checkpoint("minilm-l6")
    hf = AutoModel.from_pretrained(str(minilm_dir()), attn_implementation="eager").eval()
    enc = ours.tokenizer.encode(SENTENCE)
    ids = torch.tensor([enc.ids])
    with torch.inference_mode():
        a = ours.model(ids, impl="eager", return_attentions=True).attentions
        b = hf(input_ids=ids, output_attentions=True).attentions
        diff = max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))

        t_ours = timeit(lambda: ours.model(ids, impl="eager", return_attentions=True), repeats)
        t_hf = timeit(lambda: hf(input_ids=ids, output_attentions=True), repeats)
    print(f"MiniLM-L6, {ids.shape[1]} tokens, eager with attention weights "
          f"(max |Δ attention| = {diff:.2e}):")
    print(f"  qvka_core {1000 * t_ours:7.1f} ms   HF {1000 * t_hf:7.1f} ms   "
          f"ratio ours/HF = {t_ours / t_hf:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-apptest", action="store_true")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 avoids OpenMP contention on a shared box)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bench_core(args.repeats)
    bench_minilm(args.repeats)
    if not args.skip_apptest:
        bench_apptest(args.repeats)


if __name__ == "__main__":
    main()
