"""How BN and dropout while scoring change a CIFAR controller reward (the choice of
``search.image.eval_bn`` in the image search configs; docs/fidelity.md,
docs/experiments/cifar-reward-bn.md).

A controller reward is the accuracy of one sampled architecture of the supernet on one
shuffled validation minibatch of the training batch size (enas/tasks/image.py
``reward``). The official code scored it in two ways of its own:

* ``running``: macro, ``general_child.py`` 691 (``_model(x, False)``): BN with the
  supernet's moving averages, gathered over every architecture trained, dropout off;
* ``train``: micro, ``micro_child.py`` 804 (``is_training=True``): BN with the
  minibatch's statistics and the FC dropout left on;

against ``batch``: the minibatch's BN statistics, dropout off. This script reopens a
search run's trained supernet, draws architectures uniformly, scores each on the same
reward minibatches in each mode, and prints per mode

* ``reward_mean``: the mean reward;
* ``noise_std``: the standard deviation over minibatches of one architecture's reward,
  averaged over the architectures (``binomial_std``: what a fixed predictor's accuracy
  would vary by, sqrt(p (1 - p) / batch));
* ``arch_std``: the standard deviation over the architectures of their mean rewards,
  what the controller has to tell apart, and ``snr`` = arch_std / noise_std;
* ``rho``: the mean Spearman rho, over minibatches, between one minibatch's rewards and
  each architecture's mean over all the minibatches in that mode;
* ``rho_ref``: the same against a reference that no mode shares: each architecture's
  accuracy on the whole validation split with BN statistics recalibrated for it
  (``eval_bn: recalibrate``), the supernet's best estimate of how good it is.

    python benchmarks/studies/reward_noise.py RUN_DIR --data-dir DIR [--archs 20] [--batches 20]
"""
from __future__ import annotations

import sys
import time

import numpy as np
import torch

import _study
from enas.nas.controller import RandomPolicy
from enas.errors import ConfigError
from enas.evaluate.stats import spearman_rho  # handles ties: rewards on one minibatch repeat
from enas.runs import reopen_search

MODES = {"batch": "enas", "running": "official macro", "train": "official micro"}


def add_arguments(p) -> None:
    """The study's options."""
    p.add_argument("run_dir", help="a search run folder of an image space")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--archs", type=int, default=20, help="architectures drawn uniformly (default 20)")
    p.add_argument("--batches", type=int, default=20, help="reward minibatches per architecture (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--space-module", metavar="FILE", default=None,
                   help="the Python file (or module) of the run's space, if it is your own: a run folder's files "
                        "never make enas import code")


def run(args) -> int:
    """Score the architectures in each mode and print one line per mode."""
    if args.archs < 2 or args.batches < 2:
        raise ConfigError(f"--archs {args.archs} --batches {args.batches}: give 2 or more of each (a spread needs two)")
    t0 = time.monotonic()
    search = reopen_search(args.run_dir, args.data_dir, torch.device("cpu"), space_module=args.space_module)
    task, model = search.task, search.supernet
    if not hasattr(task, "eval_bn"):
        raise ConfigError(f"{args.run_dir}: a search of space {search.space.name}, whose reward has no BN modes; "
                          f"give the run folder of an image search")
    archs = RandomPolicy(search.space.decisions())(args.archs, generator=torch.Generator().manual_seed(args.seed)).archs
    task.eval_bn = "recalibrate"
    ref = np.array([task.score(model, a, 0)[0] for a in archs])
    for mode, who in MODES.items():
        task.eval_bn = mode
        torch.manual_seed(args.seed)  # the same dropout masks for every run of this script
        r = np.array([[float(task.reward(model, a, 1, b)) for b in range(args.batches)] for a in archs])
        mean = r.mean(1)
        noise, spread = r.std(1, ddof=1).mean(), mean.std(ddof=1)
        rho = [spearman_rho(r[:, b], mean) for b in range(args.batches)]
        rho_ref = [spearman_rho(r[:, b], ref) for b in range(args.batches)]
        print(f"mode={mode} ({who}) reward_mean={r.mean():.4f} noise_std={noise:.4f} "
              f"binomial_std={np.sqrt(r.mean() * (1 - r.mean()) / task.train_batch):.4f} arch_std={spread:.4f} "
              f"snr={spread / noise:.2f} rho={np.nanmean(rho):.3f} rho_ref={np.nanmean(rho_ref):.3f} "
              f"rho_mean_vs_ref={spearman_rho(mean, ref):.3f}", flush=True)
    print(f"space={search.space.name} batch={task.train_batch} archs={len(archs)} batches={args.batches} "
          f"reference_mean={ref.mean():.4f} seconds={time.monotonic() - t0:.1f}")
    return 0


def main(argv=None) -> int:
    return _study.main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
