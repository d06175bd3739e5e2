"""Search and retrain from Python (a notebook, a script of your own).

The same runs as ``enas search`` and ``enas retrain``, with the same run folders; a
config is a YAML file or a mapping of sections, and the result comes back as an object
instead of a line on the console. A mistake raises ``enas.errors.UserError`` (the
message the command line would print); a run stopped by a signal raises
``enas.train.interrupt.StopRequested`` after writing its checkpoint::

    from enas import api
    found = api.search("configs/smoke/nb201_search.yaml")  # on the data it names (data.dir)
    found.best_arch, found.score, found.history[-1]["train_loss"]
    final = api.retrain(found.best_arch_file, "configs/smoke/nb201_retrain.yaml", data_dir="sample")
    final.test_metric, final.value

``data_dir`` is ``--data-dir``: by default the config's ``data.dir`` (``data`` unless the
config says otherwise; ``sample`` is the data that ships with enas, docs/data.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from enas.storage import runlock, safeyaml

from enas import runs
from enas.errors import ConfigError
from enas.storage import runfolder
from enas.storage.metrics import read_metrics


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when there is one), ``cpu`` or ``cuda[:N]``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: expected auto, cpu or cuda[:N]") from None


def _overrides(overrides: Mapping[str, Any] | Sequence[str]) -> list[str]:
    """``{"search.epochs": 2}`` or ``["search.epochs=2"]`` -> ``--set`` strings."""
    if isinstance(overrides, Mapping):
        return [f"{k}={safeyaml.dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                for k, v in overrides.items()]
    return list(overrides)


def epoch_history(run_dir: str | Path) -> list[dict]:
    """One dict per epoch from ``metrics.jsonl``: the epoch's overview figures (the first
    TensorBoard group, docs/glossary.md: train_loss, reward, entropy_of_uniform, the derived
    architecture's figure; for a retrain, the train and validation figures), keyed without
    the ``overview/`` prefix."""
    by_epoch: dict[int, dict] = {}
    for row in read_metrics(Path(run_dir) / runfolder.METRICS).rows:
        if not isinstance(row.get("epoch"), int):
            continue
        figures = {k.removeprefix("overview/"): v for k, v in row.items() if k.startswith("overview/")}
        if figures:
            by_epoch.setdefault(row["epoch"], {"epoch": row["epoch"]}).update(figures)
    return [by_epoch[e] for e in sorted(by_epoch)]


@dataclass
class SearchResult:
    run_dir: Path
    best_arch: dict  # decision name -> choice, as in best_arch.yaml
    best_arch_file: Path
    score: float  # the best architecture's validation score (reward metric)
    se: float  # its standard error
    epoch: int  # the epoch whose derive found it
    history: list[dict] = field(default_factory=list)  # epoch_history(run_dir)


@dataclass
class RetrainResult:
    run_dir: Path
    test_metric: str  # "test_accuracy" or "test_perplexity"
    value: float
    params: int
    result: dict  # everything in result.json
    history: list[dict] = field(default_factory=list)  # epoch_history(run_dir)


def search(config, *, data_dir: str | Path | None = None, run_dir: str | Path | None = None,
           overrides: Mapping[str, Any] | Sequence[str] = (), device: str = "auto",
           resume: str | Path | None = None, space_module: str | None = None) -> SearchResult:
    """Run a search (``enas search CONFIG``) or continue one (``resume=RUN_DIR``, with
    ``config`` None; ``space_module``: the file of the run's space if it is your own, as
    ``--space-module``); returns when it has finished."""
    dev = resolve_device(device)
    sets = _overrides(overrides)
    try:
        if resume is not None:
            if config is not None:
                raise ConfigError("search(resume=RUN_DIR) takes no config: the run folder holds it")
            loop, cfg, state, diffs = runs.resume_search(resume, sets, None, False, dev, space_module)
            best = runs.continue_run(loop, cfg, state, diffs)
        else:
            loop = runs.start_search(config, sets, data_dir, run_dir, dev)
            best = loop.run()
    finally:
        runlock.release_all()
    run = Path(loop.run_dir).resolve()
    return SearchResult(run, dict(best["arch"]), run / runfolder.BEST_ARCH, float(best["score"]),
                        float(best.get("se", float("nan"))), int(best["epoch"]), epoch_history(run))


def retrain(arch: str | Path, config, *, data_dir: str | Path | None = None, run_dir: str | Path | None = None,
            overrides: Mapping[str, Any] | Sequence[str] = (), device: str = "auto") -> RetrainResult:
    """Train the architecture file ``arch`` from scratch and test it (``enas retrain``)."""
    try:
        rt = runs.start_retrain(arch, config, _overrides(overrides), data_dir, run_dir, resolve_device(device))
        result = rt.run()
    finally:
        runlock.release_all()
    key = next(k for k in result if k.startswith("test_") and k != "test_loss")
    run = Path(rt.run_dir).resolve()
    return RetrainResult(run, key, float(result[key]), int(result["params"]), result, epoch_history(run))
