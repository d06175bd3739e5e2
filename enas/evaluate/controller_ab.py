"""``enas controller-ab``: controller options side by side on one trained supernet.

Controller options (reward normalisation, the rising entropy bonus, the learning rate,
...) change what the policy learns from the supernet's rewards. Here their effect is
measured with everything else held still: each variant trains a fresh controller on
the *finished* supernet of a search run, exactly as the search's controller phase does
(``controller.updates_per_epoch`` Adam steps of ``num_aggregate`` samples per epoch,
each reward on ``search.reward_batches`` validation minibatches), and then reports the
policy's entropy and, against a ground truth of uniformly drawn cells, the mean
ground-truth accuracy of the cells the policy samples (importance-weighted:
``against_table.policy_expectation``; the uniform mean is what random sampling gets).
No cell is trained.

    enas controller-ab runs/bc2/recipe-s0 --epochs 5 --seeds 0 1 \\
        --variant recipe= --variant norm=controller.reward_norm=true \\
        --variant target=controller.entropy_target=7

A variant is ``NAME=`` followed by comma-separated ``--set`` overrides of the run's
config (``controller.kind=enas`` always). Prints one line per variant and seed, then
the mean per variant.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from .. import checkpoint as ckpt
from ..config import load_search
from ..data import record
from ..errors import ConfigError
from ..rank import parse_arch_line
from ..runlog import RunLog
from ..runs import trusted
from ..search import Search
from .against_table import policy_expectation
from .beat_chance import GT_CSV, GT_LIST
from .compare import load_ground_truth, uniform_cells


def variant(text: str) -> tuple[str, list[str]]:
    name, sep, sets = text.partition("=")
    if not sep or not name:
        raise ConfigError(f"--variant {text!r}: write NAME=key=value[,key=value...] (or NAME=)")
    return name, [s for s in sets.split(",") if s]


def run_config(run: Path, sets: list[str], space_module: str | None):
    """The run's config with ``sets``; its space's code is what the command line names
    (``--space-module``), never what the run's config.yaml names (enas/runs.py trusted)."""
    return trusted(load_search(run / "config.yaml", sets, in_run=True), space_module, run / "config.yaml")


def train_controller(run: Path, state: dict, data_dir, sets: list[str], seed: int, epochs: int,
                     space_module: str | None = None) -> Search:
    cfg = run_config(run, ["controller.kind=enas", "search.controller_warmup_epochs=0", f"search.seed={seed}", *sets],
                     space_module)
    s = Search(cfg, None, data_dir, torch.device("cpu"), log=False)
    s.supernet.load_state_dict(state["supernet"])
    s.log = RunLog(run, enabled=False)
    s.epoch = cfg.search.epochs - 1  # the finished supernet; the epoch only names the progress bar
    for _ in range(epochs):
        s.step = 0
        if s.controller.trains(s.epoch, cfg.search.controller_warmup_epochs):
            s.update_controller()
    return s


def add_arguments(p) -> None:
    """The options of ``enas controller-ab`` (the CLI makes the parser)."""
    p.add_argument("run", type=Path, help="a finished search run folder (its supernet is used)")
    p.add_argument("--variant", action="append", required=True, metavar="NAME=KEY=VALUE[,KEY=VALUE...]",
                   help="a controller variant (repeatable); NAME= alone is the run's own config")
    p.add_argument("--epochs", type=int, default=5, help="controller phases per variant")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--ground-truth", type=Path, default=GT_CSV, help=f"ground-truth CSV (default {GT_CSV})")
    p.add_argument("--uniform", type=Path, default=GT_LIST,
                   help=f"the ground truth's uniformly drawn cells (default {GT_LIST})")
    p.add_argument("--space-module", metavar="FILE", default=None,
                   help="the Python file (or module) of the run's space, if it is your own: a run folder's files "
                        "never make enas import code")


def run(args) -> int:
    """Train each variant's controller on the run's supernet and print the figures."""
    variants = [variant(v) for v in args.variant]
    for path in (args.ground_truth, args.uniform):
        if not path.is_file():
            raise ConfigError(f"{path}: no such file (run from the project's folder or name the file)")
    torch.set_num_threads(1)
    cfg = run_config(args.run, [], args.space_module)  # before anything else is read: it names no code to run
    state = ckpt.load(args.run)
    data_dir = record.resolve(args.run, cfg.data.dataset, None)
    gt, _, canon, _ = load_ground_truth(args.ground_truth)
    uniform = uniform_cells(args.uniform, canon, gt)
    if not uniform:
        raise ConfigError(f"none of the cells listed in {args.uniform} is in the ground truth {args.ground_truth}; "
                          f"give the ground truth of this run's space and its list of uniformly drawn cells")
    means: dict[str, list[tuple[float, float]]] = {}
    for name, sets in variants:
        for seed in args.seeds:
            t0 = time.monotonic()
            s = train_controller(args.run, state, data_dir, sets, seed, args.epochs, args.space_module)
            archs = [parse_arch_line(s.space, t) for t in uniform]
            pol = policy_expectation(s.policy, archs, [gt[t] for t in uniform])
            with torch.no_grad():
                entropy = float(s.policy(200, generator=torch.Generator().manual_seed(seed)).entropy.mean())
            means.setdefault(name, []).append((pol["policy_mean"], entropy))
            print(f"{name}_s{seed}: policy_gt={pol['policy_mean']:.4f} (uniform {pol['uniform_mean']:.4f}, "
                  f"ess {pol['policy_ess']:.1f}) entropy={entropy:.2f} updates={s.reinforce.updates} "
                  f"entropy_weight={s.reinforce.entropy_weight:.3g} seconds={time.monotonic() - t0:.0f}", flush=True)
    for name, rows in means.items():
        print(f"{name}: seeds={len(rows)} policy_gt_mean={sum(r[0] for r in rows) / len(rows):.4f} "
              f"entropy_mean={sum(r[1] for r in rows) / len(rows):.2f}")
    return 0

