"""SGD and its learning-rate schedules for shared (search) and child (retrain) weights.

The LR is a pure function of the epoch, constant within an epoch (official code),
so a resumed run needs no scheduler state.
"""
from __future__ import annotations

import math

import torch

from .config import OptimSection


def lr_at(cfg: OptimSection, epoch: int) -> float:
    """Learning rate for 0-based ``epoch``."""
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "exp":  # PTB: x0.96 per epoch after epoch 15 (paper 3.2)
        return cfg.lr * cfg.decay_rate ** max(0, epoch - cfg.decay_start)
    # Cosine with warm restarts (SGDR; official: T0 = 10, Tmul = 2, restarts at 10, 30, 70, ...).
    period, e = cfg.t0, epoch
    while e >= period:
        e -= period
        period *= cfg.t_mul
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * e / period))


def make_sgd(params, cfg: OptimSection) -> torch.optim.SGD:
    return torch.optim.SGD(
        params,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    )


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr
