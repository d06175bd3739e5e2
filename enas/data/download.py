"""Downloads and checksums shared by every dataset (CIFAR-10, CIFAR-100, Penn Treebank)."""
from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from ..files import exclusive, open_regular


def checksum(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open_regular(path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def md5sum(path: Path) -> str:
    return checksum(path, "md5")


def fetch(url: str, dest: Path, timeout: float) -> None:
    """Download ``url`` to ``dest`` through a fresh temporary file beside it (never a file
    or link planted under a fixed name), so an interrupted download never leaves a file
    that looks complete. Raises OSError (URLError, timeout) without a network."""
    fd, part = exclusive(dest)
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as r:
            while chunk := r.read(1 << 20):
                f.write(chunk)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    part.replace(dest)


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
