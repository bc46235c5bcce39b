"""Peak memory (RSS) of converting SmolLM2-135M to each attention variant.

Each conversion runs in a fresh subprocess, so its peak RSS (`resource.getrusage`,
ru_maxrss) covers exactly one load + one conversion + its fidelity report; the RSS after
loading is printed too, so the conversion's own share is visible. Target: < 3 GB.

    .venv/bin/python benchmarks/convert_memory.py            # every variant
    .venv/bin/python benchmarks/convert_memory.py --to mla   # one
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES: dict[str, dict[str, int]] = {
    "mha": {}, "gqa": {"n_kv_heads": 3}, "mqa": {}, "mla": {"kv_lora_rank": 128},
    "qv": {}, "qvka": {"d_ctx": 64},
}
TARGET_GB = 3.0


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: KiB


def one(to: str) -> dict:
    """Load SmolLM2, convert to `to` with a report; memory and the report's key figures."""
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    from qvka_core.checkpoints import load_checkpoint
    from qvka_core.convert import convert
    from qvka_core.data import train_text, validation_text

    t0 = time.perf_counter()
    loaded = load_checkpoint("smollm2-135m")
    load_s, after_load = time.perf_counter() - t0, _rss_gb()
    out = convert(loaded, to, calib_text=train_text()[:40_000],
                  eval_text=validation_text()[:8_000], **CASES[to])
    r = out.report
    return {
        "to": to, "options": r.options, "load_s": round(load_s, 1),
        "rss_after_load_gb": round(after_load, 3), "peak_rss_gb": round(_rss_gb(), 3),
        "js_divergence_mean": r.js_divergence_mean, "hidden_cosine": r.hidden_cosine,
        "loss_before": r.loss_before, "loss_after": r.loss_after,
        "params_before": r.params_before, "params_after": r.params_after,
        "attention_params_before": r.attention_params_before,
        "attention_params_after": r.attention_params_after,
        "kv_bytes_before": r.kv_cache_bytes_per_token_before,
        "kv_bytes_after": r.kv_cache_bytes_per_token_after,
        "eval_tokens": r.eval_tokens, "timings_s": r.timings_s,
        "calibration": r.diagnostics.get("calibration"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--to", choices=sorted(CASES), action="append")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return 0
    rows = []
    for to in args.to or list(CASES):
        proc = subprocess.run([sys.executable, __file__, "--one", to], cwd=ROOT,
                              capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        if proc.returncode:
            print(f"{to}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            return 1
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{to:5s} peak RSS {r['peak_rss_gb']:.2f} GB "
              f"(after load {r['rss_after_load_gb']:.2f}) | JS {r['js_divergence_mean']:.4f}"
              f" bits | cos {r['hidden_cosine']:.4f} | loss "
              f"{r['loss_before']:.3f} -> {r['loss_after']:.3f} | params {r['params_before']:,}"
              f" -> {r['params_after']:,} | KV B/token {r['kv_bytes_before']:,} -> "
              f"{r['kv_bytes_after']:,} | convert {r['timings_s']['convert_s']:.1f}s",
              flush=True)
    worst = max(r["peak_rss_gb"] for r in rows)
    print(f"worst peak RSS: {worst:.2f} GB (target < {TARGET_GB} GB): "
          f"{'OK' if worst < TARGET_GB else 'OVER'}")
    print(json.dumps(rows, indent=1))
    return 0 if worst < TARGET_GB else 1


if __name__ == "__main__":
    raise SystemExit(main())
