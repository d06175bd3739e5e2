"""Search settings that moved to their task's section or were removed, and what an old
key becomes: a run folder written before keeps opening, a config or --set that names
an old key gets one line saying where it went.

A run's config.yaml (and its checkpoint's config) holds every setting, so an old one
names all of these: a moved key goes to its new place, or is dropped where it never
applied to the run's task (the other task ignored it); a removed option at its default
is dropped, at any other value the run cannot be reproduced and is refused.
"""
from __future__ import annotations

import copy

from enas.errors import ConfigError, brief
from enas.config.schema import TASK_OF_DATASET, TASK_TEXT

# search.<key> -> search.<task>.<key>: settings of one task
MOVED = {"reward_c": "lm", "reward_warmup": "lm", "aux_weight": "image", "eval_bn": "image",
         "channels_last": "image"}

# (section path, key) -> (the default it had, where the measurement that dropped it is)
REMOVED = {
    (("search",), "fair_sampling"): (False, "docs/evaluation.md"),
    (("search",), "recalibrate_batches"): (4, "docs/experiments/beat-chance.md"),
    (("search", "score"), "params"): (0.0, "docs/evaluation.md"),
    (("search", "score"), "synflow"): (0.0, "docs/evaluation.md"),
    (("controller",), "entropy_target"): (0.0, "docs/experiments/controller-options.md"),
    (("controller",), "entropy_gain"): (0.05, "docs/experiments/controller-options.md"),
}


def _section(data: dict, path: tuple) -> dict | None:
    node = data
    for p in path:
        node = node.get(p) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def _task(data: dict) -> str | None:
    sec = data.get("data")
    dataset = sec.get("dataset") if isinstance(sec, dict) else None
    return TASK_OF_DATASET.get(dataset) if isinstance(dataset, str) else None


def _removed_line(dotted: str, value, doc: str) -> str:
    return (f"'{dotted}' was removed from enas (measured and not kept: {doc}); "
            f"remove it (it was {brief(value)})")


def upgrade_run_config(data: dict, where) -> dict:
    """A search run's config, as an older enas wrote it, in today's layout (a copy)."""
    data = copy.deepcopy(data)
    task = _task(data)
    search = _section(data, ("search",))
    if search is not None and task is not None:
        for key, home in MOVED.items():
            if key in search:
                value = search.pop(key)
                if home == task:
                    own = search.setdefault(home, {})
                    if isinstance(own, dict):
                        own.setdefault(key, value)
    for (path, key), (default, doc) in REMOVED.items():
        sec = _section(data, path)
        if sec is None or key not in sec:
            continue
        value = sec.pop(key)
        if value != default or isinstance(value, bool) != isinstance(default, bool):
            raise ConfigError(f"{where}: this run used {_removed_line('.'.join((*path, key)), value, doc)}; "
                              f"an enas from before the option's removal reopens it")
    return data


def refuse_old_keys(data: dict, where) -> None:
    """A config (or --set) naming a key that moved or was removed: where it went, in one line."""
    task = _task(data)
    search = _section(data, ("search",))
    for key, home in MOVED.items():
        if search is None or key not in search:
            continue
        if task is None or home == task:
            raise ConfigError(f"{where}: 'search.{key}' is now 'search.{home}.{key}' (settings of "
                              f"{TASK_TEXT[home]} live in search.{home}); write it there")
        raise ConfigError(f"{where}: 'search.{key}' applies only to {TASK_TEXT[home]} (search.{home}.{key}); "
                          f"this config's data.dataset is {data['data']['dataset']}: remove it")
    for (path, key), (_, doc) in REMOVED.items():
        sec = _section(data, path)
        if sec is not None and key in sec:
            raise ConfigError(f"{where}: {_removed_line('.'.join((*path, key)), sec[key], doc)}")
