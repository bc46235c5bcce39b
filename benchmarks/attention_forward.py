"""Core vs HF transformers' Llama, side by side in one process, same dims, weights and inputs.

Two comparisons, each timed alternately (A, B, A, B, ...) and reported as a median ratio
core / HF (≤ 1.0 means the core is not slower):
  1. fast path, forward + backward: core `impl="sdpa"` vs HF `attn_implementation="sdpa"`;
  2. eager path with attention weights: core `impl="eager", return_attentions=True` vs HF
     `attn_implementation="eager"`, `output_attentions=True`.
It also checks that both produce the same logits, so the timings compare equal work.

    PYTHONPATH=. .venv/bin/python benchmarks/attention_forward.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch


def build_pair(n_kv_heads: int, impl: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    from qvka_core.checkpoints import load_checkpoint

    hf_cfg = LlamaConfig(
        hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
        num_key_value_heads=n_kv_heads, vocab_size=2048, max_position_embeddings=1024,
        tie_word_embeddings=False, attn_implementation=impl,
    )
    torch.manual_seed(0)
    hf = LlamaForCausalLM(hf_cfg)
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        core = load_checkpoint(tmp).model
    return core, hf


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def compare(name: str, core_fn, hf_fn, repeats: int) -> float:
    core_fn(), hf_fn()  # warm-up
    core_t, hf_t = [], []
    for _ in range(repeats):  # alternate so machine noise hits both alike
        core_t += timed(core_fn, 1)
        hf_t += timed(hf_fn, 1)
    c, h = statistics.median(core_t), statistics.median(hf_t)
    print(f"{name:<44} core {c * 1e3:8.1f} ms   HF {h * 1e3:8.1f} ms   ratio {c / h:5.2f}")
    return c / h


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    ids = torch.randint(0, 2048, (args.batch, args.seq))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"batch {args.batch} × seq {args.seq}, d 256, 4 layers, 8 heads")
    ratios = {}
    for label, n_kv in (("MHA", 8), ("GQA (2 kv heads)", 2)):
        core, hf = build_pair(n_kv, "sdpa")
        core.train(), hf.train()
        diff = (core(ids).logits - hf(ids).logits).abs().max().item()

        def core_step(core=core):
            core.zero_grad(set_to_none=True)
            core(ids, impl="sdpa").logits.float().mean().backward()

        def hf_step(hf=hf):
            hf.zero_grad(set_to_none=True)
            hf(ids).logits.float().mean().backward()

        ratios[f"{label} fwd+bwd sdpa"] = compare(
            f"{label} fwd+bwd, fast path (max |Δlogit| {diff:.1e})", core_step, hf_step,
            args.repeats,
        )
        core, hf = build_pair(n_kv, "eager")
        core.eval(), hf.eval()

        @torch.no_grad()
        def core_eager(core=core):
            return core(ids, impl="eager", return_attentions=True)

        @torch.no_grad()
        def hf_eager(hf=hf):
            return hf(ids, output_attentions=True)

        a, b = core_eager(), hf_eager()
        pairs = zip(a.attentions, b.attentions, strict=True)
        wdiff = max((x - y).abs().max().item() for x, y in pairs)
        ratios[f"{label} eager+weights"] = compare(
            f"{label} eager fwd with weights (max |Δp| {wdiff:.1e})", core_eager, hf_eager,
            args.repeats,
        )
    worst = max(ratios.values())
    print(f"worst ratio {worst:.2f} (target ≤ 1.00): {'met' if worst <= 1.0 else 'NOT met'}")


if __name__ == "__main__":
    main()
