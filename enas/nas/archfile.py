"""Architectures as files a person can read (DARTS genotypes, without the ``eval``).

    format_version: 1
    space: {name: enas_rnn, args: {num_nodes: 12, ...}}
    arch:                       # decision name -> op name / input index / skip list
      node0/activation: tanh
      node1/input: 0
      ...
    description: |              # informational, ignored when loading
      node 1 <- node 0  tanh
    provenance: {run: runs/ptb_search-..., epoch: 150, score: 0.92, ...}

Loading is strict (yaml.safe_load, known keys only, the arch validated against its
space) and never runs code from the file.
"""
from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import yaml

from enas.storage import safeyaml
from enas.config import to_dict
from enas.errors import ArchError, ArchFileError, ConfigError, brief, one_line
from enas.storage.files import write_atomic
from enas.nas.space import build_space, validate
from enas.storage import runfolder

FORMAT_VERSION = runfolder.ARCH_FORMAT
_KEYS = {"format_version", "space", "arch", "description", "provenance"}




def arch_to_yaml(space, arch: dict, provenance: dict | None = None) -> str:
    doc: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "space": {"name": space.name, "args": _plain(to_dict(space.args))},
        "arch": validate(space.decisions(), arch),
    }
    extras = getattr(space, "extras", None)
    if extras is not None:
        doc.update(extras(arch))
    doc["description"] = space.describe(arch)
    prov = {"created": datetime.datetime.now().isoformat(timespec="seconds")}
    prov.update(provenance or {})
    doc["provenance"] = _plain(prov)
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=100)


def save_arch(path: str | Path, space, arch: dict, provenance: dict | None = None) -> Path:
    """Write whole or not at all (enas/storage/files.py)."""
    return write_atomic(path, arch_to_yaml(space, arch, provenance))


def load_arch(path: str | Path, expected_space: str | None = None, follow: bool = True):
    """Return ``(space, arch, doc)``; raise ArchFileError naming the file and the problem.
    ``follow=False``: a run folder's own file (arch.yaml), never a link."""
    path = Path(path)
    try:
        doc = safeyaml.load(safeyaml.read(path, follow))
    except FileNotFoundError:
        raise ArchFileError(f"architecture file {path} does not exist") from None
    except IsADirectoryError:
        raise ArchFileError(f"{path} is a folder; give the architecture file (e.g. {path}/best_arch.yaml)") from None
    except OSError as e:
        raise ArchFileError(f"cannot read {path}: {e.strerror or e}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ArchFileError(f"{path} is not a readable YAML architecture file: {e}") from None
    try:
        return _parse(doc, expected_space)
    except (ArchError, ConfigError, KeyError) as e:
        raise ArchFileError(f"{path}: {e}") from None


def _parse(doc, expected_space):
    if not isinstance(doc, dict):
        raise ArchError("expected a mapping with keys format_version, space, arch")
    version = doc.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ArchError(f"format_version must be an integer, got {brief(version)}")
    if version < 1:
        raise ArchError(f"format_version must be >= 1, got {version}")
    if version > FORMAT_VERSION:
        raise ArchError(
            f"format_version {version} is newer than this enas understands ({FORMAT_VERSION}); upgrade enas"
        )
    space_doc = doc.get("space")
    if not isinstance(space_doc, dict) or not isinstance(space_doc.get("name"), str):
        raise ArchError("'space' must be a mapping with a 'name' (and optional 'args')")
    extra_space_keys = set(space_doc) - {"name", "args"}
    if extra_space_keys:
        raise ArchError(f"unknown key 'space.{sorted(extra_space_keys)[0]}' (allowed: name, args)")
    name = space_doc["name"]
    if expected_space is not None and name != expected_space:
        raise ArchError(f"this architecture is for space {brief(name)}, but {expected_space!r} is needed")
    args = space_doc.get("args") or {}
    if not isinstance(args, dict):
        raise ArchError(f"'space.args' must be a mapping, got {type(args).__name__}")
    if not isinstance(doc.get("provenance", {}), dict):
        raise ArchError(f"'provenance' must be a mapping, got {type(doc['provenance']).__name__}")
    space = build_space(name, args)
    allowed = _KEYS | set(getattr(space, "extra_keys", ()))
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise ArchError(f"unknown key {brief(unknown[0])} (allowed: {', '.join(sorted(allowed))})")
    if "arch" not in doc:
        raise ArchError("missing key 'arch'")
    arch = validate(space.decisions(), doc["arch"])
    check = getattr(space, "check_extras", None)
    if check is not None:
        check(arch, doc)
    return space, arch, doc


class _Dumper(safeyaml.Dumper):
    """Writes multi-line strings (the description) as literal blocks."""


def _str(dumper, data):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


def _plain(x):
    """Tuples -> lists, so safe_dump writes plain YAML that safe_load reads back."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def readable(space, arch: dict, doc: dict) -> str:
    """What ``enas show`` prints: the space, its extras, the description, the provenance."""
    lines = [f"space: {space.name}"]
    extras, described = getattr(space, "extras", None), space.describe(arch)
    # an extra the description already states as a line's value (NB201's cell string) is printed once
    lines += [f"{k}: {v}" for k, v in (extras(arch) if extras else {}).items() if f": {v}\n" not in described + "\n"]
    lines.append(described)
    prov = doc.get("provenance") or {}
    if "max_params" in prov:  # a search under a parameter budget wrote it (enas/nas/budget.py)
        count, budget = one_line(prov.get("params")), one_line(prov["max_params"])
        lines.append(f"parameters: {count} (search.max_params: {budget}, counted on the network to retrain)")
    if doc.get("provenance"):  # the file's own text: anyone's, escape sequences and newlines included
        lines.append("provenance: " + _rounded(doc["provenance"]))
    return "\n".join(lines)


def _rounded(values: dict) -> str:
    """``k=v, ...`` with figures as the console prints them elsewhere: a standard error
    (a key ending in ``_se``) to 2 significant digits, any other float to 4."""
    def text(k, v):
        if isinstance(v, dict):
            return "{" + _rounded(v) + "}"
        if isinstance(v, float):
            return f"{v:.2g}" if str(k).endswith("_se") else f"{v:.4g}"
        return one_line(v)
    return ", ".join(f"{one_line(k)}={text(k, v)}" for k, v in values.items())
