"""Reading a config: typed, strict, frozen (nanoGPT-style dataclasses, pycls-style key checks).

YAML -> ``--set a.b=c`` overrides -> unknown keys rejected with the dotted path and
a close-match suggestion -> types checked -> cross-field checks -> frozen object.
Search and retrain have separate classes; each space validates its own ``space.args``
and ``model`` sections (its ``Args`` / ``ModelArgs`` dataclasses).
A run folder's config.yaml from an older enas is brought to today's layout first
(enas/config/moved.py). The sections themselves are enas/config/schema.py's.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import typing
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from enas.storage import safeyaml
from enas.errors import ConfigError, brief, printable
from enas.storage.files import write_atomic
from enas.config.moved import refuse_old_keys, upgrade_run_config
from enas.config.schema import TASK_SECTIONS, SearchConfig
from enas.config.schema_retrain import RetrainConfig

# ---------------------------------------------------------------------------
# generic strict conversion: plain dict -> frozen dataclass
# ---------------------------------------------------------------------------


def from_dict(cls, data: Any, path: str = ""):
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types."""
    where = path or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__} {brief(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key)[:100], list(fields), n=1)
            hint = f"; did you mean '{_join(path, close[0])}'?" if close else ""
            raise ConfigError(
                f"unknown key '{_join(path, _key_text(key))}'{hint} (allowed here: {', '.join(fields)})"
            )
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], _join(path, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key '{_join(path, name)}'")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:  # __post_init__ cross-field checks
        raise ConfigError(f"{where}: {e}") from None


def _join(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


def _key_text(key) -> str:
    """A key from a file, for a message: printable, and cut if long."""
    text = printable(key if isinstance(key, str) else brief(key))
    return text if len(text) <= 100 else text[:100] + f"... ({len(text):,} characters)"


# No setting needs an integer this large, and past it values overflow C integers deep in
# torch (a seed of 10**22 is a traceback in torch.manual_seed).
MAX_INT = 2**53


# Types taken as they are, and how a message names them
PLAIN = {dict: "a mapping", bool: "true or false", str: "a string"}


def _convert(tp, value, path: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin is typing.Union or str(origin) == "types.UnionType":
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, path)
    if origin is Literal:
        # YAML 1.1 reads a bare on/off as a boolean: `compile: off` means "off"
        if isinstance(value, bool) and ("on" if value else "off") in args:
            value = "on" if value else "off"
        if value not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"'{path}': {brief(value)} is not one of {list(args)}{hint}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{path}': expected a list, got {brief(value)}")
        return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    plain = dict if origin is dict else tp
    if plain in PLAIN:
        if not isinstance(value, plain):
            raise ConfigError(f"'{path}': expected {PLAIN[plain]}, got {brief(value)}")
        return dict(value) if plain is dict else value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{path}': expected an integer, got {brief(value)}")
        if abs(value) > MAX_INT:
            raise ConfigError(f"'{path}': {brief(value)} is larger than any setting takes (at most 2**53)")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"'{path}': expected a number, got {brief(value)}")
        if isinstance(value, int) and abs(value) > MAX_INT or not math.isfinite(value):  # nothing means inf or NaN
            raise ConfigError(f"'{path}': expected a finite number, got {brief(value)}")
        return float(value)
    if tp is Any:
        return value
    raise TypeError(f"config field type {tp!r} at {path} is not supported")  # programming error


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


# ---------------------------------------------------------------------------
# loading: YAML file + overrides
# ---------------------------------------------------------------------------


def read_yaml(path: str | Path, follow: bool = True) -> dict:
    """A config file's mapping; ``follow=False``: a run's config.yaml, never a link."""
    path = Path(path)
    if not os.path.lexists(path):
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = safeyaml.load(safeyaml.read(path, follow))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file") from None
    except OSError as e:  # a folder, a FIFO, a link in a run, /proc/self/mem
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def read_config(path: str | Path, _chain: tuple = (), in_run: bool = False) -> dict:
    """A config file as a dict. ``base: OTHER.yaml`` (a path relative to this file) starts
    from OTHER's values and this file's keys replace them key by key, so a variant of a
    shipped config says only what differs. ``in_run``: a run folder's config.yaml, which
    enas wrote whole (no ``base``) and which is read only as a file of the run, not a link."""
    path = Path(path)
    data = _anchor_module_paths(read_yaml(path, follow=not in_run), path.parent)
    base = data.pop("base", None)
    if base is None:
        return data
    if in_run:
        raise ConfigError(f"{path}: a run's config.yaml holds every value and has no 'base' (got {brief(base)}); "
                          f"remove that line")
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must be the path of another config file, got {brief(base)}")
    other = (path.parent / base).resolve()
    if other in _chain or other == path.resolve():
        raise ConfigError(f"{path}: 'base: {brief(base)}' leads back to {other}; a config cannot be its own base")
    if not other.is_file():
        raise ConfigError(f"{path}: 'base: {brief(base)}': there is no file {other}")
    try:
        return _merge(read_config(other, (*_chain, path.resolve())), data)
    except ConfigError as e:
        if _chain:  # the first file of the chain names the place
            raise
        raise ConfigError(f"{path}: 'base: {brief(base)}': {e}") from None


# Keys naming a Python file that defines a search space (docs/own-space.md, "A search space of your
# own"): a relative path there is relative to the config file that says it, so a config
# and its space travel together and the run folder's config.yaml holds the absolute path.
MODULE_KEYS = (("space", "module"), ("retrain", "space_module"))


def is_module_path(spec: str) -> bool:
    """A file path (``my_space.py``, ``spaces/mine.py``) rather than an importable module name."""
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def _anchor_module_paths(data: dict, folder: Path) -> dict:
    for section, key in MODULE_KEYS:
        sec = data.get(section)
        spec = sec.get(key) if isinstance(sec, dict) else None
        if isinstance(spec, str) and is_module_path(spec) and not Path(spec).is_absolute():
            sec[key] = str((folder / spec).resolve())
    return data


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply ``a.b=c`` strings; values are parsed as YAML (``1e-3``, ``true``, ``[1, 2]``)."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {brief(item)}: expected KEY=VALUE, e.g. --set controller.lr=1e-3")
        key, raw = item.split("=", 1)
        try:
            value = safeyaml.load(raw)
        except safeyaml.UnsafeYAML as e:  # aliases, nesting too deep, huge numbers: never a plain string
            raise ConfigError(f"--set {_key_text(key)}: {e}") from None
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        if len(parts) > safeyaml.MAX_DEPTH:
            raise ConfigError(f"--set {_key_text(key)}: {len(parts):,} levels of keys; no config is nested that deep")
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {_key_text(key)}: '{_key_text(p)}' is a value, not a section")
            node = child
        node[parts[-1]] = value
    return data


def dump(cfg, path: str | Path) -> None:
    data = to_dict(cfg)
    if isinstance(cfg, SearchConfig):  # the other task's section is not the run's: not written
        data["search"] = {k: v for k, v in data["search"].items() if not (k in TASK_SECTIONS and v is None)}
    write_atomic(path, safeyaml.dump(data, sort_keys=False))


def load(cls, path, overrides: list[str] | None = None, in_run: bool = False):
    """A config from a YAML file, or from a mapping of sections (the Python API: module
    paths in it are relative to the working directory); ``in_run``: a run's config.yaml."""
    if isinstance(path, Mapping):
        data = _anchor_module_paths(copy.deepcopy(dict(path)), Path.cwd())
        if "base" in data:
            raise ConfigError("a config mapping has no 'base' (a path relative to a config file); "
                              "merge the values in Python, or pass the config file")
        path = "the config mapping"
    else:
        data = read_config(path, in_run=in_run)
    _check_kind(cls, data, path)
    if cls is SearchConfig:
        if in_run:  # written by an older enas, perhaps: today's layout
            data = upgrade_run_config(data, path)
        else:
            refuse_old_keys(data, path)
        if overrides:  # the same for --set, against the task the config's data names
            refuse_old_keys(apply_overrides({"data": copy.deepcopy(data.get("data"))}, overrides), "--set")
    return from_dict(cls, apply_overrides(data, overrides))


def _check_kind(cls, data: dict, path) -> None:
    """A search config given to `enas retrain` (or the reverse) gets the right command."""
    if cls is SearchConfig and "retrain" in data and "space" not in data:
        raise ConfigError(f"{path} is a retrain config (a 'retrain' section, no 'space'): use "
                          f"`enas retrain ARCH.yaml --config {path}`")
    found = [k for k in ("space", "search", "controller") if k in data]
    if cls is RetrainConfig and found:
        raise ConfigError(f"{path} is a search config (it has a '{found[0]}' section): use `enas search {path}`; "
                          f"a retrain takes an architecture file and a retrain config, "
                          f"`enas retrain ARCH.yaml --config configs/..._retrain.yaml`")


def load_search(path, overrides=None, in_run: bool = False) -> SearchConfig:
    """Load and check a search config. Its ``space.args`` and ``model`` sections belong to
    the space and are checked when the space is built (enas/nas/space.py build_space, the
    space's ModelArgs), before any data is read or run folder made."""
    return load(SearchConfig, path, overrides, in_run)


def load_retrain(path, overrides=None, space=None, in_run: bool = False) -> RetrainConfig:
    """Load and check a retrain config; ``model`` is checked against ``space.ModelArgs``
    (the space comes from the architecture file, not from this config)."""
    cfg = load(RetrainConfig, path, overrides, in_run)
    if space is not None:
        from_dict(type(space).ModelArgs, cfg.model, "model")
    return cfg
