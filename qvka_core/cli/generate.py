"""`python -m qvka_core generate`: continue a prompt, greedy or sampled, with the KV cache.

    python -m qvka_core generate --checkpoint smollm2-135m --prompt "The capital of France" \
        --max-new-tokens 20 [--temperature 0.8 --top-k 50 --top-p 0.95 --seed 1] [--json]

JSON keys: `text` (the continuation), `new_tokens` (the piece of text each new token adds),
`kv_cache_bytes` (bytes the cache holds when each token is chosen, measured) and
`kv_cache_bytes_formula` (the accounting's value), `total_tokens`, `dtype`, `tokens_per_s`
(after the first token), `ttft_s`, and `token_ids`, `top5`, `prompt_tokens`, `stopped`.
The same prompt, settings and seed give the same text.
"""

from __future__ import annotations

import argparse
import json

HELP = "Continue a prompt with a causal checkpoint (greedy or sampled), measuring the KV cache."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="NAME_OR_DIR",
                        help="a causal model: austen-*, smollm2-135m, a run or a directory")
    parser.add_argument("--variant", metavar="V",
                        help="convert to this attention variant first (qvka_core.convert)")
    parser.add_argument("--prompt", required=True, help="the text to continue")
    parser.add_argument("--max-new-tokens", type=int, default=32, metavar="N")
    parser.add_argument("--temperature", type=float, default=0.0, metavar="T",
                        help="0 (default) = greedy")
    parser.add_argument("--top-k", type=int, default=None, metavar="K")
    parser.add_argument("--top-p", type=float, default=None, metavar="P")
    parser.add_argument("--seed", type=int, default=0, metavar="S")
    parser.add_argument("--ignore-eos", action="store_true",
                        help="keep going past the end-of-text token")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from qvka_core.checkpoints import load_checkpoint
    from qvka_core.decode import Sampling, check_request, generate
    from qvka_core.variants.registry import get_variant

    sampling = Sampling(args.temperature, args.top_k, args.top_p, args.seed)  # checked first
    if args.max_new_tokens < 1:
        from qvka_core.errors import ConfigError

        raise ConfigError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.variant is not None:
        get_variant(args.variant)  # unknown name -> ConfigError listing the valid ones
    loaded = load_checkpoint(args.checkpoint, variant=args.variant)
    check_request(loaded, args.prompt, args.max_new_tokens)
    result = generate(loaded, args.prompt, args.max_new_tokens, sampling,
                      stop_at_eos=not args.ignore_eos)
    out = result.to_json()
    if args.json:
        print(json.dumps({"checkpoint": loaded.name, "variant": loaded.config.variant, **out},
                         ensure_ascii=False))
        return 0
    print(args.prompt + out["text"])
    rate = f"{out['tokens_per_s']:.1f} tokens/s" if out["tokens_per_s"] else "- tokens/s"
    kv = out["kv_cache_bytes"][-1] if out["kv_cache_bytes"] else 0
    print(f"\n[{loaded.name} ({loaded.config.variant}), {len(out['new_tokens'])} new tokens, "
          f"stopped at {out['stopped']}; time to first token {out['ttft_s'] or 0:.3f} s, {rate}; "
          f"KV cache {kv:,} bytes ({out['dtype']})]")
    return 0
