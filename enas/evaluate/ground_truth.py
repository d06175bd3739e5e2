"""A ground-truth table: stand-alone test accuracies of architectures trained from
scratch with ONE fixed recipe, one CSV row per (architecture, seed).

A supernet's ranking means something only against the ranking of the same
architectures trained on their own. Published tables exist for a few spaces
(NAS-Bench-201, ``enas table``); for any other space ``enas ground-truth``
(enas/evaluate/build_truth.py) makes one, and ``enas compare`` measures a search
against it. This module holds the table's format: which architectures (uniform
draws), which recipe (a hash of the resolved config), and the resumable CSV.

CSV columns: arch (the space's text form, else compact JSON as ``enas rank``
writes it), seed, test_accuracy, params, seconds (training + evaluation time from
result.json), process_seconds (wall time of the last subprocess, startup included),
test_loss, epochs, space, recipe (hash of the resolved config without the seed),
run_dir.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path

import torch

from enas.config import load_retrain, to_dict
from enas.nas.controller import RandomPolicy
from enas.errors import UserError, brief
from enas.storage import text as bounded
from enas.storage.files import make_parents, open_append, write_atomic
from enas.storage.text import MAX_CSV_BYTES, NotText
from enas.evaluate.rank import arch_text
from enas.nas.space import validate

COLUMNS = ["arch", "seed", "test_accuracy", "params", "seconds", "process_seconds", "test_loss", "epochs",
           "space", "recipe", "run_dir"]

# config keys that cannot change a result: not part of the recipe hash. nonfinite_check
# only says where a non-finite loss is noticed (host or device); the steps taken are the
# same either way (tests/test_loop.py checks the two give identical books); smoke only
# changes what the console says; data.dir only where the data is read from (the data
# itself is what build_truth's run folders record)
_NOT_RECIPE = {"retrain": ("seed", "log_every", "checkpoint_minutes", "smoke"), "train": ("nonfinite_check",),
               "data": ("dir",)}
# keys whose default is what training did before the key existed: left out of the hash
# while they hold it, so that a table built before them is still the same recipe
_NEUTRAL_DEFAULTS = {"data": {"image_size": 32, "skip_bad_images": False}, "retrain": {"space_module": ""}}


class GroundTruthError(UserError, ValueError):
    """A user's mistake (bad option, another recipe in the CSV); one line, exit 2."""


# ---- architectures ------------------------------------------------------------------------

def sample_uniform(space, n: int, seed: int, max_draws: int | None = None) -> list[dict]:
    """``n`` distinct architectures, uniform over the space's decisions, in draw order.

    One draw at a time from one generator: the first k of ``n`` are the ``n = k``
    list (a larger table extends a smaller one). Duplicates are skipped, so a space
    with fewer than ``n`` architectures raises instead of looping forever."""
    policy = RandomPolicy(space.decisions())
    gen = torch.Generator().manual_seed(seed)
    out, seen = [], set()
    max_draws = max_draws if max_draws is not None else 100 * n + 1000
    draws = 0
    with torch.no_grad():
        while len(out) < n:
            if draws >= max_draws:
                raise GroundTruthError(f"only {len(out)} distinct architectures in {draws} uniform draws; "
                                       f"the space is smaller than --uniform {n}?")
            arch = validate(space.decisions(), policy(1, generator=gen).archs[0])
            draws += 1
            key = canonical(space, arch)
            if key not in seen:
                seen.add(key)
                out.append(arch)
    return out


def canonical(space, arch: dict) -> str:
    """The arch column's text: ``enas rank``'s form (cell string, else compact JSON)."""
    return arch_text(space, validate(space.decisions(), arch))


def arch_key(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:12]


# ---- the recipe ---------------------------------------------------------------------------

def recipe_hash(config: Path, overrides: list[str], space) -> tuple[str, dict]:
    """Hash of the resolved retrain config (after --set), without the seed and logging."""
    cfg = to_dict(load_retrain(config, overrides, space))
    for section, keys in _NOT_RECIPE.items():
        for k in keys:
            cfg[section].pop(k, None)
    for section, defaults in _NEUTRAL_DEFAULTS.items():
        for k, v in defaults.items():
            if cfg[section].get(k) == v:
                del cfg[section][k]
    blob = json.dumps(cfg, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12], cfg


# ---- the CSV ------------------------------------------------------------------------------

def read_text(path: Path) -> str:
    """The table's text: a regular file of at most MAX_CSV_BYTES (a FIFO or a device
    named as --out is refused, not waited on or read forever); "" if there is none."""
    if not os.path.lexists(path):
        return ""
    try:
        return bounded.read_text(path, MAX_CSV_BYTES)
    except NotText as e:
        raise GroundTruthError(f"{e}; use another --out") from None
    except OSError as e:
        raise GroundTruthError(f"{path}: {e.strerror or e}; use another --out") from None


def read_rows(path: Path) -> list[dict]:
    """Complete rows of ``path`` (a half-written last line from a crash is dropped)."""
    text = read_text(path)
    if not text:
        return []
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # a row cut off mid-write
    rows = []
    try:
        for r in csv.DictReader(text.splitlines()):
            try:
                float(r["test_accuracy"])
                int(r["seed"])
            except (KeyError, TypeError, ValueError):
                continue
            rows.append(r)
    except csv.Error as e:  # a NUL byte, a field over csv's limit
        raise GroundTruthError(f"{path}: {e}; use another --out") from None
    return rows


def check_header(path: Path) -> None:
    """An existing, non-empty ``path`` must be a ground-truth CSV (COLUMNS)."""
    text = read_text(path)
    if not text:
        return
    header = text.split("\n", 1)[0].split(",")
    if header != COLUMNS:
        raise GroundTruthError(f"{path} is not a ground-truth CSV of `enas ground-truth` (header "
                               f"{brief(header)}); use another --out")


def prepare_csv(path: Path) -> None:
    """Header if new; cut a half-written last line so appends start on a fresh line."""
    make_parents(path)
    check_header(path)
    if not path.exists() or path.stat().st_size == 0:
        write_atomic(path, ",".join(COLUMNS) + "\n")
        return
    text = read_text(path)
    if not text.endswith("\n"):
        open_append(path, truncate=text.rfind("\n") + 1).close()


def append_row(path: Path, row: dict) -> None:
    buf = io.StringIO()
    csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n").writerow({k: row.get(k, "") for k in COLUMNS})
    with open_append(path) as f:  # one write of one whole line
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())


def todo(pairs: list[tuple[str, int]], rows: list[dict]) -> list[tuple[str, int]]:
    """The (arch text, seed) pairs not yet in ``rows``, in order, without repeats."""
    done = {(r["arch"], int(r["seed"])) for r in rows}
    out, seen = [], set()
    for p in pairs:
        if p not in done and p not in seen:
            seen.add(p)
            out.append(p)
    return out


def shown(path: Path) -> str:
    """``path`` relative to the current folder where it lies inside it, else absolute."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(Path(path).resolve())
