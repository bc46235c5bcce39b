"""Byte-level BPE tokens are shown as the text they stand for, on the real tokenizers."""

from __future__ import annotations

import pytest

from qvka_core.tokenizer import PARTIAL, decode_byte_level

TEXT = "Café naïve — façade"


def _tokenizer(name: str):
    from qvka_core.checkpoints import load_checkpoint

    try:
        return load_checkpoint(name).tokenizer
    except Exception as exc:  # noqa: BLE001 - embedded package absent in a partial install
        pytest.skip(f"{name} not loadable here: {exc}")


def test_decode_joins_the_bytes_of_a_character_split_over_tokens() -> None:
    # "é" is C3 A9: byte-level BPE writes C3 as "Ã" and A9 as "©"; a space is "Ġ"
    assert decode_byte_level(["Ã", "©", "Ġ", "n"]) == [PARTIAL, "é", " ", "n"]
    assert decode_byte_level(["ĠâĢĶ", "Ċ"]) == [" —", "\\n"]  # E2 80 94, then a newline


@pytest.mark.parametrize("name", ["austen-mha", "smollm2-135m"])
def test_byte_level_tokenizers_show_accents_and_dashes(name: str) -> None:
    enc = _tokenizer(name).encode(TEXT)
    shown = "".join(t for t in enc.tokens if t != PARTIAL)
    assert shown == TEXT  # every character once, in order, nothing garbled
    assert not any(c in t for t in enc.tokens for c in "ÃâĢĶĠ")
    assert "—" in [t.strip() for t in enc.tokens]
    assert any(c in t for t in enc.raw for c in "ÃĠ")  # the vocabulary's strings are kept
    assert len(enc.raw) == len(enc.tokens) == len(enc.ids)


def test_smollm2_keeps_whole_words_whole() -> None:
    words = [t.strip() for t in _tokenizer("smollm2-135m").encode(TEXT).tokens]
    assert "façade" in words and "ïve" in words and "—" in words


def test_wordpiece_tokens_are_left_as_they_are() -> None:
    enc = _tokenizer("minilm-l6").encode(TEXT)
    assert enc.tokens == enc.raw and enc.tokens[0] == "[CLS]"
