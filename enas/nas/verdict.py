"""A search's verdict, in one or two sentences a newcomer can read: did the controller
learn, and does the chosen architecture beat random architectures on the same supernet?

The controller: its policy's entropy (as a share of the uniform policy's, the most a
policy can have) when the search started and at its end, and the engine's collapse
warnings. A controller that never trained (every epoch a warm-up, no updates, or
``controller.kind: random``) is said to be one.

The comparison: ``RANDOM_DRAWS`` architectures drawn uniformly (seeded by the run's seed)
are scored as the final derive scored its candidates, on the same validation batches
(search.final_batches from the first), so the data's own difficulty is common to both
sides (a paired comparison). The margin is the chosen architecture's score minus the
random draws' mean, in standard errors: that mean's (the draws' spread over the square
root of their number: how much another handful of random draws would move it) and the
chosen score's own, combined as if independent, which errs on the cautious side.
Random search with weight sharing (Li & Talwalkar 2019) is the baseline a weight-sharing
search has to beat; a search that cannot beat random draws on its own supernet has not
used what the supernet knows. The chosen score was measured on the data that picked it
among the final derive's few candidates, so a small margin is no proof either way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from enas.nas.controller import RandomPolicy, build_policy

RANDOM_DRAWS = 8  # a few: one scored validation pass each (the final derive scores 5-20 candidates)
ENTROPY_SAMPLES = 64  # architectures whose mean entropy stands for the policy's
MOVED = 0.02  # a policy whose entropy fell by less than 2 % of uniform's has barely moved


def never_trains(cfg) -> str | None:
    """Why a config's controller never trains, or None when it does (``controller.kind:
    random`` is random search by choice, not a mistake)."""
    c, s = cfg.controller, cfg.search
    if c.kind == "random":
        return None
    if c.updates_per_epoch == 0:
        return "controller.updates_per_epoch is 0"
    if s.epochs <= s.controller_warmup_epochs:
        return (f"search.epochs ({s.epochs}) is not above search.controller_warmup_epochs "
                f"({s.controller_warmup_epochs}): every epoch is a warm-up")
    return None


def warning(cfg) -> str | None:
    """The line a search prints when it starts, if its controller will never train."""
    why = never_trains(cfg)
    if why is None:
        return None
    return (f"warning: the controller never trains in this search ({why}); its architectures come from the "
            f"untrained, near-uniform policy. Raise search.epochs above the warm-up to let it learn.")


def _entropy(policy, decisions_entropy: float, seed: int) -> float:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sample = policy(ENTROPY_SAMPLES, generator=gen)
    return float(sample.entropy.mean()) / decisions_entropy if decisions_entropy > 0 else math.nan


@dataclass(frozen=True)
class Finished:
    """What the verdict reads of a finished search."""

    cfg: Any  # SearchConfig
    space: Any
    policy: torch.nn.Module  # as trained
    updates: int  # controller updates made
    uniform_entropy: float  # nats: the uniform policy's
    collapse_epochs: list[int]  # the epochs that raised the collapse warning
    final: dict  # the final derive's result (arch, candidates; trained after a final stage)
    scoring: Any  # enas/nas/scoring.py Scoring: scores on the final derive's batches
    supernet: torch.nn.Module
    budget: Any  # enas/nas/budget.py Budget: random draws that fit search.max_params


def controller_facts(search: Finished) -> dict:
    """kind, whether it trained (and why not), entropy at the start and now (share of
    uniform's), the epochs with a collapse warning."""
    cfg, s = search.cfg, search.cfg.search
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed + 2)  # the policy's initial weights, as Search made them
        start = build_policy(cfg.controller.kind, search.space, cfg.controller)
    why = never_trains(cfg)
    if why is None and cfg.controller.kind != "random" and search.updates == 0:
        why = "no controller update was made"
    u = search.uniform_entropy
    return {"kind": cfg.controller.kind, "trained": why is None and cfg.controller.kind != "random",
            "why_not": why, "entropy_start": _entropy(start, u, s.seed),
            "entropy_end": _entropy(search.policy, u, s.seed),
            "collapse_epochs": list(search.collapse_epochs)}


def compare_with_random(search: Finished) -> dict:
    """The chosen architecture's score against ``RANDOM_DRAWS`` random architectures', all
    on the final derive's validation batches."""
    s = search.cfg.search
    chosen = search.final["arch"]
    known = [c for c in search.final.get("candidates") or [] if c.get("arch") == chosen]
    if known:  # the final derive scored it on these batches already
        score, se = known[0]["score"], known[0]["se"]
    else:
        score, se = search.scoring.score(search.supernet, chosen, s.final_batches, 0)
    gen = torch.Generator().manual_seed(s.seed * 7_927 + 11)
    uniform = RandomPolicy(search.space.decisions())
    with torch.no_grad():  # under search.max_params, random architectures that fit it, as the controller's must
        archs = search.budget.archs(lambda k: uniform(k, generator=gen).archs, RANDOM_DRAWS, "the verdict's random draws")
    random = [search.scoring.score(search.supernet, a, s.final_batches, 0)[0] for a in archs]
    out = compare(score, se, random)
    name, value, _ = search.scoring.as_metric(score, se)
    random_metric = search.scoring.as_metric(out["random_mean"], 0.0)[1]
    out.update(metric=name, chosen_metric=value, random_metric=random_metric,
               final_stage=bool(search.final.get("trained")))
    return out


def compare(score: float, se: float, random: list[float]) -> dict:
    """The margin of ``score`` (standard error ``se``) over the mean of ``random`` (scores
    on the same data), in standard errors of that difference."""
    finite = [v for v in random if math.isfinite(v)]
    n = len(finite)
    mean = sum(finite) / n if n else math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1)) if n > 1 else math.nan
    diff_se = math.hypot(sd / math.sqrt(n), se if math.isfinite(se) else 0.0) if n > 1 else math.nan
    diff = score - mean
    if not (math.isfinite(diff) and math.isfinite(diff_se)):
        margin = math.nan
    elif diff_se > 0:
        margin = diff / diff_se
    else:
        margin = math.copysign(math.inf, diff) if diff else 0.0
    return {"chosen_score": score, "chosen_se": se, "random_draws": n, "random_mean": mean,
            "difference_se": diff_se, "margin_in_se": margin, "beats": sum(score > v for v in finite)}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _num(x: float) -> str:
    return f"{x:.3f}" if abs(x) < 10 else f"{x:.4g}"


def text(ctrl: dict, cmp: dict | None, smoke: bool = False) -> str:
    """The verdict: a sentence on the controller, one on the chosen architecture."""
    a, b = ctrl["entropy_start"], ctrl["entropy_end"]
    barely = not (a - b >= MOVED)  # NaN: nothing to say it moved
    if ctrl["kind"] == "random":
        first = "No controller learned here (controller.kind: random): the candidates were uniform draws."
    elif not ctrl["trained"]:
        first = (f"The controller did not train ({ctrl['why_not']}): its policy stayed the untrained one "
                 f"(entropy {_pct(b)} of uniform's).")
    elif ctrl["collapse_epochs"]:
        ep = ", ".join(str(e) for e in ctrl["collapse_epochs"])
        first = (f"The controller learned but may have collapsed: policy entropy went from {_pct(a)} to {_pct(b)} "
                 f"of uniform's, with a collapse warning at epoch {ep}.")
    elif barely:
        first = f"The controller barely learned: policy entropy stayed at {_pct(b)} of uniform's (from {_pct(a)})."
    else:
        first = f"The controller learned: policy entropy fell from {_pct(a)} to {_pct(b)} of uniform's, no collapse."
    if cmp is None or not math.isfinite(cmp["margin_in_se"]):
        return first + (" Whether the chosen architecture beats random ones could not be measured (too few "
                        "finite scores).")
    z = cmp["margin_in_se"]
    what = cmp.get("metric", "score").replace("_", " ")
    figures = (f"{what} {_num(cmp.get('chosen_metric', cmp['chosen_score']))} against "
               f"{_num(cmp.get('random_metric', cmp['random_mean']))} for {cmp['random_draws']} random ones on "
               f"the same validation data")
    if z >= 2:
        return first + f" The chosen architecture beats random architectures on this supernet by {z:.1f} standard " \
                       f"errors ({figures})."
    if z > -2:
        how = "is no better than"
    else:
        how = "scores below"
    head = f"The chosen architecture {how} random architectures on this supernet ({z:+.1f} standard errors"
    return first + f" {head}; {figures}): the search did not help here, because {_reason(ctrl, cmp, barely, smoke)}."


def _reason(ctrl: dict, cmp: dict, barely: bool, smoke: bool) -> str:
    if ctrl["kind"] == "random":
        return "its candidates were random draws too, and the supernet does not tell them apart"
    if not ctrl["trained"]:
        return "the controller did not train"
    if cmp.get("final_stage") and cmp["margin_in_se"] < 0:
        return "the final stage chose it by brief training from scratch, which disagrees with this supernet"
    if barely:
        return "the policy stayed near uniform, so its candidates were much like random ones"
    if smoke:
        return "a smoke run's supernet is tiny and barely trained (expected here)"
    return ("the supernet's scores do not separate what the controller found from random architectures; a longer "
            "search or more validation data may")


def compute(search: Finished) -> dict:
    """The verdict of a finished search: its text and the figures behind it."""
    ctrl = controller_facts(search)
    cmp = compare_with_random(search)
    return {"text": text(ctrl, cmp, search.cfg.search.smoke), **ctrl, **{k: v for k, v in cmp.items()}}
