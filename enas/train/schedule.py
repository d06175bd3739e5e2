"""SGD and its learning-rate schedules for shared (search) and child (retrain) weights.

The LR is a pure function of the epoch, constant within an epoch (official code),
so a resumed run needs no scheduler state.
"""
from __future__ import annotations

import math

import torch

from enas.config import OptimSection


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


def make_sgd(params, cfg: OptimSection, fused: bool = False) -> torch.optim.SGD:
    """``fused``: the fused kernel, which can skip a step on the device (``found_inf``)."""
    return torch.optim.SGD(
        params,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
        fused=fused or None,
    )


def fill_momentum(opt: torch.optim.SGD) -> None:
    """Give every parameter a momentum buffer (zeros where it has none yet): the fused
    kernel needs all or none, and a supernet's parameters get gradients at different
    steps. buf = momentum * 0 + g at a parameter's first step is what SGD does anyway."""
    for group in opt.param_groups:
        if group["momentum"]:
            for p in group["params"]:
                st = opt.state[p]
                if st.get("momentum_buffer") is None:
                    st["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)


def nonfinite_check(cfg: OptimSection, device) -> str:
    """OptimSection.nonfinite_check resolved: auto decides on the device on CUDA, where a
    host sync per step would stall the queue of kernels, and on the host elsewhere."""
    if cfg.nonfinite_check != "auto":
        return cfg.nonfinite_check
    return "device" if torch.device(device).type == "cuda" else "host"


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr
