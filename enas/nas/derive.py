"""Derive (paper, section 2.1: "we sample several models from the trained policy ... and
keep the one with the highest reward on a single minibatch of validation data"): score a
sample of the policy's architectures on the same validation batches each epoch, re-score
the best at the end on more data, and, after the final stage (enas/nas/final_stage.py) has
trained the best few from scratch, choose among those. ``derive_again`` is ``enas derive``.

``Derive`` receives what it reads (space, task, scoring, budget, the search settings and
the run's loop for its folder, log and stop signal); the supernet, policy and generator
come with each call. Every architecture file it writes goes through ``write_arch``.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import torch

from enas.nas.archfile import save_arch
from enas.nas.budget import Budget
from enas.config import SearchSection
from enas.nas.controller import Sample
from enas.errors import brief
from enas.storage.files import make_dir, produced, write_atomic
from enas.train.loop import Loop
from enas.plots import heatmap
from enas.storage.runlog import RunLog, say
from enas.nas.scoring import Scoring
from enas.nas.space import ArchError, SearchSpace, validate
from enas.storage import runfolder
from enas.storage.runfolder import policy_groups, policy_key, policy_labels
from enas.tasks import Task


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One scored architecture: its score and standard error on the derive's validation
    data; ``derive_score``, once re-scored or trained, the epoch derive's score."""

    arch: dict
    score: float
    se: float
    derive_score: float | None = None

    def as_dict(self) -> dict:
        """As a checkpoint holds it (``derive_score`` only where there is one)."""
        d = {"arch": self.arch, "score": self.score, "se": self.se}
        return d if self.derive_score is None else {**d, "derive_score": self.derive_score}

    @staticmethod
    def of(d: dict) -> "Candidate":
        """From a dict this process wrote (an epoch derive's has no ``derive_score``)."""
        return Candidate(d["arch"], d["score"], d["se"], d.get("derive_score"))

    @staticmethod
    def checked(item, decisions, what: str, rescored: bool) -> "Candidate":
        """A candidate as a checkpoint holds it, whose values are anyone's: an architecture of
        this space with its score and standard error, and ``derive_score`` exactly where the
        candidate was ``rescored`` (final derive, final stage), nothing else."""
        keys = {"arch", "score", "se"} | ({"derive_score"} if rescored else set())
        if not isinstance(item, dict) or set(item) != keys:
            raise ValueError(f"{what} is {brief(item)}")
        try:
            arch = validate(decisions, item["arch"])
        except ArchError as e:
            raise ValueError(f"{what}'s architecture: {e}") from None
        return Candidate(arch, float(item["score"]), float(item["se"]),
                         float(item["derive_score"]) if rescored else None)


def checked_final(final, decisions) -> dict:
    """The final derive's result as a checkpoint holds it (``{}`` before the last epoch is
    done): its winner, score, se and epoch, its candidates, then ``trained`` after a final
    stage and the ``verdict``. Validated once here, so every reader may trust it."""
    if final == {}:
        return {}
    required, optional = {"arch", "score", "se", "epoch", "candidates"}, {"trained", "verdict"}
    if not isinstance(final, dict) or not required <= set(final) <= required | optional:
        raise ValueError(f"the final derive's result is {brief(final)}")
    if not isinstance(final["candidates"], list):
        raise ValueError(f"the final derive's candidates are {brief(final['candidates'])}, not a list")
    try:
        arch = validate(decisions, final["arch"])
    except ArchError as e:
        raise ValueError(f"the final derive's architecture: {e}") from None
    if type(final["epoch"]) is not int or final.get("trained", True) is not True:
        raise ValueError(f"the final derive's epoch or trained flag is {brief((final['epoch'], final.get('trained')))}")
    if not isinstance(final.get("verdict", {}), dict):
        raise ValueError(f"the verdict is {brief(final['verdict'])}, not a mapping")
    candidates = [Candidate.checked(c, decisions, "a final derive candidate", rescored=True).as_dict()
                  for c in final["candidates"]]
    return {**final, "arch": arch, "score": float(final["score"]), "se": float(final["se"]), "candidates": candidates}


@dataclasses.dataclass(frozen=True)
class Derived:
    """An epoch's derive: its candidates, best first, and what it saw of the policy."""

    candidates: list[Candidate]
    entropy: float  # mean entropy (nats) of the policy over the sample
    collapse: bool  # the collapse warning was raised (only where the log is written)


def write_arch(path: Path, space, arch: dict, provenance: dict) -> None:
    """The one place derive writes an architecture file with its provenance."""
    save_arch(path, space, arch, provenance)


class Derive:
    def __init__(self, space: SearchSpace, task: Task, scoring: Scoring, budget: Budget, cfg: SearchSection,
                 loop: Loop):
        self.space, self.task, self.scoring, self.budget, self.cfg, self.loop = space, task, scoring, budget, cfg, loop

    def epoch(self, supernet, policy, gen: torch.Generator, epoch: int, global_step: int) -> Derived:
        """Sample N archs from the policy and score them all on the same validation
        batches, a different block each epoch (a fair comparison within a derive, no
        lottery on one fixed batch across epochs); the best is this epoch's arch."""
        s, loop = self.cfg, self.loop
        before = gen.get_state()
        with torch.no_grad():
            sample = self.budget.draw(lambda k: policy(k, generator=gen), s.derive_samples, "the controller")
        first = epoch * s.derive_batches
        self.scoring.refresh(supernet, global_step, s.reward_batches, stale_ok=True)
        scored = []
        for a in sample.archs:
            loop.stop_if_requested(lambda: gen.set_state(before))  # the same candidates on resume
            scored.append(self.scoring.score(supernet, a, s.derive_batches, first))
        ranked = sorted(range(len(scored)), key=lambda i: sort_key(scored[i][0]))
        candidates = [Candidate(sample.archs[i], scored[i][0], scored[i][1]) for i in ranked]
        top, ep, collapse = candidates[0], epoch + 1, False
        if loop.log_enabled:
            prov = self._provenance(top, ep, f"{_batches_text(s.derive_batches)} from batch "
                                             f"{first % self.task.num_valid_batches()}")
            make_dir(loop.run_dir / runfolder.ARCHS)
            write_arch(runfolder.epoch_arch(loop.run_dir, ep), self.space, top.arch, prov)
            write_arch(loop.run_dir / runfolder.BEST_ARCH, self.space, top.arch, prov)
            collapse = log_policy(loop.log, self.space, sample, ep, s)
            finite = [v for v, _ in scored if math.isfinite(v)]
            loop.log.log(ep, epoch=ep, **{
                "derive/score": top.score, "derive/score_se": top.se,
                "derive/score_mean": sum(finite) / max(len(finite), 1)})
            loop.log.text("derive/arch", self.space.describe(top.arch), ep)
            draw_arch(loop.log, self.space, top.arch, runfolder.epoch_arch(loop.run_dir, ep, ".png"), "derive/cell", ep)
        return Derived(candidates, float(sample.entropy.mean()), collapse)

    def _provenance(self, c: Candidate, epoch: int, data: str, **more) -> dict:
        return runfolder.provenance(self.loop.run_dir, epoch, c.score, c.se,
                                    f"{self.scoring.describe(self.task.metric)} on {data}", **more,
                                    **self.budget.provenance(c.arch))

    def final(self, supernet, candidates: list[Candidate], epoch: int, global_step: int, out: Path | None = None,
              provenance: dict | None = None) -> list[Candidate]:
        """Re-score the ``final_candidates`` best distinct archs of the last derive on
        ``final_batches`` validation batches (0 = the whole split), all on the same data,
        and write the winner (``best_arch.yaml``, or ``out``) with its margin over the
        runner-up in standard errors of their difference; in a run folder, every candidate
        also goes to ``archs/final_<rank>.yaml``. Returns them re-scored, best first."""
        s, loop = self.cfg, self.loop
        distinct: dict[str, Candidate] = {}
        for c in candidates:
            distinct.setdefault(repr(sorted(c.arch.items())), c)
        top = list(distinct.values())[:s.final_candidates]
        self.scoring.refresh(supernet, global_step, s.reward_batches)
        rescored = []
        for c in top:
            loop.stop_if_requested()  # the final derive runs again on resume
            value, se = self.scoring.score(supernet, c.arch, s.final_batches, 0)
            rescored.append(Candidate(c.arch, value, se, c.score))
        rescored.sort(key=lambda c: sort_key(c.score))
        win = rescored[0]
        margin, paired = None, False
        if len(rescored) > 1 and math.isfinite(win.score) and math.isfinite(rescored[1].score):
            se = self._paired_se(supernet, win.arch, rescored[1].arch, s.final_batches)
            paired = se is not None and math.isfinite(se)
            if not paired:  # the task cannot pair the two: their own errors, as if independent
                se = math.hypot(win.se, rescored[1].se)
            gap = win.score - rescored[1].score
            margin = gap / se if se > 0 else (math.inf if gap > 0 else 0.0)
        data = f"{_batches_text(s.final_batches)} of the validation split"
        prov = self._provenance(win, epoch, data, final_derive={
            "candidates": len(rescored), "margin_in_se": margin, "paired": paired,
            "runner_up_score": rescored[1].score if len(rescored) > 1 else None})
        files = None
        if out is not None:
            write_arch(out, self.space, win.arch, {**prov, **(provenance or {})})
        elif loop.log_enabled:
            write_arch(loop.run_dir / runfolder.BEST_ARCH, self.space, win.arch, prov)
            make_dir(loop.run_dir / runfolder.ARCHS)
            files = [runfolder.final_arch(loop.run_dir, rank) for rank in range(1, len(rescored) + 1)]
            for rank, (c, path) in enumerate(zip(rescored, files), start=1):
                write_arch(path, self.space, c.arch, self._provenance(c, epoch, data, final_derive_rank=rank))
            loop.log.log(epoch, epoch=epoch, **{"derive/final_score": win.score, "derive/final_score_se": win.se})
            table = "\n".join(f"{c.score:.4g} +- {c.se:.2g} (derive {c.derive_score:.4g}): "
                              f"{self.space.describe(c.arch).splitlines()[0]}" for c in rescored)
            loop.log.text("derive/final_candidates", table, epoch)
            draw_arch(loop.log, self.space, win.arch, loop.run_dir / runfolder.BEST_ARCH_PNG, "derive/final_cell", epoch)
        say(self._final_message(rescored, margin, paired, data, files), loop.log_enabled or out is not None)
        return rescored

    def _paired_se(self, supernet, a: dict, b: dict, num_batches: int) -> float | None:
        """Standard error of score(a) - score(b), both measured on the same validation data
        (a paired comparison, far tighter than the two scores' own errors when, as with
        shared weights, they err on the same examples)."""
        sc = self.scoring
        if "supernet" not in sc.terms:
            return 0.0  # training-free terms are exact
        se = self.task.paired_se(supernet, a, b, num_batches, 0)
        # standardised: weight * difference / the supernet term's scale (scoring.py; its clip at +-5 aside)
        return se if sc.paper else sc.terms["supernet"] * se / sc.stats["supernet"][1]

    def _final_message(self, rescored: list[Candidate], margin: float | None, paired: bool, data: str,
                       files: list[Path] | None) -> str:
        """The final derive in plain words: who won, by how much, and what to do about a tie."""
        s = self.cfg
        name, value, se = self.scoring.as_metric(rescored[0].score, rescored[0].se)
        what = name.replace("_", " ")
        lines = [f"final derive: the {len(rescored)} best candidates re-scored on {data}; "
                 f"winner: {what} {value:.4g} +- {se:.2g}"]
        if margin is None:
            return lines[0]
        runner = self.scoring.as_metric(rescored[1].score, rescored[1].se)[1]
        how = "paired: the same validation data" if paired else "unpaired"
        lines.append(f"  runner-up: {what} {runner:.4g}, {margin:.1f} standard errors behind ({how})")
        if margin >= 2:
            lines.append("  the winner is clearly ahead (2 or more standard errors)")
            return "\n".join(lines)
        both = f" ({files[0]} and {files[1]})" if files else ""
        todo = [f"retrain both{both} and keep the better"]
        if s.final_train == 0:
            todo.append(f"let the search train the best few briefly before choosing (search.final_train: "
                        f"{min(3, len(rescored))})")
        more = ("score them on the whole validation split (search.final_batches: 0)" if s.final_batches > 0
                else "give the search more validation data")
        todo.append(more)
        lines.append("  not a clear winner: under 2 standard errors, the runner-up may be as good. To choose, "
                     + "; or ".join(todo) + ".")
        if s.smoke:
            lines.append("  (expected in a smoke run: its network is tiny and barely trained)")
        return "\n".join(lines)

    def choose_trained(self, trained: list[Candidate], epoch: int) -> Candidate:
        """The final stage's winner (best on the validation split after its brief training
        from scratch) becomes best_arch.yaml."""
        s, loop = self.cfg, self.loop
        ranked = sorted(trained, key=lambda c: sort_key(c.score))
        win = ranked[0]
        what = (f"{self.task.metric}-based reward on the whole validation split after {s.final_train_epochs} "
                f"epochs of training from scratch")
        prov = {"run": str(loop.run_dir), "epoch": epoch, "score": win.score, "score_se": win.se,
                "score_is": what, "final_stage": [{"score": c.score, "derive_score": c.derive_score,
                                                   "arch": self.space.describe(c.arch).splitlines()[0]}
                                                  for c in ranked], **self.budget.provenance(win.arch)}
        name, value, se = self.scoring.as_metric(win.score, win.se, task_score=True)
        say(f"final stage: {len(ranked)} candidates trained from scratch for {s.final_train_epochs} epochs each; "
            f"best: {name.replace('_', ' ')} {value:.4g} +- {se:.2g} on the whole validation split",
            loop.log_enabled)
        if loop.log_enabled:
            write_arch(loop.run_dir / runfolder.BEST_ARCH, self.space, win.arch, prov)
            loop.log.log(epoch, epoch=epoch, **{"derive/final_stage_score": win.score})
            draw_arch(loop.log, self.space, win.arch, loop.run_dir / runfolder.BEST_ARCH_PNG, "derive/final_cell", epoch)
        return win


def sort_key(score: float) -> float:
    """Best first; a non-finite score last."""
    return -score if math.isfinite(score) else math.inf


def _batches_text(n: int) -> str:
    return "all batches" if n == 0 else f"{n} batch{'es' if n > 1 else ''}"


def draw_arch(log: RunLog, space, arch: dict, png: Path, tag: str, step: int) -> None:
    """A picture of ``arch`` where the space can draw one (an optional hook of a space)."""
    draw = getattr(space, "draw", None)
    if draw is not None:  # drawn aside, then written whole (a link at png is replaced, not followed)
        write_atomic(png, produced(lambda p: draw(arch, p), png.name))
        log.image(tag, png, step)


def log_policy(log: RunLog, space, sample: Sample, ep: int, s: SearchSection) -> bool:
    """Per-decision choice probabilities (metrics.jsonl; TensorBoard: one heat map per
    decision group), mean entropy and the collapse warning; True when it was raised."""
    figs = {}
    free_mass, n_free = 0.0, 0
    free = getattr(space, "param_free_choices", set())  # an optional hook of a space
    decisions = space.decisions()
    for d in decisions:
        p = sample.probs[d.name].tolist()
        labels = policy_labels(d)
        for lab, v in zip(labels, p):
            figs[policy_key(d.name, lab)] = v
        if d.kind == "categorical" and free & set(d.choices):
            free_mass += sum(v for lab, v in zip(labels, p) if lab in free)
            n_free += 1
    entropy = float(sample.entropy.mean())
    figs["policy/entropy"] = entropy
    log.log(ep, epoch=ep, **figs)
    for g, ds in policy_groups(decisions).items():
        rows = [(d.name, labels, sample.probs[d.name].tolist()) for d, labels in ds]
        cols = max((r[1] for r in rows), key=len)
        kind = "input" if cols[0] == "0" else "choice"
        img = heatmap([r[2] + [None] * (len(cols) - len(r[2])) for r in rows], [r[0] for r in rows], cols,
                      f"{g}: choice probabilities after epoch {ep}", xlabel=kind)
        log.image(f"policy/{g}", img, ep)
    early = ep <= s.epochs / 2
    warn = None
    if n_free and free_mass / n_free > 0.8:
        warn = f"the policy puts {free_mass / n_free:.0%} of its op probability on parameter-free ops"
    elif early and s.entropy_floor > 0 and entropy < s.entropy_floor:
        warn = f"policy entropy {entropy:.3g} fell below search.entropy_floor={s.entropy_floor} before the midpoint"
    if not warn:
        return False
    msg = f"warning (epoch {ep}): {warn}; the search may be collapsing (see docs/evaluation.md)"
    say(msg, True)
    log.text("warning/collapse", msg, ep)
    log.log(ep, epoch=ep, **{"warning/collapse": 1, "warning/message": msg})
    return True


def derive_again(search, seed: int = 0) -> tuple[Path, list[Candidate]]:
    """``enas derive``: sample ``search.derive_samples`` candidates from a reopened search's
    policy and derive as at the end of a search (score all, re-score the best on
    ``search.final_batches``); the result goes to RUN/archs/derive-<time>-n<samples>.yaml.
    Returns (that file, the re-scored candidates, best first)."""
    n = search.cfg.search.derive_samples
    gen = torch.Generator().manual_seed(seed)  # the same candidates for the same --seed
    derived = search.derive.epoch(search.supernet, search.policy, gen, search.epoch, search.global_step)
    out = runfolder.derived_arch(search.run_dir, time.strftime('%Y%m%d-%H%M%S'), n)
    make_dir(out.parent)
    rescored = search.derive.final(search.supernet, derived.candidates, search.epoch, search.global_step, out,
                                   {"derived_from": runfolder.CHECKPOINT, "samples": n, "seed": seed})
    return out, rescored
