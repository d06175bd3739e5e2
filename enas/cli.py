"""`enas search|derive|retrain|evaluate|show|rank|table|export|report|ground-truth|compare`
(thin: parse, call, report errors); each command is one row of ``COMMANDS``.

A user's mistake (bad config, missing data, bad architecture file, existing run
folder) ends with one paragraph on stderr and exit code 2, never a traceback; text that
came from a file is printed with its control characters escaped.

Commands that open an existing run (``--resume``, derive, rank, evaluate, report) import
no code its files name: ``--space-module FILE`` names the code of a space of your own.

``torchrun --nproc_per_node=N -m enas search|retrain ...`` runs N processes
(enas/train/distributed.py): rank 0 reads and creates the run folder and hands what it read
to the others; a process that fails prints its error (prefixed with its rank) and
exits at once, which ends the others' pending collectives instead of leaving them
waiting.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

import torch

from enas import __version__, runs

from enas.train import distributed as dist

from enas.storage import runlock
from enas.api import resolve_device
from enas.nas.archfile import load_arch, readable
from enas.config import MAX_SEED
from enas.nas.derive import derive_again
from enas.errors import ArchError, ConfigError, UserError, printable
from enas.evaluate import build_truth, compare, table_text
from enas.evaluate.against_table import load_tables, measure
from enas.export import export_run
from enas.storage.files import check_out, produced, write_atomic
from enas.train.interrupt import StopRequested
from enas.train.loop import NonFiniteError
from enas.train.malloc import keep_freed_memory
from enas.evaluate.rank import SCORES, rank
from enas.report import write_report
from enas.storage.runlog import say
from enas.runs import reopen_retrain, reopen_search
from enas.nas.space import import_space_module
from enas.child.retest import retest
from enas.errors import one_line  # names a user chose, printed within a line


def cmd_search(args) -> int:
    device = dist.setup(resolve_device(args.device))
    if args.resume:
        search, cfg, state, diffs = runs.resume_search(args.resume, args.set, args.data_dir, args.allow_config_change,
                                                       device, args.space_module)
        best = runs.continue_run(search, cfg, state, diffs)
    else:
        if args.config is None:
            raise ConfigError("enas search needs CONFIG.yaml (or --resume RUN_DIR)")
        _new_run_names_its_code(args)
        search = runs.start_search(args.config, args.set, args.data_dir, args.run_dir, device)
        best = search.run()
    name, value, se = search.as_metric(best["score"], best["se"], task_score=bool(best.get("trained")))
    say(f"best architecture ({name.replace('_', ' ')} {value:.4g} +- {se:.2g}, after epoch {best['epoch']}): "
        f"{search.run_dir / 'best_arch.yaml'}", dist.is_main())
    v = best.get("verdict")
    if isinstance(v, dict) and isinstance(v.get("text"), str):  # a resumed run's checkpoint: anyone's values
        say(f"verdict: {v['text']}", dist.is_main())
    return 0


def cmd_derive(args) -> int:
    _check_seed(args.seed)
    search = reopen_search(args.run_dir, args.data_dir, resolve_device(args.device),
                           [f"search.derive_samples={args.samples}"], args.allow_data_change, args.space_module)
    out, rescored = derive_again(search, args.seed)
    print(f"best of {args.samples} (score {rescored[0].score:.4g} +- {rescored[0].se:.2g}) written to {one_line(out)}")
    return 0


def cmd_retrain(args) -> int:
    device = dist.setup(resolve_device(args.device))
    if args.resume:
        if args.arch or args.config:
            raise ConfigError("enas retrain --resume RUN_DIR takes no ARCH.yaml or --config "
                              "(the run folder holds both); change values with --set and --allow-config-change")
        rt, cfg, state, diffs = runs.resume_retrain(args.resume, args.set, args.data_dir, args.allow_config_change,
                                                    device, args.space_module)
        result = runs.continue_run(rt, cfg, state, diffs)
    else:
        if args.arch is None or args.config is None:
            raise ConfigError("enas retrain needs ARCH.yaml and --config CONFIG.yaml (or --resume RUN_DIR)")
        _new_run_names_its_code(args)
        rt = runs.start_retrain(args.arch, args.config, args.set, args.data_dir, args.run_dir, device)
        result = rt.run()
    key = next(k for k in result if k.startswith("test_") and k != "test_loss")
    if dist.is_main():
        print(f"{key} {result[key]:.6g}  params {result['params']:,}  ({one_line(rt.run_dir / 'result.json')})")
    return 0


def cmd_evaluate(args) -> int:
    out = retest(reopen_retrain(args.run_dir, args.data_dir, resolve_device(args.device),
                                      args.allow_data_change, args.space_module))
    data_dir = out["data_dir"]
    print(f"{out['metric']} {out['value']:.6g}  (recomputed from {one_line(out['weights'])}, params {out['params']:,})")
    if out["recorded"] is None:
        print(f"no {out['metric']} in {one_line(Path(args.run_dir) / 'result.json')} yet (unfinished run?)")
        return 0
    print(f"{out['metric']} {out['recorded']:.6g}  (result.json)")
    if not out["match"]:
        print(f"MISMATCH: the recomputed figure differs from result.json (different data in {one_line(data_dir)}, "
              "device or library version?)", file=sys.stderr)
        return 1
    print("match")
    return 0


DRAWING_FORMATS = {".png", ".svg", ".pdf", ".jpg", ".jpeg"}


def _check_seed(seed: int) -> None:
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"--seed must be in 0..{MAX_SEED:,}, got {seed if seed.bit_length() < 256 else 'more'}")


def _new_run_names_its_code(args) -> None:
    if args.space_module:
        raise ConfigError("--space-module is for --resume; a new run's config names its space's file "
                          "(space.module, retrain.space_module)")


def cmd_show(args) -> int:
    if args.out and Path(args.out).suffix.lower() not in DRAWING_FORMATS:
        raise ConfigError(f"--out {args.out}: a drawing is written as {', '.join(sorted(DRAWING_FORMATS))}; "
                          f"name the file accordingly, e.g. cell.png")
    if args.out:
        check_out(Path(args.out), args.force)
    if args.space_module:
        import_space_module(args.space_module, "--space-module")
    space, arch, doc = load_arch(args.arch)
    print(printable(readable(space, arch, doc)))
    if args.out:
        draw = getattr(space, "draw", None)
        if draw is None:
            raise ArchError(f"space {space.name} has no drawing; omit --out")
        out = Path(args.out)
        write_atomic(out, produced(lambda p: draw(arch, p), out.name), replace=args.force)
        print(f"drawing written to {one_line(args.out)}")
    return 0


def cmd_rank(args) -> int:
    _check_seed(args.seed)
    out, rows, summary = rank(Path(args.run_dir), args.data_dir, resolve_device(args.device), samples=args.samples,
                              archs_file=args.archs, policy=args.policy, recalibrate_bn=args.recalibrate_bn,
                              out=args.out, seed=args.seed, allow_data_change=args.allow_data_change,
                              force=args.force, space_module=args.space_module, score=args.score)
    print(printable(summary))
    print(f"{len(rows)} rows written to {one_line(out)}")
    return 0


def cmd_table(args) -> int:

    if args.out:
        check_out(Path(args.out), args.force, ours=lambda name: name.startswith("table"))
    search = reopen_search(args.run_dir, args.data_dir, resolve_device(args.device), [], args.allow_data_change,
                           args.space_module)
    tables = load_tables(search, args.table, args.arch_column, args.metric_column)
    out = measure(search, tables, args.cells, args.seed, args.draws, args.candidates, say=say)
    text = json.dumps(table_text.plain_json(out), indent=1, allow_nan=False) + "\n"
    print(text if args.json else table_text.render(out), end="" if args.json else "\n")
    if args.out:
        write_atomic(args.out, text)
        say(f"written to {args.out}")
    return 0


def cmd_export(args) -> int:
    out = export_run(Path(args.run_dir), Path(args.out), args.force, args.data_dir, args.allow_data_change,
                     args.space_module)
    t = out["test"]
    print(f"{out['kind'].replace('_', ' ')} written to {one_line(out['out'])} (torch.export; runs with PyTorch alone, "
          f"docs/export.md)")
    print(f"the run's {t['metric']}: {t['value']:.6g}; on a few test examples the file's outputs differ from the "
          f"run's network by at most {out['check']:.2g}")
    return 0


def cmd_report(args) -> int:
    path = write_report(Path(args.run_dir), Path(args.out) if args.out else None, args.force, args.space_module)
    print(f"report written to {one_line(path)}")
    return 0


def _space_module(sp):
    sp.add_argument("--space-module", metavar="FILE", default=None,
                    help="the Python file (or module) of the run's space, if it is your own: a run folder's files "
                         "never make enas import code")


def _reopen(sp, device=True):  # commands that read an existing run folder
    sp.add_argument("--data-dir", default=None,
                    help="dataset folder; default: the one the run was started with (RUN_DIR/data.json)")
    sp.add_argument("--allow-data-change", action="store_true",
                    help="accept a --data-dir whose files differ from the run's")
    _space_module(sp)
    if device:
        sp.add_argument("--device", default="auto")


def _common(sp, run_dir=True):
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. --set controller.lr=1e-3 (repeatable)")
    sp.add_argument("--data-dir", default=None,
                    help="dataset folder (downloads go here), or 'sample' (the data that ships with enas); "
                         "default: the config's data.dir (./data), or the run's own on --resume")
    if run_dir:
        sp.add_argument("--run-dir", default=None, help="run folder (must not exist); default runs/<config>-<time>")
    sp.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")


def search_arguments(s):
    s.add_argument("config", nargs="?", help="search config YAML (configs/*_search.yaml)")
    s.add_argument("--resume", metavar="RUN_DIR", help="continue a search run from its checkpoint")
    s.add_argument("--allow-config-change", action="store_true",
                   help="on --resume: accept --set changes and a --data-dir whose files differ from the run's")
    _common(s)
    _space_module(s)


def derive_arguments(d):
    d.add_argument("run_dir")
    d.add_argument("--samples", type=int, default=100, help="candidates sampled from the policy (default 100)")
    d.add_argument("--seed", type=int, default=0)
    _reopen(d)


def retrain_arguments(r):
    r.add_argument("arch", nargs="?", help="architecture file (best_arch.yaml, configs/archs/*.yaml)")
    r.add_argument("--config", help="retrain config YAML (configs/*_retrain.yaml)")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue a retrain run from its checkpoint")
    r.add_argument("--allow-config-change", action="store_true",
                   help="on --resume: accept --set changes and a --data-dir whose files differ from the run's")
    _common(r)
    _space_module(r)


def evaluate_arguments(e):
    e.add_argument("run_dir")
    _reopen(e)


def show_arguments(sh):
    sh.add_argument("arch")
    sh.add_argument("--out", help="write a PNG drawing of the cell(s)")
    sh.add_argument("--force", action="store_true", help="replace an existing --out drawing (never a run's own file)")
    sh.add_argument("--space-module", metavar="FILE",
                    help="the Python file (or module) defining the architecture's space, if it is your own")


def rank_arguments(rk):
    rk.add_argument("run_dir")
    src = rk.add_mutually_exclusive_group()
    src.add_argument("--archs", metavar="FILE",
                     help="rank these architectures, one a line (NB201 cell string, or {decision: value, ...})")
    src.add_argument("--policy", action="store_true", help="sample from the trained policy instead of uniformly")
    rk.add_argument("--samples", type=int, default=None, help="architectures to sample (default 100)")
    rk.add_argument("--recalibrate-bn", action="store_true",
                    help="recompute BN statistics for each architecture before scoring it")
    rk.add_argument("--out", help="CSV to write (default RUN_DIR/ranks-<source>-n<N>-<time>.csv)")
    rk.add_argument("--force", action="store_true", help="replace an existing --out CSV")
    rk.add_argument("--seed", type=int, default=0, help="seed of the sampled architectures")
    rk.add_argument("--score", default="run", choices=list(SCORES),
                    help="run: the run's own scoring (search.score); supernet: the supernet alone; params, "
                         "synflow, naswot: training-free scores of the untrained child (default run)")
    _reopen(rk)


def table_arguments(tb):
    tb.add_argument("run_dir")
    tb.add_argument("--table", default=None,
                    help="CSV (or .csv.gz) of stand-alone accuracies of the run's space; default for nb201 runs: "
                         "NAS-Bench-201's 200-epoch CIFAR-10 test table, then its 12-epoch one (shipped)")
    tb.add_argument("--cells", type=int, default=200, help="architectures drawn from the table to rank (default 200)")
    tb.add_argument("--seed", type=int, default=0, help="seed of those draws")
    tb.add_argument("--draws", type=int, default=5, help="random-search derives on the run's supernet (default 5)")
    tb.add_argument("--candidates", type=int, default=None,
                    help="candidates per random-search derive (default the run's search.derive_samples)")
    tb.add_argument("--arch-column", default=None, help="the table's architecture column (default arch or cell)")
    tb.add_argument("--metric-column", default=None, help="the table's accuracy column (default the last)")
    tb.add_argument("--json", action="store_true",
                    help="print the figures as one JSON object instead of a table (null: not measured)")
    tb.add_argument("--out", help="also write the figures as JSON")
    tb.add_argument("--force", action="store_true", help="replace an existing --out file")
    _reopen(tb)


def export_arguments(ex):
    ex.add_argument("run_dir", help="a finished retrain run folder")
    ex.add_argument("--out", required=True, help="the file to write, e.g. model.pt2")
    ex.add_argument("--force", action="store_true", help="replace an existing --out file")
    _reopen(ex, device=False)


def report_arguments(rp):
    rp.add_argument("run_dir")
    rp.add_argument("--out", help="HTML file to write (default RUN_DIR/report.html)")
    rp.add_argument("--force", action="store_true", help="replace an existing report")
    _space_module(rp)


# every command, wired one way: (name, help, add its options to a parser, run it on the parsed args)
COMMANDS = (
    ("search", "run an ENAS search", search_arguments, cmd_search),
    ("derive", "re-derive the best architecture from a search checkpoint", derive_arguments, cmd_derive),
    ("retrain", "train an architecture file from scratch, then test it", retrain_arguments, cmd_retrain),
    ("evaluate", "recompute a retrained model's test metric and check result.json", evaluate_arguments, cmd_evaluate),
    ("show", "print an architecture file readably, optionally draw it", show_arguments, cmd_show),
    ("rank", "score many architectures with a search run's supernet (CSV)", rank_arguments, cmd_rank),
    ("table", "measure a search run on a published table of accuracies (NAS-Bench-201)", table_arguments, cmd_table),
    ("export", "write a retrained network as one file that runs without enas (torch.export)", export_arguments,
     cmd_export),
    ("report", "write one self-contained HTML page about a search or retrain run", report_arguments, cmd_report),
    ("ground-truth", "train architectures from scratch into a ground-truth table (CSV)", build_truth.add_arguments,
     build_truth.run),
    ("compare", "compare a ranking and search runs with a ground-truth table", compare.add_arguments, compare.run),
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="enas", description="Efficient Neural Architecture Search (Pham et al., 2018)")
    p.add_argument("--version", action="version", version=f"enas {__version__} (torch {torch.__version__})")
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_, add_arguments, run in COMMANDS:
        sp = sub.add_parser(name, help=help_)
        add_arguments(sp)
        sp.set_defaults(func=run)
    return p


SEVERAL_PROCESSES = ("search", "retrain")  # the commands torchrun may start several of


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()  # CPU tensors: no page faults on every step's large buffers
    if not dist.launched():
        return _run(args)
    # torchrun: whatever happens, this process must not outlive its failure while the
    # others wait for it in a collective.
    try:
        code = _run(args)
    except BaseException:  # noqa: BLE001 - an unexpected error: show it, then leave at once
        print(f"{dist.tag()}unexpected error:", file=sys.stderr)
        traceback.print_exc()
        code = 1
    if code == 0:
        dist.teardown()
        return 0
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no teardown: peers may be gone or waiting; the OS closes the connections


def _run(args) -> int:
    tag = dist.tag
    try:
        if dist.launched() and args.command not in SEVERAL_PROCESSES and int(os.environ["WORLD_SIZE"]) > 1:
            raise ConfigError(f"enas {args.command} runs in one process; start it without torchrun")
        return args.func(args)
    except dist.PeerError as e:  # another rank failed and printed why
        return e.code
    except BrokenPipeError:  # the reader went away (`enas show ... | head`): not an error of enas
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 141  # 128 + SIGPIPE, as a shell reports it
    except UserError as e:
        print(f"{tag()}error: {printable(e)}", file=sys.stderr)
        return 2
    except StopRequested as e:
        if dist.is_main():
            print(f"\nstopped by signal {e.signum}; checkpoint written. Resume with:\n  {e.resume_command}",
                  file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print(f"\n{tag()}interrupted", file=sys.stderr)
        return 130
    except NonFiniteError as e:
        print(f"{tag()}error: {e}", file=sys.stderr)
        return 3
    finally:
        runlock.release_all()
