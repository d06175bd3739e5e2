"""CIFAR-10 and CIFAR-100 in the official python layout: find, download, verify, extract, load.

The two differ only in names, captured by a ``Spec`` per dataset: CIFAR-10 is
``DIR/cifar-10-batches-py/{data_batch_1..5,test_batch}`` (key ``labels``, 10 classes),
CIFAR-100 is ``DIR/cifar-100-python/{train,test}`` (key ``fine_labels``, 100 classes;
its 20 ``coarse_labels`` are not used, as in the usual CIFAR-100 benchmarks). Each is
read from its folder, or from its archive in DIR (extracted on first use), or from a
download from the canonical URL checked against its md5. The batch files are pickles;
they are read through an Unpickler that admits only the numpy globals an array needs,
so a planted file cannot run code.
"""
from __future__ import annotations

import io
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from enas.data import shipped
from enas.data.download import fetch, make_folders, md5sum, remove_empty
from enas.errors import DataError
from enas.storage.files import read_regular

TIMEOUT_S = 15.0
# The largest official batch file (CIFAR-100's train: 50,000 images of 3,072 bytes) with
# room for its labels and file names; a larger one is refused before it is read.
MAX_BATCH_BYTES = 50_000 * 3072 + 16 * 2**20


@dataclass(frozen=True)
class Spec:
    title: str  # for messages
    url: str
    md5: str
    archive: str  # the archive's file name in DIR
    folder: str  # the folder it extracts to
    train_files: tuple[str, ...]
    test_file: str
    label_key: str
    num_classes: int
    names_file: str = "batches.meta"  # the class names (exported models carry them)
    names_key: str = "label_names"

    @property
    def files(self) -> tuple[str, ...]:
        return self.train_files + (self.test_file,)


CIFAR10 = Spec("CIFAR-10", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
               "c58f30108f718f92721af3b95e74349a", "cifar-10-python.tar.gz", "cifar-10-batches-py",
               tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "labels", 10)
CIFAR100 = Spec("CIFAR-100", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python.tar.gz", "cifar-100-python",
                ("train",), "test", "fine_labels", 100, "meta", "fine_label_names")
SPECS = {"cifar10": CIFAR10, "cifar100": CIFAR100}  # by data.dataset


def _missing_message(spec: Spec, data_dir: Path, why: str = "") -> str:
    missing = [f for f in spec.files if not (data_dir / spec.folder / f).is_file()]
    what = ", ".join(f"{spec.folder}/{f}" for f in missing)
    what += f" (or {spec.archive})" if len(missing) == len(spec.files) else ""
    msg = (
        f"{spec.title} not found in {data_dir}: missing {what}. Download {spec.url} (md5 {spec.md5}) "
        f"into {data_dir}; it is extracted on first use (docs/data.md, 'Without internet')."
    )
    dataset = next((k for k, s in SPECS.items() if s is spec), "")
    return (f"{msg} ({why})" if why else msg) + shipped.hint(dataset)


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


def ensure(spec: Spec, data_dir, download: bool = True, url: str | None = None, md5: str | None = None,
           timeout: float = TIMEOUT_S) -> Path:
    """Return the folder holding ``spec``'s batch files, extracting or downloading as needed
    (``url`` / ``md5``: the spec's unless given)."""
    url, md5 = url or spec.url, md5 or spec.md5
    data_dir = Path(data_dir)
    folder = data_dir / spec.folder
    if all((folder / f).is_file() for f in spec.files):
        return folder
    archive = data_dir / spec.archive
    if not archive.is_file():
        if not download:
            raise DataError(_missing_message(spec, data_dir))
        try:
            created = make_folders(data_dir)
        except OSError as e:
            raise DataError(_missing_message(spec, data_dir, f"cannot create the folder: {e}")) from None
        try:
            fetch(url, archive, timeout)
        except (OSError, ValueError) as e:  # URLError, timeouts and refused connections are OSErrors
            remove_empty(created)
            raise DataError(_missing_message(spec, data_dir, f"download failed: {e}")) from None
    got = md5sum(archive)
    if got != md5:
        raise DataError(f"{archive} has md5 {got}, expected {md5} (incomplete or wrong file); delete it and try again")
    safe_extract(archive, data_dir)
    missing = [f for f in spec.files if not (folder / f).is_file()]
    if missing:
        raise DataError(f"{archive} did not contain {', '.join(f'{spec.folder}/{f}' for f in missing)}")
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
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        return get()


def load_batch(path: Path, spec: Spec = CIFAR10) -> tuple[np.ndarray, np.ndarray]:
    """One official batch file -> (uint8 [N, 3, 32, 32], int64 [N])."""
    path = Path(path)
    bad = f"{path} is not a valid {spec.title} batch file"
    again = f"delete {path.parent} and extract {spec.archive} again"
    try:
        raw = read_regular(path, MAX_BATCH_BYTES)
        # latin1: the official py2 pickles hold numpy arrays (numpy's advice for py2 data)
        obj = _RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None
    except Exception as e:  # truncated / corrupt / forbidden content
        raise DataError(f"{bad} ({type(e).__name__}: {e}); {again}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{bad} (top level is {type(obj).__name__})")
    d = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    data, labels = d.get("data"), d.get(spec.label_key)
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or labels is None:
        raise DataError(f"{bad} (needs 'data' [N, 3072] and '{spec.label_key}')")
    if data.dtype != np.uint8:  # pixels are bytes; a float or NaN array would be cast silently
        raise DataError(f"{path}: pixel values must be uint8 (0..255), got {data.dtype}; {again}")
    labels = _label_array(labels, data.shape[0])
    if labels is None:
        raise DataError(f"{path}: '{spec.label_key}' must be {data.shape[0]:,} integers, one per image; {again}")
    top = spec.num_classes - 1
    if labels.shape != (data.shape[0],) or labels.min(initial=0) < 0 or labels.max(initial=0) > top:
        raise DataError(f"{path}: labels do not match the images or are outside 0..{top}")
    return data.reshape(-1, 3, 32, 32), labels


def _label_array(labels, n: int) -> np.ndarray | None:
    """``labels`` as int64 [n], or None: checked for shape and type before converting, since
    a list of lists would make ``np.asarray`` allocate their product (a 3 MB pickle whose
    60,000 labels are each a reference to one long list asks for gigabytes)."""
    if isinstance(labels, np.ndarray):
        ok = labels.shape == (n,) and (labels.dtype.kind in "iu" or labels.size == 0)
    else:
        ok = isinstance(labels, list) and len(labels) == n and all(type(x) is int for x in labels)
    return np.asarray(labels, dtype=np.int64) if ok else None


def class_names(spec: Spec, folder: Path) -> list[str] | None:
    """The class names of the dataset's meta file, or None where it is missing or not a
    list of ``num_classes`` short strings (read as strictly as the batches)."""
    path = Path(folder) / spec.names_file
    try:
        obj = _RestrictedUnpickler(io.BytesIO(read_regular(path, 1 << 20)), encoding="latin1").load()
    except Exception:  # noqa: BLE001 - a nicety: digits stand in for missing names
        return None
    names = obj.get(spec.names_key, obj.get(spec.names_key.encode())) if isinstance(obj, dict) else None
    if not isinstance(names, list) or len(names) != spec.num_classes:
        return None
    names = [n.decode("latin1") if isinstance(n, bytes) else n for n in names]
    return names if all(isinstance(n, str) and 0 < len(n) <= 100 for n in names) else None


def load(spec: Spec, data_dir, download: bool = True) -> dict:
    """-> {"train_x": uint8 [N, 3, 32, 32], "train_y": int64 [N], "test_x", "test_y", "num_classes",
    "classes" (names, or None)} (N = 50,000 for both datasets)."""
    folder = ensure(spec, data_dir, download=download)
    train = [load_batch(folder / f, spec) for f in spec.train_files]
    tx, ty = load_batch(folder / spec.test_file, spec)
    return {
        "train_x": torch.from_numpy(np.concatenate([x for x, _ in train])),
        "train_y": torch.from_numpy(np.concatenate([y for _, y in train])),
        "test_x": torch.from_numpy(np.ascontiguousarray(tx)),
        "test_y": torch.from_numpy(ty),
        "num_classes": spec.num_classes,
        "classes": class_names(spec, folder),
    }
