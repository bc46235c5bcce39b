"""The bundled corpus, its split, the tokenizer, user files, batches and the unigram baseline."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest
import torch

from qvka_core import data
from qvka_core.errors import DataError

NOTES_SHA256 = "65b434d16a8755142bfa95ba19c5f9abd0d30cf3dffe3b6793e834f9f56dcc96"


def test_corpus_checksum_and_novels() -> None:
    novels = data.load_corpus()
    assert tuple(novels) == data.NOVELS
    plain = "".join(novels[n] for n in data.NOVELS).encode("utf-8")
    assert hashlib.sha256(plain).hexdigest() == NOTES_SHA256
    assert len(plain) == 4_025_029


def test_corpus_checksum_is_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "austen.txt.gz"
    bad.write_bytes(gzip.compress(b"### emma\nnot the novel\n"))
    monkeypatch.setattr(data, "CORPUS_PATH", bad)
    data.load_corpus.cache_clear()
    try:
        with pytest.raises(DataError, match="corrupt"):
            data.load_corpus()
    finally:
        data.load_corpus.cache_clear()


def test_split_is_last_five_percent_of_each_novel() -> None:
    for name, (train, val) in data.novel_splits().items():
        full = data.load_corpus()[name]
        assert train + val == full
        n_val, n_all = len(val.splitlines()), len(full.splitlines())
        assert 0.045 < n_val / n_all < 0.055
    assert len(data.train_text()) + len(data.validation_text()) == sum(
        len(t) for t in data.load_corpus().values())


def test_tokenizer_roundtrip_and_eos() -> None:
    tok = data.load_tokenizer()
    assert 4000 <= tok.vocab_size <= 4200
    assert tok.eos_id == 0
    text = "It is a truth universally acknowledged, £5."
    assert tok.decode(tok.encode(text).ids) == text


def test_user_file_validation(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        data.read_text_file(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    with pytest.raises(DataError, match="empty.txt is empty"):
        data.read_text_file(tmp_path / "empty.txt")
    (tmp_path / "bin.dat").write_bytes(b"abc\x00\x01\x02def")
    with pytest.raises(DataError, match="bin.dat looks binary"):
        data.read_text_file(tmp_path / "bin.dat")
    (tmp_path / "latin1.txt").write_bytes("café au lait".encode("latin-1"))
    with pytest.raises(DataError, match="latin1.txt is not valid UTF-8"):
        data.read_text_file(tmp_path / "latin1.txt")
    (tmp_path / "big.txt").write_text("x" * 2000, encoding="utf-8")
    with pytest.raises(DataError, match="big.txt is too large"):
        data.read_text_file(tmp_path / "big.txt", max_bytes=1000)
    (tmp_path / "ok.txt").write_text("line one\nline two\n", encoding="utf-8")
    assert data.read_text_file(tmp_path / "ok.txt") == "line one\nline two\n"


def test_token_data_from_file_and_too_short(tmp_path: Path) -> None:
    path = tmp_path / "small.txt"
    path.write_text(data.train_text()[:20_000], encoding="utf-8")
    td = data.token_data(str(path), data.load_tokenizer())
    assert td.train.numel() > 3000 and td.validation.numel() > 50
    data.check_enough(td, 32)
    with pytest.raises(DataError, match="validation split"):
        data.check_enough(td, 1_000)


def test_windows_are_seeded_and_shifted() -> None:
    tokens = torch.arange(1000)
    x1, y1 = data.random_windows(tokens, 4, 16, data.batch_generator(7, 3))
    x2, y2 = data.random_windows(tokens, 4, 16, data.batch_generator(7, 3))
    x3, _ = data.random_windows(tokens, 4, 16, data.batch_generator(7, 4))
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and not torch.equal(x1, x3)
    assert torch.equal(y1, x1 + 1) and x1.shape == (4, 16)
    fx, fy = data.fixed_windows(tokens, 5, 16)
    assert fx[0, 0] == 0 and fy[-1, -1] == 999 and torch.equal(fy, fx + 1)


def test_token_ids_are_cached_on_disk_keyed_by_text_and_tokenizer(tmp_path, monkeypatch):
    """Re-tokenising the corpus was ~2 s of every job's start-up; the cache must return the
    very same ids, and a different text must not hit it."""
    import qvka_core.data as data

    monkeypatch.setenv("QVKA_CACHE", str(tmp_path))
    tok = data.load_tokenizer()
    text = tmp_path / "story.txt"
    text.write_text("It was a bright cold day in April.\n" * 400, encoding="utf-8")
    first = data.token_data(str(text), tok)
    assert len(list((tmp_path / "tokens").glob("*.safetensors"))) == 1

    def no_encoding(*a, **k):
        raise AssertionError("tokenised again instead of reading the cache")

    monkeypatch.setattr(data, "encode_documents", no_encoding)
    again = data.token_data(str(text), tok)
    assert torch.equal(again.train, first.train) and torch.equal(again.validation,
                                                                  first.validation)
    text.write_text("A different text entirely, about the sea.\n" * 400, encoding="utf-8")
    with pytest.raises(AssertionError, match="tokenised again"):
        data.token_data(str(text), tok)


def test_a_file_of_one_long_line_gets_a_validation_part(tmp_path: Path) -> None:
    """A 4,440-byte paragraph with no line breaks used to give an empty validation split, and
    the run failed after launch saying 'use a longer text'."""
    words = [f"word{i}" for i in range(600)]
    text = " ".join(words)  # one line, ~4.5 kB
    train, val = data.split_text(text)
    assert train + val == text and val.startswith(" ")  # cut at a space, nothing lost
    assert 0.04 < len(val) / len(text) < 0.06
    many = "".join(f"line {i}\n" for i in range(40))
    assert data.split_text(many) == data.split_lines(many)  # enough lines: by line, as before
    path = tmp_path / "para.txt"
    path.write_text(text, encoding="utf-8")
    tokens = data.token_data(str(path), data.load_tokenizer())
    assert tokens.validation.numel() >= 34 and tokens.train.numel() > 600


@pytest.mark.parametrize("size", [50, 333, 4096])
def test_chunked_encoding_gives_the_ids_of_the_whole_text(size: int,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Large texts are tokenised in pieces (bounded memory); the pieces must not change a
    single id, whatever the whitespace runs at the cuts (blank lines, indents, CRLF)."""
    tok = data.load_tokenizer()
    text = data.train_text()[:20_000] + "end.\n\n\n\n  Indented\r\n\r\nCRLF\n \n\tTab\n" * 30
    whole = tok.backend.encode(text, add_special_tokens=False).ids
    pieces = data.text_chunks(text, size)
    assert "".join(pieces) == text and len(pieces) > 3
    monkeypatch.setattr(data, "CHUNK_CHARS", size)
    monkeypatch.setattr(data.text_chunks, "__defaults__", (size,))
    ids = data.encode_documents(tok, [text])
    assert ids.tolist() == whole + ([tok.eos_id] if tok.eos_id is not None else [])
