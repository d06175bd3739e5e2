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

**Under a parameter budget** (the run's ``search.max_params``) the search only ever sees
the architectures that fit it, so it is measured among them too: the table's rows are
counted as the search counts them (enas/nas/budget.py, on the network to retrain), the
ranked cells and random search's candidates are drawn among those that fit (as the
search's own verdict draws them), and every percentile is reported twice, among all of
the table's rows and among the rows that fit (``*_fit_percentile*``, ``fit_rows``): the
largest cells that fit are the bar there, not the largest cell of the space. The
policy's mean is then that of the policy truncated to what fits (the search's rejection
sampling), the ranked cells being a uniform sample of exactly those. The cells
are scored once, among those that fit; the unconstrained ranking is not measured beside
it (it would double the scoring).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import torch

from enas.nas.archfile import load_arch
from enas.nas.controller import RandomPolicy
from enas.nas.derive import Candidate
from enas.errors import ConfigError, DataError, printable
from enas.nas.final_stage import train_candidates
from enas.evaluate.rank import SCORES, arch_text, parse_arch_line, scorer
from enas.evaluate.stats import kendall_tau_b, kendall_tau_b_se, within_pairs
from enas.evaluate.table import SHIPPED, Table, read_shipped, read_table


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
    space, budget = search.space, search.budget
    limit = budget.max_params
    fitting = [table.only(budget.fits) for table, _ in tables] if limit is not None else None
    first = fitting[0] if fitting else tables[0][0]
    if fitting and len(first.accuracy) < 2:
        raise DataError(f"{len(first.accuracy)} of the {len(tables[0][0].accuracy):,} rows of table "
                        f"{printable(first.path)} fit the run's search.max_params = {limit:,} (counted on "
                        f"search.budget_model); nothing to rank: give a table of architectures that fit")
    if not 2 <= cells <= len(first.accuracy):
        rows = "the table's rows" + (f" that fit search.max_params = {limit:,}" if fitting else "")
        raise ConfigError(f"--cells must be in 2..{len(first.accuracy)} ({rows}), got {cells}")
    if draws < 0 or (candidates is not None and candidates < 1):
        raise ConfigError("--draws must be >= 0 and --candidates >= 1")
    texts = first.sample(cells, seed)
    archs = [first.archs[t] for t in texts]
    out: dict = {"run": str(search.run_dir), "cells": cells, "seed": seed}
    if limit is not None:
        out["max_params"] = limit
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
    uniform = RandomPolicy(space.decisions())
    for d in range(draws):
        gen = torch.Generator().manual_seed(10_007 * (d + 1) + seed)
        with torch.no_grad():  # under a budget, only draws that fit (without one: the first n drawn)
            pool = budget.archs(lambda k: uniform(k, generator=gen).archs, n, "random search's draws")
        best, final = pick(search, pool, of)
        scored_picks.append(best.arch)
        picks.append(final.arch)
        say(f"random search, draw {d + 1}/{draws}: {arch_text(space, final.arch)}")
    out["random_candidates"] = n
    out["random_picks"] = [arch_text(space, a) for a in picks]
    params = values.get("params")
    largest = [t for t, v in zip(texts, params) if v == max(params)] if params else []
    placed = Placed(found_arch, largest, picks, scored_picks, final_candidates(search))
    out["tables"] = [_on(table, title, search, texts, values, logp, placed, fitting[k] if fitting else None)
                     for k, (table, title) in enumerate(tables)]
    return out


@dataclass
class Placed:
    """What ``enas table`` places in each table: the found cell, the largest ranked cells
    (texts), random search's picks after and before the final stage."""

    found: dict | None
    largest: list
    picks: list
    scored_picks: list
    candidates: list  # the final derive's, in the run's order


def final_candidates(search) -> list:
    """The final derive's candidates (validated when the checkpoint loaded), in the order
    of the run's score: where the final stage chose from."""
    return [c["arch"] for c in search.final.get("candidates", [])]


def _on(table: Table, title: str, search, texts, values, logp, placed: Placed, fitting: Table | None) -> dict:
    """The figures of one table; ``fitting``: its rows that fit the run's budget, if any."""
    space = search.space
    keep = [k for k, t in enumerate(texts) if t in table.accuracy]  # a second table may lack a cell
    truth = [table.accuracy[texts[k]] for k in keep]
    t: dict = {"table": str(table.path), "title": title, "metric": table.metric, "table_rows": len(table.accuracy),
               "cells": len(keep)}
    if fitting is not None:
        t["fit_rows"] = len(fitting.accuracy)
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
    if placed.found is not None:
        t["found_accuracy"] = table.accuracy.get(arch_text(space, placed.found), math.nan)
    t.update(_percentiles(table, table, search, truth, logp[keep], placed))
    if fitting is not None:  # the same, among the rows that fit (the effective sample size is the same)
        t.update({k.replace("percentile", "fit_percentile"): v for k, v in
                  _percentiles(fitting, table, search, truth, logp[keep], placed).items() if k != "policy_ess"})
    return t


def _percentiles(among: Table, table: Table, search, truth, logp, placed: Placed) -> dict:
    """The percentiles, among ``among``'s rows, of what ``placed`` holds and of the
    policy's samples, the accuracies read from ``table``."""
    space, t = search.space, {}

    def at(arch) -> float:  # an architecture's percentile (NaN if not in the table)
        text = arch_text(space, arch)
        return among.percentile(table.accuracy[text]) if text in table.accuracy else math.nan

    if placed.found is not None:
        t["found_percentile"] = at(placed.found)
        if search.trained:  # the final stage trained the final derive's best first: its own pick
            t["found_before_final_stage_percentile"] = at(search.trained[0].arch)
    if placed.largest:
        t["largest_percentile"] = _mean([among.percentile(table.accuracy[x]) for x in placed.largest
                                         if x in table.accuracy])
    pct = torch.tensor([among.percentile(x) for x in truth], dtype=torch.float64)
    t.update(_weighted(logp, pct))
    if placed.candidates:
        t["candidates_percentiles"] = [at(a) for a in placed.candidates]
        t["candidates_best_percentile"] = max((p for p in t["candidates_percentiles"] if math.isfinite(p)),
                                              default=math.nan)
    t["random_percentiles"] = [at(a) for a in placed.picks]
    t["random_mean_percentile"] = _mean(t["random_percentiles"])
    if search.cfg.search.final_train:
        t["random_before_final_stage_percentiles"] = [at(a) for a in placed.scored_picks]
        t["random_before_final_stage_mean_percentile"] = _mean(t["random_before_final_stage_percentiles"])
    return t


def _mean(values) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan
