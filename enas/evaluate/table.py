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
``--metric-column`` name others.
"""
from __future__ import annotations

import csv
import io
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import QUOTE_CHARS, DataError, brief, printable
from ..files import read_regular
from ..space import ArchError

MAX_TABLE_BYTES = 256 * 2**20  # NB201's table is 1.5 MB; a larger file is not a table of a search space


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
        return float(100.0 * (below + 0.5 * (above - below)) / len(self._sorted))

    def sample(self, n: int, seed: int) -> list[str]:
        """``n`` distinct rows drawn uniformly (seeded), as arch texts."""
        texts = sorted(self.accuracy)
        if n > len(texts):
            raise DataError(f"{self.path} has {len(texts)} architectures; ask for at most that many (--cells)")
        return random.Random(seed).sample(texts, n)


def read_table(path, space, text_of, parse, arch_column: str | None = None,
               metric_column: str | None = None) -> Table:
    """Read ``path`` for ``space``: ``parse(line) -> arch`` and ``text_of(arch) -> text``
    (enas/rank.py's forms) give every row one canonical text."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"table {path} is not a file (a folder); give the CSV of published accuracies "
                        f"(cell strings and accuracies, docs/evaluation.md)")
    try:  # a regular file only (a FIFO would wait forever), refused unread when too large
        text = read_regular(path, MAX_TABLE_BYTES).decode()
    except UnicodeDecodeError:
        raise DataError(f"table {path} is not a text (CSV) file") from None
    except OSError as e:
        raise DataError(f"table {path}: {e.strerror or e}; give the CSV of published accuracies") from None
    reader = csv.DictReader(io.StringIO(text))
    try:
        return _rows(path, reader, space, text_of, parse, arch_column, metric_column)
    except csv.Error as e:  # a field over csv's limit (128 KB), a NUL byte
        raise DataError(f"table {path}, line {reader.line_num}: {e}") from None


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
