"""Reading ``metrics.jsonl``: every figure as a series, texts apart. Unreadable lines
(a run killed mid-write, an edited file) are counted and skipped; the file is the run's
own (never a link), streamed a line at a time, and a line longer than ``MAX_LINE`` or
not a row of figures is counted and skipped."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from enas.storage.files import loads_json, open_regular
from enas.storage.runfolder import NONFINITE

_SKIP_KEYS = {"step", "epoch"}
# The longest line enas writes holds every choice probability of one derive (a few KB
# for the paper's spaces).
MAX_LINE = 2**20
_BY_STEP = {"shared", "train", "controller", "lr"}


@dataclass
class Series:
    name: str
    steps: list[int] = field(default_factory=list)
    epochs: list[int | None] = field(default_factory=list)
    values: list[float] = field(default_factory=list)  # non-finite kept as nan / +-inf

    @property
    def by_epoch(self) -> bool:
        """One value per epoch (derive, policy, per-epoch validation): plot against epoch.
        What the training loops log every few steps stays on the step axis, however few
        rows a short run has (enas.storage.runlog.TB_GROUPS names those groups "..._by_step")."""
        if self.name.split("/")[0] in _BY_STEP:
            return False
        return all(e is not None for e in self.epochs) and len(set(self.epochs)) == len(self.epochs)

    @property
    def x(self) -> list[float]:
        return list(self.epochs) if self.by_epoch else list(self.steps)

    @property
    def nonfinite(self) -> int:
        return sum(not math.isfinite(v) for v in self.values)


@dataclass
class Metrics:
    rows: list[dict] = field(default_factory=list)
    series: dict[str, Series] = field(default_factory=dict)
    texts: dict[str, list[tuple[int, int | None, str]]] = field(default_factory=dict)  # name -> (step, epoch, text)
    bad_lines: int = 0
    first_bad: str = ""  # "line N: why", for the note

    def get(self, name: str) -> Series | None:
        s = self.series.get(name)
        return s if s is not None and s.values else None


def read_metrics(path: Path) -> Metrics:
    """metrics.jsonl -> series. Unreadable lines (a run killed mid-write, an edited file)
    are counted and skipped; "nan"/"inf" strings become floats; other strings are kept as
    text."""
    m = Metrics()
    if not path.is_file():
        return m
    try:
        f = open_regular(path, follow=False)
    except OSError as e:
        m.bad_lines, m.first_bad = 1, f"unreadable: {e.strerror or e}"
        return m
    with f:
        for n, line in enumerate(_lines(f), start=1):
            if line is None:
                _bad(m, n, f"longer than {MAX_LINE:,} bytes")
                continue
            if line.strip():
                why = _add_row(m, line)
                if why:
                    _bad(m, n, why)
    return m


def _lines(f):
    """The lines of ``f``, each at most MAX_LINE bytes; None for a longer one (skipped
    without being held in memory)."""
    while True:
        line = f.readline(MAX_LINE + 1)
        if not line:
            return
        if len(line) > MAX_LINE and not line.endswith(b"\n"):
            while (rest := f.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                pass
            yield None
        else:
            yield line


def _bad(m: Metrics, n: int, why: str) -> None:
    m.bad_lines += 1
    m.first_bad = m.first_bad or f"line {n:,}: {why}"


def _count(v) -> int | None:
    """A step or epoch: an integer, or a float holding one (never inf or NaN)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if isinstance(v, float) and not (math.isfinite(v) and v.is_integer()):
        return None
    return int(v) if abs(v) < 2**53 else None


def _add_row(m: Metrics, line: bytes) -> str:
    """Add one line's figures; the reason it is unreadable, or ""."""
    try:
        row = loads_json(line)
    except ValueError as e:
        return f"not JSON ({str(e).split(':')[0][:80]})"
    if not isinstance(row, dict):
        return "not an object of figures"
    step, epoch = _count(row.get("step")), _count(row.get("epoch"))
    if step is None and "step" in row or epoch is None and row.get("epoch") is not None:
        return "a step or epoch that is not a whole number"
    values = {}
    for k, v in row.items():
        if k in _SKIP_KEYS:
            continue
        if isinstance(v, str) and v.strip() in NONFINITE:
            v = NONFINITE[v.strip()]
        if isinstance(v, bool):
            v = float(v)
        if isinstance(v, int) and abs(v) > 2**53:
            return f"{k}: an integer too large for a figure"
        values[k] = v
    m.rows.append(row)
    step = step if step is not None else len(m.rows)
    for k, v in values.items():
        if isinstance(v, (int, float)):
            s = m.series.setdefault(k, Series(k))
            s.steps.append(step)
            s.epochs.append(epoch)
            s.values.append(float(v))
        elif isinstance(v, str):
            m.texts.setdefault(k, []).append((step, epoch, v))
    return ""
