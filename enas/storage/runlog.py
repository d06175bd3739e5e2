"""Run folders, metrics.jsonl, TensorBoard and console progress.

Runs are folders (pycls/detectron2): ``runs/<config>-<time>/`` unless ``--run-dir``
names one. An existing, non-empty folder is never reused or overwritten; resume
it instead. Every logged figure goes to ``metrics.jsonl`` (one JSON object a line)
and to TensorBoard under the same name.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import sys
from pathlib import Path

import matplotlib.image as mpimg
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from enas.storage import runlock
from enas.errors import RunDirError, UserError, printable
from enas.storage.files import WriteError, make_dir, make_dirs, open_append, remove
from enas.storage.runroot import release_root
from enas.storage import runfolder

# TensorBoard sorts chart groups by name: the number puts what a user looks at first on
# top (the per-epoch overview: figures that move while a run works), and the name says
# which x-axis (step) every chart of the group uses. Search and retrain runs share
# `runs/`, so each kind has an overview group of its own. metrics.jsonl keeps the plain
# names.
TB_GROUPS = {
    "overview": "1_{kind}_overview_by_epoch",
    "shared": "2_shared_by_step",
    "train": "2_train_by_step",
    "controller": "3_controller_by_update",
    "derive": "4_derive_by_epoch",
    "policy": "5_policy_by_epoch",
    "warning": "6_warnings_by_epoch",
    "result": "7_result",
    "schedule": "8_schedule_by_epoch",
}
# counters that stay 0 in a healthy run: no chart until they are not
QUIET = ("skipped_steps", "dropped_rewards", "collapse")


def tb_tag(name: str, value=None, kind: str = "search") -> str | None:
    """The TensorBoard tag of a figure of a ``kind`` run (search, retrain), or None for
    what TensorBoard does not show as a chart: bookkeeping (``epoch``), one choice's
    probability (``policy/<decision>/<choice>``: heat-map images per decision group
    instead), a quiet counter that is still 0."""
    group, _, rest = name.partition("/")
    if not rest or group not in TB_GROUPS:
        return None
    if group == "policy" and "/" in rest:
        return None
    if rest.rsplit("/", 1)[-1] in QUIET and value == 0:
        return None
    return f"{TB_GROUPS[group].format(kind=kind)}/{rest}"


CREATED = runfolder.CREATED  # what a new run's folder holds at first


def new_run_dir(run_dir: str | Path | None, config_path: str | Path, root: str | Path = "runs",
                kind: str = "search", fill=None) -> Path:
    """A new run folder, made and locked (enas/storage/runlock.py); a folder holding anything but
    a lock file is a run already, and is never reused. ``fill(path)`` writes its first
    files: all or nothing, so if it fails (a full disk) the files it wrote, the lock and a
    folder made here are removed, and the same command can simply run again."""
    def refuse():
        return RunDirError(f"run folder {path} already exists and is not empty; enas never overwrites a run. "
                           f"Choose another --run-dir, or continue that run with `enas {kind} --resume {path}`")

    if run_dir is not None:
        path = Path(run_dir)
        if os.path.lexists(path) and (not path.is_dir() or _used(path)):
            raise refuse()
    else:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        name = Path(config_path).stem if isinstance(config_path, (str, Path)) else kind  # a mapping: the API
        base = Path(root) / f"{name}-{stamp}"
        path, n = base, 1
        while path.exists():
            n += 1
            path = base.with_name(f"{base.name}-{n}")
    made = not os.path.lexists(path)
    try:  # the folders above as the user named them; the run's own folder never a link
        make_dirs(path.parent)
        make_dir(path)
    except OSError as e:  # FileRefused (a link or a file at that name) is one too
        raise RunDirError(f"cannot create run folder {path}: {e.strerror or e}") from None
    runlock.hold(path)
    if _used(path):  # another command made its run here since the check above
        runlock.release(path)
        raise refuse()
    if fill is not None:
        try:
            fill(path)
        except BaseException:
            _undo(path, made)
            raise
    return path


def _undo(path: Path, made: bool) -> None:
    """Remove what creating the run folder ``path`` wrote (only names enas writes there)."""
    for name in CREATED:
        with contextlib.suppress(OSError):
            remove(path / name)
    runlock.release(path)
    release_root(path)
    if made:
        with contextlib.suppress(OSError):
            path.rmdir()


def _used(path: Path) -> bool:
    return any(p.name != runlock.NAME for p in path.iterdir())


class RunLog:
    """metrics.jsonl + TensorBoard. ``resume_offset`` truncates metrics.jsonl to what the
    checkpoint had seen, so a resumed run's log equals an uninterrupted one's."""

    def __init__(self, run_dir: Path, resume_offset: int | None = None, purge_step: int | None = None,
                 enabled: bool = True, kind: str = "search"):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.kind = kind  # names the overview group (TB_GROUPS)
        self.tb = None
        self.file = None
        self.failed = False
        self.path = self.run_dir / runfolder.METRICS
        self.events = self.run_dir / runfolder.EVENTS  # TensorBoard names its file
        if not enabled:
            return
        with self._writing(self.path):
            self.file = open_append(self.path, truncate=resume_offset)

        with self._writing(self.events):
            self.tb = SummaryWriter(str(self.run_dir), purge_step=purge_step)

    @contextlib.contextmanager
    def _writing(self, what):
        """A failed write (full disk, read-only folder) becomes a WriteError: the run stops
        with a message, and a resume truncates metrics.jsonl to the checkpoint's offset, so a
        half-written line or event is never kept. TensorBoard's writer thread re-raises its
        own failure on the next call, as an OSError or a RuntimeError of its own."""
        try:
            yield
        except (OSError, RuntimeError) as e:
            if isinstance(e, UserError):  # a WriteError, a link refused
                raise
            self.failed = True
            reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
            raise WriteError(f"could not write {what}: {reason}. Free space or fix the folder's permissions, then "
                             "continue the run with --resume (it restarts from the last checkpoint)") from None

    def offset(self) -> int:
        if self.file is None:
            return 0
        with self._writing(self.path):
            self.file.flush()
            return self.file.tell()

    def log(self, step: int, **figures) -> None:
        """``figures`` keyed like ``shared/loss``; floats, ints or short strings."""
        if not self.enabled:
            return
        row = {"step": step}
        with self._writing(self.events):
            for k, v in figures.items():
                if isinstance(v, float) and not math.isfinite(v):
                    v = str(v)  # JSON has no NaN
                row[k] = v
                tag = tb_tag(k, v, self.kind)
                if self.tb is not None and tag and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(tag, v, step)
        with self._writing(self.path):
            self.file.write(json.dumps(row) + "\n")

    def text(self, tag: str, text: str, step: int) -> None:
        if self.tb is not None:
            # TensorBoard renders markdown: indent to keep the cell's layout.
            with self._writing(self.events):
                self.tb.add_text(tb_tag(tag, kind=self.kind) or tag, "    " + text.replace("\n", "\n    "), step)

    def image(self, tag: str, image, step: int) -> None:
        """A PNG file or an RGB array [H, W, 3]."""
        if self.tb is None:
            return
        if isinstance(image, (str, Path)):
            image = mpimg.imread(str(image))[..., :3]
        with self._writing(self.events):
            self.tb.add_image(tb_tag(tag, kind=self.kind) or tag, image, step, dataformats="HWC")

    def flush(self) -> None:
        if self.file is not None:
            with self._writing(self.path):
                self.file.flush()
        if self.tb is not None:
            with self._writing(self.events):
                self.tb.flush()

    def close(self) -> None:
        """Flush and close; after a failed write, close quietly (the error is on its way)."""
        failed_before = self.failed
        try:
            self.flush()
        except WriteError:
            if not failed_before:
                raise
        finally:
            for f in (self.file, self.tb):
                if f is not None:
                    with contextlib.suppress(OSError, RuntimeError):
                        f.close()
            self.file = self.tb = None


def progress(total: int, desc: str, initial: int = 0, enabled: bool = True) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True,
                mininterval=1.0, file=sys.stderr, disable=None if enabled else True)  # None: off when not a TTY


def say(msg: str, enabled: bool = True) -> None:
    """A line for the user on stderr, control characters escaped (messages quote files)."""
    if enabled:
        tqdm.write(printable(msg), file=sys.stderr)
