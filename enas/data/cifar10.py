"""CIFAR-10 in the official python layout: find, download, verify, extract, load.

``DIR/cifar-10-batches-py/{data_batch_1..5,test_batch}``, or ``DIR/cifar-10-python.tar.gz``
(extracted on first use), or a download from the canonical URL checked against its
md5. The batch files are pickles; they are read through an Unpickler that admits
only the numpy globals an array needs, so a planted file cannot run code.
"""
from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from .download import fetch, md5sum
from ..errors import DataError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE = "cifar-10-python.tar.gz"
SUBDIR = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
FILES = TRAIN_FILES + (TEST_FILE,)
TIMEOUT_S = 15.0


def _missing_message(data_dir: Path, why: str = "") -> str:
    missing = [f for f in FILES if not (data_dir / SUBDIR / f).is_file()]
    what = ", ".join(f"{SUBDIR}/{f}" for f in missing) + (f" (or {ARCHIVE})" if len(missing) == len(FILES) else "")
    msg = (
        f"CIFAR-10 not found in {data_dir}: missing {what}. "
        f"Download {URL} (md5 {MD5}) into {data_dir}; it is extracted on first use (README, 'Without internet')."
    )
    return f"{msg} ({why})" if why else msg


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a tar.gz, refusing absolute paths, '..' members, links and devices."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for m in members:
                parts = PurePosixPath(m.name).parts
                if m.name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                    raise DataError(f"{archive}: refusing to extract unsafe path {m.name!r}")
                if not (m.isfile() or m.isdir()):
                    raise DataError(f"{archive}: refusing to extract link or special file {m.name!r}")
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(dest, members=members, **kwargs)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"{archive} is not a readable tar.gz archive ({e}); delete it and try again") from None


def _download(url: str, dest: Path, timeout: float) -> None:
    try:
        fetch(url, dest, timeout)
    except (OSError, ValueError) as e:  # URLError, timeouts and refused connections are OSErrors
        raise DataError(_missing_message(dest.parent, f"download failed: {e}")) from None


def ensure_cifar10(data_dir, download: bool = True, url: str = URL, md5: str = MD5,
                   timeout: float = TIMEOUT_S) -> Path:
    """Return the folder holding the six batch files, extracting or downloading as needed."""
    data_dir = Path(data_dir)
    folder = data_dir / SUBDIR
    if all((folder / f).is_file() for f in FILES):
        return folder
    archive = data_dir / ARCHIVE
    if not archive.is_file():
        if not download:
            raise DataError(_missing_message(data_dir))
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(_missing_message(data_dir, f"cannot create the folder: {e}")) from None
        _download(url, archive, timeout)
    got = md5sum(archive)
    if got != md5:
        raise DataError(f"{archive} has md5 {got}, expected {md5} (incomplete or wrong file); delete it and try again")
    safe_extract(archive, data_dir)
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise DataError(f"{archive} did not contain {', '.join(f'{SUBDIR}/{f}' for f in missing)}")
    return folder


# ---------------------------------------------------------------------------
# restricted unpickling
# ---------------------------------------------------------------------------


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


# Exactly the globals a pickled ndarray refers to (py2 official files: numpy.core.*;
# files re-pickled by numpy 2: numpy._core.*).
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        get = _ALLOWED.get((module, name))
        if get is None:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch")
        return get()


def load_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One official batch file -> (uint8 [N, 3, 32, 32], int64 [N])."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        # latin1: the official py2 pickles hold numpy arrays (numpy's advice for py2 data)
        obj = _RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None
    except Exception as e:  # truncated / corrupt / forbidden content
        raise DataError(f"{path} is not a valid CIFAR-10 batch file ({type(e).__name__}: {e}); "
                        f"delete {path.parent} and extract {ARCHIVE} again") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a valid CIFAR-10 batch file (top level is {type(obj).__name__})")
    d = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    data, labels = d.get("data"), d.get("labels")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or labels is None:
        raise DataError(f"{path} is not a valid CIFAR-10 batch file (needs 'data' [N, 3072] and 'labels')")
    if data.dtype != np.uint8:  # pixels are bytes; a float or NaN array would be cast silently
        raise DataError(f"{path}: pixel values must be uint8 (0..255), got {data.dtype}; "
                        f"delete {path.parent} and extract {ARCHIVE} again")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (data.shape[0],) or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise DataError(f"{path}: labels do not match the images or are outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(data_dir, download: bool = True) -> dict[str, torch.Tensor]:
    """-> {"train_x": uint8 [50000, 3, 32, 32], "train_y": int64 [50000], "test_x", "test_y"}."""
    folder = ensure_cifar10(data_dir, download=download)
    train = [load_batch(folder / f) for f in TRAIN_FILES]
    tx, ty = load_batch(folder / TEST_FILE)
    return {
        "train_x": torch.from_numpy(np.concatenate([x for x, _ in train])),
        "train_y": torch.from_numpy(np.concatenate([y for _, y in train])),
        "test_x": torch.from_numpy(np.ascontiguousarray(tx)),
        "test_y": torch.from_numpy(ty),
    }
