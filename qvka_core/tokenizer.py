"""One tokenizer interface over HF `tokenizers` files and `transformers` tokenizers.

The Explorer needs display strings and character offsets for every token (to label heatmaps
and to align POS tags); training needs ids. Both come from `encode`.
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from qvka_core.errors import CheckpointError


@dataclass(frozen=True)
class Encoding:
    ids: list[int]
    tokens: list[str]  # readable strings for labels ("Ġgirl" -> " girl", "Ã©" -> "é")
    offsets: list[tuple[int, int]]  # character span in the text; (0, 0) for special tokens
    raw: list[str] = field(default_factory=list)  # the vocabulary's own strings ("Ã©")


PARTIAL = "…"  # label of a byte-level piece that only starts a character the next one ends


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode (Radford et al. 2019, encoder.py): byte-level BPE
    writes each byte as one printable character; 0-255 minus those printable are shifted to
    256+ (space -> "Ġ", newline -> "Ċ")."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _display(text: str) -> str:
    """A decoded token as a label: newlines and tabs written out, SentencePiece's ▁ a space."""
    return text.replace("\n", "\\n").replace("\t", "\\t").replace("▁", " ")


def decode_byte_level(raw: list[str]) -> list[str]:
    """Byte-level BPE tokens -> the text each one completes ("Ã©" -> "é", "ĠâĢĶ" -> " —").

    A multi-byte UTF-8 character may be split over several tokens (the Austen tokenizer
    splits "é" into "Ã", "©"): the token that completes it shows it, the ones before show
    PARTIAL. A token with a character outside the byte alphabet is shown as it is.
    """
    table = _unicode_to_byte()
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    out = []
    for tok in raw:
        if not all(c in table for c in tok):
            decoder.reset()
            out.append(_display(tok))
            continue
        text = decoder.decode(bytes(table[c] for c in tok))
        out.append(_display(text) if text else PARTIAL)
    return out


def _readable(token: str) -> str:
    # WordPiece (MiniLM) and SentencePiece tokens are already text; only mark whitespace.
    return _display(token)


def _is_byte_level(backend: Any) -> bool:
    """Whether a `tokenizers` / transformers fast tokenizer decodes with ByteLevel."""
    inner = getattr(backend, "backend_tokenizer", backend)
    try:
        decoder = json.loads(inner.to_str()).get("decoder") or {}
    except Exception:  # not a fast tokenizer: no byte-level pieces to undo
        return False
    kinds = [decoder.get("type")] + [d.get("type") for d in decoder.get("decoders", [])]
    return "ByteLevel" in kinds


class TextTokenizer:
    """Wraps a `tokenizers.Tokenizer` (our own files) or a `transformers` fast tokenizer."""

    def __init__(self, backend: Any, *, add_special_tokens: bool = True,
                 eos_token: str | None = None) -> None:
        self.backend = backend
        self.add_special_tokens = add_special_tokens
        self.eos_token = eos_token
        self._is_hf = hasattr(backend, "convert_ids_to_tokens")
        self.byte_level = _is_byte_level(backend)

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
        shown = decode_byte_level(raw) if self.byte_level else [_readable(t) for t in raw]
        return Encoding(ids=ids, tokens=shown, offsets=offsets, raw=list(raw))

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode(ids, skip_special_tokens=True)

    def save(self, directory: str | Path) -> None:
        """Write `tokenizer.json` (and the HF side files for a transformers tokenizer)."""
        directory = Path(directory)
        if self._is_hf:
            self.backend.save_pretrained(str(directory))
        else:
            self.backend.save(str(directory / "tokenizer.json"))
