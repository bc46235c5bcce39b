"""Decode speed: our cached decode vs HF `generate` on the same SmolLM2 weights, side by side.

For SmolLM2-135M (GQA 9/3) and its conversions, one process, same prompt, greedy, the same
number of new tokens (end-of-text ignored). HF's LlamaForCausalLM is built from our model's
own state, so it runs the very weights we run; for a variant HF has (gqa, and mha: the
replicated-heads conversion is a Llama too) the script checks both write the same tokens and
prints the median wall-time ratio HF / ours (>= 1.0: ours is not slower; the target). QV,
QV-Ka and MLA have no HF Llama; their tokens/s are printed beside the GQA base's HF figure.
Runs alternate (ours, HF, ours, HF, ...) so machine noise hits both alike.

    PYTHONPATH=. .venv/bin/python benchmarks/decode.py [--new-tokens 32] [--repeats 5]
        [--variants gqa,mha,qv,qvka] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

PROMPT = "The key idea of attention is that"


def hf_llama_from(loaded, device):
    """transformers' LlamaForCausalLM holding exactly our GQA/MHA model's weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg, a = loaded.config, loaded.config.attention
    hf = LlamaForCausalLM(LlamaConfig(
        hidden_size=cfg.d_model, intermediate_size=cfg.ffn_dim, num_hidden_layers=cfg.n_layers,
        num_attention_heads=a.n_heads, num_key_value_heads=a.n_kv_heads, head_dim=a.head_dim,
        vocab_size=cfg.vocab_size, max_position_embeddings=cfg.max_seq_len,
        rope_theta=a.rope_theta, rms_norm_eps=cfg.norm_eps,
        tie_word_embeddings=cfg.tie_embeddings, attn_implementation="sdpa"))
    state = {}
    for key, value in loaded.model.state_dict().items():
        hf_key = (key.replace("tok_emb.", "embed_tokens.").replace("final_norm.", "norm.")
                  .replace(".attn_norm.", ".input_layernorm.")
                  .replace(".mlp_norm.", ".post_attention_layernorm.")
                  .replace(".attn.", ".self_attn."))
        state[hf_key if hf_key.startswith("lm_head.") else "model." + hf_key] = value
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [k for k in missing if "rotary" not in k and not (
        cfg.tie_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"state mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if cfg.tie_embeddings:
        hf.tie_weights()
    return hf.eval().to(device)


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
    """Median wall time of ours and (where HF has the variant) HF generate, alternated."""
    from qvka_core.decode import generate

    loaded = load(variant)
    loaded.model.eval().to(device)
    ids = torch.tensor([loaded.tokenizer.encode(PROMPT).ids], device=device)  # (1, P)
    hf = hf_llama_from(loaded, device) if variant in ("gqa", "mha") else None
    decodes = [generate(loaded, PROMPT, n, stop_at_eos=False)]  # warm-up; tokens to compare
    same = ""
    if hf is not None:
        hf_tokens = hf.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                pad_token_id=0)[0, ids.shape[1]:].tolist()
        ours_tokens = [s.token_id for s in decodes[0].steps]
        agree = sum(a == b for a, b in zip(hf_tokens, ours_tokens, strict=True))
        same = "yes" if agree == n else f"no ({agree}/{n} equal)"
    ours_t, hf_t = [], []
    for _ in range(repeats):
        ours_t.append(timed(lambda: decodes.append(
            generate(loaded, PROMPT, n, stop_at_eos=False))))
        if hf is not None:
            hf_t.append(timed(lambda: hf.generate(ids, max_new_tokens=n, min_new_tokens=n,
                                                  do_sample=False, pad_token_id=0)))
    return {"ours_s": statistics.median(ours_t),
            "hf_s": statistics.median(hf_t) if hf_t else None,
            "decode_rate": statistics.median(d.tokens_per_s for d in decodes[1:]),
            "ttft_ms": 1e3 * statistics.median(d.ttft_s for d in decodes[1:]), "same": same}


def main() -> None:

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--variants", default="gqa,mha,qv,qvka")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    n, device = args.new_tokens, torch.device(args.device)
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads; prompt "
          f"{PROMPT!r}, {n} new tokens, greedy, median of {args.repeats} alternated runs")
    print(f"{'variant':<8} {'ours tok/s':>10} {'HF tok/s':>9} {'HF/ours time':>13}  "
          f"{'ours decode tok/s':>17} {'TTFT ms':>8}  same tokens")
    hf_base = None
    ratios = {}
    for variant in args.variants.split(","):
        row = measure(variant, n, args.repeats, device)
        if variant == "gqa":
            hf_base = row["hf_s"]
        if row["hf_s"]:
            ratios[variant] = row["hf_s"] / row["ours_s"]
        ratio = f"{ratios[variant]:13.2f}" if row["hf_s"] else f"{'(no HF)':>13}"
        hf_rate = n / row["hf_s"] if row["hf_s"] else float("nan")
        print(f"{variant:<8} {n / row['ours_s']:10.1f} {hf_rate:9.1f} {ratio}  "
              f"{row['decode_rate']:17.1f} {row['ttft_ms']:8.0f}  {row['same']}", flush=True)
    if hf_base:
        print(f"HF generate on the GQA base: {n / hf_base:.1f} tok/s (for the rows without HF)")
    if ratios:
        worst = min(ratios.values())
        print(f"worst HF/ours ratio {worst:.2f} (target >= 1.00): "
              f"{'met' if worst >= 1.0 else 'NOT met'}")


if __name__ == "__main__":
    main()
