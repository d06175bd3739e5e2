"""The life of a run folder: start a search or a retrain, continue one, reopen one.

Everything that makes or reads a run folder for a command happens here, so the command
line only parses arguments and prints (enas/cli.py). A new run checks its config and
loads its data before the folder exists (a mistake leaves nothing behind), then writes
``config.yaml``, ``data.json`` (enas/data/record.py) and, for a retrain, ``arch.yaml``.
A resumed run reads them back: the checkpoint (or the previous one, if it is torn), the
config with ``--set`` changes (refused unless ``allow_change``), and the recorded data
(refused if its files changed, unless ``allow_change``).

A run folder is a file anyone may have edited: reopening one imports only the code the
command line names (``space_module``, ``--space-module``; enas/nas/space.py run_module),
never what its config.yaml names, and a command that writes it (a resumed search or
retrain) holds its lock first (enas/storage/runlock.py).

Several processes (torchrun): rank 0 alone reads and writes the folder and hands what it
read to the others (``dist.on_main``), so the folder may live on rank 0's machine only.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from enas.storage import checkpoint as ckpt
from enas.train import distributed as dist
from enas.storage import runlock
from enas.nas.archfile import load_arch, save_arch
from enas.config import (RetrainConfig, SearchConfig, dump, from_dict, load_retrain, load_search, to_dict,
                     upgrade_run_config)
from enas.data import record, shipped
from enas.errors import ConfigError, RunDirError
from enas.train.loop import Loop
from enas.child.retrain import Retrain
from enas.storage.runlog import new_run_dir, say
from enas.storage.runroot import hold_root
from enas.nas.search import Search
from enas.nas.space import build_space, import_space_module, run_module
from enas.storage import runfolder as rf


def config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every value that differs, nested keys dotted."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def _changes(state: dict, cfg, cls, allow: bool) -> list[str]:
    """Differences between the checkpoint's config and ``cfg`` (keys added to enas since
    the checkpoint count as their defaults); refused unless ``allow``."""
    old = ckpt.config_of(state, None)
    try:
        if cls is SearchConfig and isinstance(old, dict):  # settings moved or removed since
            old = upgrade_run_config(old, "the checkpoint's config")
        old = to_dict(from_dict(cls, old))
    except ConfigError:
        pass  # a key since removed: compare as written
    # where the space's code lives is the command line's business (run_module), not a setting
    code = ("space.module", "retrain.space_module")
    diffs = [d for d in config_diff(old, to_dict(cfg)) if d.split(":")[0] not in code]
    if diffs and not allow:
        raise ConfigError("the config differs from the one this run was checkpointed with:\n  " + "\n  ".join(diffs)
                          + "\nresume without those changes, or pass --allow-config-change to accept them")
    return diffs


def processes_line() -> str:
    return f"{dist.world()} processes ({dist.backend()})" if dist.world() > 1 else ""


def _announce(run_dir: Path, main: bool) -> None:
    say(f"run folder: {run_dir}   (tensorboard --logdir {run_dir.parent})"
        + (f"   {processes_line()}" if processes_line() else ""), main)


def _writable(run_dir: Path, kind: str) -> None:
    """A resumed run writes into its folder: refuse a read-only one before any work, then
    hold its lock (a second writer stops here)."""
    if not os.access(run_dir, os.W_OK):
        raise RunDirError(f"run folder {run_dir} is read-only; copy it to a writable place and resume the copy "
                          f"(cp -r {run_dir} COPY && enas {kind} --resume COPY)")
    runlock.hold(run_dir)


def require_run(run_dir: Path, kind: str, then: str = "use RETRAIN_RUN here") -> None:
    """Refuse a folder that is not a ``kind`` run; a search folder given where a retrain
    is expected gets the steps from it to one (``then``: the last of them)."""
    for name in (rf.CONFIG,) if kind == "search" else (rf.CONFIG, rf.ARCH):
        if not os.path.lexists(run_dir / name):
            if kind == "retrain" and os.path.lexists(run_dir / rf.BEST_ARCH):
                raise RunDirError(
                    f"{run_dir} is a search run folder, not a retrain one: retrain the architecture it found first, "
                    f"`enas retrain {run_dir / rf.BEST_ARCH} --config RETRAIN_CONFIG.yaml --run-dir RETRAIN_RUN` "
                    f"(a retrain config for its space: configs/*_retrain.yaml, or configs/smoke/*_retrain.yaml "
                    f"for a quick one), then {then}")
            raise RunDirError(f"{run_dir} is not a {kind} run folder (no {name})")
    hold_root(run_dir)  # every file of the run is opened from here on, never through a link


def trusted(cfg, given: str | None, where: Path):
    """A run's config (read with ``in_run``) with its space's module replaced by the one
    the command line names
    (refused if the run's config names one and the command line does not)."""
    if isinstance(cfg, SearchConfig):
        module = run_module(cfg.space.module, given, where, "space.module")
        return dataclasses.replace(cfg, space=dataclasses.replace(cfg.space, module=module))
    module = run_module(cfg.retrain.space_module, given, where, "retrain.space_module")
    return dataclasses.replace(cfg, retrain=dataclasses.replace(cfg.retrain, space_module=module))


def continue_run(loop: Loop, cfg, state: dict, diffs: list[str]):
    """Load a checkpoint into a search or retrain, record accepted config changes, run on."""
    main = dist.is_main()
    ckpt.restore(loop, state)
    if diffs and main:
        dump(cfg, loop.run_dir / rf.CONFIG)
        say("config changed on resume:\n  " + "\n  ".join(diffs))
    say(f"resuming {loop.run_dir} at epoch {loop.epoch + 1}, {loop.phase} step {loop.step}"
        + (f" on {processes_line()}" if processes_line() else ""), main)
    return loop.run(resume_offset=state["metrics_offset"])


# ---- search ---------------------------------------------------------------------------


def start_search(config_path, overrides, data_dir, run_dir, device: torch.device) -> Search:
    """A new search, its folder made and its config and data recorded."""
    main = dist.is_main()
    cfg = dist.on_main(lambda: load_search(config_path, overrides))
    data_dir = shipped.locate(cfg.data.dataset, data_dir or cfg.data.dir)
    search = dist.local_main_first(lambda: Search(cfg, None, data_dir, device, log=main))  # data before any folder

    def fill(path):
        dump(cfg, path / rf.CONFIG)
        record.write(path, cfg.data.dataset, data_dir)

    search.run_dir = dist.on_main(lambda: new_run_dir(run_dir, config_path, fill=fill))
    _announce(search.run_dir, main)
    return search


def resume_search(run_dir, overrides, data_dir, allow_change: bool, device: torch.device,
                  space_module: str | None = None):
    """(search, its checkpoint, accepted config changes) of a stopped search."""
    run_dir = Path(run_dir)

    def read():  # rank 0 reads the run folder (other machines need not see it)
        require_run(run_dir, "search")
        _writable(run_dir, "search")
        cfg = trusted(load_search(run_dir / rf.CONFIG, overrides, in_run=True), space_module,
                       run_dir / rf.CONFIG)
        state = ckpt.load(run_dir, say)
        diffs = _changes(state, cfg, SearchConfig, allow_change)
        return cfg, state, diffs, record.resolve(run_dir, cfg.data.dataset, data_dir, allow_change, say)

    cfg, state, diffs, data_dir = dist.on_main(read)
    search = dist.local_main_first(lambda: Search(cfg, run_dir, data_dir, device, log=dist.is_main()))
    return search, cfg, state, diffs


def reopen_search(run_dir, data_dir, device: torch.device, overrides=(), allow_data_change: bool = False,
                  space_module: str | None = None) -> Search:
    """A finished or stopped search, as its checkpoint left it, to read (``enas derive``,
    ``enas rank``): nothing is logged or written into the folder by it."""
    run_dir = Path(run_dir)
    require_run(run_dir, "search")
    cfg = trusted(load_search(run_dir / rf.CONFIG, list(overrides), in_run=True), space_module,
                   run_dir / rf.CONFIG)
    state = ckpt.load(run_dir, say)
    data_dir = record.resolve(run_dir, cfg.data.dataset, data_dir, allow_data_change, say, keep_record=True)
    search = Search(cfg, run_dir, data_dir, device, log=False)
    ckpt.restore(search, state)
    return search


# ---- retrain --------------------------------------------------------------------------


def _arch_and_config(arch_path, config_path, overrides, in_run: bool = False, space_module: str | None = None):
    """(space, arch, cfg) of a retrain. The config is read first: it names the file of a
    space of the user's own (retrain.space_module), which the architecture file needs;
    ``in_run``: both are files of a run folder, whose module is only ever ``space_module``."""
    cfg = load_retrain(config_path, overrides, in_run=in_run)
    if in_run:
        cfg = trusted(cfg, space_module, Path(config_path))
    import_space_module(cfg.retrain.space_module, "retrain.space_module")
    space, arch, _ = load_arch(arch_path, follow=not in_run)
    from_dict(type(space).ModelArgs, cfg.model, "model")  # the model section fits this space
    return space, arch, cfg


def _on_main_with_space(read):
    """``read()`` -> (space, arch, cfg, ...) on rank 0, returned on every rank. The space
    travels as plain values and each process builds its own: a space of the user's own is
    a class from a file every process imports (retrain.space_module), never pickled."""
    def plain():
        space, *rest = read()
        return (space.name, to_dict(space.args), *rest)

    name, args, arch, cfg, *rest = dist.on_main(plain)
    import_space_module(cfg.retrain.space_module, "retrain.space_module")
    return (build_space(name, args), arch, cfg, *rest)


def _retrain_files(run_dir: Path, overrides=None, space_module: str | None = None):
    """(space, arch, cfg) of a retrain run folder, from config.yaml and arch.yaml alone."""
    require_run(run_dir, "retrain")
    return _arch_and_config(run_dir / rf.ARCH, run_dir / rf.CONFIG, overrides, True, space_module)


def start_retrain(arch_path, config_path, overrides, data_dir, run_dir, device: torch.device) -> Retrain:
    """A new retrain of ``arch_path``, its folder made: config, data record, and the
    architecture with the source file's provenance."""
    main = dist.is_main()

    space, arch, cfg = _on_main_with_space(lambda: _arch_and_config(arch_path, config_path, overrides))
    data_dir = shipped.locate(cfg.data.dataset, data_dir or cfg.data.dir)
    rt = dist.local_main_first(lambda: Retrain(cfg, space, arch, None, data_dir, device, log=main))

    def fill(path):
        _, _, doc = load_arch(arch_path)
        prov = {"copied_from": str(Path(arch_path).resolve()), "source_provenance": doc.get("provenance") or {}}
        dump(cfg, path / rf.CONFIG)
        save_arch(path / rf.ARCH, space, arch, prov)
        record.write(path, cfg.data.dataset, data_dir)

    rt.run_dir = dist.on_main(lambda: new_run_dir(run_dir, config_path, kind="retrain", fill=fill))
    _announce(rt.run_dir, main)
    return rt


def resume_retrain(run_dir, overrides, data_dir, allow_change: bool, device: torch.device,
                   space_module: str | None = None):
    """(retrain, its checkpoint, accepted config changes) of a stopped retrain."""
    run_dir = Path(run_dir)

    def read():
        require_run(run_dir, "retrain")
        _writable(run_dir, "retrain")
        space, arch, cfg = _retrain_files(run_dir, overrides, space_module)
        state = ckpt.load(run_dir, say)
        diffs = _changes(state, cfg, RetrainConfig, allow_change)
        return space, arch, cfg, state, diffs, record.resolve(run_dir, cfg.data.dataset, data_dir, allow_change, say)

    space, arch, cfg, state, diffs, data_dir = _on_main_with_space(read)
    rt = dist.local_main_first(lambda: Retrain(cfg, space, arch, run_dir, data_dir, device, log=dist.is_main()))
    return rt, cfg, state, diffs


def reopen_retrain(run_dir, data_dir, device: torch.device, allow_data_change: bool = False,
                   space_module: str | None = None) -> Retrain:
    """A retrain run rebuilt from its folder, to read (``enas evaluate``): the model as
    built, nothing loaded into it yet."""
    run_dir = Path(run_dir)
    space, arch, cfg = _retrain_files(run_dir, space_module=space_module)
    data_dir = record.resolve(run_dir, cfg.data.dataset, data_dir, allow_data_change, say, keep_record=True)
    return Retrain(cfg, space, arch, run_dir, data_dir, device, log=False)
