"""One tokenizer interface over HF `tokenizers` files and `transformers` tokenizers.

The Explorer needs display strings and character offsets for every token (to label heatmaps
and to align POS tags); training needs ids. Both come from `encode`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qvka_core.errors import CheckpointError


@dataclass(frozen=True)
class Encoding:
    ids: list[int]
    tokens: list[str]  # readable strings for labels ("Ġgirl" -> " girl")
    offsets: list[tuple[int, int]]  # character span in the text; (0, 0) for special tokens


def _readable(token: str) -> str:
    # Byte-level BPE marks a leading space with "Ġ" and a newline with "Ċ"; WordPiece marks
    # continuations with "##". Show what a reader expects.
    return token.replace("Ġ", " ").replace("Ċ", "\\n").replace("▁", " ")


class TextTokenizer:
    """Wraps a `tokenizers.Tokenizer` (our own files) or a `transformers` fast tokenizer."""

    def __init__(self, backend: Any, *, add_special_tokens: bool = True,
                 eos_token: str | None = None) -> None:
        self.backend = backend
        self.add_special_tokens = add_special_tokens
        self.eos_token = eos_token
        self._is_hf = hasattr(backend, "convert_ids_to_tokens")

    @classmethod
    def from_file(cls, path: str | Path, **kw: Any) -> TextTokenizer:
        """Load a `tokenizer.json` written by the `tokenizers` library."""
        from tokenizers import Tokenizer

        try:
            backend = Tokenizer.from_file(str(path))
        except Exception as exc:  # the library raises a bare Exception on bad JSON
            raise CheckpointError(f"cannot read tokenizer file {path}: {exc}") from exc
        if kw.get("eos_token") is None and backend.token_to_id("<|endoftext|>") is not None:
            kw["eos_token"] = "<|endoftext|>"  # our corpus tokenizers mark documents with it
        return cls(backend, **kw)

    @property
    def vocab_size(self) -> int:
        if self._is_hf:
            return len(self.backend)
        return self.backend.get_vocab_size()

    @property
    def eos_id(self) -> int | None:
        if self._is_hf:
            return self.backend.eos_token_id
        return None if self.eos_token is None else self.backend.token_to_id(self.eos_token)

    def encode(self, text: str, *, add_special_tokens: bool | None = None) -> Encoding:
        special = self.add_special_tokens if add_special_tokens is None else add_special_tokens
        if self._is_hf:
            enc = self.backend(text, add_special_tokens=special, return_offsets_mapping=True)
            ids = list(enc["input_ids"])
            raw = self.backend.convert_ids_to_tokens(ids)
            offsets = [tuple(o) for o in enc["offset_mapping"]]
        else:
            enc = self.backend.encode(text, add_special_tokens=special)
            ids, raw, offsets = list(enc.ids), list(enc.tokens), [tuple(o) for o in enc.offsets]
        return Encoding(ids=ids, tokens=[_readable(t) for t in raw], offsets=offsets)

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode(ids, skip_special_tokens=True)

    def save(self, directory: str | Path) -> None:
        """Write `tokenizer.json` (and the HF side files for a transformers tokenizer)."""
        directory = Path(directory)
        if self._is_hf:
            self.backend.save_pretrained(str(directory))
        else:
            self.backend.save(str(directory / "tokenizer.json"))
