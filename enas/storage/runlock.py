"""One writer per run folder: an exclusive ``fcntl.flock`` on the run folder and ``RUN/enas.lock``.

Two commands writing one run (two ``enas search --resume RUN`` started together) would
both train and both append every metrics line. Every command that writes a run's state
(``enas search`` and ``enas retrain``, new or resumed) takes the lock before it reads
or writes anything of the run, and a second one stops at once with one line naming the
run. The lock belongs to the open file, so it dies with its process however that ends
(kill -9 included): there is never a stale lock to clean up. The file holds the
process id, for the message only.

``derive``, ``rank``, ``report`` and ``evaluate`` read a run and add at most a file of
their own beside its state, replaced whole (enas/storage/files.py): they take no lock, so a
report of a running search works.
"""
from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

from enas.errors import FileRefused, RunBusyError, RunDirError
from enas.storage.runroot import LINK, hold_root, release_roots, single
from enas.storage import runfolder

NAME = runfolder.LOCK
_held: dict[tuple[int, int], tuple[int, int]] = {}  # (device, inode) of a run folder -> (its descriptor, lock file's)


def _key(run_dir: Path) -> tuple[int, int]:
    try:
        st = os.stat(run_dir)
    except OSError as e:
        raise RunDirError(f"cannot open run folder {run_dir}: {e.strerror or e}") from None
    return st.st_dev, st.st_ino


def _busy(run_dir: Path, owner: str) -> RunBusyError:
    return RunBusyError(f"run folder {run_dir} is being written by another enas process{owner}; one command writes a "
                        f"run at a time: wait until it ends (or stop it), then run this again")


def hold(run_dir: str | Path) -> None:
    """Take ``run_dir``'s lock for this process (nothing to do if it has it already), or
    stop with a ``RunBusyError`` if another process has it. The lock is taken on the run
    folder itself (its descriptor, held for the command: enas/storage/files.py ``hold_root``), so
    deleting ``enas.lock`` lets no second writer in, and on ``enas.lock`` too, which a
    writer of an older enas holds; that file only ever has one name (not a hard link)."""
    run_dir = Path(run_dir)
    key = _key(run_dir)
    if key in _held:
        return
    dfd = hold_root(run_dir)
    try:
        fcntl.flock(dfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _busy(run_dir, _owner_of(run_dir)) from None
    try:
        fd = _lock_file(run_dir, dfd)
    except BaseException:
        fcntl.flock(dfd, fcntl.LOCK_UN)
        raise
    _held[key] = (dfd, fd)


def _lock_file(run_dir: Path, dfd: int) -> int:
    path = run_dir / NAME
    try:
        fd = os.open(NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666, dir_fd=dfd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise FileRefused(path, LINK) from None
        raise RunDirError(f"cannot lock run folder {run_dir} ({NAME}: {e.strerror or e}); enas writes a run only "
                          f"while it holds that lock: make the folder writable") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileRefused(path, "is not a regular file; delete it (enas makes it again)")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(run_dir, _owner(fd)) from None
        single(path, fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except BaseException:
        os.close(fd)
        raise
    return fd


def _owner_of(run_dir: Path) -> str:
    try:
        fd = os.open(run_dir / NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        return _owner(fd)
    finally:
        os.close(fd)


def _owner(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (process {pid})" if pid.isdigit() else ""


def release(run_dir: str | Path) -> None:
    held = _held.pop(_key(Path(run_dir)), None)
    if held is not None:
        fcntl.flock(held[0], fcntl.LOCK_UN)
        os.close(held[1])


def release_all() -> None:
    """At the end of a command (the command line, the Python API): every lock it took,
    and every run folder it held open."""
    while _held:
        os.close(_held.popitem()[1][1])
    release_roots()  # closing the folders' descriptors ends their locks
