"""The last stage of a search: train the best few candidates from scratch, briefly.

A supernet's scores rank architectures only roughly; a short stand-alone training
ranks them far better (NAS-Bench-201's 12-epoch and 200-epoch accuracies correlate at
about 0.9, Dong & Yang 2020), at a cost that a few candidates can afford. With
``search.final_train: K`` the K best candidates of the final derive are each trained
from freshly initialised weights for ``search.final_train_epochs`` epochs on the
search's training split, with the search's train settings and one cosine over those
epochs, then scored on the validation split; the best becomes ``best_arch.yaml``. The
test split is never touched: the retrain reports that.

Each trained candidate's result is kept in the search's checkpoint, so an interrupted
final stage resumes with the next candidate.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from .interrupt import StopRequested
from .loop import Loop
from .schedule import lr_at, make_sgd, set_lr


class BriefTraining(Loop):
    """One candidate's training: the engine's SGD pass on a fresh child, no run folder.
    A stop signal is handed to the search, which checkpoints what is finished."""

    kind = "search"

    def __init__(self, search, arch: dict, epochs: int):
        s = search.cfg.search
        super().__init__(search.run_dir, False, math.inf, s.max_bad_steps, 10**9)  # writes nothing
        self.search, self.arch, self.epochs = search, arch, epochs
        self.stop = search.stop  # the search's signal handler sees Ctrl-C
        self.train_cfg = dataclasses.replace(search.cfg.train, schedule="cosine", t0=epochs, t_mul=1)

    def save(self) -> None:  # nothing of a half-trained candidate is kept
        pass

    def resume_command(self) -> str:
        return self.search.resume_command()

    def run(self) -> tuple[float, float]:
        search = self.search
        task = search.task
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(search.cfg.search.seed)  # the same initial weights for every candidate's seed
            model = search.space.child(self.arch, search.model_args, **task.model_kwargs()).to(search.device)
        opt = make_sgd(model.parameters(), self.train_cfg)
        self.open_log(None)
        try:
            for epoch in range(self.epochs):
                self.epoch, self.step = epoch, 0
                set_lr(opt, lr_at(self.train_cfg, epoch))
                self.sgd_pass(task, model, opt, self.train_cfg.grad_clip, lambda i: None,
                              f"final stage, epoch {epoch + 1}/{self.epochs}")
        finally:
            self.log.close()
        return task.score(model, None, 0)


def train_candidates(search, candidates: list[dict], done: list[dict], save) -> list[dict]:
    """Train ``candidates`` (best first) that ``done`` does not hold yet; ``save()`` after
    each so an interruption loses at most the one in training. Returns ``done`` extended:
    dicts with arch, score (validation accuracy after training), se and the derive's score."""
    epochs = search.cfg.search.final_train_epochs
    for c in candidates[len(done):]:
        try:
            value, se = BriefTraining(search, c["arch"], epochs).run()
        except StopRequested:
            save()
            raise
        done.append({"arch": c["arch"], "score": value, "se": se, "derive_score": c["score"]})
        save()
    return done
