"""Readable pieces of generated text, one per token.

Byte-level BPE splits a character like "é" over two tokens whose own strings are "Ã" and
"©"; decoding the whole continuation and taking what each token adds gives "", "é" instead
(a token that ends inside a character adds nothing until the character is complete).
"""

from __future__ import annotations

from typing import Any

_REPLACEMENT = "\ufffd"  # what a decoder writes for bytes of an unfinished character


class PieceDecoder:
    """Feed token ids one at a time; `push` returns the text each one adds."""

    def __init__(self, tokenizer: Any, prompt_ids: list[int], context: int = 4) -> None:
        # A few prompt tokens in front keep a leading space that some decoders strip
        # from the first token of a sequence.
        self._tok = tokenizer
        self._head = list(prompt_ids[-context:])
        self._ids: list[int] = []
        self._base = len(tokenizer.decode(self._head)) if self._head else 0
        self._emitted = ""

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        full = self._tok.decode(self._head + self._ids)[self._base:]
        if full.endswith(_REPLACEMENT) or not full.startswith(self._emitted):
            return ""  # unfinished character (or a decoder that rewrote earlier text)
        piece, self._emitted = full[len(self._emitted):], full
        return piece

    def flush(self) -> str:
        """Whatever is still held back when decoding stops (shown as the decoder writes it)."""
        full = self._tok.decode(self._head + self._ids)[self._base:]
        piece = full[len(self._emitted):] if full.startswith(self._emitted) else ""
        self._emitted += piece
        return piece


def candidate_label(tokenizer: Any, token_id: int) -> str:
    """One candidate token on its own, readable (a leading space kept, newline as \\n)."""
    text = tokenizer.decode([token_id])
    return text.replace("\n", "\\n") if text else f"<{token_id}>"
