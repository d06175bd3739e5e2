"""Reading a run folder for the report: metrics.jsonl as series, the config, the space,
result.json and data.json; whatever is missing stays missing. Every file is the run's
own (never a link), read within a size cap; the file names and their formats are
enas/storage/runfolder.py's, metrics.jsonl's reader enas/storage/metrics.py."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from enas.storage import safeyaml
from enas.nas.archfile import load_arch
from enas.errors import RunDirError, one_line
from enas.storage.files import read_json
from enas.storage.runroot import hold_root
from enas.nas.space import build_space, import_space_module, run_module
from enas.storage import runfolder as rf
from enas.storage.metrics import Metrics, Series, read_metrics

__all__ = ["Run", "Series", "Metrics", "load_run", "epochs_done", "arch_files"]
MAX_JSON = 2**20  # result.json, data.json: a dozen figures, a list of data files


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
    never with code its config names (enas/nas/space.py run_module)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is not a folder; `enas report` needs a search or retrain run folder")
    hold_root(run_dir)  # its files are read from here on, never through a link (archs/ included)
    if not (run_dir / rf.METRICS).is_file() and not (run_dir / rf.CONFIG).is_file():
        raise RunDirError(f"{run_dir} is not a run folder (it has neither {rf.CONFIG} nor {rf.METRICS})")

    config, config_text = _read_yaml(run_dir / rf.CONFIG)
    run = Run(run_dir, rf.kind_of(run_dir, config), config, config_text, read_metrics(run_dir / rf.METRICS),
              result=_read_json(run_dir / rf.RESULT), data=_read_json(run_dir / rf.DATA))
    if run.metrics.bad_lines:
        print(f"note: {one_line(run_dir / rf.METRICS)}: {run.metrics.bad_lines:,} unreadable line(s) skipped "
              f"(first: {one_line(run.metrics.first_bad)})", file=sys.stderr)
    sp = config.get("space") if isinstance(config.get("space"), dict) else None
    section = sp if sp else config.get("retrain") if isinstance(config.get("retrain"), dict) else {}
    key = "space.module" if sp else "retrain.space_module"
    module = section.get("module" if sp else "space_module")
    import_space_module(run_module(module if isinstance(module, str) else "", space_module,
                                   run_dir / rf.CONFIG, key), "--space-module")
    if sp and sp.get("name"):
        try:
            run.space = build_space(sp["name"], sp.get("args") or {})
        except Exception as e:  # an unknown or changed space: the page still shows the rest
            run.space_error = f"{type(e).__name__}: {e}"
    else:  # a retrain's config has no space: its architecture file names it
        for name in (rf.ARCH, rf.BEST_ARCH):
            if os.path.lexists(run_dir / name):
                try:
                    run.space = load_arch(run_dir / name, follow=False)[0]
                except Exception as e:  # noqa: BLE001 - the page still shows the rest
                    run.space_error = f"{name}: {e}"
                break
    return run


def arch_files(run: Run) -> list[tuple[int, Path]]:
    return rf.arch_files(run.dir)


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
