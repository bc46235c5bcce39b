"""Peak memory (RSS) of tokenising a large training text, as a multiple of the text's size.

A fresh subprocess writes N MB of text (the Austen train split repeated), then calls
`qvka_core.data.token_data` on it with the bundled BPE and the disk cache off; the peak RSS
(`resource.getrusage`, ru_maxrss) minus the RSS before tokenising is the cost of turning
the text into token ids. Issue 13 measured ~3.9 GB for 20 MB (~170x the text).

    .venv/bin/python benchmarks/data_memory.py [--mb 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, resource, sys, tempfile
from pathlib import Path
import torch
torch.set_num_threads(1)
from qvka_core import data
mb = float(sys.argv[1])
path = Path(sys.argv[2])
base = data.train_text()
path.write_text((base * (int(mb * 2**20 / len(base)) + 1))[: int(mb * 2**20)], "utf-8")
tok = data.load_tokenizer()
data._disk_cache_path = lambda parts, tokenizer: None  # measure the tokenising itself
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
d = data.token_data(str(path), tok)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"text_bytes": path.stat().st_size, "tokens": d.train.numel() +
                  d.validation.numel(), "dtype": str(d.train.dtype),
                  "rss_before": before, "rss_peak": peak}))
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=float, default=20.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-c", CHILD, str(args.mb), f"{tmp}/big.txt"],
                             cwd=ROOT, capture_output=True, text=True, check=True,
                             env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                                  "PATH": "/usr/bin:/bin"})
    r = json.loads(out.stdout.splitlines()[-1])
    grown = r["rss_peak"] - r["rss_before"]
    print(f"text {r['text_bytes'] / 2**20:.1f} MiB -> {r['tokens']:,} tokens ({r['dtype']}); "
          f"peak RSS {r['rss_peak'] / 2**20:,.0f} MiB, of which tokenising "
          f"{grown / 2**20:,.0f} MiB = {grown / r['text_bytes']:.1f} x the text")
    return 0


if __name__ == "__main__":
    sys.exit(main())
