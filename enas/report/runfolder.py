"""Reading a run folder for the report: metrics.jsonl as series, the config, the space,
result.json and data.json; whatever is missing stays missing. Every file is the run's
own (never a link), read within a size cap; metrics.jsonl is streamed a line at a time,
and a line longer than ``MAX_LINE`` or not a row of figures is counted and skipped."""
from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import safeyaml
from ..archfile import load_arch
from ..errors import RunDirError, one_line
from ..files import loads_json, open_regular, read_json
from ..runroot import hold_root
from ..space import build_space, import_space_module, run_module

NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "Infinity": math.inf, "-Infinity": -math.inf,
              "NaN": math.nan}
_SKIP_KEYS = {"step", "epoch"}
# The longest line enas writes holds every choice probability of one derive (a few KB
# for the paper's spaces).
MAX_LINE = 2**20
MAX_JSON = 2**20  # result.json, data.json: a dozen figures, a list of data files
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
        rows a short run has (enas.runlog.TB_GROUPS names those groups "..._by_step")."""
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


@dataclass
class Run:
    dir: Path
    kind: str  # "search" | "retrain"
    config: dict
    config_text: str
    metrics: Metrics
    space: Any = None
    space_error: str | None = None
    result: dict | None = None
    data: dict | None = None


def _read_yaml(path: Path) -> tuple[dict, str]:
    try:
        text = safeyaml.read(path, follow=False)
    except FileNotFoundError:
        return {}, ""
    except UnicodeDecodeError:
        return {}, ""
    except (yaml.YAMLError, OSError) as e:  # a link, a FIFO, an oversized file: not the run's own file
        raise RunDirError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        doc = safeyaml.load(text)
    except yaml.YAMLError:
        return {}, text
    return (doc if isinstance(doc, dict) else {}), text


def _read_json(path: Path) -> dict | None:
    try:
        doc = read_json(path, MAX_JSON)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        why = one_line(getattr(e, "strerror", None) or str(e)[:200])
        print(f"note: {one_line(path)} is unreadable ({why}); the report leaves it "
              f"out", file=sys.stderr)
        return None
    return doc if isinstance(doc, dict) else None


def load_run(run_dir: Path, space_module: str | None = None) -> Run:
    """The run folder's files; its space is built with the code ``space_module`` names,
    never with code its config names (enas/space.py run_module)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is not a folder; `enas report` needs a search or retrain run folder")
    hold_root(run_dir)  # its files are read from here on, never through a link (archs/ included)
    if not (run_dir / "metrics.jsonl").is_file() and not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"{run_dir} is not a run folder (it has neither config.yaml nor metrics.jsonl)")

    config, config_text = _read_yaml(run_dir / "config.yaml")
    if (run_dir / "arch.yaml").is_file() or (run_dir / "result.json").is_file() or "retrain" in config:
        kind = "retrain"
    else:
        kind = "search"
    run = Run(run_dir, kind, config, config_text, read_metrics(run_dir / "metrics.jsonl"),
              result=_read_json(run_dir / "result.json"), data=_read_json(run_dir / "data.json"))
    if run.metrics.bad_lines:
        print(f"note: {one_line(run_dir / 'metrics.jsonl')}: {run.metrics.bad_lines:,} unreadable line(s) skipped "
              f"(first: {one_line(run.metrics.first_bad)})", file=sys.stderr)
    sp = config.get("space") if isinstance(config.get("space"), dict) else None
    section = sp if sp else config.get("retrain") if isinstance(config.get("retrain"), dict) else {}
    key = "space.module" if sp else "retrain.space_module"
    module = section.get("module" if sp else "space_module")
    import_space_module(run_module(module if isinstance(module, str) else "", space_module,
                                   run_dir / "config.yaml", key), "--space-module")
    if sp and sp.get("name"):
        try:
            run.space = build_space(sp["name"], sp.get("args") or {})
        except Exception as e:  # an unknown or changed space: the page still shows the rest
            run.space_error = f"{type(e).__name__}: {e}"
    else:  # a retrain's config has no space: its architecture file names it
        for name in ("arch.yaml", "best_arch.yaml"):
            if os.path.lexists(run_dir / name):
                try:
                    run.space = load_arch(run_dir / name, follow=False)[0]
                except Exception as e:  # noqa: BLE001 - the page still shows the rest
                    run.space_error = f"{name}: {e}"
                break
    return run


def arch_files(run: Run) -> list[tuple[int, Path]]:
    out = []
    for p in (run.dir / "archs").glob("epoch_*.yaml"):
        m = re.fullmatch(r"epoch_(\d+)\.yaml", p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def epochs_done(run: Run) -> tuple[int | None, int | None]:
    """(epochs done, epochs planned)."""
    section = run.config.get(run.kind) if isinstance(run.config.get(run.kind), dict) else {}
    planned = section.get("epochs") if isinstance(section.get("epochs"), int) else None
    if run.kind == "search":
        files = arch_files(run)
        if files:
            return files[-1][0], planned
        s = run.metrics.get("derive/score")
        return (len(s.values) if s else 0), planned
    if run.result and isinstance(run.result.get("epochs"), int):
        return run.result["epochs"], planned
    per_epoch = [s for s in run.metrics.series.values() if s.by_epoch and s.values]
    return max((max(s.epochs) for s in per_epoch), default=0), planned
