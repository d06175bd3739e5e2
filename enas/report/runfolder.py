"""Reading a run folder for the report: metrics.jsonl as series, the config, the space,
result.json and data.json; whatever is missing stays missing."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import safeyaml
from ..runlog import RunDirError

NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "Infinity": math.inf, "-Infinity": -math.inf,
              "NaN": math.nan}
_SKIP_KEYS = {"step", "epoch"}
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

    def get(self, name: str) -> Series | None:
        s = self.series.get(name)
        return s if s is not None and s.values else None


def read_metrics(path: Path) -> Metrics:
    """metrics.jsonl -> series. Unreadable lines (a run killed mid-write) are counted and
    skipped; "nan"/"inf" strings become floats; other strings are kept as text."""
    m = Metrics()
    if not path.is_file():
        return m
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            m.bad_lines += 1
            continue
        if not isinstance(row, dict):
            m.bad_lines += 1
            continue
        m.rows.append(row)
        step = row.get("step")
        step = int(step) if isinstance(step, (int, float)) and not isinstance(step, bool) else len(m.rows)
        epoch = row.get("epoch")
        epoch = int(epoch) if isinstance(epoch, (int, float)) and not isinstance(epoch, bool) else None
        for k, v in row.items():
            if k in _SKIP_KEYS:
                continue
            if isinstance(v, str) and v.strip() in NONFINITE:
                v = NONFINITE[v.strip()]
            if isinstance(v, bool):
                v = float(v)
            if isinstance(v, (int, float)):
                s = m.series.setdefault(k, Series(k))
                s.steps.append(step)
                s.epochs.append(epoch)
                s.values.append(float(v))
            elif isinstance(v, str):
                m.texts.setdefault(k, []).append((step, epoch, v))
    return m


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
        text = path.read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return {}, ""
    try:
        doc = safeyaml.load(text)
    except yaml.YAMLError:
        return {}, text
    return (doc if isinstance(doc, dict) else {}), text


def _read_json(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def load_run(run_dir: Path) -> Run:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is not a folder; `enas report` needs a search or retrain run folder")
    if not (run_dir / "metrics.jsonl").is_file() and not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"{run_dir} is not a run folder (it has neither config.yaml nor metrics.jsonl)")

    config, config_text = _read_yaml(run_dir / "config.yaml")
    if (run_dir / "arch.yaml").is_file() or (run_dir / "result.json").is_file() or "retrain" in config:
        kind = "retrain"
    else:
        kind = "search"
    run = Run(run_dir, kind, config, config_text, read_metrics(run_dir / "metrics.jsonl"),
              result=_read_json(run_dir / "result.json"), data=_read_json(run_dir / "data.json"))
    sp = config.get("space") if isinstance(config.get("space"), dict) else None
    if sp and sp.get("name"):
        try:
            from ..space import build_space

            run.space = build_space(sp["name"], sp.get("args") or {}, sp.get("module") or "")
        except Exception as e:  # an unknown or changed space: the page still shows the rest
            run.space_error = f"{type(e).__name__}: {e}"
    else:  # a retrain's config has no space: its architecture file names it
        for name in ("arch.yaml", "best_arch.yaml"):
            if (run_dir / name).is_file():
                try:
                    from ..archfile import load_arch
                    from ..space import import_space_module

                    section = run.config.get("retrain") if isinstance(run.config.get("retrain"), dict) else {}
                    import_space_module(section.get("space_module") or "", "retrain.space_module")
                    run.space = load_arch(run_dir / name)[0]
                except Exception as e:
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
