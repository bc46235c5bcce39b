"""`python -m qvka_core export`: write a lab model as a stock Hugging Face model directory.

    python -m qvka_core export --checkpoint runs/smollm2-qvka --out exports/smollm2-qvka

DIR then loads with `transformers` (AutoModelForCausalLM; AutoModel for a BERT encoder), no
remote code, and back into the lab as the source variant (`--checkpoint DIR`). Exportable
variants: `python -m qvka_core variants` (its "hf_export"; MHA/GQA/MQA, MLA as DeepseekV2, QV,
QV-Ka and V-shared as Llama-style twins). A layout no stock class computes exactly (AGF,
ALiBi, sinusoidal positions, MLA outside a Llama layout) is refused in one line, exit 2. See
`qvka_core.export`.
"""

from __future__ import annotations

import argparse
import shlex
import sys

HELP = "Export a checkpoint to a stock Hugging Face class (exact twin + model card)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="NAME_OR_DIR",
                        help="any name or directory the other commands take")
    parser.add_argument("--out", required=True, metavar="DIR", help="the folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DIR")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip loading the export with transformers to compare logits")


def run(args: argparse.Namespace) -> int:
    from qvka_core.export import export_checkpoint

    command = "python -m qvka_core " + " ".join(shlex.quote(a) for a in sys.argv[1:]) \
        if sys.argv[1:2] == ["export"] else None
    result = export_checkpoint(args.checkpoint, args.out, overwrite=args.overwrite,
                               verify=args.verify, command=command)
    print(f"wrote {result.directory}: stock {result.stock_class} (load with "
          f"transformers.{result.task})")
    for line in result.rewrites:
        print(f"  {line}")
    if result.fidelity is not None:
        print(f"  {result.fidelity.line()}")
    return 0
