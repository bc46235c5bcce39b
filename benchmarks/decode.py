"""Decode speed: our cached decode vs HF `generate` on the same SmolLM2 weights, side by side.

For SmolLM2-135M (GQA 9/3) and its conversions, one process, same prompt, greedy, the same
number of new tokens (end-of-text ignored). Each model is written by the lab's exporter as
its stock Hugging Face twin (`qvka_core.export`: GQA/MHA/MQA and QV and QV-Ka as Llama, MLA
as DeepseekV2) and loaded with `AutoModelForCausalLM`, so HF runs the very weights we run.
The script checks both write the same tokens and prints the median wall-time ratio HF / ours
with its pair-by-pair range (>= 1.0: ours is not slower; the target). Runs alternate (ours,
HF, ours, HF, ...) so machine noise hits both alike.

    PYTHONPATH=. .venv/bin/python benchmarks/decode.py [--new-tokens 32] [--repeats 5]
        [--variants gqa,mha,mqa,mla,qv,qvka] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

PROMPT = "The key idea of attention is that"


def hf_twin(loaded, device, workdir: Path):
    """The stock transformers model of `loaded`, written by the lab's exporter and read back
    with `AutoModelForCausalLM`: the very weights we run (QV as a Llama whose k_proj is its
    v_proj, QV-Ka as a Llama with its derived key folded into k_proj, MLA as DeepseekV2)."""
    from transformers import AutoModelForCausalLM

    from qvka_core.export import export_model

    out = workdir / loaded.config.variant
    result = export_model(loaded, out, overwrite=True, verify=False)
    hf = AutoModelForCausalLM.from_pretrained(out, attn_implementation="sdpa")
    return hf.eval().to(device), result.stock_class


def load(variant: str):
    from qvka_core.checkpoints import load_checkpoint
    from qvka_core.convert import convert_cached

    if variant == "gqa":
        return load_checkpoint("smollm2-135m")
    return convert_cached("smollm2-135m", variant)  # cached on disk after the first run


def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


@torch.no_grad()
def measure(variant: str, n: int, repeats: int, device: torch.device) -> dict:
    """Median wall time of ours and of HF generate on the exported twin, alternated."""
    from qvka_core.decode import generate

    loaded = load(variant)
    loaded.model.eval().to(device)
    ids = torch.tensor([loaded.tokenizer.encode(PROMPT).ids], device=device)  # (1, P)
    with tempfile.TemporaryDirectory() as tmp:
        hf, stock = hf_twin(loaded, device, Path(tmp))

        def hf_generate():
            return hf.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                               pad_token_id=0)

        decodes = [generate(loaded, PROMPT, n, stop_at_eos=False)]  # warm-up; tokens compared
        hf_tokens = hf_generate()[0, ids.shape[1]:].tolist()
        ours_tokens = [s.token_id for s in decodes[0].steps]
        agree = sum(a == b for a, b in zip(hf_tokens, ours_tokens, strict=True))
        ours_t, hf_t = [], []
        for _ in range(repeats):
            ours_t.append(timed(lambda: decodes.append(
                generate(loaded, PROMPT, n, stop_at_eos=False))))
            hf_t.append(timed(hf_generate))
    return {"ours_s": statistics.median(ours_t), "hf_s": statistics.median(hf_t),
            "stock": stock, "same": "yes" if agree == n else f"no ({agree}/{n} equal)",
            "ratios": sorted(h / o for h, o in zip(hf_t, ours_t, strict=True)),
            "decode_rate": statistics.median(d.tokens_per_s for d in decodes[1:]),
            "ttft_ms": 1e3 * statistics.median(d.ttft_s for d in decodes[1:])}


def main() -> None:

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--variants", default="gqa,mha,mqa,mla,qv,qvka")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    n, device = args.new_tokens, torch.device(args.device)
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads; prompt "
          f"{PROMPT!r}, {n} new tokens, greedy, median of {args.repeats} alternated runs")
    print(f"{'variant':<8} {'HF class':<22} {'ours tok/s':>10} {'HF tok/s':>9} "
          f"{'HF/ours time (min-max)':>23} {'TTFT ms':>8}  same tokens")
    ratios = {}
    for variant in args.variants.split(","):
        row = measure(variant, n, args.repeats, device)
        ratios[variant] = row["hf_s"] / row["ours_s"]
        spread = f"{ratios[variant]:.2f} ({row['ratios'][0]:.2f}-{row['ratios'][-1]:.2f})"
        print(f"{variant:<8} {row['stock']:<22} {n / row['ours_s']:10.1f} "
              f"{n / row['hf_s']:9.1f} {spread:>23} {row['ttft_ms']:8.0f}  {row['same']}",
              flush=True)
    worst = min(ratios.values())
    print(f"worst HF/ours ratio {worst:.2f} (target >= 1.00): "
          f"{'met' if worst >= 1.0 else 'NOT met'}")

if __name__ == "__main__":
    main()
