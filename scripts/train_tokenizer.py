"""Train the bundled byte-level BPE tokenizer on the Austen train split.

    .venv/bin/python scripts/train_tokenizer.py [--vocab 4096] [--out FILE.json]

Only the train split is seen (qvka_core.data.train_text), so validation loss stays honest.
Special token: `<|endoftext|>` (id 0), used as the document separator in token streams.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

from qvka_core.data import EOS_TOKEN, TOKENIZER_PATH, novel_splits  # noqa: E402


def train(vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # One iterator item per novel's train part: merges never cross novels.
    tok.train_from_iterator([train for train, _ in novel_splits().values()], trainer=trainer)
    return tok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--out", type=Path, default=TOKENIZER_PATH)
    args = ap.parse_args(argv)
    tok = train(args.vocab)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(args.out))
    sample = "It is a truth universally acknowledged"
    print(f"vocab {tok.get_vocab_size()} -> {args.out}")
    print(sample, "->", tok.encode(sample).tokens)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
