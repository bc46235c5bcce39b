"""Model-FLOPs utilisation of a training step: achieved FLOP/s over the device's peak.

MFU = (analytic training FLOPs per token × tokens per second) / peak FLOP/s, with the FLOPs
from `qvka_core.accounting` (matmuls only, attention included, causal-halved) and the peak
from `qvka_core.hardware` (dense bf16) for a recognised GPU, or `--peak` (FLOP/s) otherwise.
Target (issue 5): ≥ 35 % on a GPU for a 100M-class preset in bf16 with fast attention.

    PYTHONPATH=. .venv/bin/python benchmarks/mfu.py --preset gpt2 --variant qvka   # on a GPU
    PYTHONPATH=. .venv/bin/python benchmarks/mfu.py --preset tiny --peak 1e11      # CPU smoke
"""

from __future__ import annotations

import argparse
import time

import torch

from qvka_core import Transformer
from qvka_core.accounting import costs
from qvka_core.hardware import GPUS
from qvka_core.presets import get_preset, recost


def device_peak(device: torch.device, given: float | None) -> tuple[float | None, str]:
    if given:
        return given, "given with --peak"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, gpu in GPUS.items():
            model_name = key.replace(" SXM", "").replace(" 80GB", "")  # "H100", "RTX 4090"
            if model_name.lower() in name.lower():
                return gpu.peak_flops, f"{gpu.name} (dense bf16, from qvka_core.hardware)"
        return None, f"{name}: not in the table; pass --peak"
    return None, "CPU: pass --peak to get an MFU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="gpt2")
    ap.add_argument("--variant", default=None, help="re-cost as this variant (default: native)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--peak", type=float, default=None, help="peak FLOP/s of this device")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    args = ap.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = get_preset(args.preset)
    if args.variant:
        cfg = recost(cfg, args.variant)
    seq = min(args.seq_len, cfg.max_seq_len)
    model = Transformer(cfg).to(device)
    if args.compile:
        model = torch.compile(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    ids = torch.randint(0, cfg.vocab_size, (args.batch, seq + 1), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step() -> None:
        with autocast:
            logits = model(ids[:, :-1]).logits
            loss = torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, cfg.vocab_size), ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    tokens_per_s = args.steps * args.batch * seq / elapsed
    flops_per_token = costs(cfg, seq_len=seq, batch=args.batch)
    per_token = flops_per_token.to_dict()["flops"]["training_per_token"]
    achieved = per_token * tokens_per_s
    peak, source = device_peak(device, args.peak)
    print(f"{cfg.name} as {cfg.variant}: {flops_per_token.params_total / 1e6:.1f}M params, "
          f"batch {args.batch} x {seq}, {device}")
    print(f"tokens/s {tokens_per_s:,.0f}   training FLOPs/token {per_token / 1e9:.3f} G   "
          f"achieved {achieved / 1e12:.3f} TFLOP/s")
    if peak:
        print(f"MFU {achieved / peak:.1%} of {peak / 1e12:.1f} TFLOP/s ({source}); "
              f"target ≥ 35% on a GPU")
    else:
        print(f"MFU: unknown peak ({source})")


if __name__ == "__main__":
    main()
