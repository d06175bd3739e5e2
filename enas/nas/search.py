"""The ENAS search loop (paper, section 2.1): per epoch, the shared weights train on the
policy's architectures, then (after the warm-up) the controller trains on their rewards,
then a derive scores the policy's candidates; at the end a final derive, the optional
final stage and the verdict. ``Search`` holds the models and composes the parts: the
shared phase (``train_shared`` below; enas/train/loop.py's SGD pass), the controller's update
(enas/nas/reinforce.py), derive (enas/nas/derive.py), the final stage (enas/nas/final_stage.py); its
``loop`` (enas/train/loop.py) keeps the position, the run log and the checkpoints.

It knows a space (decisions, supernet), a policy and a task (data, loss, reward),
never a modality: tokens vs. images, perplexity vs. accuracy live in enas/tasks/.

Position in a run is (epoch, phase, step); a checkpoint can be taken between any
two steps (end of epoch, every ``checkpoint_minutes``, on SIGINT/SIGTERM) and a
resumed run continues exactly: the architectures of a shared phase come from a
generator seeded by (seed, epoch), data order from the task's (seed, epoch)
generator, and every other random state is in the checkpoint.

Several processes (torchrun; enas/train/distributed.py, docs/distributed.md): ``data.batch_size`` stays the global minibatch, each process trains on
its equal share of it with the same architecture, and the averaged gradient is the
single-process gradient (exact for the RNN space; BN normalises per share, see
docs/distributed.md). Rewards and derive scores are summed over the shares of each validation
batch, so every process feeds the controller the same rewards and its Adam steps are
identical everywhere; ``check_in_sync`` verifies it each epoch.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from enas.storage import checkpoint as ckpt

from enas.train import distributed as dist

from enas.nas import verdict
from enas.train.bn import make_plain
from enas.nas.budget import Budget, budget_model_args
from enas.config import ConfigError, SearchConfig, SearchSection, from_dict, to_dict
from enas.nas.controller import RandomPolicy, build_policy
from enas.nas.derive import Candidate, Derive, Derived, checked_final
from enas.errors import brief
from enas.nas.final_stage import train_candidates
from enas.train.loop import Loop
from enas.train.memory import check_fits, check_step, sizes_of
from enas.nas.reinforce import ControllerUpdate, Reinforce
from enas.storage.runlog import say
from enas.train.schedule import lr_at, make_sgd, nonfinite_check, set_lr
from enas.nas.scoring import Scoring
from enas.nas.space import build_space, check_arg_limits
from enas.tasks import build_task


def _on_loop(name: str) -> property:
    """An attribute of the search's loop, read and written through the search."""
    return property(lambda self: getattr(self.loop, name), lambda self, v: setattr(self.loop, name, v))


class Search:
    """Everything a search holds; ``state_dict`` is the checkpoint."""

    kind = "search"
    # the run's folder, log, stop signal and position (epoch, phase, step) are its loop's
    run_dir, log, log_enabled, stop = _on_loop("run_dir"), _on_loop("log"), _on_loop("log_enabled"), _on_loop("stop")
    epoch, phase, step, global_step = _on_loop("epoch"), _on_loop("phase"), _on_loop("step"), _on_loop("global_step")

    def __init__(self, cfg: SearchConfig, run_dir: Path | None, data_dir, device: torch.device, log: bool = True):
        s = cfg.search
        self.loop = Loop(run_dir, log, s.checkpoint_minutes, s.max_bad_steps, s.log_every, kind=self.kind,
                         state=self.state_dict)
        self.cfg, self.device = cfg, device
        self.space = build_space(cfg.space.name, cfg.space.args, cfg.space.module)
        check_arg_limits(type(self.space), cfg.model, "model")  # before anything is built of it
        self.model_args = from_dict(type(self.space).ModelArgs, cfg.model, "model")
        dist.require_multiple("data.batch_size", cfg.data.batch_size,
                              "each process trains on an equal share of every minibatch")
        dist.require_multiple("data.eval_batch_size", cfg.data.eval_batch_size,
                              "each process scores an equal share of every validation batch")
        if cfg.train.lr_scaling != "none" and dist.world() > 1:
            raise ConfigError("train.lr_scaling applies to `enas retrain`; a search keeps its minibatch "
                              "(data.batch_size, split over the processes) and so its learning rate")
        self.task = build_task(
            self.space.modality, cfg.data, data_dir, device, s.seed, split="search", amp=s.amp,
            **to_dict(s.task), shard=dist.shard(), train_batch=cfg.data.batch_size,  # search.lm / search.image
        )
        # the parameter budget, counted on the network the user will retrain; refused here,
        # before anything is built, when no architecture can fit it
        self.budget = Budget(self.space, budget_model_args(self.space, s.budget_model), self.task.model_kwargs(),
                             s.max_params)
        self.budget.check()
        if log or dist.world() > 1:  # a search that trains (a run reopened to read, log=False, only scores)
            check_step(self.space, self.model_args, self.task.model_kwargs(), cfg.data,
                       cfg.data.batch_size // dist.world(), cfg.model, device,
                       dist.world() if torch.device(device).type == "cpu" else 1)
        check_fits(lambda: self.space.supernet(self.model_args, **self.task.model_kwargs()), "supernet",
                   sizes_of("model", cfg.model), device)
        check_fits(lambda: build_policy(cfg.controller.kind, self.space, cfg.controller), "controller",
                   f"controller.hidden={cfg.controller.hidden}", torch.device("cpu"))
        torch.manual_seed(s.seed)  # the supernet's initial weights
        self.supernet = self.space.supernet(self.model_args, **self.task.model_kwargs())
        if s.supernet_bn == "plain":
            make_plain(self.supernet)
        self.supernet = self.supernet.to(device)
        note = getattr(self.supernet, "kernel_note", None)  # a model with several kernels says which runs
        if note is not None:
            say(note(device), log)
        # The policy's initial weights come from a stream of their own, so the shared
        # phase's random numbers (dropout) are the same whatever the policy is.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s.seed + 2)
            self.policy = build_policy(cfg.controller.kind, self.space, cfg.controller)
        self.uniform = RandomPolicy(self.space.decisions())  # uniform draws (search.uniform_shared)
        self.uniform_entropy = uniform_entropy(self.space.decisions())  # nats; the policy's at the start
        self.scoring = Scoring(s.score, self.space, self.model_args, self.task, s.seed)
        self.reinforce = Reinforce(self.policy, cfg.controller)
        self.controller = ControllerUpdate(self.policy, self.reinforce, self.scoring, self.budget, cfg.controller,
                                           s.reward_batches)
        self.derive = Derive(self.space, self.task, self.scoring, self.budget, s, self.loop)
        self.check = nonfinite_check(cfg.train, self.device)
        self.opt = make_sgd(self.supernet.parameters(), cfg.train, fused=self.check == "device")
        self.gen = torch.Generator().manual_seed(s.seed + 1)  # controller-phase and derive samples
        self.loop.phase = "shared"
        self.best: dict = {}
        self.candidates: list[Candidate] = []  # the last derive's candidates, best first
        # the final derive's result once the last epoch is done: arch, score, se, epoch and its
        # candidates as dicts (as the checkpoint holds them), then trained and verdict
        self.final: dict = {}
        self.trained: list[Candidate] = []  # the final stage's trained candidates, best derive score first
        self.collapse_epochs: list[int] = []  # the epochs that raised the collapse warning (the verdict names them)

    # ---- checkpoint -----------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            **self.loop.state_dict(),
            "config": to_dict(self.cfg),
            "supernet": self.supernet.state_dict(),
            "shared_opt": self.opt.state_dict(),
            "policy": self.policy.state_dict(),
            "reinforce": self.reinforce.state_dict(),
            "task": self.task.state_dict(),
            "rng": ckpt.rng_state(self.gen),
            "valid_cursor": self.controller.valid_cursor,
            "ctrl_rewards": [self.controller.reward_sum, self.controller.reward_count],
            "best": self.best,
            "candidates": [c.as_dict() for c in self.candidates],
            "final": self.final,
            "scoring": self.scoring.state_dict(),
            "trained": [c.as_dict() for c in self.trained],
            "collapse_epochs": self.collapse_epochs,
            "world": dist.world(),  # informational: the state is the same for any number
        }

    def position(self) -> dict:
        return self.loop.position()

    def load_state_dict(self, st: dict) -> None:
        self.loop.check_kind(st)
        self.loop.set_position(st["position"])
        try:
            self.supernet.load_state_dict(st["supernet"])
            self.policy.load_state_dict(st["policy"])
        except RuntimeError as e:
            raise ckpt.CheckpointError(f"checkpoint does not fit this search's models: {str(e)[:300]}") from None
        self.opt.load_state_dict(st["shared_opt"])
        self.reinforce.load_state_dict(st["reinforce"])
        self.task.load_state_dict(st["task"])
        ckpt.set_rng_state(st["rng"], self.gen)
        self.controller.valid_cursor = int(st["valid_cursor"])
        self.controller.reward_sum, self.controller.reward_count = (float(st["ctrl_rewards"][0]),
                                                                    int(st["ctrl_rewards"][1]))
        decisions = self.space.decisions()
        self.best, self.final = st["best"], checked_final(st["final"], decisions)
        self.candidates = [Candidate.checked(c, decisions, "a derive candidate", rescored=False)
                           for c in st["candidates"]]
        self.scoring.load_state_dict(st["scoring"])
        self.trained = [Candidate.checked(c, decisions, "a trained candidate", rescored=True) for c in st["trained"]]
        epochs = st.get("collapse_epochs", [])  # absent from a checkpoint written before the verdict
        if not (isinstance(epochs, list) and all(type(e) is int for e in epochs)):
            raise ValueError(f"collapse_epochs is {brief(epochs)}, not a list of epochs")
        self.collapse_epochs = epochs

    def save(self) -> None:
        self.loop.save()

    def open_log(self, resume_offset: int | None) -> None:
        self.loop.open_log(resume_offset)

    def resume_command(self) -> str:
        return self.loop.resume_command()

    # ---- the loop ---------------------------------------------------------------------
    def run(self, resume_offset: int | None = None) -> dict:
        loop, s = self.loop, self.cfg.search
        loop.open_log(resume_offset)
        dist.decorrelate_rng()  # ranks > 0: their own dropout masks
        self._first_notes()
        try:
            with loop.stop:
                while loop.epoch < s.epochs:
                    t0 = time.monotonic()
                    if loop.phase == "shared":  # not done yet (a resume may land in the controller phase)
                        self.train_shared()  # one pass of shared-weight SGD on the policy's architectures
                        loop.phase, loop.step = "controller", 0
                        self.controller.start_epoch()
                    if self.controller.trains(loop.epoch, s.controller_warmup_epochs):  # after the warm-up
                        self.update_controller()  # REINFORCE on rewards of the shared weights
                    derived = self.derive_epoch()  # the policy's candidates scored, the best written
                    dist.check_in_sync("supernet and controller weights",
                                       [*self.supernet.parameters(), *self.policy.parameters()],
                                       [self.reinforce.baseline, derived.candidates[0].score])
                    loop.epoch, loop.phase, loop.step = loop.epoch + 1, "shared", 0
                    overview = self._overview(derived)  # the epoch's headline figures, logged
                    self.save()  # the checkpoint
                    self._epoch_line(overview, derived, time.monotonic() - t0)
                    loop.pace_note(s.smoke, time.monotonic() - t0, s.epochs - loop.epoch)
                if self.final.get("epoch") != loop.epoch:  # a resumed finished run does not derive again
                    self.final = self.final_derive()
                    self.save()
                if s.final_train and not self.final.get("trained"):
                    self.final = self.final_stage()
                    self.save()
                if "verdict" not in self.final:
                    self.final["verdict"] = self._verdict()
                    self.save()
                self.best = self.final
        finally:
            loop.log.close()
        return self.best

    def _first_notes(self) -> None:
        """What a person should know before the first epoch: a smoke run, a controller
        that this config never trains (in a fresh run's log too)."""
        self.loop.smoke_note(self.cfg.search.smoke)
        untrained = verdict.warning(self.cfg)
        if untrained:
            say(untrained, self.log_enabled)
            if self.epoch == 0 and self.step == 0 and self.phase == "shared":  # once, in a fresh run's log
                self.log.log(0, epoch=0, **{"warning/controller": untrained})

    # ---- the parts, each on this search's models ----------------------------------------
    def train_shared(self) -> dict:
        """The shared phase: one pass over the training split, each minibatch on its own
        architecture (paper: M = 1)."""
        set_lr(self.opt, lr_at(self.cfg.train, self.epoch))
        archs = shared_archs(self.cfg.search, self.epoch, self.task.num_train_batches(self.epoch), self.policy,
                             self.uniform, self.budget)
        desc = f"epoch {self.epoch + 1}/{self.cfg.search.epochs} shared"
        return self.loop.sgd_pass(self.task, self.supernet, self.opt, self.cfg.train.grad_clip, archs.__getitem__,
                                  desc, prefix="shared", check=self.check)

    def update_controller(self) -> None:
        """The controller phase: REINFORCE updates on rewards of the shared weights."""
        self.controller.run(self.supernet, self.gen, self.loop,
                            f"epoch {self.epoch + 1}/{self.cfg.search.epochs} controller")

    def derive_epoch(self) -> Derived:
        derived = self.derive.epoch(self.supernet, self.policy, self.gen, self.epoch, self.global_step)
        self.candidates = derived.candidates
        top = derived.candidates[0]
        self.best = {"arch": top.arch, "score": top.score, "epoch": self.epoch + 1}
        if derived.collapse:
            self.collapse_epochs.append(self.epoch + 1)
        return derived

    def final_derive(self) -> dict:
        """The last derive's best re-scored on more data (enas/nas/derive.py Derive.final)."""
        rescored = self.derive.final(self.supernet, self.candidates, self.epoch, self.global_step)
        win = rescored[0]
        return {"arch": win.arch, "score": win.score, "se": win.se, "epoch": self.epoch,
                "candidates": [c.as_dict() for c in rescored]}

    def final_stage(self) -> dict:
        """Train the final derive's ``search.final_train`` best candidates from scratch for
        ``final_train_epochs`` each (enas/nas/final_stage.py); the best on the validation split
        becomes best_arch.yaml."""
        todo = [Candidate.of(c) for c in self.final["candidates"][:self.cfg.search.final_train]]
        self.trained = train_candidates(todo, self.trained, space=self.space, model_args=self.model_args,
                                        task=self.task, device=self.device, cfg=self.cfg, stop=self.stop,
                                        run_dir=self.run_dir, resume_command=self.resume_command(), save=self.save)
        win = self.derive.choose_trained(self.trained, self.epoch)
        return {"arch": win.arch, "score": win.score, "se": win.se, "epoch": self.epoch,
                "trained": True, "candidates": self.final.get("candidates", [])}

    def _verdict(self) -> dict:
        v = verdict.compute(verdict.Finished(
            self.cfg, self.space, self.policy, self.reinforce.updates, self.uniform_entropy, self.collapse_epochs,
            self.final, self.scoring, self.supernet, self.budget))
        self.log.log(self.epoch, epoch=self.epoch, **{
            "verdict/text": v["text"], "verdict/margin_in_se": v["margin_in_se"],
            "verdict/entropy_start": v["entropy_start"], "verdict/entropy_end": v["entropy_end"]})
        self.log.text("verdict", v["text"], self.epoch)
        return v

    def as_metric(self, value: float, se: float, task_score: bool = False) -> tuple[str, float, float]:
        """A score in the task's own terms (enas/nas/scoring.py Scoring.as_metric)."""
        return self.scoring.as_metric(value, se, task_score)

    def _overview(self, derived: Derived) -> dict:
        """The epoch's headline figures, each of which moves while the search works
        (TensorBoard's first group, x = epoch): the shared phase's mean training figures,
        the controller phase's mean reward, the policy's entropy as a fraction of the
        uniform policy's, the derived architecture's validation figure."""
        loop, ctrl, top = self.loop, self.controller, derived.candidates[0]
        o = {f"train_{k}": float(v) / loop.epoch_count for k, v in loop.epoch_sums.items()} if loop.epoch_count else {}
        if ctrl.reward_count:
            o["reward"] = ctrl.reward_sum / ctrl.reward_count
        if self.uniform_entropy > 0:
            o["entropy_of_uniform"] = derived.entropy / self.uniform_entropy
        name, value, _ = self.as_metric(top.score, top.se)
        o[f"derived_{name}"] = value
        self.log.log(self.epoch, epoch=self.epoch, **{f"overview/{k}": v for k, v in o.items()})
        fit = self.budget.fit_rate()
        if fit is not None:  # the share of this epoch's draws that fit search.max_params
            self.log.log(self.epoch, epoch=self.epoch, **{"budget/fit": fit})
        return o

    def _epoch_line(self, overview: dict, derived: Derived, seconds: float) -> None:
        """One line a person can read; every figure on it is named in docs/glossary.md."""
        parts = [f"epoch {self.epoch}/{self.cfg.search.epochs}"]
        for k, v in overview.items():
            if k == "entropy_of_uniform":
                parts.append(f"entropy {100 * v:.1f}% of uniform")
            elif not k.startswith("derived_"):
                parts.append(f"{k.replace('_', ' ')} {v:.4g}")
        name, value, se = self.as_metric(derived.candidates[0].score, derived.candidates[0].se)
        parts.append(f"derived {name.replace('_', ' ')} {value:.4g} +- {se:.2g}")
        parts.append(f"time {seconds:.0f}s")
        say("  ".join(parts), self.log_enabled)


def shared_archs(s: SearchSection, epoch: int, n: int, policy, uniform: RandomPolicy, budget: Budget) -> list:
    """The architectures of an epoch's ``n`` shared steps (under search.max_params, only
    ones that fit: enas/nas/budget.py). The policy does not change during the shared phase,
    so they are drawn in one batched pass, from a generator seeded by (seed, epoch).
    Several processes: the policy weights and this seed are the same on every rank, so
    each draws the same list and minibatch i runs the same architecture everywhere (no
    broadcast needed; check_in_sync would catch a divergence of the weights)."""
    gen = torch.Generator().manual_seed(s.seed * 1_000_003 + epoch + 7)
    uniform_fit = lambda k: budget.archs(lambda m: uniform(m, generator=gen).archs, k,  # noqa: E731
                                         "the uniform sampler")
    with torch.no_grad():
        if s.uniform_shared >= 1.0:  # exactly random search with weight sharing's draws
            return uniform_fit(n)
        archs = budget.archs(lambda m: policy(m, generator=gen).archs, n, "the controller")
        if s.uniform_shared > 0.0:
            drawn = uniform_fit(n)
            pick = torch.rand(n, generator=gen) < s.uniform_shared
            archs = [u if p else a for a, u, p in zip(archs, drawn, pick.tolist())]
        return archs


def uniform_entropy(decisions) -> float:
    """Entropy (nats) of the uniform policy over ``decisions``: the most a policy can have."""
    total = 0.0
    for d in decisions:
        total += d.size * math.log(2) if d.kind == "skip" else math.log(d.size)
    return total
