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
from typing import Callable

import torch

from enas.config import SearchConfig
from enas.nas.derive import Candidate
from enas.train.interrupt import GracefulStop, StopRequested
from enas.train.loop import Loop
from enas.train.schedule import lr_at, make_sgd, set_lr
from enas.nas.space import SearchSpace
from enas.tasks import Task


class BriefTraining(Loop):
    """One candidate's training: the engine's SGD pass on a fresh child, no run folder.
    A stop signal is handed back to the search, which checkpoints what is finished."""

    kind = "search"

    def __init__(self, model: torch.nn.Module, task: Task, cfg: SearchConfig, epochs: int, stop: GracefulStop,
                 run_dir, resume_command: str):
        super().__init__(run_dir, False, math.inf, cfg.search.max_bad_steps, 10**9)  # writes nothing
        self.model, self.task, self.epochs = model, task, epochs
        self.stop = stop  # the search's signal handler sees Ctrl-C
        self._resume_command = resume_command
        self.train_cfg = dataclasses.replace(cfg.train, schedule="cosine", t0=epochs, t_mul=1)

    def save(self) -> None:  # nothing of a half-trained candidate is kept
        pass

    def resume_command(self) -> str:
        return self._resume_command

    def run(self) -> tuple[float, float]:
        opt = make_sgd(self.model.parameters(), self.train_cfg)
        self.open_log(None)
        try:
            for epoch in range(self.epochs):
                self.epoch, self.step = epoch, 0
                set_lr(opt, lr_at(self.train_cfg, epoch))
                self.sgd_pass(self.task, self.model, opt, self.train_cfg.grad_clip, lambda i: None,
                              f"final stage, epoch {epoch + 1}/{self.epochs}")
        finally:
            self.log.close()
        return self.task.score(self.model, None, 0)


def train_candidates(candidates: list[Candidate], done: list[Candidate], *, space: SearchSpace, model_args, task: Task,
                     device: torch.device, cfg: SearchConfig, stop: GracefulStop, run_dir, resume_command: str,
                     save: Callable[[], None]) -> list[Candidate]:
    """Train ``candidates`` (best first) that ``done`` does not hold yet; ``save()`` after
    each so an interruption loses at most the one in training. Returns ``done`` extended:
    each with its validation score after training, se and the derive's score."""
    epochs = cfg.search.final_train_epochs
    for c in candidates[len(done):]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.search.seed)  # the same initial weights for every candidate's seed
            model = space.child(c.arch, model_args, **task.model_kwargs()).to(device)
        try:
            value, se = BriefTraining(model, task, cfg, epochs, stop, run_dir, resume_command).run()
        except StopRequested:
            save()
            raise
        done.append(Candidate(c.arch, value, se, c.score))
        save()
    return done
