"""Bounded text files received from others (CSV tables, ground truths, lists of
architectures): read whole through ``files.read_regular`` (no FIFOs, devices or, where
asked, links), held to a size, gzip decompressed under the same cap, and refused in one
line when they are not text."""
from __future__ import annotations

import zlib
from pathlib import Path

from enas.errors import FileRefused
from enas.storage.files import read_regular


# A CSV of trained or scored architectures holds a row each (NB201's whole table is
# 1.5 MB): a larger file is refused unread.
MAX_CSV_BYTES = 256 * 2**20


class NotText(FileRefused):
    """A file that should be text and is not: not UTF-8, a NUL byte (no text file holds
    one; csv would take it as part of a field), a damaged or oversized gzip."""

    def __init__(self, path, why: str):
        super().__init__(path, why)
        self.args = (f"{path} {why}",)


def read_bounded(path: str | Path, limit: int, follow: bool = True, inflate: bool = False) -> bytes:
    """``read_regular``; with ``inflate``, a ``.gz`` file decompressed, and what it
    decompresses to is held to ``limit`` too (a small file that inflates to gigabytes
    stops at the cap)."""
    path = Path(path)
    packed = read_regular(path, limit, follow)
    if not (inflate and path.name.endswith(".gz")):
        return packed
    unpack = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing
    try:
        data = unpack.decompress(packed, limit + 1)
    except zlib.error as e:
        raise NotText(path, f"is not a readable gzip file ({e})") from None
    if len(data) > limit:
        raise NotText(path, f"decompresses to more than the {limit:,} bytes such a file may have")
    if not unpack.eof:
        raise NotText(path, "is a truncated gzip file")
    return data


def read_text(path: str | Path, limit: int, follow: bool = True, inflate: bool = False) -> str:
    """The UTF-8 text of a regular file of at most ``limit`` bytes (``read_bounded``); a
    file that is not text raises ``NotText`` naming it (and the line of a NUL byte)."""
    try:
        text = read_bounded(path, limit, follow, inflate).decode()
    except UnicodeDecodeError:
        raise NotText(path, "is not a text file (not UTF-8)") from None
    if "\0" in text:
        raise NotText(path, f"has a NUL byte on line {text.count(chr(10), 0, text.index(chr(0))) + 1} "
                            "(not a text file)")
    return text
