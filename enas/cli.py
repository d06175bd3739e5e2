"""`enas search|derive|retrain|evaluate|show|rank` (thin: parse, call, report errors).

A user's mistake (bad config, missing data, bad architecture file, existing run
folder) ends with one paragraph on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .archfile import ArchFileError
from .checkpoint import CheckpointError
from .config import ConfigError, dump, load_search, to_dict
from .data.errors import DataError
from .interrupt import StopRequested
from .loop import NonFiniteError
from .registry import RegistryError
from .runlog import RunDirError, new_run_dir, say
from .space import ArchError

USER_ERRORS = (ConfigError, DataError, ArchError, ArchFileError, CheckpointError, RunDirError, RegistryError)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: expected auto, cpu or cuda[:N]") from None


def config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def cmd_search(args) -> int:
    from . import checkpoint as ckpt
    from .search import Search

    device = resolve_device(args.device)
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").exists():
            raise RunDirError(f"{run_dir} is not a search run folder (no config.yaml)")
        cfg = load_search(run_dir / "config.yaml", args.set)
        state = ckpt.load(run_dir)
        diffs = config_diff(state["config"], to_dict(cfg))
        if diffs and not args.allow_config_change:
            raise ConfigError(
                "the config differs from the one this run was checkpointed with:\n  " + "\n  ".join(diffs)
                + "\nresume without those changes, or pass --allow-config-change to accept them"
            )
        search = Search(cfg, run_dir, args.data_dir, device)
        search.load_state_dict(state)
        if diffs:
            dump(cfg, run_dir / "config.yaml")
            say("config changed on resume:\n  " + "\n  ".join(diffs))
        say(f"resuming {run_dir} at epoch {search.epoch + 1}, {search.phase} step {search.step}")
        best = search.run(resume_offset=state["metrics_offset"])
    else:
        if args.config is None:
            raise ConfigError("enas search needs CONFIG.yaml (or --resume RUN_DIR)")
        cfg = load_search(args.config, args.set)
        search = Search(cfg, None, args.data_dir, device)  # loads data before any folder is made
        run_dir = new_run_dir(args.run_dir, args.config)
        search.run_dir = run_dir
        dump(cfg, run_dir / "config.yaml")
        say(f"run folder: {run_dir}   (tensorboard --logdir {run_dir.parent})")
        best = search.run()
    say(f"best architecture (score {best['score']:.4g}, epoch {best['epoch']}): {search.run_dir / 'best_arch.yaml'}")
    return 0


def cmd_derive(args) -> int:
    from .search import derive_from_checkpoint

    out, derived = derive_from_checkpoint(Path(args.run_dir), args.data_dir, resolve_device(args.device),
                                          args.samples, args.seed)
    print(f"best of {args.samples} (score {derived['score']:.4g}) written to {out}")
    return 0


def cmd_show(args) -> int:
    from .archfile import load_arch

    space, arch, doc = load_arch(args.arch)
    print(f"space: {space.name}")
    extras = getattr(space, "extras", None)
    for k, v in (extras(arch) if extras else {}).items():
        print(f"{k}: {v}")
    print(space.describe(arch))
    if doc.get("provenance"):
        print("provenance: " + ", ".join(f"{k}={v}" for k, v in doc["provenance"].items()))
    if args.out:
        draw = getattr(space, "draw", None)
        if draw is None:
            raise ArchError(f"space {space.name} has no drawing; omit --out")
        draw(arch, Path(args.out))
        print(f"drawing written to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="enas", description="Efficient Neural Architecture Search (Pham et al., 2018)")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, run_dir=True):
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set controller.lr=1e-3 (repeatable)")
        sp.add_argument("--data-dir", default="data", help="dataset folder (downloads go here); default ./data")
        if run_dir:
            sp.add_argument("--run-dir", default=None, help="run folder (must not exist); default runs/<config>-<time>")
        sp.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")

    s = sub.add_parser("search", help="run an ENAS search")
    s.add_argument("config", nargs="?", help="search config YAML (configs/*_search.yaml)")
    s.add_argument("--resume", metavar="RUN_DIR", help="continue a search run from its checkpoint")
    s.add_argument("--allow-config-change", action="store_true", help="accept --set changes on --resume")
    common(s)
    s.set_defaults(func=cmd_search)

    d = sub.add_parser("derive", help="re-derive the best architecture from a search checkpoint")
    d.add_argument("run_dir")
    d.add_argument("--samples", type=int, default=100, help="candidates sampled from the policy (default 100)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--data-dir", default="data")
    d.add_argument("--device", default="auto")
    d.set_defaults(func=cmd_derive)

    sh = sub.add_parser("show", help="print an architecture file readably, optionally draw it")
    sh.add_argument("arch")
    sh.add_argument("--out", help="write a PNG drawing of the cell(s)")
    sh.set_defaults(func=cmd_show)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except StopRequested as e:
        print(f"\nstopped by signal {e.signum}; checkpoint written. Resume with:\n  {e.resume_command}",
              file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
