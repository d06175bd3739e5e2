"""The ENAS search loop (paper, section 2.1): shared phase, controller phase, and the derive
of enas/derive.py.

It knows a space (decisions, supernet), a policy and a task (data, loss, reward),
never a modality: tokens vs. images, perplexity vs. accuracy live in enas/tasks/.

Position in a run is (epoch, phase, step); a checkpoint can be taken between any
two steps (end of epoch, every ``checkpoint_minutes``, on SIGINT/SIGTERM) and a
resumed run continues exactly: the architectures of a shared phase come from a
generator seeded by (seed, epoch), data order from the task's (seed, epoch)
generator, and every other random state is in the checkpoint.

Several processes (torchrun; enas/distributed.py, docs/distributed.md): ``data.batch_size`` stays the global minibatch, each process trains on
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

from . import checkpoint as ckpt, distributed as dist, verdict
from .bn import make_plain
from .budget import Budget, budget_model_args
from .config import ConfigError, SearchConfig, from_dict, to_dict
from .controller import RandomPolicy, build_policy
from .derive import Derive
from .errors import brief
from .files import produced, write_atomic
from .loop import Loop
from .memory import check_fits, check_step, sizes_of
from .plots import heatmap
from .reinforce import Reinforce
from .runlog import progress, say
from .schedule import lr_at, make_sgd, nonfinite_check, set_lr
from .scoring import Scoring
from .space import ArchError, build_space, check_arg_limits, validate
from .storage.runfolder import policy_groups, policy_key, policy_labels
from .tasks import build_task


class Search(Derive, Loop):
    """Everything a search holds; ``state_dict`` is the checkpoint."""

    kind = "search"

    def __init__(self, cfg: SearchConfig, run_dir: Path | None, data_dir, device: torch.device, log: bool = True):
        s = cfg.search
        super().__init__(run_dir, log, s.checkpoint_minutes, s.max_bad_steps, s.log_every)
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
        self.check = nonfinite_check(cfg.train, self.device)
        self.opt = make_sgd(self.supernet.parameters(), cfg.train, fused=self.check == "device")
        self.gen = torch.Generator().manual_seed(s.seed + 1)  # controller-phase and derive samples
        self.phase = "shared"
        self.valid_cursor = 0  # the task's reward batch the next reward is measured on (the task wraps it)
        self.ctrl_sum, self.ctrl_n = 0.0, 0  # rewards of this epoch's controller phase
        self.best: dict = {}
        self.candidates: list[dict] = []  # the last derive's candidates, best first
        self.final: dict = {}  # the final derive's result, once the last epoch is done
        self.trained: list[dict] = []  # the final stage's trained candidates, best derive score first
        self.collapse_epochs: list[int] = []  # the epochs that raised the collapse warning (the verdict names them)

    # ---- checkpoint -----------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "config": to_dict(self.cfg),
            "supernet": self.supernet.state_dict(),
            "shared_opt": self.opt.state_dict(),
            "policy": self.policy.state_dict(),
            "reinforce": self.reinforce.state_dict(),
            "task": self.task.state_dict(),
            "rng": ckpt.rng_state(self.gen),
            "valid_cursor": self.valid_cursor,
            "ctrl_rewards": [self.ctrl_sum, self.ctrl_n],
            "best": self.best,
            "candidates": self.candidates,
            "final": self.final,
            "scoring": self.scoring.state_dict(),
            "trained": self.trained,
            "collapse_epochs": self.collapse_epochs,
            "world": dist.world(),  # informational: the state is the same for any number
        }

    def load_state_dict(self, st: dict) -> None:
        self.check_kind(st)
        self.set_position(st["position"])
        try:
            self.supernet.load_state_dict(st["supernet"])
            self.policy.load_state_dict(st["policy"])
        except RuntimeError as e:
            raise ckpt.CheckpointError(f"checkpoint does not fit this search's models: {str(e)[:300]}") from None
        self.opt.load_state_dict(st["shared_opt"])
        self.reinforce.load_state_dict(st["reinforce"])
        self.task.load_state_dict(st["task"])
        ckpt.set_rng_state(st["rng"], self.gen)
        self.valid_cursor = int(st["valid_cursor"])
        self.ctrl_sum, self.ctrl_n = float(st["ctrl_rewards"][0]), int(st["ctrl_rewards"][1])
        self.best, self.candidates, self.final = st["best"], list(st["candidates"]), st["final"]
        self.scoring.load_state_dict(st["scoring"])
        self.trained = self._trained(st["trained"])
        epochs = st.get("collapse_epochs", [])  # absent from a checkpoint written before the verdict
        if not (isinstance(epochs, list) and all(type(e) is int for e in epochs)):
            raise ValueError(f"collapse_epochs is {brief(epochs)}, not a list of epochs")
        self.collapse_epochs = epochs

    def _trained(self, items) -> list[dict]:
        """The final stage's trained candidates as a checkpoint holds them, whose values are
        anyone's: each an architecture of this space with its three figures, nothing else
        (what the final stage and ``enas table`` read from them)."""
        out = []
        for c in items:
            if not isinstance(c, dict) or set(c) != {"arch", "score", "se", "derive_score"}:
                raise ValueError(f"a trained candidate is {brief(c)}")
            try:
                arch = validate(self.space.decisions(), c["arch"])
            except ArchError as e:
                raise ValueError(f"a trained candidate's architecture: {e}") from None
            out.append({"arch": arch, **{k: float(c[k]) for k in ("score", "se", "derive_score")}})
        return out

    # ---- the loop ---------------------------------------------------------------------
    def run(self, resume_offset: int | None = None) -> dict:
        self.open_log(resume_offset)
        dist.decorrelate_rng()  # ranks > 0: their own dropout masks
        self.smoke_note(self.cfg.search.smoke)
        untrained = verdict.warning(self.cfg)
        if untrained:
            say(untrained, self.log_enabled)
            if self.epoch == 0 and self.step == 0 and self.phase == "shared":  # once, in a fresh run's log
                self.log.log(0, epoch=0, **{"warning/controller": untrained})
        try:
            with self.stop:
                while self.epoch < self.cfg.search.epochs:
                    t0 = time.monotonic()
                    if self.phase == "shared":
                        self._shared_phase()
                        self.phase, self.step = "controller", 0
                        self.ctrl_sum, self.ctrl_n = 0.0, 0
                    self._controller_phase()
                    derived = self._derive()
                    dist.check_in_sync("supernet and controller weights",
                                       [*self.supernet.parameters(), *self.policy.parameters()],
                                       [self.reinforce.baseline, derived["score"]])
                    self.epoch, self.phase, self.step = self.epoch + 1, "shared", 0
                    overview = self._overview(derived)
                    self.save()
                    self._epoch_line(overview, derived, time.monotonic() - t0)
                    self.pace_note(self.cfg.search.smoke, time.monotonic() - t0, self.cfg.search.epochs - self.epoch)
                if self.final.get("epoch") != self.epoch:  # a resumed finished run does not derive again
                    self.final = self.final_derive()
                    self.save()
                if self.cfg.search.final_train and not self.final.get("trained"):
                    self.final = self.final_stage()
                    self.save()
                if "verdict" not in self.final:
                    self.final["verdict"] = verdict.compute(self)
                    v = self.final["verdict"]
                    self.log.log(self.epoch, epoch=self.epoch, **{
                        "verdict/text": v["text"], "verdict/margin_in_se": v["margin_in_se"],
                        "verdict/entropy_start": v["entropy_start"], "verdict/entropy_end": v["entropy_end"]})
                    self.log.text("verdict", v["text"], self.epoch)
                    self.save()
                self.best = self.final
        finally:
            self.log.close()
        return self.best

    def _shared_phase(self) -> dict:
        """One pass over the training split, a fresh architecture per minibatch (paper: M = 1)."""
        set_lr(self.opt, lr_at(self.cfg.train, self.epoch))
        # The policy does not change during this phase, so the epoch's architectures are
        # drawn in one batched pass, from a generator seeded by (seed, epoch). Several
        # processes: the policy weights and this seed are the same on every rank, so each
        # draws the same list and minibatch i runs the same architecture everywhere (no
        # broadcast needed; check_in_sync would catch a divergence of the weights).
        s = self.cfg.search
        gen = torch.Generator().manual_seed(s.seed * 1_000_003 + self.epoch + 7)
        n = self.task.num_train_batches(self.epoch)
        # search.max_params: only architectures that fit (enas/budget.py; without a budget
        # these are the plain draws)
        uniform_fit = lambda k: self.budget.archs(lambda m: self.uniform(m, generator=gen).archs, k,  # noqa: E731
                                                  "the uniform sampler")
        with torch.no_grad():
            if s.uniform_shared >= 1.0:  # exactly random search with weight sharing's draws
                archs = uniform_fit(n)
            else:
                archs = self.budget.archs(lambda m: self.policy(m, generator=gen).archs, n, "the controller")
                if s.uniform_shared > 0.0:
                    uniform = uniform_fit(n)
                    pick = torch.rand(n, generator=gen) < s.uniform_shared
                    archs = [u if p else a for a, u, p in zip(archs, uniform, pick.tolist())]
        desc = f"epoch {self.epoch + 1}/{self.cfg.search.epochs} shared"
        return self.sgd_pass(self.task, self.supernet, self.opt, self.cfg.train.grad_clip, archs.__getitem__,
                             desc, prefix="shared", check=self.check)

    def _controller_phase(self) -> None:
        c, s = self.cfg.controller, self.cfg.search
        if c.kind == "random" or self.epoch < s.controller_warmup_epochs or c.updates_per_epoch == 0:
            return
        self.scoring.refresh(self.supernet, self.global_step, s.reward_batches)
        bar = progress(c.updates_per_epoch, f"epoch {self.epoch + 1}/{s.epochs} controller", self.step,
                       self.log_enabled)
        while self.step < c.updates_per_epoch:
            # Several processes: self.gen has the same state everywhere, so every rank draws
            # the same samples; each reward is summed over the ranks' shares of the validation
            # batch (task), so the Adam step below is the same on every rank.
            sample, refused = self.budget.draw_both(lambda k: self.policy(k, generator=self.gen), c.num_aggregate,
                                                    "the controller")
            # all K rewards queued on the device, then read in one go (one sync per update)
            rewards = torch.stack([self._reward(a) for a in sample.archs]).tolist()
            last = self.reinforce.step(*self.budget.with_refused(sample, rewards, refused))
            if refused is not None and "reward" in last:  # the epoch's mean: of the rewards measured
                measured = [r for r in rewards if math.isfinite(r)]
                last["reward"] = sum(measured) / len(measured)
            self.step += 1
            if "reward" in last:
                self.ctrl_sum, self.ctrl_n = self.ctrl_sum + last["reward"], self.ctrl_n + 1
            self.log.log(self.reinforce.updates, epoch=self.epoch + 1,
                         **{f"controller/{k}": v for k, v in last.items()})
            bar.update(1)
            bar.set_postfix(reward=f"{last.get('reward', float('nan')):.3g}")
            self.maybe_checkpoint()
        bar.close()

    def _reward(self, arch) -> torch.Tensor:
        """The reward of ``arch`` (search.score; its supernet term on the task's next
        ``search.reward_batches`` reward batches; paper 2.1: one minibatch per sample; each
        sample of an update gets its own)."""
        k = self.cfg.search.reward_batches
        value = self.scoring.reward(self.supernet, arch, k, self.valid_cursor)
        self.valid_cursor += k
        return torch.as_tensor(value).double()

    def _draw(self, arch, png: Path, tag: str, step: int) -> None:
        draw = getattr(self.space, "draw", None)
        if draw is not None:  # drawn aside, then written whole (a link at png is replaced, not followed)
            write_atomic(png, produced(lambda p: draw(arch, p), png.name))
            self.log.image(tag, png, step)

    def _log_policy(self, sample, ep: int) -> None:
        """Per-decision choice probabilities (metrics.jsonl; TensorBoard: one heat map per
        decision group), mean entropy and the collapse warning."""
        figs = {}
        free_mass, n_free = 0.0, 0
        free = getattr(self.space, "param_free_choices", set())
        decisions = self.space.decisions()
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
        self.log.log(ep, epoch=ep, **figs)
        for g, ds in policy_groups(decisions).items():
            rows = [(d.name, labels, sample.probs[d.name].tolist()) for d, labels in ds]
            cols = max((r[1] for r in rows), key=len)
            kind = "input" if cols[0] == "0" else "choice"
            img = heatmap([r[2] + [None] * (len(cols) - len(r[2])) for r in rows], [r[0] for r in rows], cols,
                          f"{g}: choice probabilities after epoch {ep}", xlabel=kind)
            self.log.image(f"policy/{g}", img, ep)
        s = self.cfg.search
        early = ep <= s.epochs / 2
        warn = None
        if n_free and free_mass / n_free > 0.8:
            warn = f"the policy puts {free_mass / n_free:.0%} of its op probability on parameter-free ops"
        elif early and s.entropy_floor > 0 and entropy < s.entropy_floor:
            warn = f"policy entropy {entropy:.3g} fell below search.entropy_floor={s.entropy_floor} before the midpoint"
        if warn:
            msg = f"warning (epoch {ep}): {warn}; the search may be collapsing (see docs/evaluation.md)"
            say(msg, self.log_enabled)
            self.log.text("warning/collapse", msg, ep)
            self.log.log(ep, epoch=ep, **{"warning/collapse": 1, "warning/message": msg})
            self.collapse_epochs.append(ep)

    def as_metric(self, value: float, se: float, task_score: bool = False) -> tuple[str, float, float]:
        """A score in the task's own terms: ("valid_ppl", ppl, se) or ("valid_accuracy", ...)
        when the score is the paper's reward (or ``task_score``: the task's, as the final
        stage's are); ("score", value, se) for a weighted sum of standardised terms
        (search.score), which has no unit."""
        as_metric = getattr(self.task, "as_metric", None)
        if not (self.scoring.paper or task_score) or as_metric is None:
            return "score", value, se
        v, e = as_metric(value, se)
        return f"valid_{self.task.metric}", v, e

    def _overview(self, derived: dict) -> dict:
        """The epoch's headline figures, each of which moves while the search works
        (TensorBoard's first group, x = epoch): the shared phase's mean training figures,
        the controller phase's mean reward, the policy's entropy as a fraction of the
        uniform policy's, the derived architecture's validation figure."""
        o = {f"train_{k}": float(v) / self.epoch_count for k, v in self.epoch_sums.items()} if self.epoch_count else {}
        if self.ctrl_n:
            o["reward"] = self.ctrl_sum / self.ctrl_n
        if self.uniform_entropy > 0:
            o["entropy_of_uniform"] = derived["entropy"] / self.uniform_entropy
        name, value, _ = self.as_metric(derived["score"], derived["se"])
        o[f"derived_{name}"] = value
        self.log.log(self.epoch, epoch=self.epoch, **{f"overview/{k}": v for k, v in o.items()})
        fit = self.budget.fit_rate()
        if fit is not None:  # the share of this epoch's draws that fit search.max_params
            self.log.log(self.epoch, epoch=self.epoch, **{"budget/fit": fit})
        return o

    def _epoch_line(self, overview: dict, derived: dict, seconds: float) -> None:
        """One line a person can read; every figure on it is named in docs/glossary.md."""
        parts = [f"epoch {self.epoch}/{self.cfg.search.epochs}"]
        for k, v in overview.items():
            if k == "entropy_of_uniform":
                parts.append(f"entropy {100 * v:.1f}% of uniform")
            elif not k.startswith("derived_"):
                parts.append(f"{k.replace('_', ' ')} {v:.4g}")
        name, value, se = self.as_metric(derived["score"], derived["se"])
        parts.append(f"derived {name.replace('_', ' ')} {value:.4g} +- {se:.2g}")
        parts.append(f"time {seconds:.0f}s")
        say("  ".join(parts), self.log_enabled)


def uniform_entropy(decisions) -> float:
    """Entropy (nats) of the uniform policy over ``decisions``: the most a policy can have."""
    total = 0.0
    for d in decisions:
        total += d.size * math.log(2) if d.kind == "skip" else math.log(d.size)
    return total
