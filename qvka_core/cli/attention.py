"""`python -m qvka_core attention`: tokens and per-layer attention probabilities.

    python -m qvka_core attention --checkpoint minilm-l6 --text "The cat sat." --json

JSON keys: `checkpoint`, `variant`, `tokens` (display strings), `ids`, `attentions`
(per layer, [heads][query][key], eager softmax probabilities; rows sum to 1). Without
--json/--out a short summary is printed: tokens, layers x heads, mean entropy per layer.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from qvka_core.cli.output import check_output_file, json_text
from qvka_core.errors import CheckpointError, DataError

HELP = "Tokens and per-layer attention probabilities of a checkpoint on a text."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="NAME_OR_DIR",
                        help="embedded/bundled name (see `checkpoints`), run or directory")
    parser.add_argument("--text", required=True, help="the text to run through the model")
    parser.add_argument("--variant", metavar="V",
                        help="convert to this attention variant first (qvka_core.convert)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the result as JSON")
    out.add_argument("--out", metavar="FILE", help="write the JSON result to FILE")


def attention_maps(checkpoint: str, text: str, variant: str | None = None) -> dict[str, Any]:
    """Load `checkpoint`, run `text`, return the JSON-ready result described above."""
    import torch

    from qvka_core.checkpoints import load_checkpoint
    from qvka_core.variants.registry import get_variant

    try:  # argv that is not UTF-8 arrives with surrogate escapes
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DataError(f"--text is not valid UTF-8 (position {exc.start})") from exc
    if not text.strip():
        raise DataError("--text is empty; give some text to attend over")
    if variant is not None:
        get_variant(variant)  # unknown name -> ConfigError listing the valid ones
    loaded = load_checkpoint(checkpoint, variant=variant)
    if loaded.tokenizer is None:
        raise CheckpointError(f"checkpoint {loaded.name} has no tokenizer, so text cannot be "
                              "encoded")
    enc = loaded.tokenizer.encode(text)
    limit = loaded.config.max_seq_len
    if not enc.ids:
        raise DataError("the text encodes to zero tokens")
    if len(enc.ids) > limit:
        raise DataError(f"the text is {len(enc.ids)} tokens long; {loaded.name} takes at most "
                        f"{limit} (max_seq_len)")
    with torch.no_grad():
        out = loaded.model(torch.tensor([enc.ids]), impl="eager", return_attentions=True)
    return {
        "checkpoint": loaded.name,
        "variant": loaded.config.variant,
        "tokens": enc.tokens,
        "ids": enc.ids,
        "attentions": [a[0].float().tolist() for a in out.attentions],  # (H, T, S) per layer
    }


def _entropy(layer: list[list[list[float]]]) -> float:
    """Mean over heads and queries of -sum p ln p (nats)."""
    rows = [row for head in layer for row in head]
    return sum(-sum(p * math.log(p) for p in row if p > 0) for row in rows) / len(rows)


def run(args: argparse.Namespace) -> int:
    if args.out:
        check_output_file(args.out, "--out")  # before the model loads
    result = attention_maps(args.checkpoint, args.text, args.variant)
    if args.json:
        print(json_text(result, indent=None))
        return 0
    if args.out:
        path = check_output_file(args.out, "--out")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result) + "\n", encoding="utf-8")
        except OSError as exc:
            raise DataError(f"cannot write {path}: {exc}") from exc
        print(f"wrote {path}")
        return 0
    att = result["attentions"]
    print(f"checkpoint {result['checkpoint']} ({result['variant']}): {len(att)} layers x "
          f"{len(att[0])} heads, {len(result['tokens'])} tokens")
    print("tokens: " + " | ".join(result["tokens"]))
    print("layer  mean entropy (nats)")
    for i, layer in enumerate(att):
        print(f"{i:>5}  {_entropy(layer):.3f}")
    return 0
