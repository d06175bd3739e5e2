"""Every file enas writes whole is written here, and every file it reads is opened here.

Writing: never half a file, never a traceback for a full disk, never a write through a
planted link. The content goes to a temporary file created exclusively under a fresh
random name in the same folder (``O_CREAT | O_EXCL | O_NOFOLLOW``: a file or link
planted under any name enas could pick is never opened), is flushed and fsync'ed, and is
renamed over the target (an atomic replace on POSIX: a link at the target's name is
replaced, not written through), then the folder is fsync'ed. A reader therefore sees the
old file or the new one, never a mix, and a kill at any moment loses nothing that was
complete. If writing fails (a full disk, permissions, a read-only file system) the
temporary file is removed, the previous file is left as it was, and a ``WriteError``
says what happened and what to do.

Inside a run folder a command holds (enas/storage/runroot.py), every open, create, rename and
delete is relative to one descriptor of it, with no link at any component.

Reading: ``open_regular`` opens without blocking (a FIFO would wait for a writer
forever), accepts only a regular file, refuses a symbolic link where a run folder's own
file belongs (it could lead a read, or the next write, outside the run), and refuses a
file larger than its kind may be before reading a byte of it.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, TextIO, Union

from enas.errors import FileRefused, RunDirError, UserError
from enas.storage.runroot import LINK, folder, root_of, single
from enas.storage import runfolder

Content = Union[bytes, str, Callable[[BinaryIO], None]]
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


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

    ``keep_previous``: a name in the same folder; before the replace, the old file is
    hard-linked (or copied) to it, so ``path`` exists at every instant and the previous
    version survives (checkpoint.prev.pt). ``replace=False``: never replace an existing
    file, even one that appears while this one is written (``FileExistsError``). Every
    step is taken relative to one descriptor of the target's folder (``folder``), so a
    folder swapped for a link meanwhile cannot redirect it."""
    path = Path(path)
    tmp = None
    try:
        with folder(path) as (dfd, name):
            if not replace and _lexists_at(dfd, name):
                raise FileExistsError(f"{path} already exists")
            try:
                fd, tmp = _exclusive_at(dfd, path)
                with os.fdopen(fd, "wb") as f:
                    if callable(content):
                        content(f)
                    else:
                        f.write(content.encode() if isinstance(content, str) else content)
                    f.flush()
                    os.fsync(f.fileno())
                if keep_previous is not None and _lexists_at(dfd, name):
                    _keep(dfd, name, Path(keep_previous).name)
                if replace:
                    os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
                else:
                    _link_new(dfd, tmp, name)
                tmp = None
                with contextlib.suppress(OSError):  # make the rename itself durable, where the file system allows
                    os.fsync(dfd)
            finally:
                if tmp is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp, dir_fd=dfd)
    except (FileExistsError, UserError):
        raise
    except (OSError, RuntimeError) as e:
        # torch.save reports a failed write as a RuntimeError of its zip writer ("file write
        # failed", or on a full disk "[enforce fail at inline_container.cc] unexpected pos");
        # any other RuntimeError is a bug and keeps its traceback
        if isinstance(e, RuntimeError) and not _zip_write_failure(e):
            raise
        had = " (the previous version is intact)" if path.exists() else ""
        raise WriteError(f"could not write {path}: {_reason(e, path.parent)}{had}. Free space or fix the folder's "
                         "permissions, then run the command again (a stopped run continues with --resume)") from None
    return path


def _fresh() -> str:
    """A short temporary name nothing can have planted in advance (short: a target's name
    may already take most of the 255 bytes a name may have)."""
    return f".enas-{secrets.token_hex(8)}.tmp"


def _exclusive_at(dfd: int, path: Path) -> tuple[int, str]:
    for _ in range(100):
        tmp = _fresh()
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC, 0o666,
                           dir_fd=dfd), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def exclusive(path: Path) -> tuple[int, Path]:
    """A new, empty file beside ``path``, opened for writing; never an existing file or link."""
    with folder(path) as (dfd, _):
        fd, tmp = _exclusive_at(dfd, path)
    return fd, path.with_name(tmp)


def _keep(dfd: int, name: str, prev: str) -> None:
    """``name``'s current file under the name ``prev`` as well (a hard link, else a copy)."""
    link = _fresh()
    try:
        os.link(name, link, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
    except OSError:  # no hard links on this file system
        src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | _CLOEXEC, dir_fd=dfd)
        with os.fdopen(src, "rb") as s, os.fdopen(_exclusive_named(dfd, link), "wb") as d:
            shutil.copyfileobj(s, d)
    os.replace(link, prev, src_dir_fd=dfd, dst_dir_fd=dfd)


def _exclusive_named(dfd: int, name: str) -> int:
    return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC, 0o666, dir_fd=dfd)


def _lexists_at(dfd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _zip_write_failure(e: RuntimeError) -> bool:
    msg = str(e).lower()
    return "write" in msg or "inline_container" in msg


def _link_new(dfd: int, tmp: str, name: str) -> None:
    """Give ``tmp`` the name ``name`` only if nothing has that name (atomic with hard links)."""
    try:
        os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError:  # no hard links on this file system: an exclusive create instead
        src = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | _CLOEXEC, dir_fd=dfd)
        with os.fdopen(src, "rb") as s, os.fdopen(_exclusive_named(dfd, name), "wb") as d:
            shutil.copyfileobj(s, d)
    os.unlink(tmp, dir_fd=dfd)


# ---- reading -------------------------------------------------------------------------


def open_regular(path: str | Path, limit: int | None = None, follow: bool = True) -> BinaryIO:
    """``path`` opened for reading in binary, if it is a regular file of at most ``limit``
    bytes; ``follow=False`` refuses a symbolic link (a run folder's own files)."""
    path = Path(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | _CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags) if follow else _open_nofollow(path, flags)
    except OSError as e:
        if not follow and e.errno == errno.ELOOP:
            raise FileRefused(path, LINK) from None
        raise
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(path, f"is not a regular file ({_kind(st.st_mode)}); enas reads files only")
        if limit is not None and st.st_size > limit:
            raise FileRefused(path, f"is {st.st_size:,} bytes, more than the {limit:,} such a file may have")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _open_nofollow(path: Path, flags: int, mode: int = 0o666) -> int:
    """``os.open`` of a run's own file: inside a held run folder, relative to its
    descriptor with no link at any component (``folder``)."""
    if root_of(path) is None:
        return os.open(path, flags, mode)
    with folder(path) as (dfd, name):
        return os.open(name, flags, mode, dir_fd=dfd)


def read_regular(path: str | Path, limit: int, follow: bool = True) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (files such as those in /proc
    report no size: at most ``limit`` + 1 bytes are read to tell)."""
    with open_regular(path, limit, follow) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise FileRefused(path, f"holds more than the {limit:,} bytes such a file may have")
    return data


def loads_json(text: str | bytes) -> Any:
    """``json.loads``, with nesting too deep for Python's recursion a ``ValueError`` like
    any other malformed JSON (an integer past Python's 4,300 digits already is one)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def read_json(path: str | Path, limit: int, follow: bool = False) -> Any:
    """A JSON file of a run (``follow=False``: not a link); ``ValueError`` if malformed."""
    return loads_json(read_regular(path, limit, follow))


def read_json_if_any(path: Path, limit: int, refuse: Callable[[OSError | ValueError], Exception]) -> Any:
    """``read_json`` of a file a run may not have yet: None where there is none; a file
    that cannot be read or parsed raises ``refuse(error)`` (the caller's one line)."""
    if not os.path.lexists(path):
        return None
    try:
        return read_json(path, limit)
    except (OSError, ValueError) as e:
        raise refuse(e) from None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


# ---- appending, folders, files made by others, --out ---------------------------------


def open_append(path: str | Path, truncate: int | None = None) -> TextIO:
    """A log of the run (metrics.jsonl) opened for appending, never through a link and
    only if it is a regular file; ``truncate``: first cut it to that many bytes."""
    path = Path(path)
    try:
        fd = _open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise FileRefused(path, LINK) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(path, f"is not a regular file ({_kind(st.st_mode)})")
        single(path, fd)
        if truncate is not None and st.st_size > truncate:
            os.ftruncate(fd, truncate)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "a")
    except BaseException:
        os.close(fd)
        raise


def make_dir(path: str | Path) -> Path:
    """A folder of a run (``archs/``), made if missing; a link or file of that name is refused."""
    path = Path(path)
    with folder(path) as (dfd, name):
        try:
            os.mkdir(name, dir_fd=dfd)
        except FileExistsError:
            if not stat.S_ISDIR(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode):
                raise FileRefused(path, "is not a folder but a link or a file; enas writes no file through "
                                        "it") from None
    return path


def make_dirs(path: str | Path) -> None:
    """A folder and the missing ones above it (an ``--out``'s, a work folder): inside a
    held run folder one at a time and never through a link, elsewhere as the user named
    them."""
    found = root_of(Path(path))
    if found is None:
        os.makedirs(path, exist_ok=True)
        return
    where = Path(found[0])
    for part in found[2]:
        where = where / part
        make_dir(where)


def make_parents(path: str | Path) -> None:
    """The missing folders above a file to write."""
    make_dirs(Path(path).parent)


def remove(path: str | Path) -> None:
    """Delete a file (inside a held run folder, relative to its descriptor, never through a link)."""
    with folder(path) as (dfd, name):
        os.unlink(name, dir_fd=dfd)


def produced(make: Callable[[Path], Any], name: str) -> bytes:
    """The bytes ``make(path)`` writes to a path of its own choosing (matplotlib's savefig,
    a space's ``draw``), made in a fresh private folder: such writers open the path they
    are given, and would follow a link planted at it. Write the bytes with write_atomic."""
    with tempfile.TemporaryDirectory(prefix="enas-") as tmp:
        path = Path(tmp) / name
        make(path)
        return path.read_bytes()


def in_run(path: Path) -> bool:
    """``path`` lies in a run folder (or its ``archs/``)."""
    try:
        folder = path.parent.resolve()
    except OSError:
        return False
    folders = [folder] + ([folder.parent] if folder.name == runfolder.ARCHS else [])
    return any(runfolder.is_run(d) for d in folders)


def check_out(out: Path, force: bool, ours: Callable[[str], bool] = lambda name: False,
              option: str = "--out") -> None:
    """Before any work, the rule of every ``--out`` (and ``--json``, ``--write-archs``): a
    new file, or with ``force`` an existing one that is not a file of a run other than
    this command's own outputs (``ours(name)``: reports, rankings). A link there is
    replaced, never written through (``write_atomic``)."""
    out = Path(out)
    if out.is_dir():
        raise RunDirError(f"{option} {out} is a folder; give a file name in it")
    if not os.path.lexists(out):
        return
    if in_run(out) and not ours(out.name):
        raise RunDirError(f"{option} {out} is a file of the run in {out.parent}; enas never replaces it: "
                          f"choose another {option}")
    if not force:
        raise RunDirError(f"{option} {out} already exists; pass --force to replace it, or choose another name")


def write_out(out: str | Path, content: Content, force: bool, ours: Callable[[str], bool] = lambda name: False,
              option: str = "--out") -> Path:
    """A file the user named on the command line, by the rule of ``check_out`` (call that
    before the work too), its missing folders made, written whole."""
    out = Path(out)
    check_out(out, force, ours, option)
    make_parents(out)
    try:
        return write_atomic(out, content, replace=force)
    except FileExistsError:  # appeared while the command worked
        raise RunDirError(f"{option} {out} already exists; pass --force to replace it, or choose another "
                          f"name") from None
