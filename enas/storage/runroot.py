"""The run folder a command works on, opened once: every file below it is reached from
that descriptor.

A run folder comes from someone else. Checking that ``archs/`` is a folder and then
writing ``archs/x.yaml`` by its path leaves a moment in which the folder can be swapped
for a link, and the write lands wherever the link points. So a command opens the run
folder once (``hold_root``: its own path is the user's, links in it included) and every
later open, create, rename and delete below it goes relative to that descriptor, each
folder on the way opened with ``O_NOFOLLOW | O_DIRECTORY`` (``folder``): a link at any
component is refused, whenever it appears. Files written in place (a log, the lock)
must moreover have no other hard link (``single``).
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from enas.errors import FileRefused, RunDirError

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
LINK = ("is a symbolic link; enas follows no link among a run folder's files (it could lead outside the run): "
        "put the file itself there")

_roots: dict[str, int] = {}  # absolute path of a run folder -> its descriptor


def hold_root(run_dir: str | Path) -> int:
    """The run folder opened once for this command. Its own path is the user's (links in
    it are theirs to choose); every file and folder below it is then opened relative to
    this descriptor, one component at a time and never through a link (``folder``), so
    swapping ``archs/`` for a link between a check and a write cannot redirect it."""
    key = os.path.abspath(run_dir)
    try:
        st = os.stat(key)
        if key in _roots and _same(os.fstat(_roots[key]), st):
            return _roots[key]
        fd = os.open(key, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    except OSError as e:
        raise RunDirError(f"cannot open run folder {run_dir}: {e.strerror or e}") from None
    if key in _roots:  # a folder of that name held before, since removed (the Python API)
        os.close(_roots[key])
    _roots[key] = fd
    return fd


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def release_root(run_dir: str | Path) -> None:
    fd = _roots.pop(os.path.abspath(run_dir), None)
    if fd is not None:
        os.close(fd)


def release_roots() -> None:
    """At the end of a command: every run folder it held."""
    while _roots:
        with contextlib.suppress(OSError):
            os.close(_roots.popitem()[1])


def root_of(path: Path) -> tuple[str, int, list[str]] | None:
    """(root, its descriptor, the components below it) of the held run folder ``path`` lies in."""
    a = os.path.abspath(path)
    best = None
    for r, fd in _roots.items():
        if a.startswith(r.rstrip(os.sep) + os.sep) and (best is None or len(r) > len(best[0])):
            best = (r, fd)
    if best is None:
        return None
    return best[0], best[1], a[len(best[0].rstrip(os.sep)) + 1:].split(os.sep)


@contextlib.contextmanager
def folder(path: str | Path):
    """(a descriptor of ``path``'s folder, ``path``'s name). Inside a held run folder the
    folder is reached from the run's descriptor one component at a time with
    ``O_NOFOLLOW | O_DIRECTORY``: a link at any component is refused. Elsewhere (an
    ``--out`` the user named) the folder is opened as the user named it."""
    path = Path(path)
    found = root_of(path)
    if found is None:
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
        name = path.name
    else:
        root, rfd, parts = found
        fd, where = os.dup(rfd), Path(root)
        try:
            for part in parts[:-1]:
                where = where / part
                nfd = _open_dir_at(fd, part, where)
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        name = parts[-1]
    try:
        yield fd, name
    finally:
        os.close(fd)


def _open_dir_at(dfd: int, name: str, where: Path) -> int:
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC, dir_fd=dfd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link_at(dfd, name):
            raise FileRefused(where, LINK) from None
        raise


def _is_link_at(dfd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def single(path: Path, fd: int) -> None:
    """A file enas writes in place (a log, the lock) has no other name: a hard link, or
    a run copied with ``cp -al``, would carry every write into the other file too."""
    n = os.fstat(fd).st_nlink
    if n > 1:
        raise FileRefused(path, f"has {n - 1} other hard link{'s' if n > 2 else ''} (a copy made with cp -al or ln?); "
                                f"enas writes it in place, which would change the other file too: copy the run with "
                                f"cp -r and use the copy")
