"""How BN and dropout while scoring change a CIFAR controller reward (the choice behind
the image task's reward mode; docs/fidelity.md).

A controller reward is the accuracy of one sampled architecture of the supernet on one
shuffled validation minibatch of the training batch size (enas/tasks/image.py
``reward``). The official code scored it in two ways of its own:

* ``moving averages``: macro, ``general_child.py`` 691 (``_model(x, False)``): BN with
  the supernet's moving averages, gathered over every architecture trained, dropout off;
* ``batch stats + dropout``: micro, ``micro_child.py`` 804 (``is_training=True``): BN
  with the minibatch's statistics and the FC dropout left on;

against enas's ``batch stats``: the minibatch's BN statistics, dropout off. This script
reopens a search run's trained supernet, draws architectures uniformly, scores each on
the same reward minibatches in each mode, and prints per mode the mean reward, the
reward noise (the standard deviation over minibatches of one architecture, averaged
over the architectures) and how well one minibatch ranks the architectures (the mean
Spearman rho, over minibatches, between the one-minibatch rewards and each
architecture's mean over all the minibatches in that mode).

    python benchmarks/reward_noise.py RUN_DIR --data-dir DIR [--archs 20] [--batches 20]
"""
from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
import torch
import torch.nn as nn

from enas.controller import RandomPolicy
from enas.runs import reopen_search

MODES = {  # name -> (BN with the minibatch's statistics, dropout on)
    "batch stats (enas)": (True, False),
    "moving averages (official macro)": (False, False),
    "batch stats + dropout (official micro)": (True, True),
}


def spearman(a, b) -> float:
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


@contextlib.contextmanager
def scoring_mode(model: nn.Module, bn_batch: bool, dropout_on: bool):
    """Eval mode and no grad, with BN on batch statistics and/or dropout on; the BN
    buffers a training-mode BN updates are put back afterwards."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [{k: v.clone() for k, v in m._buffers.items() if v is not None} for m in bns]
    was = model.training
    model.eval()
    for m in model.modules():
        if (bn_batch and m in bns) or (dropout_on and isinstance(m, nn.Dropout)):
            m.train()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, b in zip(bns, saved):
            m._buffers.update(b)
        model.train(was)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--archs", type=int, default=20)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.monotonic()
    search = reopen_search(args.run_dir, args.data_dir, torch.device("cpu"))
    task, model = search.task, search.supernet
    archs = RandomPolicy(search.space.decisions())(args.archs, generator=torch.Generator().manual_seed(args.seed)).archs
    ours = [float(task.reward(model, archs[0], 1, b)) for b in range(3)]
    for name, (bn_batch, dropout_on) in MODES.items():
        task._scoring = lambda m, a, bn=bn_batch, dr=dropout_on: scoring_mode(m, bn, dr)  # noqa: E731
        torch.manual_seed(args.seed)  # the same dropout masks for every run of this script
        r = np.array([[float(task.reward(model, a, 1, b)) for b in range(args.batches)] for a in archs])
        if name.startswith("batch stats (enas)"):  # the monkey-patched mode is the task's own
            assert np.allclose(r[0, :3], ours), (r[0, :3], ours)
        mean = r.mean(1)
        rho = [spearman(r[:, b], mean) for b in range(args.batches)]
        print(f"mode={name!r} reward_mean={r.mean():.4f} reward_noise_std={r.std(1, ddof=1).mean():.4f} "
              f"rho_one_batch_vs_mean={np.mean(rho):.3f} (min {np.min(rho):.3f})")
    del task._scoring
    print(f"space={search.space.name} batch={task.train_batch} archs={len(archs)} batches={args.batches} "
          f"seconds={time.monotonic() - t0:.1f}")


if __name__ == "__main__":
    main()
