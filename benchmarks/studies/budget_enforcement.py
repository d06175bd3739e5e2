"""How to hold a search to a parameter budget (search.max_params): rejection or a penalty.

A controller trained by REINFORCE (the recipe's controller settings,
configs/nb201_search_cpu.yaml) on a reward that grows with the parameter count (the log of
the count, scaled to [0, 1]: the pull toward large cells that a supernet's and most
training-free scores have), on NAS-Bench-201 cells counted on NB201's network (C=16, 5
cells per stage), under a budget:

* ``rejection``: enas/nas/budget.py's draws and update: only cells that fit are rewarded, and
  the update also holds the draws refused on the way with the lowest reward of those kept;
* ``rejection_fit_only``: the same draws, the update on the kept draws alone;
* ``penalty``: MnasNet's reward (Tan et al., CVPR 2019), R * (params / budget)^w with
  w = -1 above the budget (its hard form) and 0 below, on unconstrained draws;
* ``none``: no budget, for reference.

For each: the share of the policy's draws over the budget (what a shared phase driven by
the policy would train, and what a derive would score) at the start and the end, the
share of draws that fit (the cost of rejection: 1 / fit draws per architecture), and the
count of the policy's most likely cell at the end. Also the share of uniform draws that fit,
and the time of one count (closed form) against building the child.

    python benchmarks/studies/budget_enforcement.py --budget 400000 --updates 300

Every figure is printed as a ``name=value`` line. No table is read: the reward is the count.
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from enas.nas.budget import Budget, budget_model_args
from enas.config import load_search
from enas.nas.controller import Controller, RandomPolicy
from enas.errors import UserError
from enas.nas.reinforce import Reinforce
from enas.nas.space import build_space
from enas.nas.training_free import count_params


def emit(name: str, value) -> None:
    print(f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}", flush=True)


def train(mode: str, space, budget: Budget, cfg, updates: int, seed: int) -> None:
    torch.manual_seed(seed)
    policy = Controller(space.decisions(), space.initial_anchors, hidden=cfg.hidden,
                        tanh_constant=cfg.tanh_constant, temperature=cfg.temperature, init_range=cfg.init_range)
    rl = Reinforce(policy, cfg)
    gen = torch.Generator().manual_seed(seed)
    free = Budget(space, budget.model_args, budget.kwargs, None)
    top = math.log(max(free.count(a) for a in RandomPolicy(space.decisions())(2000, generator=gen).archs))

    def over(n=500) -> float:
        with torch.no_grad():
            return sum(free.count(a) > budget.max_params for a in policy(n, generator=gen).archs) / n

    emit(f"{mode}_over_budget_start", over())
    budget.fit_rate()
    for step in range(updates):
        refused = None
        if mode.startswith("rejection"):
            try:
                sample, refused = budget.draw_both(lambda k: policy(k, generator=gen), cfg.num_aggregate, "it")
            except UserError:
                emit(f"{mode}_stopped_at_update", step)
                break
        else:
            sample = policy(cfg.num_aggregate, generator=gen)
        rewards = []
        for a in sample.archs:
            n = free.count(a)
            r = math.log(n) / top
            if mode == "penalty" and n > budget.max_params:
                r *= (n / budget.max_params) ** -1.0
            rewards.append(r)
        if mode == "rejection":
            sample, rewards = budget.with_refused(sample, rewards, refused)
        rl.step(sample, rewards)
    if mode.startswith("rejection"):
        emit(f"{mode}_fit_share_during_training", budget.fit_rate())
    emit(f"{mode}_over_budget_end", over())
    with torch.no_grad():
        arch = max(policy(500, generator=gen).archs, key=lambda a: float(policy.evaluate([a]).log_prob))
    emit(f"{mode}_likeliest_cell_params", free.count(arch))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", type=int, default=400_000)
    p.add_argument("--updates", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(1)
    space = build_space("nb201")
    margs = budget_model_args(space, {})
    budget = Budget(space, margs, {"num_classes": 10, "image_size": 32}, a.budget)
    gen = torch.Generator().manual_seed(a.seed)
    uniform = RandomPolicy(space.decisions())(20_000, generator=gen).archs
    emit("uniform_fit_share", sum(budget.fits(u) for u in uniform) / len(uniform))
    t = time.perf_counter()
    for u in uniform[:2000]:
        Budget(space, margs, budget.kwargs, None).count(u)  # a fresh cache: every count computed
    emit("count_closed_form_ms", (time.perf_counter() - t) / 2 * 1000 / 1000)
    t = time.perf_counter()
    for u in uniform[:20]:
        count_params(space.child(u, margs))
    emit("count_built_child_ms", (time.perf_counter() - t) / 20 * 1000)
    cfg = load_search("configs/nb201_search_cpu.yaml").controller
    for mode in ("none", "penalty", "rejection_fit_only", "rejection"):
        t = time.perf_counter()
        train(mode, space, budget, cfg, a.updates, a.seed)
        emit(f"{mode}_seconds", time.perf_counter() - t)


if __name__ == "__main__":
    main()
