"""``enas table RUN [--table CSV]``: a search run measured on published tables.

For one finished (or stopped) search run and a table of stand-alone accuracies of its
space (``--table``; for nb201 runs by default the two NAS-Bench-201 tables that ship
with enas, the 200-epoch one first: enas/evaluate/table.py), it reports for each table:

* **ranking**: Kendall tau-b (with its jackknife standard error) against the table of
  the run's own scores of ``cells`` architectures drawn uniformly from the table, and
  beside it the same for the supernet alone and for every training-free score (the
  floors: a weight-sharing ranking that does not beat counting parameters has shown
  nothing); and within groups of equal parameter count, the pairs of those groups
  pooled (what a score knows beyond counting parameters);
* **found**: the table accuracy and percentile (among all of the table's rows) of the
  run's ``best_arch.yaml``, beside the largest of the ranked cells (the parameter-count
  pick);
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
from ..derive import Candidate
from ..errors import ConfigError, printable
from ..final_stage import train_candidates
from ..rank import SCORES, arch_text, parse_arch_line, scorer
from .stats import kendall_tau_b, kendall_tau_b_se, within_pairs
from .table import SHIPPED, Table, read_shipped, read_table


def policy_expectation(policy, archs: list, values: list[float]) -> dict[str, float]:
    """The mean of ``values`` over the architectures a policy samples, estimated from
    uniformly drawn ``archs``: each weighted by its probability under the policy
    (self-normalised importance sampling; the uniform proposal's density is a constant).
    The effective sample size says how many of them carry the estimate: all for a
    uniform policy, a few for a sharp one (then trust it less)."""
    with torch.no_grad():
        logp = policy.evaluate(archs).log_prob.double()
    return _expectation(logp, torch.tensor(values, dtype=torch.float64))


def _expectation(logp: torch.Tensor, v: torch.Tensor) -> dict[str, float]:
    w = torch.exp(logp - logp.max())
    return {"policy_mean": float((w * v).sum() / w.sum()), "uniform_mean": float(v.mean()),
            "policy_ess": float(w.sum() ** 2 / (w * w).sum())}


def _weighted(logp: torch.Tensor, pct: torch.Tensor) -> dict[str, float]:
    """``_expectation`` of the cells' percentiles, named as ``enas table`` reports them."""
    return {k.replace("mean", "mean_percentile"): v for k, v in _expectation(logp, pct).items()}


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


def pick(search, archs: list, of) -> tuple[Candidate, Candidate]:
    """The run's own derive on ``archs``: (the best by score, the final stage's pick among
    the best ``final_train`` trained briefly; the same when the run has no final stage)."""
    scored = sorted((Candidate(a, *of(a)) for a in archs), key=lambda c: -_finite(c.score))
    k = search.cfg.search.final_train
    if not k:
        return scored[0], scored[0]
    trained = train_candidates(scored[:k], [], space=search.space, model_args=search.model_args, task=search.task,
                               device=search.device, cfg=search.cfg, stop=search.stop, run_dir=search.run_dir,
                               resume_command=search.resume_command(), save=lambda: None)
    return scored[0], max(trained, key=lambda c: _finite(c.score))


def _finite(v: float) -> float:
    return v if math.isfinite(v) else -math.inf


def load_tables(search, table_path=None, arch_column=None, metric_column=None) -> list[tuple[Table, str]]:
    """(table, title) to measure on: ``table_path``, or the tables that ship for the run's
    space, the headline first (table.SHIPPED); a space without one needs ``--table``."""
    space = search.space
    text_of, parse = (lambda a: arch_text(space, a)), (lambda line: parse_arch_line(space, line))
    if table_path is not None:
        return [(read_table(table_path, space, text_of, parse, arch_column, metric_column), "")]
    if arch_column or metric_column:
        raise ConfigError("--arch-column and --metric-column name the columns of a --table CSV; give --table")
    shipped = SHIPPED.get(space.name)
    if not shipped:
        raise ConfigError(f"no table of stand-alone accuracies ships for space {printable(space.name)} (only for "
                          f"{', '.join(SHIPPED)}); give one with --table CSV")
    return [(read_shipped(s, space, text_of, parse), s.title) for s in shipped]


def measure(search, tables: list[tuple[Table, str]], cells: int = 200, seed: int = 0, draws: int = 5,
            candidates: int | None = None, say=print) -> dict:
    """The run measured on each of ``tables`` (the first is the headline): the scores, the
    found cell, random search's picks and the policy are computed once, on cells drawn
    from the first table, and placed in each."""
    space = search.space
    first = tables[0][0]
    if not 2 <= cells <= len(first.accuracy):
        raise ConfigError(f"--cells must be in 2..{len(first.accuracy)} (the table's rows), got {cells}")
    if draws < 0 or (candidates is not None and candidates < 1):
        raise ConfigError("--draws must be >= 0 and --candidates >= 1")
    texts = first.sample(cells, seed)
    archs = [first.archs[t] for t in texts]
    out: dict = {"run": str(search.run_dir), "cells": cells, "seed": seed}
    values = {}
    for name in scorers_for(search):
        t0 = time.monotonic()
        of = scorer(search, name)
        values[name] = [of(a)[0] for a in archs]
        say(f"scored {cells} cells by {name} ({time.monotonic() - t0:.0f}s)")
    found = search.run_dir / "best_arch.yaml"
    found_arch = None
    if os.path.lexists(found):  # the run's own file: never read through a link
        _, found_arch, _ = load_arch(found, follow=False)
        out["found"] = arch_text(space, found_arch)
    with torch.no_grad():
        logp = search.policy.evaluate(archs).log_prob.double()
    n = candidates or search.cfg.search.derive_samples
    of = scorer(search, "run")
    picks, scored_picks = [], []
    for d in range(draws):
        gen = torch.Generator().manual_seed(10_007 * (d + 1) + seed)
        with torch.no_grad():
            pool = RandomPolicy(space.decisions())(n, generator=gen).archs
        best, final = pick(search, pool, of)
        scored_picks.append(best.arch)
        picks.append(final.arch)
        say(f"random search, draw {d + 1}/{draws}: {arch_text(space, final['arch'])}")
    out["random_candidates"] = n
    out["random_picks"] = [arch_text(space, a) for a in picks]
    params = values.get("params")
    largest = [t for t, v in zip(texts, params) if v == max(params)] if params else []
    out["tables"] = [_on(table, title, search, texts, values, logp, found_arch, largest, picks, scored_picks)
                     for table, title in tables]
    return out


def _on(table: Table, title: str, search, texts, values, logp, found_arch, largest, picks, scored_picks) -> dict:
    """The figures of one table."""
    space = search.space

    def at(arch) -> float:  # an architecture's percentile in the table (NaN if not in it)
        text = arch_text(space, arch)
        return table.percentile(table.accuracy[text]) if text in table.accuracy else math.nan

    keep = [k for k, t in enumerate(texts) if t in table.accuracy]  # a second table may lack a cell
    truth = [table.accuracy[texts[k]] for k in keep]
    t: dict = {"table": str(table.path), "title": title, "metric": table.metric, "table_rows": len(table.accuracy),
               "cells": len(keep)}
    groups = [values["params"][k] for k in keep] if "params" in values else None
    if groups is not None:
        t["within_pairs"] = within_pairs(groups)
    for name, v in values.items():
        v = [v[k] for k in keep]
        t[f"tau_{name}"] = kendall_tau_b(v, truth)
        t[f"tau_{name}_se"] = kendall_tau_b_se(v, truth)
        if groups is not None and name != "params":
            t[f"tau_{name}_within"] = kendall_tau_b(v, truth, groups)
            t[f"tau_{name}_within_se"] = kendall_tau_b_se(v, truth, groups)
    if found_arch is not None:
        text = arch_text(space, found_arch)
        t["found_accuracy"] = table.accuracy.get(text, math.nan)
        t["found_percentile"] = at(found_arch)
        if search.trained:  # the final stage trained the final derive's best first: its own pick
            t["found_before_final_stage_percentile"] = at(search.trained[0].arch)
    if largest:
        t["largest_percentile"] = _mean([table.percentile(table.accuracy[x]) for x in largest if x in table.accuracy])
    pct = torch.tensor([table.percentile(x) for x in truth], dtype=torch.float64)
    t.update(_weighted(logp[keep], pct))
    t["random_percentiles"] = [at(a) for a in picks]
    t["random_mean_percentile"] = _mean(t["random_percentiles"])
    if search.cfg.search.final_train:
        t["random_before_final_stage_percentiles"] = [at(a) for a in scored_picks]
        t["random_before_final_stage_mean_percentile"] = _mean(t["random_before_final_stage_percentiles"])
    return t


def _mean(values) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan
