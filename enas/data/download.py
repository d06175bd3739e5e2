"""Downloads and checksums shared by every dataset (CIFAR-10, CIFAR-100, Penn Treebank)."""
from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path

from enas.storage.files import open_regular, write_atomic


def checksum(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open_regular(path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def md5sum(path: Path) -> str:
    return checksum(path, "md5")


class _NetworkError(Exception):
    """The network's OSError, carried past write_atomic (which reports the disk's)."""

    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


def fetch(url: str, dest: Path, timeout: float) -> None:
    """Download ``url`` to ``dest`` with ``write_atomic`` (a fresh temporary file beside
    it, opened relative to the folder, renamed over ``dest``), so an interrupted download
    never leaves a file that looks complete and a link planted at any name is never
    written through. Raises OSError (URLError, timeout) without a network."""
    def copy(f) -> None:
        try:
            r = urllib.request.urlopen(url, timeout=timeout)
        except OSError as e:
            raise _NetworkError(e) from None
        with r:
            while True:
                try:
                    chunk = r.read(1 << 20)
                except OSError as e:
                    raise _NetworkError(e) from None
                if not chunk:
                    return
                f.write(chunk)  # a full disk here is write_atomic's to report

    try:
        write_atomic(dest, copy)
    except _NetworkError as e:
        raise e.error from None


def make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents for a download; return the folders this
    created, deepest first, for ``remove_empty`` after a failed download."""
    created, p = [], folder
    while not p.exists() and p != p.parent:
        created.append(p)
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True)
    return created


def remove_empty(created: list[Path]) -> None:
    """Remove the folders ``make_folders`` created while they are still empty, so a
    mistyped --data-dir or a machine without internet leaves nothing behind."""
    for d in created:
        try:
            d.rmdir()
        except OSError:  # something was put in it: keep it and its parents
            return
