"""What data a run was started with: ``data.json`` in the run folder.

It holds the data folder's absolute path and a fingerprint of the files the dataset
reads (name, size, SHA-256), written when a search or retrain run is created. A
command that reopens a run (``--resume``, ``derive``, ``rank``, ``evaluate``) reads
its data from there unless ``--data-dir`` names another folder, and refuses files
whose fingerprint differs unless the user accepts the change
(``--allow-config-change``): a resumed run must not silently continue on other data,
and nothing is downloaded into a folder the run never used.

The record is a file of the run, so anyone may have edited it: its folder is used only
if every file it records is there (a path edited to point at another folder finds none,
and is refused rather than downloaded into), and a record of no files is refused.
"""
from __future__ import annotations

import json
from pathlib import Path

from enas.errors import ConfigError, DataError, brief
from enas.storage.files import read_json_if_any, write_atomic
from enas.storage import runfolder
from enas.data import cifar, imagefolder, shipped, text
from enas.data.download import checksum

RECORD = runfolder.DATA
MAX_BYTES = 256 * 2**20  # an image folder's record names every image: ~150 bytes each


def data_files(dataset: str, data_dir: str | Path) -> list[Path]:
    """The files ``dataset`` reads from ``data_dir`` (present or not; for ``imagefolder``,
    the images present, since any number of them may be read)."""
    data_dir = Path(data_dir)
    if dataset == "ptb":
        return [data_dir / n for n in text.PTB_FILES]
    if dataset == "text":
        return [data_dir / n for n in text.TEXT_FILES]
    if dataset in cifar.SPECS:
        spec = cifar.SPECS[dataset]
        return [data_dir / spec.folder / n for n in spec.files]
    if dataset == "imagefolder":  # every image, so any changed, added or removed one shows
        return imagefolder.image_files(data_dir)
    raise DataError(f"unknown dataset {dataset!r}")


def fingerprint(dataset: str, data_dir: str | Path) -> dict:
    """{"dataset", "path", "files": {relative name: {"size", "sha256"}}} of the files present."""
    data_dir = Path(data_dir).resolve()
    files = {}
    for p in data_files(dataset, data_dir):
        if p.is_file():
            files[p.relative_to(data_dir).as_posix()] = {"size": p.stat().st_size, "sha256": checksum(p, "sha256")}
    return {"dataset": dataset, "path": str(data_dir), "files": files}


def write(run_dir: str | Path, dataset: str, data_dir: str | Path) -> dict:
    """Record the data of a new run."""
    rec = fingerprint(dataset, data_dir)
    write_atomic(Path(run_dir) / RECORD, json.dumps(rec, indent=1) + "\n")
    return rec


def read(run_dir: str | Path) -> dict | None:
    """The run's record, or None for a run folder that has none."""
    path = Path(run_dir) / RECORD
    rec = read_json_if_any(path, MAX_BYTES, lambda e: DataError(
        f"{path} is unreadable ({getattr(e, 'strerror', None) or e}); pass --data-dir DIR to name the run's data"))
    if rec is None:
        return None
    ok = (isinstance(rec, dict) and isinstance(rec.get("path"), str) and len(rec["path"]) <= 4096
          and isinstance(rec.get("files"), dict)
          and all(isinstance(v, dict) and isinstance(v.get("size"), int) and isinstance(v.get("sha256"), str)
                  for v in rec["files"].values()))
    if not ok:
        raise DataError(f"{path} is not a data record of enas (path, files); pass --data-dir DIR to name the "
                        "run's data")
    return rec


def differences(recorded: dict, current: dict) -> list[str]:
    """Readable differences between two fingerprints' files."""
    out = []
    old, new = recorded["files"], current["files"]
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        name = name if len(name) <= 200 else brief(name)  # a record is anyone's: names are quoted short
        if a is None:
            out.append(f"{name}: new")
        elif b is None:
            out.append(f"{name}: missing")
        elif a["size"] != b["size"]:
            out.append(f"{name}: {a['size']:,} -> {b['size']:,} bytes")
        elif a["sha256"] != b["sha256"]:
            out.append(f"{name}: same size, different content (SHA-256)")
    return out


def _brief(items: list[str], sep: str, most: int = 10) -> str:
    """At most ``most`` items: an image folder can differ in thousands of files."""
    more = f"{sep}and {len(items) - most:,} more" if len(items) > most else ""
    return sep.join(items[:most]) + more


def resolve(run_dir: str | Path, dataset: str, given: str | Path | None, allow_change: bool = False,
            say=None, keep_record: bool = False) -> str:
    """The data folder for a command that reopens ``run_dir``: ``given`` (--data-dir) or
    the recorded folder, checked against the recorded fingerprint. An accepted change is
    recorded, unless ``keep_record`` (commands that only read the run)."""
    if given is not None:
        given = shipped.locate(dataset, given)
    rec = read(run_dir)
    if rec is None:  # a run folder from before data.json: what the user names, else ./data
        return str(given) if given is not None else "data"
    path = Path(run_dir) / RECORD
    if not rec["files"]:
        raise DataError(f"{path} records no data files, so it cannot tell which folder is the run's; pass "
                        f"--data-dir DIR to name the run's data")
    data_dir = Path(given) if given is not None else Path(rec["path"])
    _complete(dataset, data_dir, given is None and path)
    current = fingerprint(dataset, data_dir)
    diffs = differences(rec, current)
    if not diffs:
        return str(data_dir)
    where = f"{data_dir}" + ("" if given is not None else f" (recorded in {path})")
    missing = [d for d in diffs if d.endswith(": missing")]
    if given is None and missing:  # never fill (or download into) a folder the record merely names
        names = _brief([d.split(":")[0] for d in missing], ", ")
        raise DataError(f"the data this run used is not in {where}: {names} missing; pass --data-dir DIR where DIR "
                        f"holds the run's data")
    if allow_change:
        if say is not None:
            say(f"note: {'using' if keep_record else 'continuing on'} data that differs from the run's: "
                f"{_brief(diffs, '; ')}")
        if not keep_record:
            write(run_dir, dataset, data_dir)
        return str(data_dir)
    if len(missing) == len(diffs) and len(current["files"]) == 0:
        names = _brief([d.split(":")[0] for d in missing], ", ")
        raise DataError(f"the data this run used is not in {where}: {names} missing; pass --data-dir DIR where DIR "
                        f"holds the run's data")
    flag = "--allow-data-change" if keep_record else "--allow-config-change"  # derive, rank, evaluate: their own
    raise ConfigError(f"the data in {where} differs from the data this run started with: {_brief(diffs, '; ')}. "
                      f"Pass --data-dir DIR with the original data, or {flag} to continue on this data")


def _complete(dataset: str, data_dir: Path, recorded_in: Path | None) -> None:
    """A reopened run reads its data and never fetches it: every file the dataset reads
    must be in ``data_dir`` already (a record listing only some of them would otherwise
    lead to a download into, and a temporary folder in, the folder it names)."""
    if dataset == "imagefolder":  # any number of images: the fingerprint says which changed
        return
    missing = [p.relative_to(data_dir).as_posix() for p in data_files(dataset, data_dir) if not p.is_file()]
    if missing:
        where = f"{data_dir}" + (f" (recorded in {recorded_in})" if recorded_in else "")
        raise DataError(f"the data this run used is not in {where}: {', '.join(missing)} missing; a reopened run "
                        f"never downloads its data: pass --data-dir DIR where DIR holds the run's data")
