"""``enas table RUN --table CSV``: a search run measured on a published table.

For one finished (or stopped) search run and a table of stand-alone accuracies of its
space (enas/evaluate/table.py; NAS-Bench-201's CIFAR-10 table for nb201 runs), it
reports:

* **ranking**: Kendall tau-b (with its jackknife standard error) against the table of
  the run's own scores of ``cells`` architectures drawn uniformly from the table, and
  beside it the same for the supernet alone and for every training-free score (the
  floors: a weight-sharing ranking that does not beat counting parameters has shown
  nothing);
* **found**: the table accuracy and percentile (among all of the table's rows) of the
  run's ``best_arch.yaml``;
* **random search with weight sharing** (Li & Talwalkar 2019) on the same supernet:
  ``draws`` times, ``candidates`` uniformly drawn architectures (default: as many as the
  run's derive samples) scored by the run's own scoring on the run's final-derive
  data, its final stage applied to the best when the run has one; the percentile of
  each pick and their mean (one draw is a lottery);
* **policy**: the mean percentile of the architectures the trained policy samples,
  estimated from the ranked cells by importance weighting (no training), with its
  effective sample size.
"""
from __future__ import annotations

import math
import os
import time

import torch

from ..archfile import load_arch
from ..controller import RandomPolicy
from ..errors import ConfigError
from ..final_stage import train_candidates
from ..rank import SCORES, arch_text, parse_arch_line, scorer
from .stats import kendall_tau_b, kendall_tau_b_se
from .table import read_table


def policy_expectation(policy, archs: list, values: list[float]) -> dict[str, float]:
    """The mean of ``values`` over the architectures a policy samples, estimated from
    uniformly drawn ``archs``: each weighted by its probability under the policy
    (self-normalised importance sampling; the uniform proposal's density is a constant).
    The effective sample size says how many of them carry the estimate: all for a
    uniform policy, a few for a sharp one (then trust it less)."""
    with torch.no_grad():
        logp = policy.evaluate(archs).log_prob.double()
    w = torch.exp(logp - logp.max())
    v = torch.tensor(values, dtype=torch.float64)
    return {"policy_mean": float((w * v).sum() / w.sum()), "uniform_mean": float(v.mean()),
            "policy_ess": float(w.sum() ** 2 / (w * w).sum())}


def scorers_for(search) -> list[str]:
    """The run's own scoring (when it is not the supernet alone), the supernet, then the
    training-free floors that apply to the space's networks."""
    names = [n for n in SCORES if n != "run"]
    if not search.scoring.paper:
        names.insert(0, "run")
    if "naswot" in names and not _has_relu(search):
        names.remove("naswot")
    return names


def _has_relu(search) -> bool:
    return any(isinstance(m, torch.nn.ReLU) for m in search.supernet.modules())


def pick(search, archs: list, of) -> tuple[dict, dict]:
    """The run's own derive on ``archs``: (the best by score, the final stage's pick among
    the best ``final_train`` trained briefly; the same when the run has no final stage)."""
    scored = sorted(({"arch": a, "score": of(a)[0]} for a in archs), key=lambda c: -_finite(c["score"]))
    k = search.cfg.search.final_train
    if not k:
        return scored[0], scored[0]
    trained = train_candidates(search, scored[:k], [], lambda: None)
    return scored[0], max(trained, key=lambda c: _finite(c["score"]))


def _finite(v: float) -> float:
    return v if math.isfinite(v) else -math.inf


def measure(search, table_path, cells: int = 200, seed: int = 0, draws: int = 5, candidates: int | None = None,
            arch_column=None, metric_column=None, say=print) -> dict:
    space = search.space
    table = read_table(table_path, space, lambda a: arch_text(space, a), lambda line: parse_arch_line(space, line),
                       arch_column, metric_column)
    if not 2 <= cells <= len(table.accuracy):
        raise ConfigError(f"--cells must be in 2..{len(table.accuracy)} (the table's rows), got {cells}")
    if draws < 0 or (candidates is not None and candidates < 1):
        raise ConfigError("--draws must be >= 0 and --candidates >= 1")
    texts = table.sample(cells, seed)
    archs = [table.archs[t] for t in texts]
    truth = [table.accuracy[t] for t in texts]
    out: dict = {"run": str(search.run_dir), "table": str(table.path), "metric": table.metric,
                 "table_rows": len(table.accuracy), "cells": cells, "seed": seed}
    for name in scorers_for(search):
        t0 = time.monotonic()
        of = scorer(search, name)
        values = [of(a)[0] for a in archs]
        out[f"tau_{name}"] = kendall_tau_b(values, truth)
        out[f"tau_{name}_se"] = kendall_tau_b_se(values, truth)
        say(f"tau_{name}={out[f'tau_{name}']:.3f} +- {out[f'tau_{name}_se']:.3f} "
            f"({time.monotonic() - t0:.0f}s)")
    def at(arch) -> float:  # an architecture's percentile in the table (NaN if not in it)
        text = arch_text(space, arch)
        return table.percentile(table.accuracy[text]) if text in table.accuracy else math.nan

    found = search.run_dir / "best_arch.yaml"
    if os.path.lexists(found):  # the run's own file: never read through a link
        _, arch, _ = load_arch(found, follow=False)
        out["found"] = arch_text(space, arch)
        out["found_accuracy"] = table.accuracy.get(out["found"], math.nan)
        out["found_percentile"] = at(arch)
        if search.trained:  # the final stage trained the final derive's best first: its own pick
            out["found_before_final_stage_percentile"] = at(search.trained[0]["arch"])
    pct = [table.percentile(v) for v in truth]
    out.update({k.replace("mean", "mean_percentile"): v
                for k, v in policy_expectation(search.policy, archs, pct).items()})
    n = candidates or search.cfg.search.derive_samples
    of = scorer(search, "run")
    picks, scored_picks = [], []
    for d in range(draws):
        gen = torch.Generator().manual_seed(10_007 * (d + 1) + seed)
        with torch.no_grad():
            pool = RandomPolicy(space.decisions())(n, generator=gen).archs
        best, final = pick(search, pool, of)
        scored_picks.append(at(best["arch"]))
        picks.append(at(final["arch"]))
        say(f"random search, draw {d + 1}/{draws}: {arch_text(space, final['arch'])} at percentile {picks[-1]:.1f}")
    out["random_candidates"] = n
    out["random_percentiles"] = picks
    out["random_mean_percentile"] = _mean(picks)
    if search.cfg.search.final_train:
        out["random_before_final_stage_percentiles"] = scored_picks
        out["random_before_final_stage_mean_percentile"] = _mean(scored_picks)
    return out


def _mean(values) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan
