"""Derive (paper, section 2.1: "we sample several models from the trained policy ... and
keep the one with the highest reward on a single minibatch of validation data"): score a
sample of the policy's architectures on the same validation batches each epoch, re-score
the best at the end on more data, and optionally train the best few briefly from scratch
(the final stage) before choosing. A part of ``Search``; ``derive_again`` is ``enas derive``.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from .archfile import save_arch
from .files import make_dir
from .final_stage import train_candidates
from .runlog import say
from .storage import runfolder


class Derive:
    """The derive steps of ``enas.search.Search`` (which provides the supernet, policy,
    scoring, task and run folder they read)."""

    def _derive(self) -> dict:
        """Sample N archs from the policy and score them all on the same validation
        batches, a different block each epoch (a fair comparison within a derive, no
        lottery on one fixed batch across epochs); keep the best as this epoch's arch."""
        s = self.cfg.search
        before = self.gen.get_state()
        with torch.no_grad():
            sample = self.budget.draw(lambda k: self.policy(k, generator=self.gen), s.derive_samples,
                                      "the controller")
        first = self.epoch * s.derive_batches
        self.scoring.refresh(self.supernet, self.global_step, s.reward_batches, stale_ok=True)
        scored = []
        for a in sample.archs:
            self.stop_if_requested(lambda: self.gen.set_state(before))  # the same candidates on resume
            scored.append(self.scoring.score(self.supernet, a, s.derive_batches, first))
        ranked = sorted(range(len(scored)), key=lambda i: _sort_key(scored[i][0]))
        self.candidates = [{"arch": sample.archs[i], "score": scored[i][0], "se": scored[i][1]} for i in ranked]
        top = self.candidates[0]
        ep = self.epoch + 1
        prov = runfolder.provenance(
            self.run_dir, ep, top["score"], top["se"],
            f"{self.scoring.describe(self.task.metric)} on {_batches_text(s.derive_batches)} "
            f"from batch {first % self.task.num_valid_batches()}", **self.budget.provenance(top["arch"]))
        self.best = {"arch": top["arch"], "score": top["score"], "epoch": ep}
        if self.log_enabled:
            make_dir(self.run_dir / runfolder.ARCHS)
            save_arch(runfolder.epoch_arch(self.run_dir, ep), self.space, top["arch"], prov)
            save_arch(self.run_dir / runfolder.BEST_ARCH, self.space, top["arch"], prov)
            self._log_policy(sample, ep)
            finite = [v for v, _ in scored if math.isfinite(v)]
            self.log.log(ep, epoch=ep, **{
                "derive/score": top["score"], "derive/score_se": top["se"],
                "derive/score_mean": sum(finite) / max(len(finite), 1)})
            self.log.text("derive/arch", self.space.describe(top["arch"]), ep)
            self._draw(top["arch"], runfolder.epoch_arch(self.run_dir, ep, ".png"), "derive/cell", ep)
        return {"score": top["score"], "se": top["se"], "arch": top["arch"],
                "entropy": float(sample.entropy.mean())}

    def final_derive(self, out: Path | None = None, provenance: dict | None = None) -> dict:
        """Re-score the ``final_candidates`` best distinct archs of the last derive on
        ``final_batches`` validation batches (0 = the whole split), all on the same data,
        and write the winner (``best_arch.yaml``, or ``out``) with its margin over the
        runner-up in standard errors of their difference; in a run folder, every candidate
        also goes to ``archs/final_<rank>.yaml``."""
        s = self.cfg.search
        distinct: dict[str, dict] = {}
        for c in self.candidates:
            distinct.setdefault(repr(sorted(c["arch"].items())), c)
        top = list(distinct.values())[:s.final_candidates]
        self.scoring.refresh(self.supernet, self.global_step, s.reward_batches)
        rescored = []
        for c in top:
            self.stop_if_requested()  # the final derive runs again on resume
            value, se = self.scoring.score(self.supernet, c["arch"], s.final_batches, 0)
            rescored.append({"arch": c["arch"], "score": value, "se": se, "derive_score": c["score"]})
        rescored.sort(key=lambda c: _sort_key(c["score"]))
        win = rescored[0]
        margin, paired = None, False
        if len(rescored) > 1 and math.isfinite(win["score"]) and math.isfinite(rescored[1]["score"]):
            se = self._paired_se(win["arch"], rescored[1]["arch"], s.final_batches)
            paired = se is not None and math.isfinite(se)
            if not paired:  # the task cannot pair the two: their own errors, as if independent
                se = math.hypot(win["se"], rescored[1]["se"])
            gap = win["score"] - rescored[1]["score"]
            margin = gap / se if se > 0 else (math.inf if gap > 0 else 0.0)
        data = f"{_batches_text(s.final_batches)} of the validation split"
        prov = runfolder.provenance(
            self.run_dir, self.epoch, win["score"], win["se"], f"{self.scoring.describe(self.task.metric)} on {data}",
            final_derive={"candidates": len(rescored), "margin_in_se": margin, "paired": paired,
                          "runner_up_score": rescored[1]["score"] if len(rescored) > 1 else None},
            **self.budget.provenance(win["arch"]))
        files = None
        if out is not None:
            save_arch(out, self.space, win["arch"], {**prov, **(provenance or {})})
        elif self.log_enabled:
            save_arch(self.run_dir / runfolder.BEST_ARCH, self.space, win["arch"], prov)
            make_dir(self.run_dir / runfolder.ARCHS)
            files = [runfolder.final_arch(self.run_dir, rank) for rank in range(1, len(rescored) + 1)]
            for rank, (c, path) in enumerate(zip(rescored, files), start=1):
                save_arch(path, self.space, c["arch"], runfolder.provenance(
                    self.run_dir, self.epoch, c["score"], c["se"], prov["score_is"], final_derive_rank=rank,
                    **self.budget.provenance(c["arch"])))
            self.log.log(self.epoch, epoch=self.epoch, **{
                "derive/final_score": win["score"], "derive/final_score_se": win["se"]})
            table = "\n".join(f"{c['score']:.4g} +- {c['se']:.2g} (derive {c['derive_score']:.4g}): "
                              f"{self.space.describe(c['arch']).splitlines()[0]}" for c in rescored)
            self.log.text("derive/final_candidates", table, self.epoch)
            self._draw(win["arch"], self.run_dir / runfolder.BEST_ARCH_PNG, "derive/final_cell", self.epoch)
        say(self._final_message(rescored, margin, paired, data, files), self.log_enabled or out is not None)
        return {"arch": win["arch"], "score": win["score"], "se": win["se"], "epoch": self.epoch,
                "candidates": rescored}

    def _paired_se(self, a: dict, b: dict, num_batches: int) -> float | None:
        """Standard error of score(a) - score(b), both measured on the same validation data
        (a paired comparison, far tighter than the two scores' own errors when, as with
        shared weights, they err on the same examples); None where the task cannot pair."""
        sc = self.scoring
        if "supernet" not in sc.terms:
            return 0.0  # training-free terms are exact
        pair = getattr(self.task, "paired_se", None)
        if pair is None:
            return None
        se = pair(self.supernet, a, b, num_batches, 0)
        # standardised: weight * difference / the supernet term's scale (scoring.py; its clip at +-5 aside)
        return se if sc.paper else sc.terms["supernet"] * se / sc.stats["supernet"][1]

    def _final_message(self, rescored: list[dict], margin: float | None, paired: bool, data: str,
                       files: list[Path] | None) -> str:
        """The final derive in plain words: who won, by how much, and what to do about a tie."""
        s = self.cfg.search
        name, value, se = self.as_metric(rescored[0]["score"], rescored[0]["se"])
        what = name.replace("_", " ")
        lines = [f"final derive: the {len(rescored)} best candidates re-scored on {data}; "
                 f"winner: {what} {value:.4g} +- {se:.2g}"]
        if margin is None:
            return lines[0]
        runner = self.as_metric(rescored[1]["score"], rescored[1]["se"])[1]
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

    def final_stage(self) -> dict:
        """Train the final derive's ``search.final_train`` best candidates from scratch for
        ``final_train_epochs`` each (enas/final_stage.py); the best on the validation split
        becomes best_arch.yaml."""
        s = self.cfg.search
        todo = self.final["candidates"][:s.final_train]
        self.trained = train_candidates(self, todo, self.trained, self.save)
        ranked = sorted(self.trained, key=lambda c: _sort_key(c["score"]))
        win = ranked[0]
        what = (f"{self.task.metric}-based reward on the whole validation split after {s.final_train_epochs} "
                f"epochs of training from scratch")
        prov = runfolder.provenance(
            self.run_dir, self.epoch, win["score"], win["se"], what,
            final_stage=[{"score": c["score"], "derive_score": c["derive_score"],
                          "arch": self.space.describe(c["arch"]).splitlines()[0]} for c in ranked],
            **self.budget.provenance(win["arch"]))
        name, value, se = self.as_metric(win["score"], win["se"], task_score=True)
        say(f"final stage: {len(ranked)} candidates trained from scratch for {s.final_train_epochs} epochs each; "
            f"best: {name.replace('_', ' ')} {value:.4g} +- {se:.2g} on the whole validation split",
            self.log_enabled)
        if self.log_enabled:
            save_arch(self.run_dir / runfolder.BEST_ARCH, self.space, win["arch"], prov)
            self.log.log(self.epoch, epoch=self.epoch, **{"derive/final_stage_score": win["score"]})
            self._draw(win["arch"], self.run_dir / runfolder.BEST_ARCH_PNG, "derive/final_cell", self.epoch)
        return {"arch": win["arch"], "score": win["score"], "se": win["se"], "epoch": self.epoch,
                "trained": True, "candidates": self.final.get("candidates", [])}


def _sort_key(score: float) -> float:
    """Best first; a non-finite score last."""
    return -score if math.isfinite(score) else math.inf


def _batches_text(n: int) -> str:
    return "all batches" if n == 0 else f"{n} batch{'es' if n > 1 else ''}"


def derive_again(search, seed: int = 0) -> tuple[Path, dict]:
    """``enas derive``: sample ``search.derive_samples`` candidates from a reopened search's
    policy and derive as at the end of a search (score all, re-score the best on
    ``search.final_batches``); the result goes to RUN/archs/derive-<time>-n<samples>.yaml."""
    n = search.cfg.search.derive_samples
    search.gen.manual_seed(seed)  # the same candidates for the same --seed
    search._derive()
    out = runfolder.derived_arch(search.run_dir, time.strftime('%Y%m%d-%H%M%S'), n)
    make_dir(out.parent)
    derived = search.final_derive(out, {"derived_from": runfolder.CHECKPOINT, "samples": n, "seed": seed})
    return out, derived
