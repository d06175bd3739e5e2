"""Every file a run folder holds, in one place: its name, the code that writes it, the
code that reads it and the version of its format (``FILES``); the paths of the
architecture files a search writes; the provenance an architecture file carries; the
names under which the policy's choice probabilities go to ``metrics.jsonl``.

The mechanism stays where it is (enas/storage/files.py reads and writes without links,
enas/storage/runroot.py holds the folder, enas/storage/checkpoint.py, enas/storage/runlog.py, enas/nas/archfile.py
the formats); this module is the schema they share, and the one place that knows the
file names. It imports nothing of enas, so every layer may use it.

A run folder written by an earlier enas still opens: a reader accepts every file as
earlier versions wrote it (provenance keys are optional, an older config may lack a
key, and a format version is only ever raised when an older file still reads).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

# ---- the files -------------------------------------------------------------------------

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
CHECKPOINT_PREV = "checkpoint.prev.pt"  # the checkpoint before, a torn write's fallback
DATA = "data.json"
LOCK = "enas.lock"
EVENTS = "events.out.tfevents.*"  # TensorBoard names its own file
BEST_ARCH = "best_arch.yaml"  # a search's winner so far
BEST_ARCH_PNG = "best_arch.png"
ARCHS = "archs"  # every derived architecture of a search
ARCH = "arch.yaml"  # the architecture a retrain trains
RESULT = "result.json"
BEST = "best.pt"  # a retrain's weights at its best validation figure
REPORT = "report.html"

# Format versions; a reader refuses a newer one with "upgrade enas".
ARCH_FORMAT = 1  # format_version of every architecture file
CHECKPOINT_FORMAT = 1  # "format" in checkpoint.pt

KINDS = ("search", "retrain")
# Any of these: the folder is a run's (enas never writes into one it did not make).
MARKS = (CONFIG, METRICS, CHECKPOINT)
# What a new run's folder holds before its first epoch.
CREATED = (CONFIG, DATA, ARCH, LOCK)


@dataclass(frozen=True)
class RunFile:
    name: str  # a file name, or a pattern (archs/epoch_NNN.yaml)
    kinds: tuple[str, ...]  # the runs that hold it
    writer: str  # module.function that writes it
    reader: str  # module.function that reads it back
    version: str  # what versions its format
    holds: str


_ARCH_VERSION = f"format_version: {ARCH_FORMAT} (enas/nas/archfile.py)"
FILES = (
    RunFile(CONFIG, KINDS, "enas.config.dump", "enas.config.load", "the config schema (enas/config.py): unknown "
            "keys refused, a missing key takes its default", "the resolved config, every default written out"),
    RunFile(METRICS, KINDS, "enas.storage.runlog.RunLog.log", "enas.storage.metrics.read_metrics", "none: one JSON "
            "object of figures a line, keyed by figure name", "every logged figure, with step and epoch"),
    RunFile(CHECKPOINT, KINDS, "enas.storage.checkpoint.save", "enas.storage.checkpoint.load",
            f"format: {CHECKPOINT_FORMAT} (enas/storage/checkpoint.py)", "weights, optimisers, positions, random "
            "states, derive candidates (a search)"),
    RunFile(CHECKPOINT_PREV, KINDS, "enas.storage.checkpoint.save", "enas.storage.checkpoint.load", "as checkpoint.pt",
            "the checkpoint before the last"),
    RunFile(DATA, KINDS, "enas.data.record.write", "enas.data.record.read", "none: path and files",
            "the data folder and a fingerprint of its files"),
    RunFile(LOCK, KINDS, "enas.storage.runlock.hold", "enas.storage.runlock.hold", "none: empty", "one writer at a time"),
    RunFile(EVENTS, KINDS, "enas.storage.runlog.RunLog.log", "tensorboard", "TensorBoard's", "the same figures"),
    RunFile(BEST_ARCH, ("search",), "enas.nas.derive.Derive.final", "enas.nas.archfile.load_arch", _ARCH_VERSION,
            "the winner, with its provenance"),
    RunFile(f"{ARCHS}/epoch_NNN.yaml", ("search",), "enas.nas.derive.Derive.epoch", "enas.nas.archfile.load_arch",
            _ARCH_VERSION, "the architecture derived at epoch NNN"),
    RunFile(f"{ARCHS}/final_R.yaml", ("search",), "enas.nas.derive.Derive.final", "enas.nas.archfile.load_arch",
            _ARCH_VERSION, "the final derive's candidate of rank R"),
    RunFile(f"{ARCHS}/derive-TIME-nN.yaml", ("search",), "enas.nas.derive.derive_again", "enas.nas.archfile.load_arch",
            _ARCH_VERSION, "the winner of an `enas derive`"),
    RunFile(ARCH, ("retrain",), "enas.runs.start_retrain", "enas.nas.archfile.load_arch", _ARCH_VERSION,
            "the architecture trained"),
    RunFile(RESULT, ("retrain",), "enas.child.retrain.Retrain._finish", "enas.child.retrain.read_result",
            "none: figures by name", "test_accuracy or test_perplexity, params, ..."),
    RunFile(BEST, ("retrain",), "enas.child.retrain.Retrain._save_best", "enas.child.retrain.load_tested_weights",
            f"format: {CHECKPOINT_FORMAT}", "the weights at the best validation figure"),
    RunFile(REPORT, KINDS, "enas.report.write_report", "a browser", "none", "the HTML report"),
)


def kind_of(run_dir: Path, config: dict) -> str:
    """"retrain" for a folder holding a retrain's files (or a config with a retrain
    section), else "search"."""
    if (run_dir / ARCH).is_file() or (run_dir / RESULT).is_file() or "retrain" in config:
        return "retrain"
    return "search"


def is_run(folder: Path) -> bool:
    """``folder`` holds a file only a run folder holds."""
    return any(os.path.lexists(folder / name) for name in MARKS)


# ---- a search's architecture files -------------------------------------------------------


def epoch_arch(run_dir: Path, epoch: int, suffix: str = ".yaml") -> Path:
    return Path(run_dir) / ARCHS / f"epoch_{epoch:03d}{suffix}"


def final_arch(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / ARCHS / f"final_{rank}.yaml"


def derived_arch(run_dir: Path, stamp: str, samples: int) -> Path:
    """The file of an ``enas derive`` at time ``stamp`` (YYYYmmdd-HHMMSS)."""
    return Path(run_dir) / ARCHS / f"derive-{stamp}-n{samples}.yaml"


def arch_files(run_dir: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every archs/epoch_NNN.yaml, in epoch order."""
    out = []
    for p in (Path(run_dir) / ARCHS).glob("epoch_*.yaml"):
        m = re.fullmatch(r"epoch_(\d+)\.yaml", p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


# ---- provenance of an architecture file ------------------------------------------------
# Written by derive (enas/nas/derive.py), read by the report. Every key but run and epoch is
# optional: files of older runs lack the later ones.


def provenance(run_dir: Path | str, epoch: int, score: float, se: float, score_is: str, **more) -> dict:
    """The provenance of a derived architecture: the run and epoch that found it, its
    score and standard error, what the score is (``score_is``); ``more``: the derive's
    own (final_derive, final_stage, final_derive_rank, params, max_params, ...)."""
    return {"run": str(run_dir), "epoch": epoch, "score": score, "score_se": se, "score_is": score_is, **more}


NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "Infinity": math.inf, "-Infinity": -math.inf,
             "NaN": math.nan}


def as_float(v: Any) -> float:
    """A figure of a run's file as a float: numbers, and "nan"/"inf" as JSON and YAML
    write them; NaN for anything else (the file is not trusted)."""
    if isinstance(v, str):
        return NONFINITE.get(v.strip(), math.nan)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    return math.nan


def margin_in_se(prov: dict) -> float | None:
    """The final derive's margin of the winner over the runner-up, in standard errors of
    their difference; None where the file has none."""
    fd = prov.get("final_derive") if isinstance(prov.get("final_derive"), dict) else {}
    m = fd.get("margin_in_se")
    return float(m) if isinstance(m, (int, float)) and not isinstance(m, bool) and math.isfinite(m) else None


# ---- the policy's figures in metrics.jsonl ------------------------------------------------


def policy_labels(decision) -> list[str]:
    """The names of a decision's choices: op names, or earlier nodes' indices."""
    return list(decision.choices) if decision.kind == "categorical" else [str(j) for j in range(decision.size)]


def policy_key(decision_name: str, label: str) -> str:
    """The figure of one choice's probability: policy/<decision>/<choice>."""
    return f"policy/{decision_name}/{label}"


def policy_groups(decisions: Iterable) -> dict[str, list[tuple[Any, list[str]]]]:
    """Decision group -> [(decision, choice labels)], as the search draws them and the
    report does: a decision with one choice has nothing to show and is left out."""
    groups: dict[str, list] = {}
    for d in decisions:
        if d.size > 1 or d.kind == "skip":
            groups.setdefault(d.group, []).append((d, policy_labels(d)))
    return groups
