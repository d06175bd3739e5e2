"""Every file enas writes whole is written here: never half a file, never a traceback
for a full disk.

The content goes to a temporary file in the same folder, is flushed and fsync'ed, and
is renamed over the target (an atomic replace on POSIX), then the folder is fsync'ed.
A reader therefore sees the old file or the new one, never a mix, and a kill at any
moment loses nothing that was complete. If writing fails (a full disk, permissions,
a read-only file system) the temporary file is removed, the previous file is left as
it was, and a ``WriteError`` says what happened and what to do.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import BinaryIO, Callable, Union

from .errors import UserError

Content = Union[bytes, str, Callable[[BinaryIO], None]]


class WriteError(UserError, OSError):
    """A file could not be written; the previous version of it is intact."""


def _reason(e: BaseException, folder: Path) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    try:  # torch.save says only "file write failed": say how much room there was
        free = shutil.disk_usage(folder).free
        return f"the write failed ({free / 2**20:,.0f} MiB free in {folder})"
    except OSError:
        return "the write failed"


def write_atomic(path: str | Path, content: Content, keep_previous: str | Path | None = None,
                 replace: bool = True) -> Path:
    """Write ``content`` (bytes, text, or a function writing to a binary file) to ``path``.

    ``keep_previous``: before the replace, the old file is hard-linked (or copied) to
    that name, so ``path`` exists at every instant and the previous version survives
    (checkpoint.prev.pt). ``replace=False``: never replace an existing file, even one
    that appears while this one is written (``FileExistsError``)."""
    path = Path(path)
    if not replace and path.exists():
        raise FileExistsError(f"{path} already exists")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp" if not replace else path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and path.exists():
            prev = Path(keep_previous)
            link = prev.with_name(prev.name + ".tmp")
            link.unlink(missing_ok=True)
            try:
                os.link(path, link)
            except OSError:  # no hard links on this file system
                shutil.copyfile(path, link)
            os.replace(link, prev)
        if replace:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
        _fsync_dir(path.parent)
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        raise
    except (OSError, RuntimeError) as e:
        # torch.save reports a failed write as a RuntimeError of its zip writer ("file write
        # failed", or on a full disk "[enforce fail at inline_container.cc] unexpected pos");
        # any other RuntimeError is a bug and keeps its traceback
        if isinstance(e, RuntimeError) and not _zip_write_failure(e):
            raise
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        had = " (the previous version is intact)" if path.exists() else ""
        raise WriteError(f"could not write {path}: {_reason(e, path.parent)}{had}. Free space or fix the folder's "
                         "permissions, then run the command again (a stopped run continues with --resume)") from None
    return path


def _zip_write_failure(e: RuntimeError) -> bool:
    msg = str(e).lower()
    return "write" in msg or "inline_container" in msg


def _link_new(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path`` only if nothing has that name (atomic with hard links)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # no hard links on this file system: an exclusive create instead
        with open(path, "xb") as f, open(tmp, "rb") as src:
            shutil.copyfileobj(src, f)
    tmp.unlink()


def _fsync_dir(path: Path) -> None:
    """Make the rename itself durable (where the file system allows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
