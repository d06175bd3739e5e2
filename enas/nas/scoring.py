"""The score a search gives an architecture: its rewards, its derive, ``enas rank``.

The paper scores an architecture by the supernet alone: its accuracy (images) or
c / perplexity (text) on validation data with the shared weights. ``search.score``
(config.ScoreSection) can add training-free terms (enas/nas/training_free.py), which see
the untrained child instead. Terms on different scales are made comparable by
standardising each over ``reference`` uniformly drawn architectures, robustly:
z = (value - median) / (IQR / 1.349) (the interquartile range over 1.349 is the
standard deviation of a normal distribution), then score = sum of weight * z. Robust
because both kinds of term have far outliers: a cell whose output ignores its input
scores chance accuracy on the supernet (0.1 where typical cells score 0.6) and -inf on
naswot; with a mean and a standard deviation those few cells set the scale and squeeze
every ordinary cell's differences (measured on NAS-Bench-201's table:
docs/evaluation.md). The training-free terms' centres and scales are fixed (the
untrained children do not change); the supernet's are measured again whenever the
supernet has trained since (``refresh``), so a reward always says "better or worse
than a random architecture on today's weights". Both are in the checkpoint, so a
reopened run scores as it did.

The supernet term's standard error is carried through the standardisation (the
training-free terms are exact), so a derive can still say whether its winner is
clearly ahead.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from enas.nas import training_free
from enas.nas.controller import RandomPolicy

MAX_CACHED = 200_000  # training-free values kept per run (a float each; a search scores far fewer)
# A standardised term is clipped to +-Z_CLIP: an untrained child whose output does not
# depend on its input (NB201 cells whose output node has only `none` edges: naswot and
# synflow -inf, the supernet at chance) is the worst, not infinitely worse, and a finite
# reward keeps it in the controller's update.
Z_CLIP = 5.0


class Scoring:
    def __init__(self, cfg_score, space, model_args, task, seed: int):
        self.cfg = cfg_score
        self.space, self.model_args, self.task, self.seed = space, model_args, task, int(seed)
        self.terms = cfg_score.terms()
        self.paper = cfg_score.paper
        self.free = [t for t in self.terms if t != "supernet"]
        self.stats: dict[str, tuple[float, float]] = {}  # term -> (centre, scale) over the reference archs
        self.supernet_version = -1  # the supernet weights the supernet's stats were measured on
        self.cache: dict[tuple[str, str], float] = {}

    def _key(self, arch) -> str:
        return repr(sorted(arch.items()))

    def free_value(self, term: str, arch) -> float:
        key = (term, self._key(arch))
        if key not in self.cache:
            if len(self.cache) >= MAX_CACHED:
                self.cache.clear()
            self.cache[key] = training_free.score(term, self.space, arch, self.model_args, self.task, self.seed)
        return self.cache[key]

    def reference_archs(self) -> list:
        gen = torch.Generator().manual_seed(self.seed * 7_919 + 3)  # the same archs on every call
        with torch.no_grad():
            return RandomPolicy(self.space.decisions())(self.cfg.reference, generator=gen).archs

    def refresh(self, supernet, version: int, num_batches: int, first: int = 0, stale_ok: bool = False) -> None:
        """Measure the terms' means and standard deviations where they are not known for
        these supernet weights (``version`` changes whenever they train); ``stale_ok``:
        keep the supernet's from earlier weights if there are any (a derive that only
        reports progress need not pay for a new measurement every epoch)."""
        if self.paper:
            return
        archs = None
        for term in self.free:
            if term not in self.stats:
                archs = archs or self.reference_archs()
                self.stats[term] = _centre_scale([self.free_value(term, a) for a in archs])
        stale = version != self.supernet_version and not (stale_ok and "supernet" in self.stats)
        if "supernet" in self.terms and stale:
            archs = archs or self.reference_archs()
            values = [self.task.score(supernet, a, num_batches, first)[0] for a in archs]
            self.stats["supernet"] = _centre_scale(values)
            self.supernet_version = version

    def combine(self, arch, supernet_value, supernet_se=0.0):
        """The score of ``arch`` given the supernet's value (a float or a 0-d tensor; unused
        when the supernet has no weight) -> (score, standard error)."""
        if self.paper:
            return supernet_value, supernet_se
        total, se = 0.0, 0.0
        for term, w in self.terms.items():
            centre, scale = self.stats[term]
            if term == "supernet":
                z = ((supernet_value - centre) / scale).clamp(-Z_CLIP, Z_CLIP) if torch.is_tensor(supernet_value) \
                    else min(Z_CLIP, max(-Z_CLIP, (supernet_value - centre) / scale))
                total = total + w * z
                se = w * supernet_se / scale
            else:
                z = (self.free_value(term, arch) - centre) / scale
                total = total + w * (min(Z_CLIP, max(-Z_CLIP, z)) if z == z else -Z_CLIP)
        return total, se

    def score(self, supernet, arch, num_batches: int = 0, first: int = 0, sync: bool = True):
        """(score, standard error) of ``arch`` on ``num_batches`` validation batches from
        ``first`` (0 = all); ``sync=False`` may return device tensors (task.score)."""
        if "supernet" in self.terms:
            value, se = self.task.score(supernet, arch, num_batches, first, sync=sync)
        else:
            value, se = 0.0, 0.0
        out = self.combine(arch, value, se)
        if sync:
            return tuple(float(v) for v in out)
        return out

    def reward(self, supernet, arch, num_batches: int, first: int):
        """A controller reward: ``score`` with the supernet term read from the task's reward
        minibatches ``first``.. (task.reward: the official shuffled minibatch of the training
        batch size) instead of fixed validation batches; a device tensor or a float. The
        centre and scale stay those measured by ``refresh`` on the validation batches."""
        value = self.task.reward(supernet, arch, num_batches, first) if "supernet" in self.terms else 0.0
        return self.combine(arch, value)[0]

    def as_metric(self, value: float, se: float, task_score: bool = False) -> tuple[str, float, float]:
        """A score in the task's own terms: ("valid_ppl", ppl, se) or ("valid_accuracy", ...)
        when the score is the paper's reward (or ``task_score``: the task's, as the final
        stage's are); ("score", value, se) for a weighted sum of standardised terms
        (search.score), which has no unit."""
        if not (self.paper or task_score):
            return "score", value, se
        v, e = self.task.as_metric(value, se)
        return f"valid_{self.task.metric}", v, e

    def describe(self, metric: str) -> str:
        """What a score is, in words (architecture files' provenance)."""
        if self.paper:
            return f"{metric}-based reward"
        terms = " + ".join(f"{w:g} x {t}" for t, w in self.terms.items())
        return f"{terms}, each standardised over {self.cfg.reference} uniform architectures ({metric} for supernet)"

    def state_dict(self) -> dict:
        return {"stats": {k: list(v) for k, v in self.stats.items()}, "supernet_version": self.supernet_version}

    def load_state_dict(self, state: dict) -> None:
        self.stats = {str(k): (float(v[0]), float(v[1])) for k, v in state["stats"].items()}
        self.supernet_version = int(state["supernet_version"])


def _centre_scale(values) -> tuple[float, float]:
    """(median, IQR / 1.349) of the finite values; the standard deviation where the IQR is
    0, and 1 where that is 0 too."""
    finite = np.array([float(v) for v in values if math.isfinite(float(v))])
    if len(finite) < 2:
        return (float(finite[0]) if len(finite) else 0.0), 1.0
    q1, median, q3 = np.percentile(finite, [25, 50, 75])
    scale = (q3 - q1) / 1.349 or float(finite.std(ddof=1)) or 1.0
    return float(median), float(scale)
