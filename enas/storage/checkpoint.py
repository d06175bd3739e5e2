"""Atomic checkpoints and exact resume.

A checkpoint is written whole or not at all (enas/storage/files.py), and the previous one is
kept as ``checkpoint.prev.pt`` (a hard link, so ``checkpoint.pt`` never disappears):
a kill or a full disk at any moment leaves a complete ``checkpoint.pt``, and a torn one
falls back to the previous. Loading uses ``torch.load(weights_only=True)``: plain
containers and tensors only, never code. Before it, the file must be a regular file of
the run (not a link, not a FIFO) and a zip archive whose entries are stored as torch.save
stores them, uncompressed: a crafted entry cannot inflate a small file into gigabytes,
and the pickle of plain values is at most ``MAX_PICKLE``. After it, keys this enas does
not write are refused.
"""
from __future__ import annotations

import ast
import os
import random
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

from enas.errors import CheckpointError, brief
from enas.storage.files import loads_json, open_regular, write_atomic
from enas.storage.safeyaml import MAX_DEPTH
from enas.storage import runfolder

FORMAT = runfolder.CHECKPOINT_FORMAT
NAME = runfolder.CHECKPOINT
PREV = runfolder.CHECKPOINT_PREV




def save(run_dir: str | Path, state: dict) -> Path:
    """Write ``state`` as RUN/checkpoint.pt, keeping the one before as checkpoint.prev.pt."""
    run_dir = Path(run_dir)
    state = dict(state, format=FORMAT)
    return write_atomic(run_dir / NAME, lambda f: torch.save(state, f), keep_previous=run_dir / PREV)


# The pickle holds the config, positions, histories and derive candidates (tensors are
# separate entries): a few KB, a long run's at most a few MB.
MAX_PICKLE = 64 * 2**20


def read(path: str | Path) -> dict:
    """A checkpoint file of a run (or best.pt), checked before and after ``torch.load``."""
    path = Path(path)
    try:
        with open_regular(path, follow=False) as f:
            _check_entries(f, path)
            state = torch.load(f, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        why = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise CheckpointError(f"{path} is corrupt or not an enas checkpoint ({why})") from None
    return state


def _check_entries(f, path: Path) -> None:
    """torch.save writes a zip archive of stored (uncompressed) entries: anything else
    could unpack to more memory than the file holds, so it is refused unread."""
    size = os.fstat(f.fileno()).st_size
    try:
        entries = zipfile.ZipFile(f).infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        raise CheckpointError(f"{path} is corrupt or not an enas checkpoint (not a zip archive written by "
                              f"torch.save)") from None
    total = 0
    for e in entries:
        if e.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(f"{path}: entry {brief(e.filename)} is compressed ({e.compress_size:,} bytes that "
                                  f"unpack to {e.file_size:,}); torch.save never compresses, so enas does not unpack "
                                  f"it: the file is not an enas checkpoint")
        if e.filename.endswith("data.pkl") and e.file_size > MAX_PICKLE:
            raise CheckpointError(f"{path}: its pickle is {e.file_size:,} bytes, more than the {MAX_PICKLE:,} an enas "
                                  f"checkpoint's plain values take; it is damaged or crafted")
        total += e.file_size
    if total > size:
        raise CheckpointError(f"{path}: its entries claim {total:,} bytes in a file of {size:,}; it is damaged or "
                              f"crafted")
    f.seek(0)


def _read(path: Path) -> dict:
    state = read(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        got = state.get("format") if isinstance(state, dict) else "?"
        raise CheckpointError(f"{path} was written by an incompatible enas version (format {got})")
    return state


def load(run_dir: str | Path, say=None) -> dict:
    """The run's checkpoint; if checkpoint.pt is unreadable (a truncated copy, a disk
    error), the previous one, saying so and how much work will be repeated."""
    run_dir = Path(run_dir)
    path, prev = run_dir / NAME, run_dir / PREV
    if not os.path.lexists(path):
        raise CheckpointError(f"{run_dir} has no {NAME}; is it a run folder that finished an epoch?")
    try:
        return _read(path)
    except CheckpointError as e:
        if not os.path.lexists(prev):
            raise
        first = e
    try:
        state = _read(prev)
    except CheckpointError as e:
        raise CheckpointError(f"{first}; the previous checkpoint is unreadable too: {e}") from None
    pos = state.get("position") or {}
    msg = (f"{first}; using the previous checkpoint {prev.name} instead, which continues at epoch "
           f"{pos.get('epoch', 0) + 1}, {pos.get('phase', '?')} step {pos.get('step', '?')}: the work done after "
           f"it is repeated")
    last = _last_logged_step(run_dir / runfolder.METRICS)
    if last is not None and isinstance(pos.get("global_step"), int) and last > pos["global_step"]:
        msg += f" (about {last - pos['global_step']} training steps, by metrics.jsonl)"
    (say or (lambda m: print(f"note: {m}", file=sys.stderr)))(msg)
    return state


# what a damaged or crafted checkpoint raises deep inside load_state_dict
DAMAGE = (KeyError, TypeError, ValueError, IndexError, AttributeError, SyntaxError, RuntimeError, OverflowError)
_POSITION = ("epoch", "step", "global_step", "skipped_steps", "window_count", "epoch_count")


def restore(loop, state: dict) -> None:
    """``loop.load_state_dict(state)`` for a checkpoint that may be damaged or crafted
    (it loads safely, but its values are anyone's): structure and ranges are checked
    first, and anything that still does not fit becomes one CheckpointError."""
    run_dir = getattr(loop, "run_dir", None)
    check(state, run_dir)
    _known_keys(state, loop, run_dir)
    try:
        loop.load_state_dict(state)
    except CheckpointError:
        raise
    except DAMAGE as e:
        raise CheckpointError(f"the checkpoint in {run_dir} does not fit this run ({type(e).__name__}: "
                              f"{str(e)[:200]}); it is damaged or was not written by enas") from None


def _known_keys(state: dict, loop, run_dir) -> None:
    """Every key is one this loop writes: the values of a checkpoint are anyone's, and a
    key nothing reads has no business in it (a newer enas's, or planted)."""
    where = f"the checkpoint in {run_dir}" if run_dir is not None else "the checkpoint"
    for what, got, known in (("key", state, set(loop.state_dict()) | {"format"}),
                             ("position key", state["position"], set(loop.position()))):
        unknown = sorted(map(str, set(got) - known))
        if unknown:
            raise CheckpointError(f"{where} has the unknown {what} {brief(unknown[0])}"
                                  + (f" (and {len(unknown) - 1:,} more)" if len(unknown) > 1 else "")
                                  + "; it was edited, or written by another enas version")


def config_of(state: dict, run_dir: Path | None) -> dict:
    """The config a checkpoint was written with: a mapping of sections nested no deeper
    than a config file may be (enas/storage/safeyaml.py), so comparing it with the run's config
    cannot recurse past Python's limit."""
    where = f"the checkpoint in {run_dir}" if run_dir is not None else "the checkpoint"
    cfg = state.get("config")
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{where} has no valid 'config' (got {type(cfg).__name__}); it is damaged or was not "
                              f"written by enas")
    level, depth = [cfg], 1
    while level:
        if depth > MAX_DEPTH:
            raise CheckpointError(f"{where}: its config nests deeper than {MAX_DEPTH} levels (an enas config nests "
                                  f"4); it is damaged or crafted")
        level = [v for x in level for v in (x.values() if isinstance(x, dict) else x)
                 if isinstance(v, (dict, list, tuple))]
        depth += 1
    return cfg


def check(state: dict, run_dir: Path | None) -> None:
    """The position, the metrics offset and the random state hold sane values."""
    where = f"the checkpoint in {run_dir}" if run_dir is not None else "the checkpoint"
    config_of(state, run_dir)
    pos = state.get("position")
    if not isinstance(pos, dict):
        raise CheckpointError(f"{where} has no valid 'position'; it is damaged or was not written by enas")
    for k in _POSITION:
        v = pos.get(k)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**40:
            raise CheckpointError(f"{where}: position.{k} = {brief(v)} is not a step count; it is damaged")
    off = state.get("metrics_offset")
    if isinstance(off, bool) or not isinstance(off, int) or off < 0:
        raise CheckpointError(f"{where}: metrics_offset = {brief(off)} is not a file offset; it is damaged")
    metrics = Path(run_dir) / runfolder.METRICS if run_dir is not None else None
    if metrics is not None and metrics.exists():  # (other machines of a launch may not see the folder)
        size = metrics.stat().st_size
        if off > size:
            raise CheckpointError(f"{where}: metrics_offset {off:,} lies beyond the end of {metrics} ({size:,} bytes); "
                                  f"the checkpoint or metrics.jsonl is damaged")
    rng = state.get("rng")
    if isinstance(rng, dict) and len(str(rng.get("python", ""))) > 100_000:  # a Python random state is ~7 KB
        raise CheckpointError(f"{where}: the random state is {len(str(rng['python'])):,} characters; it is damaged")


def _last_logged_step(path: Path) -> int | None:
    """The step of the last complete line of metrics.jsonl, if any."""
    try:
        with open_regular(path, follow=False) as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 65536))
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            step = loads_json(line).get("step")
        except (ValueError, AttributeError):
            continue
        if isinstance(step, int):
            return step
    return None


def rng_state(*generators: torch.Generator) -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": _numpy_state(),
        "python": repr(random.getstate()),
        "generators": [g.get_state() for g in generators],
    }


def set_rng_state(state: dict, *generators: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(ast.literal_eval(state["python"]))
    for g, s in zip(generators, state["generators"]):
        g.set_state(s)


def _numpy_state() -> dict:
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)}
