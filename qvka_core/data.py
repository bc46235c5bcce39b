"""Training text: the bundled Jane Austen corpus, user text files, token streams, batches.

The corpus (assets/corpus/austen.txt.gz) holds six novels, each introduced by a `### name`
line; its sha256 is checked on every load. Split: the last `VALIDATION_FRACTION` (5 %) of the
lines of each novel is validation, the rest is train (see assets/corpus/README.md). User files
are split the same way (last 5 % of lines; of characters when they have fewer than 20 lines)
after validation: they must exist, be non-empty, valid UTF-8 without NUL bytes, and smaller
than `MAX_FILE_BYTES`.

Batches are random windows of `seq_len + 1` tokens drawn with a generator seeded by
`(seed, step)`, so a batch depends only on the seed and the step: resumed and distributed runs
see exactly the batches of an uninterrupted single-process run.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from qvka_core.errors import DataError
from qvka_core.paths import ASSETS, cache_root  # assets: the wheel's, else the checkout's

if TYPE_CHECKING:
    from qvka_core.tokenizer import TextTokenizer

CORPUS_PATH = ASSETS / "corpus" / "austen.txt.gz"
CORPUS_SHA256 = "d6597d2e564a5d667375a4be868d0780a9b5e682be6d46ed9cc06e45d6a6dd09"
TOKENIZER_PATH = ASSETS / "tokenizer" / "austen-bpe.json"
EOS_TOKEN = "<|endoftext|>"
VALIDATION_FRACTION = 0.05
MIN_LINES_TO_SPLIT_BY_LINE = 20  # fewer lines (a pasted paragraph): split by characters
MAX_FILE_BYTES = 50 * 1024 * 1024
NOVELS = ("emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice",
          "sensesensibility")


@lru_cache(maxsize=1)
def load_corpus() -> dict[str, str]:
    """novel name -> full text, after checking the bundle's sha256."""
    if not CORPUS_PATH.exists():
        raise DataError(f"bundled corpus {CORPUS_PATH} is missing; run scripts/extract_austen.py")
    raw = gzip.decompress(CORPUS_PATH.read_bytes())
    digest = hashlib.sha256(raw).hexdigest()
    if digest != CORPUS_SHA256:
        raise DataError(f"{CORPUS_PATH} is corrupt: sha256 {digest} != expected {CORPUS_SHA256}")
    novels: dict[str, str] = {}
    for part in raw.decode("utf-8").split("### ")[1:]:
        name, _, text = part.partition("\n")
        novels[name] = text
    if tuple(novels) != NOVELS:
        raise DataError(f"{CORPUS_PATH} holds {list(novels)}, expected {list(NOVELS)}")
    return novels


def split_lines(text: str, fraction: float = VALIDATION_FRACTION) -> tuple[str, str]:
    """(train, validation): the last `fraction` of the lines is validation."""
    lines = text.splitlines(keepends=True)
    cut = len(lines) - max(1, math.ceil(len(lines) * fraction)) if len(lines) > 1 else len(lines)
    return "".join(lines[:cut]), "".join(lines[cut:])


def split_text(text: str, fraction: float = VALIDATION_FRACTION) -> tuple[str, str]:
    """`split_lines` for a user's file; a text of few lines (one long paragraph, say) is cut
    by characters instead, at the first whitespace after the cut, so both parts have text."""
    if len(text.splitlines()) >= MIN_LINES_TO_SPLIT_BY_LINE:
        return split_lines(text, fraction)
    cut = len(text) - max(1, math.ceil(len(text) * fraction))
    space = next((i for i in range(cut, len(text)) if text[i].isspace()), cut)
    return text[:space], text[space:]


@lru_cache(maxsize=1)
def novel_splits() -> dict[str, tuple[str, str]]:
    """novel -> (train part, validation part)."""
    return {name: split_lines(text) for name, text in load_corpus().items()}


def train_text() -> str:
    """The train split of all six novels, concatenated."""
    return "".join(train for train, _ in novel_splits().values())


def validation_text() -> str:
    """The validation split (last 5 % of each novel), concatenated."""
    return "".join(val for _, val in novel_splits().values())


def read_text_file(path: str | Path, *, max_bytes: int = MAX_FILE_BYTES) -> str:
    """A user's training text, validated; every problem is a DataError naming the file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    if not path.is_file():
        raise DataError(f"data file {path} is not a regular file")
    size = path.stat().st_size
    if size > max_bytes:
        raise DataError(f"data file {path} is too large: {size} bytes > limit {max_bytes}")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"data file {path} is empty")
    if b"\x00" in raw:
        raise DataError(f"data file {path} looks binary (contains NUL bytes); expected UTF-8 text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"data file {path} is not valid UTF-8 text (byte {exc.start}: {exc.reason})"
        ) from exc


def load_tokenizer(path: str | Path = TOKENIZER_PATH) -> TextTokenizer:
    """The bundled Austen BPE (or another `tokenizers` JSON file)."""
    from qvka_core.tokenizer import TextTokenizer

    if not Path(path).exists():
        raise DataError(f"tokenizer {path} is missing; run scripts/train_tokenizer.py")
    return TextTokenizer.from_file(path, add_special_tokens=False, eos_token=EOS_TOKEN)


CHUNK_CHARS = 1 << 16  # ~64 K characters per tokenizer call


def text_chunks(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """`text` in pieces of about `size` characters, each cut just before a newline that
    follows a non-space character: a pre-tokenizer boundary (a word or punctuation run ends
    there and the whitespace run starts there, whole), so encoding the pieces one by one
    gives the ids of the whole text (a cut after the newlines would not: GPT-2's regex
    groups a run of trailing whitespace differently at the end of a string)."""
    pieces, start = [], 0
    while len(text) - start > size:
        cut = text.find("\n", start + size)
        while cut > 0 and text[cut - 1].isspace():
            cut = text.find("\n", cut + 1)
        if cut <= start:
            break
        pieces.append(text[start:cut])
        start = cut
    if start < len(text) or not pieces:
        pieces.append(text[start:])
    return pieces


def encode_documents(tokenizer: TextTokenizer, documents: list[str]) -> Tensor:
    """One stream (N,) int64: documents separated by the EOS id when the tokenizer has one
    (its `eos_id`, else `<|endoftext|>` if the vocabulary holds it).

    Each document is encoded in ~64 K-character pieces cut at pre-tokenizer boundaries
    (`text_chunks`) into a compact int32 buffer: a tokenizer's Encoding of a whole 20 MB
    text (offsets, strings) and a Python list of its ids peaked at ~140x the text."""
    from array import array

    eos = tokenizer.eos_id
    if eos is None and getattr(tokenizer, "_is_hf", True) is False:
        eos = tokenizer.backend.token_to_id(EOS_TOKEN)  # a tokenizer.json loaded without eos
    ids = array("i")  # int32: every vocabulary here is far below 2**31
    fast = getattr(tokenizer, "_is_hf", True) is False  # raw `tokenizers` backend: skip labels
    for doc in documents:
        for piece in text_chunks(doc):
            if fast:
                ids.extend(tokenizer.backend.encode(piece, add_special_tokens=False).ids)
            else:
                ids.extend(tokenizer.encode(piece, add_special_tokens=False).ids)
        if eos is not None:
            ids.append(eos)
    if not ids:
        return torch.zeros(0, dtype=torch.long)
    return torch.frombuffer(ids, dtype=torch.int32).long()  # (N,) one int64 copy


@dataclass(frozen=True)
class TokenData:
    """Train and validation token streams for one data source and tokenizer."""

    source: str
    train: Tensor  # (N_train,) int64
    validation: Tensor  # (N_val,) int64
    vocab_size: int


_TOKEN_CACHE: dict[tuple[str, str, int], TokenData] = {}


def token_data(source: str, tokenizer: TextTokenizer, *, tokenizer_key: str = "",
               max_bytes: int = MAX_FILE_BYTES) -> TokenData:
    """Tokenise "austen" (the bundled corpus) or a text file path; cached per process."""
    stamp = "" if source == "austen" or not Path(source).is_file() else (
        f"{Path(source).stat().st_mtime_ns}:{Path(source).stat().st_size}")
    key = (f"{source}@{stamp}", tokenizer_key, tokenizer.vocab_size)
    if tokenizer_key and key in _TOKEN_CACHE:
        return _TOKEN_CACHE[key]
    if source == "austen":
        parts = list(novel_splits().values())
    else:
        parts = [split_text(read_text_file(source, max_bytes=max_bytes))]
    disk = _disk_cache_path(parts, tokenizer)
    data = _read_disk_cache(disk, source, tokenizer.vocab_size)
    if data is None:
        data = TokenData(
            source=source,
            train=encode_documents(tokenizer, [p[0] for p in parts if p[0]]),
            validation=encode_documents(tokenizer, [p[1] for p in parts if p[1]]),
            vocab_size=tokenizer.vocab_size,
        )
        _write_disk_cache(disk, data)
    if tokenizer_key:
        _TOKEN_CACHE[key] = data
    return data


def _disk_cache_path(parts: list[tuple[str, str]], tokenizer: TextTokenizer) -> Path | None:
    """Where the token ids of exactly this text and this tokenizer are kept between runs.

    Tokenising the 4 MB corpus costs ~2 s, a third of a short job's start-up. The key hashes
    the text itself and the tokenizer's full serialisation, so no stale ids are ever reused.
    Only for `tokenizers`-backed tokenizers (ours and the embedded models').
    """
    to_str = getattr(tokenizer.backend, "to_str", None)
    if to_str is None:
        return None
    h = hashlib.sha256(b"tokens-v1")
    h.update(to_str().encode())
    h.update(str(tokenizer.eos_id).encode())
    for train, val in parts:
        h.update(train.encode())
        h.update(b"\0")
        h.update(val.encode())
        h.update(b"\1")
    return cache_root() / "tokens" / f"{h.hexdigest()[:24]}.safetensors"


def _read_disk_cache(path: Path | None, source: str, vocab_size: int) -> TokenData | None:
    if path is None or not path.exists():
        return None
    from safetensors.torch import load_file

    try:
        t = load_file(str(path))
        return TokenData(source=source, train=t["train"], validation=t["validation"],
                         vocab_size=vocab_size)
    except Exception:  # a damaged entry is simply rebuilt
        return None


def _write_disk_cache(path: Path | None, data: TokenData) -> None:
    if path is None:
        return
    from safetensors.torch import save_file

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        save_file({"train": data.train, "validation": data.validation}, str(tmp))
        os.replace(tmp, path)  # atomic: concurrent runs never read half a file
    except OSError:
        pass  # a read-only cache only costs time


def check_enough(data: TokenData, seq_len: int) -> None:
    for split, tokens in (("train", data.train), ("validation", data.validation)):
        if tokens.numel() < seq_len + 2:
            raise DataError(
                f"data {data.source}: the {split} split has {tokens.numel()} tokens, fewer than "
                f"seq_len + 2 = {seq_len + 2}; use a longer text or a shorter seq_len"
            )


def batch_generator(seed: int, step: int) -> torch.Generator:
    """The generator for step `step`: a batch depends only on (seed, step)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63 - 1))


def random_windows(tokens: Tensor, batch: int, seq_len: int,
                   generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(inputs, targets), each (batch, seq_len): random windows, targets shifted by one."""
    starts = torch.randint(0, tokens.numel() - seq_len, (batch,), generator=generator)
    idx = starts[:, None] + torch.arange(seq_len + 1)  # (batch, seq_len + 1)
    windows = tokens[idx]
    return windows[:, :-1], windows[:, 1:]


def fixed_windows(tokens: Tensor, count: int, seq_len: int) -> tuple[Tensor, Tensor]:
    """`count` evenly spaced validation windows (deterministic), each (count, seq_len)."""
    last = tokens.numel() - seq_len - 1
    starts = torch.linspace(0, max(last, 0), steps=count).round().long()
    idx = starts[:, None] + torch.arange(seq_len + 1)
    windows = tokens[idx]
    return windows[:, :-1], windows[:, 1:]
