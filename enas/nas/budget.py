"""A parameter budget for a search (``search.max_params``): no architecture the search
trains, rewards, derives or trains in its final stage has more parameters than the budget.

**What is counted.** The network the user will retrain, not the search's proxy: the
space's child built with ``search.budget_model`` (the retrain config's ``model`` section;
empty: the space's published final network, ``retrain_model`` on the space class, or its
``ModelArgs`` defaults), on the search's data (classes, image size, vocabulary), the
auxiliary head left out (as ``training_free.count_params``).

**How it is counted.** A space may give a closed form, ``count_params(arch, model_args,
**task_kwargs)`` (every built-in space does; tests check it against the built network);
otherwise the child is built on the meta device (shapes only: no memory, no random
numbers) and counted. Counts are cached per architecture.

**How it is enforced: rejection.** Every draw (shared phase, controller phase, derive)
keeps the architectures that fit and draws again for the rest, at most ``MAX_DRAWS`` per
architecture wanted; a penalty in the reward (MnasNet) would still train and return
architectures over the budget, and masking at sampling time needs, for every partial
architecture, the smallest count that any completion can reach, which only a space whose
count is a sum over decisions can give (docs/evaluation.md, "A parameter budget").

**The controller's update.** Rejection samples the policy truncated to the architectures
that fit, pi(a) / Z with Z = P(fit), and REINFORCE on the kept draws alone (log pi(a),
whose extra grad log Z term the baseline cancels) is the exact gradient of the truncated
policy's reward, an objective that does not depend on Z: measured, it lets the policy
drift until nothing it draws fits (benchmarks/studies/budget_enforcement.py: on a reward that
grows with size, no NB201 cell out of 10,000 draws fit 400,000 parameters after 102
updates). So the update also holds the draws refused on the way, never trained or
scored, each rewarded below the worst kept draw by the kept rewards' spread
(``with_refused``): REINFORCE on the untruncated policy with a penalty for exceeding the
budget (MnasNet's idea, with no unit to choose), which keeps the policy's mass under the
budget. The fraction of draws that fit is logged (``budget/fit``).
"""
from __future__ import annotations

import math
import random
from typing import Callable

import torch

from enas.config import ConfigError, from_dict
from enas.nas.controller import Sample
from enas.errors import UserError
from enas.nas.space import Arch, validate

MAX_DRAWS = 1000  # draws per architecture wanted before giving up (a fit rate under 0.1%)
CACHE = 200_000  # counts kept (NB201 has 15,625 cells; larger spaces repeat less)
DESCENT_STARTS = 4  # random starts of the smallest-architecture search


def count_on_meta(build: Callable[[], torch.nn.Module]) -> int:
    """Parameters of the network ``build()`` makes, built on the meta device (shapes only),
    the auxiliary head left out; the global random state is left as it was."""
    from enas.nas.training_free import count_params

    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        return count_params(build())


_REST: dict = {}  # (space, model, task) -> parameters that no decision changes


def count_by_parts(space, arch: Arch, model_args, task_kwargs: dict, variable: Callable[[Arch], int]) -> int:
    """A closed-form count: ``variable(arch)``, the parameters the architecture decides
    (a space's sum over its ops), plus the rest of the network, counted once per network
    size as a reference child's count less its own variable part."""
    key = (space.name, space.args, model_args, tuple(sorted(task_kwargs.items())))
    if key not in _REST:
        ref = _reference_arch(space.decisions())
        if len(_REST) >= 256:
            _REST.clear()
        _REST[key] = count_on_meta(lambda: space.child(ref, model_args, **task_kwargs)) - variable(ref)
    return _REST[key] + variable(arch)


def _reference_arch(decisions) -> Arch:
    """Each decision's first value (no skips)."""
    return {d.name: d.choices[0] if d.kind == "categorical" else 0 if d.kind == "index" else [] for d in decisions}


def budget_model_args(space, budget_model: dict):
    """The ModelArgs of the network the budget counts (module docstring)."""
    given = budget_model or dict(getattr(type(space), "retrain_model", {}))
    return from_dict(type(space).ModelArgs, given, "search.budget_model")


class Budget:
    """Counts architectures on the retrain network and draws only those that fit.
    ``max_params`` None: no budget (everything fits; counting still works)."""

    def __init__(self, space, model_args, task_kwargs: dict, max_params: int | None):
        self.space, self.model_args, self.kwargs = space, model_args, dict(task_kwargs)
        self.max_params = max_params
        self.decisions = space.decisions()
        self._cache: dict = {}
        self.drawn, self.kept = 0, 0  # this epoch's draws and fits (budget/fit)

    def count(self, arch: Arch) -> int:
        key = _key(arch)
        n = self._cache.get(key)
        if n is None:
            hook = getattr(self.space, "count_params", None)
            if hook is not None:
                n = int(hook(arch, self.model_args, **self.kwargs))
            else:
                n = count_on_meta(lambda: self.space.child(arch, self.model_args, **self.kwargs))
            if len(self._cache) >= CACHE:
                self._cache.clear()
            self._cache[key] = n
        return n

    def fits(self, arch: Arch) -> bool:
        return self.max_params is None or self.count(arch) <= self.max_params

    def provenance(self, arch: Arch) -> dict:
        """What an architecture file records about the budget (``enas show`` prints it)."""
        if self.max_params is None:
            return {}
        return {"params": self.count(arch), "max_params": self.max_params}

    # ---- drawing ---------------------------------------------------------------------
    def draw(self, sample: Callable[[int], Sample], n: int, what: str) -> Sample:
        """``n`` architectures from ``sample(k)`` (k draws of a policy) that fit, in the
        order drawn; the kept rows of log_prob, entropy and skip_penalty (with their
        gradients). At most ``MAX_DRAWS * n`` draws, then a one-line error."""
        return self.draw_both(sample, n, what)[0]

    def draw_both(self, sample: Callable[[int], Sample], n: int, what: str) -> tuple[Sample, Sample | None]:
        """``draw``, and the draws refused on the way (those before the last one kept, as a
        one-at-a-time rejection sampler would have drawn them; None when none was): the
        controller's update sees them (module docstring)."""
        first = sample(n)
        if self.max_params is None:
            return first, None
        kept, refused, have, drawn, s = [], [], 0, 0, first
        while True:
            fit = [self.fits(a) for a in s.archs]
            keep = [i for i, f in enumerate(fit) if f][:n - have]
            last = keep[-1] if have + len(keep) == n else len(s.archs) - 1
            drawn += len(s.archs)
            if keep:
                kept.append((s, keep))
                have += len(keep)
            out = [i for i, f in enumerate(fit[:last + 1]) if not f]
            if out:
                refused.append((s, out))
            if have == n:
                break
            if drawn >= MAX_DRAWS * n:
                raise UserError(f"search.max_params = {self.max_params:,}: {have} of {drawn:,} architectures "
                                f"drawn by {what} fit the budget; raise search.max_params (the budget is counted "
                                f"on search.budget_model)")
            rate = max(have, 1) / drawn
            s = sample(min(max(int((n - have) / rate * 1.2) + 1, 1), MAX_DRAWS * n - drawn))
        self.drawn, self.kept = self.drawn + sum(len(r) for _, r in refused) + n, self.kept + n
        return _select(kept, first.probs), (_select(refused, first.probs) if refused else None)

    @staticmethod
    def with_refused(kept: Sample, rewards: list[float], refused: Sample | None) -> tuple[Sample, list[float]]:
        """The controller's update batch: the kept draws with their rewards, then the
        refused ones, each rewarded below the worst that fits by the spread of the kept
        rewards (their magnitude when they do not spread, e.g. one sample per update): no
        unit to set, and strong enough to hold the policy under the budget (module docstring)."""
        finite = [r for r in rewards if math.isfinite(r)]
        if refused is None or not finite:
            return kept, rewards
        low, spread = min(finite), max(finite) - min(finite)
        penalty = low - (spread or abs(low) or 1.0)
        both = _select([(kept, list(range(len(kept.archs)))), (refused, list(range(len(refused.archs))))],
                       kept.probs)
        return both, list(rewards) + [penalty] * len(refused.archs)

    def archs(self, sample: Callable[[int], list[Arch]], n: int, what: str) -> list[Arch]:
        """``draw`` for a sampler that returns plain architectures."""
        def as_sample(k: int) -> Sample:
            z = torch.zeros(k)
            return Sample(sample(k), z, z, z)
        return self.draw(as_sample, n, what).archs

    def fit_rate(self) -> float | None:
        """The fraction of draws since the last call that fit (None: nothing drawn)."""
        rate = self.kept / self.drawn if self.drawn else None
        self.drawn, self.kept = 0, 0
        return rate

    # ---- the check at config time --------------------------------------------------------
    def smallest(self, seed: int = 0) -> tuple[Arch, int]:
        """The smallest architecture coordinate descent finds (each decision in turn set to
        its value of fewest parameters, the others held, until nothing changes; the best of
        ``DESCENT_STARTS`` random starts). Exact where the count is a sum over decisions
        (nb201; enas_rnn's count does not depend on the architecture)."""
        rng = random.Random(seed)
        best = None
        for _ in range(DESCENT_STARTS):
            arch = _random_arch(self.decisions, rng)
            n = self.count(arch)
            changed = True
            while changed:
                changed = False
                for d in self.decisions:
                    for value in _neighbours(d, arch[d.name]):
                        trial = {**arch, d.name: value}
                        m = self.count(trial)
                        if m < n:
                            arch, n, changed = trial, m, True
            if best is None or n < best[1]:
                best = (arch, n)
        return best

    def check(self) -> None:
        """At the start of a search: some architecture must fit, or a one-line error naming
        search.max_params and the smallest count found."""
        if self.max_params is None:
            return
        arch, n = self.smallest()
        if n > self.max_params:
            raise ConfigError(f"search.max_params = {self.max_params:,}: no architecture of space {self.space.name} "
                              f"fits; the smallest it finds has {n:,} parameters on the network the budget counts "
                              f"(search.budget_model: {_model_text(self.model_args)}); raise search.max_params "
                              f"to at least {n:,} or count on a smaller search.budget_model")


def _model_text(model_args) -> str:
    import dataclasses

    return ", ".join(f"{f.name}={getattr(model_args, f.name)}" for f in dataclasses.fields(model_args))


def _key(arch: Arch) -> tuple:
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(arch.items()))


def _random_arch(decisions, rng: random.Random) -> Arch:
    arch = {}
    for d in decisions:
        if d.kind == "categorical":
            arch[d.name] = rng.choice(d.choices)
        elif d.kind == "index":
            arch[d.name] = rng.randrange(d.num_inputs)
        else:
            arch[d.name] = [j for j in range(d.num_inputs) if rng.random() < 0.5]
    return validate(decisions, arch)


def _neighbours(d, value) -> list:
    """The values a descent step tries for decision ``d``: every choice; for a skip set,
    the set with one layer added or removed."""
    if d.kind == "categorical":
        return [c for c in d.choices if c != value]
    if d.kind == "index":
        return [j for j in range(d.num_inputs) if j != value]
    return [sorted(set(value) ^ {j}) for j in range(d.num_inputs)]


def _select(parts: list, probs: dict) -> Sample:
    """One Sample of the kept rows of several."""
    archs = [s.archs[i] for s, keep in parts for i in keep]
    cat = lambda field: torch.cat([getattr(s, field)[torch.tensor(keep)] for s, keep in parts])  # noqa: E731
    return Sample(archs, cat("log_prob"), cat("entropy"), cat("skip_penalty"), probs)
