"""Build assets/corpus/ from Debian's r-cran-janeaustenr package (R itself is not needed).

    python scripts/extract_austen.py            # apt-get download + dpkg-deb -x into a temp dir
    python scripts/extract_austen.py --pkg DIR  # use an already unpacked package

The package stores each novel as a lazy-load database (`data/Rdata.rdx` index + `Rdata.rdb`
blobs) in R's XDR serialisation format. `XdrDecoder` below decodes the subset of that format
the package uses (character/integer/real/generic vectors, pairlists for attributes, symbols and
back-references). Nothing is executed or unpickled; unknown record types raise.

Outputs (deterministic): assets/corpus/austen.txt.gz (the six novels, each followed by a
blank line, gzip -9 with mtime 0) and assets/corpus/SHA256SUMS (sha256 of the uncompressed
text and of the plain concatenation of the six novels in alphabetical order).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

NOVELS = ("emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice",
          "sensesensibility")
RDATA = "usr/lib/R/site-library/janeaustenr/data/Rdata"
NOTES_SHA256 = "65b434d16a8755142bfa95ba19c5f9abd0d30cf3dffe3b6793e834f9f56dcc96"
ROOT = Path(__file__).resolve().parents[1]

# SEXP type codes (R Internals, "Serialization formats").
NILVALUE, EMPTYENV, BASEENV, GLOBALENV, UNBOUNDVALUE, MISSINGARG, BASENAMESPACE = (
    254, 242, 241, 253, 252, 251, 247)
REFSXP, SYMSXP, LISTSXP, CHARSXP = 255, 1, 2, 9
LGLSXP, INTSXP, REALSXP, STRSXP, VECSXP = 10, 13, 14, 16, 19
SINGLETONS = {NILVALUE, EMPTYENV, BASEENV, GLOBALENV, UNBOUNDVALUE, MISSINGARG, BASENAMESPACE}


class Symbol(str):
    """An R symbol (distinguished from a character string)."""


class XdrDecoder:
    """Decodes one R object serialised in XDR ("X\\n") format, versions 2 and 3."""

    def __init__(self, data: bytes) -> None:
        if data[:2] != b"X\n":
            raise ValueError("not an XDR-format R serialisation (expected header 'X\\n')")
        self.data, self.pos = data, 2
        self.symbols: list[Symbol] = []

    def read_int(self) -> int:
        (value,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return value

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def decode(self) -> Any:
        version = self.read_int()
        self.read_int()  # R version that wrote it
        self.read_int()  # minimal R version to read it
        if version == 3:
            self.take(self.read_int())  # native encoding name, e.g. "UTF-8"
        return self.read_item()

    def read_item(self) -> Any:
        flags = self.read_int()
        kind = flags & 0xFF
        has_attr, has_tag = bool(flags & 0x200), bool(flags & 0x400)
        if kind in SINGLETONS:
            return None
        if kind == REFSXP:
            index = flags >> 8 or self.read_int()
            return self.symbols[index - 1]
        if kind == SYMSXP:
            symbol = Symbol(self.read_item() or "")
            self.symbols.append(symbol)
            return symbol
        if kind == CHARSXP:
            length = self.read_int()
            return None if length == -1 else self.take(length).decode("utf-8")
        if kind == LISTSXP:
            return self._pairlist(has_attr, has_tag)
        length = self.read_int()
        if kind in (LGLSXP, INTSXP):
            value: Any = list(struct.unpack(f">{length}i", self.take(4 * length)))
        elif kind == REALSXP:
            value = list(struct.unpack(f">{length}d", self.take(8 * length)))
        elif kind in (STRSXP, VECSXP):
            value = [self.read_item() for _ in range(length)]
        else:
            raise ValueError(f"unsupported R record type {kind} at byte {self.pos - 8}")
        if has_attr:
            return {"value": value, "attributes": self.read_item()}
        return value

    def _pairlist(self, has_attr: bool, has_tag: bool) -> dict[str, Any]:
        """A pairlist (used for attributes) as an ordered dict tag -> value."""
        out: dict[str, Any] = {}
        while True:
            if has_attr:
                self.read_item()
            tag = self.read_item() if has_tag else Symbol(str(len(out)))
            out[str(tag)] = self.read_item()
            flags = self.read_int()  # the CDR: another cons cell or NILVALUE
            if flags & 0xFF == NILVALUE:
                return out
            if flags & 0xFF != LISTSXP:
                raise ValueError("improper pairlist tail")
            has_attr, has_tag = bool(flags & 0x200), bool(flags & 0x400)


def read_novels(pkg: Path) -> dict[str, list[str]]:
    """name -> lines, read from the package's lazy-load data base."""
    index = XdrDecoder(gzip.decompress((pkg / f"{RDATA}.rdx").read_bytes())).decode()
    top_names = index["attributes"]["names"]
    variables = index["value"][top_names.index("variables")]
    names = variables["attributes"]["names"]
    blob = (pkg / f"{RDATA}.rdb").read_bytes()
    novels: dict[str, list[str]] = {}
    for name, (offset, length) in zip(names, variables["value"], strict=True):
        # Each record: 4-byte big-endian uncompressed length, then a zlib stream.
        obj = XdrDecoder(zlib.decompress(blob[offset + 4:offset + length])).decode()
        lines = obj["value"] if isinstance(obj, dict) else obj
        novels[name] = [line or "" for line in lines]
    return novels


def download_package(workdir: Path) -> Path:
    subprocess.run(["apt-get", "download", "r-cran-janeaustenr"], cwd=workdir, check=True)
    (deb,) = sorted(workdir.glob("r-cran-janeaustenr_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(workdir / "pkg")], check=True)
    return workdir / "pkg"


def build(pkg: Path, out_dir: Path) -> str:
    novels = read_novels(pkg)
    missing = [n for n in NOVELS if n not in novels]
    if missing:
        raise SystemExit(f"package lacks novels: {missing}")
    texts = {n: "\n".join(novels[n]) + "\n" for n in NOVELS}
    plain = "".join(texts[n] for n in NOVELS).encode("utf-8")
    plain_sha = hashlib.sha256(plain).hexdigest()
    if plain_sha != NOTES_SHA256:
        print(f"warning: concatenation sha256 {plain_sha} differs from the notes", file=sys.stderr)
    # Bundle: a header line per novel so the loader can split them without a side index.
    bundle = "".join(f"### {n}\n{texts[n]}" for n in NOVELS).encode("utf-8")
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "austen.txt.gz", "wb") as raw, \
            gzip.GzipFile(filename="austen.txt", mode="wb", fileobj=raw, compresslevel=9,
                          mtime=0) as gz:
        gz.write(bundle)
    bundle_sha = hashlib.sha256(bundle).hexdigest()
    (out_dir / "SHA256SUMS").write_text(
        f"{bundle_sha}  austen.txt\n{plain_sha}  six-novels-concatenated.txt\n", encoding="utf-8")
    for n in NOVELS:
        print(f"{n:18s} {len(novels[n]):6d} lines {len(texts[n].encode()):8d} bytes")
    verdict = "matches" if plain_sha == NOTES_SHA256 else "DIFFERS"
    print(f"concatenation sha256 {plain_sha} ({verdict})")
    return bundle_sha


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pkg", type=Path, help="an unpacked r-cran-janeaustenr (dpkg-deb -x)")
    ap.add_argument("--out", type=Path, default=ROOT / "assets" / "corpus")
    args = ap.parse_args(argv)
    if args.pkg is not None:
        build(args.pkg, args.out)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        build(download_package(Path(tmp)), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
