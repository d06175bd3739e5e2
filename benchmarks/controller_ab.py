"""Controller options side by side on one trained supernet.

Controller options (reward normalisation, the rising entropy bonus, the learning rate,
...) change what the policy learns from the supernet's rewards. Here their effect is
measured with everything else held still: each variant trains a fresh controller on
the *finished* supernet of a search run, exactly as the search's controller phase does
(``controller.updates_per_epoch`` Adam steps of ``num_aggregate`` samples per epoch,
each reward on ``search.reward_batches`` validation minibatches), and then reports the
policy's entropy and, against a ground truth of uniformly drawn cells, the mean
ground-truth accuracy of the cells the policy samples (importance-weighted:
``compare_ranking.policy_expectation``; the uniform mean is what random sampling gets).
No cell is trained.

    python benchmarks/controller_ab.py runs/bc2/recipe-s0 --epochs 5 --seeds 0 1 \\
        --variant recipe= --variant norm=controller.reward_norm=true \\
        --variant target=controller.entropy_target=7

A variant is ``NAME=`` followed by comma-separated ``--set`` overrides of the run's
config (``controller.kind=enas`` always). Prints one line per variant and seed, then
the mean per variant.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from compare_ranking import load_ground_truth, policy_expectation, uniform_cells  # noqa: E402
from enas import checkpoint as ckpt  # noqa: E402
from enas.config import load_search  # noqa: E402
from enas.data import record  # noqa: E402
from enas.rank import parse_arch_line  # noqa: E402
from enas.runlog import RunLog  # noqa: E402
from enas.search import Search  # noqa: E402

GT_CSV = ROOT / "benchmarks/results/nb201_ground_truth.csv"
GT_LIST = ROOT / "benchmarks/results/nb201_uniform50_seed0.txt"


def variant(text: str) -> tuple[str, list[str]]:
    name, sep, sets = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: write NAME=key=value[,key=value...] (or NAME=)")
    return name, [s for s in sets.split(",") if s]


def train_controller(run: Path, state: dict, data_dir, sets: list[str], seed: int, epochs: int) -> Search:
    cfg = load_search(run / "config.yaml", ["controller.kind=enas", "search.controller_warmup_epochs=0",
                                            f"search.seed={seed}", *sets])
    s = Search(cfg, None, data_dir, torch.device("cpu"), log=False)
    s.supernet.load_state_dict(state["supernet"])
    s.log = RunLog(run, enabled=False)
    s.epoch = cfg.search.epochs - 1  # the finished supernet; the epoch only names the progress bar
    for _ in range(epochs):
        s.step = 0
        s._controller_phase()
    return s


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a finished search run folder (its supernet is used)")
    p.add_argument("--variant", type=variant, action="append", required=True)
    p.add_argument("--epochs", type=int, default=5, help="controller phases per variant")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--ground-truth", type=Path, default=GT_CSV)
    p.add_argument("--uniform", type=Path, default=GT_LIST, help="the ground truth's uniformly drawn cells")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    state = ckpt.load(args.run)
    cfg = load_search(args.run / "config.yaml")
    data_dir = record.resolve(args.run, cfg.data.dataset, None)
    gt, _, canon, _ = load_ground_truth(args.ground_truth)
    uniform = uniform_cells(args.uniform, canon, gt)
    means: dict[str, list[tuple[float, float]]] = {}
    for name, sets in args.variant:
        for seed in args.seeds:
            t0 = time.monotonic()
            s = train_controller(args.run, state, data_dir, sets, seed, args.epochs)
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


if __name__ == "__main__":
    raise SystemExit(main())
