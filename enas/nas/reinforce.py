"""REINFORCE with a moving-average baseline and an entropy bonus (paper, section 2.1).

One ``step``: the K samples of one batched controller pass (K = num_aggregate)
each carry a reward; the loss -log pi(m) * (R - b) is averaged over them, so one
Adam step uses the mean gradient of num_aggregate samples (official code:
``num_aggregate``). The baseline is updated after every sample, before that
sample's advantage is taken (official: the loss reads the updated baseline).

One option on top of the paper (ControllerSection): ``reward_norm`` divides each
advantage by a bias-corrected moving standard deviation of R - b.

``ControllerUpdate`` is a search's controller phase: ``updates_per_epoch`` such steps,
each on rewards measured with the supernet's shared weights.
"""
from __future__ import annotations

import math

import torch

from enas.nas.budget import Budget
from enas.config import ControllerSection
from enas.nas.controller import Sample
from enas.train.loop import Loop
from enas.storage.runlog import progress
from enas.nas.scoring import Scoring


class Reinforce:
    def __init__(self, policy: torch.nn.Module, cfg: ControllerSection):
        self.policy = policy
        self.cfg = cfg
        params = list(policy.parameters())
        # Adam(beta1=0, eps=1e-3), constant LR, no clipping (official controllers).
        self.opt = (
            torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps)
            if params
            else None  # the random policy has nothing to train
        )
        self.baseline = 0.0  # official: tf.Variable(0.0)
        self.updates = 0
        self.dropped = 0  # samples with a non-finite reward, left out of the update
        self.sq_dev, self.n_dev = 0.0, 0  # moving mean of (R - b)^2 and its count (reward_norm)

    @property
    def entropy_weight(self) -> float:
        return self.cfg.entropy_weight

    def step(self, sample: Sample, rewards) -> dict:
        """Update the policy from one batch of rewarded samples; return logged figures."""
        rewards = [float(r) for r in rewards]
        bonus = (self.entropy_weight * sample.entropy.detach()).tolist()
        advantages, kept = [], []
        d = self.cfg.baseline_decay
        for k, (r, e) in enumerate(zip(rewards, bonus)):
            if not math.isfinite(r):  # a diverged child must not poison the baseline
                self.dropped += 1
                continue
            R = r + e  # entropy bonus added to the reward (paper 3.1)
            self.baseline = d * self.baseline + (1 - d) * R
            adv = R - self.baseline
            if self.cfg.reward_norm:
                self.sq_dev, self.n_dev = d * self.sq_dev + (1 - d) * adv * adv, self.n_dev + 1
                scale = math.sqrt(self.sq_dev / (1 - d ** self.n_dev))  # bias-corrected, as Adam's moments
                adv = adv / scale if scale > 0 else 0.0
            advantages.append(adv)
            kept.append(k)
        entropy = float(sample.entropy.detach().mean())
        stats = {
            "baseline": self.baseline,
            "entropy": entropy,
            "entropy_weight": self.entropy_weight,
            "dropped_rewards": self.dropped,
        }
        if not kept:
            return stats
        idx = torch.tensor(kept)
        adv = torch.tensor(advantages)
        loss = -(sample.log_prob[idx] * adv).mean()
        if self.cfg.skip_weight:
            loss = loss + self.cfg.skip_weight * sample.skip_penalty[idx].mean()  # paper 2.2
        if self.opt is not None:
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.updates += 1
        stats.update(
            reward=sum(rewards[k] for k in kept) / len(kept),
            advantage=float(adv.mean()),
            controller_loss=float(loss.detach()),
            skip_penalty=float(sample.skip_penalty.detach().mean()),
        )
        return stats

    def state_dict(self) -> dict:
        return {
            "opt": self.opt.state_dict() if self.opt else {},
            "baseline": self.baseline,
            "updates": self.updates,
            "dropped": self.dropped,
            "sq_dev": [self.sq_dev, self.n_dev],
        }

    def load_state_dict(self, state: dict) -> None:
        if self.opt is not None:
            self.opt.load_state_dict(state["opt"])
        self.baseline = float(state["baseline"])
        self.updates = int(state["updates"])
        self.dropped = int(state["dropped"])
        sq_dev, n_dev = state.get("sq_dev", (0.0, 0))  # a state without them: the start values
        self.sq_dev, self.n_dev = float(sq_dev), int(n_dev)


class ControllerUpdate:
    """The controller phase of one epoch (paper 2.1: the shared weights fixed, the policy
    trained by REINFORCE on validation rewards). It keeps where the reward stream is and
    the rewards of this epoch's phase (both checkpointed by the search)."""

    def __init__(self, policy: torch.nn.Module, reinforce: Reinforce, scoring: Scoring, budget: Budget,
                 cfg: ControllerSection, reward_batches: int):
        self.policy, self.reinforce, self.scoring, self.budget = policy, reinforce, scoring, budget
        self.cfg, self.reward_batches = cfg, reward_batches
        self.valid_cursor = 0  # the task's reward batch the next reward is measured on (the task wraps it)
        self.reward_sum, self.reward_count = 0.0, 0  # rewards of this epoch's controller phase

    def start_epoch(self) -> None:
        self.reward_sum, self.reward_count = 0.0, 0

    def trains(self, epoch: int, warmup_epochs: int) -> bool:
        """Whether the controller trains in ``epoch`` (not during the warm-up, not a random policy)."""
        return self.cfg.kind != "random" and epoch >= warmup_epochs and self.cfg.updates_per_epoch > 0

    def reward(self, supernet, arch) -> torch.Tensor:
        """The reward of ``arch`` (search.score; its supernet term on the task's next
        ``search.reward_batches`` reward batches; paper 2.1: one minibatch per sample; each
        sample of an update gets its own)."""
        k = self.reward_batches
        value = self.scoring.reward(supernet, arch, k, self.valid_cursor)
        self.valid_cursor += k
        return torch.as_tensor(value).double()

    def run(self, supernet, gen: torch.Generator, loop: Loop, desc: str) -> None:
        """The updates from ``loop.step`` on; between two, ``loop.maybe_checkpoint()``."""
        c = self.cfg
        self.scoring.refresh(supernet, loop.global_step, self.reward_batches)
        bar = progress(c.updates_per_epoch, desc, loop.step, loop.log_enabled)
        while loop.step < c.updates_per_epoch:
            # Several processes: gen has the same state everywhere, so every rank draws the
            # same samples; each reward is summed over the ranks' shares of the validation
            # batch (task), so the Adam step below is the same on every rank.
            sample, refused = self.budget.draw_both(lambda k: self.policy(k, generator=gen), c.num_aggregate,
                                                    "the controller")
            # all K rewards queued on the device, then read in one go (one sync per update)
            rewards = torch.stack([self.reward(supernet, a) for a in sample.archs]).tolist()
            last = self.reinforce.step(*self.budget.with_refused(sample, rewards, refused))
            if refused is not None and "reward" in last:  # the epoch's mean: of the rewards measured
                measured = [r for r in rewards if math.isfinite(r)]
                last["reward"] = sum(measured) / len(measured)
            loop.step += 1
            if "reward" in last:
                self.reward_sum, self.reward_count = self.reward_sum + last["reward"], self.reward_count + 1
            loop.log.log(self.reinforce.updates, epoch=loop.epoch + 1,
                         **{f"controller/{k}": v for k, v in last.items()})
            bar.update(1)
            bar.set_postfix(reward=f"{last.get('reward', float('nan')):.3g}")
            loop.maybe_checkpoint()
        bar.close()
