"""The ENAS search loop (paper, section 2.1): shared phase, controller phase, derive.

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

from . import checkpoint as ckpt, distributed as dist
from .archfile import save_arch
from .bn import make_plain
from .config import ConfigError, SearchConfig, from_dict, to_dict
from .controller import RandomPolicy, build_policy
from .errors import brief
from .files import make_dir, produced, write_atomic
from .final_stage import train_candidates
from .loop import Loop
from .memory import check_fits, sizes_of
from .plots import heatmap
from .reinforce import Reinforce
from .runlog import progress, say
from .schedule import lr_at, make_sgd, nonfinite_check, set_lr
from .scoring import Scoring
from .space import ArchError, build_space, validate
from .tasks import build_task


class Search(Loop):
    """Everything a search holds; ``state_dict`` is the checkpoint."""

    kind = "search"

    def __init__(self, cfg: SearchConfig, run_dir: Path | None, data_dir, device: torch.device, log: bool = True):
        s = cfg.search
        super().__init__(run_dir, log, s.checkpoint_minutes, s.max_bad_steps, s.log_every)
        self.cfg, self.device = cfg, device
        self.space = build_space(cfg.space.name, cfg.space.args, cfg.space.module)
        self.model_args = from_dict(type(self.space).ModelArgs, cfg.model, "model")
        dist.require_multiple("data.batch_size", cfg.data.batch_size,
                              "each process trains on an equal share of every minibatch")
        dist.require_multiple("data.eval_batch_size", cfg.data.eval_batch_size,
                              "each process scores an equal share of every validation batch")
        if cfg.train.lr_scaling != "none" and dist.world() > 1:
            raise ConfigError("train.lr_scaling applies to `enas retrain`; a search keeps its minibatch "
                              "(data.batch_size, split over the processes) and so its learning rate")
        self.task = build_task(
            self.space.modality, cfg.data, data_dir, device, s.seed, split="search",
            reward_c=s.reward_c, reward_warmup=s.reward_warmup, eval_bn=s.eval_bn,
            recalibrate_batches=s.recalibrate_batches, amp=s.amp, channels_last=s.channels_last, aux_weight=s.aux_weight,
            shard=dist.shard(), train_batch=cfg.data.batch_size,
        )
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
                if self.final.get("epoch") != self.epoch:  # a resumed finished run does not derive again
                    self.final = self.final_derive()
                    self.save()
                if self.cfg.search.final_train and not self.final.get("trained"):
                    self.final = self.final_stage()
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
        with torch.no_grad():
            if s.fair_sampling:  # FairNAS: every choice of every categorical decision, once a step
                archs = [self.uniform.fair_group(generator=gen) for _ in range(n)]
            elif s.uniform_shared >= 1.0:  # exactly random search with weight sharing's draws
                archs = self.uniform(n, generator=gen).archs
            else:
                archs = self.policy(n, generator=gen).archs
                if s.uniform_shared > 0.0:
                    uniform = self.uniform(n, generator=gen).archs
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
            sample = self.policy(c.num_aggregate, generator=self.gen)
            # all K rewards queued on the device, then read in one go (one sync per update)
            rewards = torch.stack([self._reward(a) for a in sample.archs]).tolist()
            last = self.reinforce.step(sample, rewards)
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

    def _derive(self) -> dict:
        """Sample N archs from the policy and score them all on the same validation
        batches, a different block each epoch (a fair comparison within a derive, no
        lottery on one fixed batch across epochs); keep the best as this epoch's arch."""
        s = self.cfg.search
        with torch.no_grad():
            sample = self.policy(s.derive_samples, generator=self.gen)
        first = self.epoch * s.derive_batches
        self.scoring.refresh(self.supernet, self.global_step, s.reward_batches, stale_ok=True)
        scored = [self.scoring.score(self.supernet, a, s.derive_batches, first) for a in sample.archs]
        ranked = sorted(range(len(scored)), key=lambda i: _sort_key(scored[i][0]))
        self.candidates = [{"arch": sample.archs[i], "score": scored[i][0], "se": scored[i][1]} for i in ranked]
        top = self.candidates[0]
        ep = self.epoch + 1
        prov = {"run": str(self.run_dir), "epoch": ep, "score": top["score"], "score_se": top["se"],
                "score_is": f"{self.scoring.describe(self.task.metric)} on {_batches_text(s.derive_batches)} "
                            f"from batch {first % self.task.num_valid_batches()}"}
        self.best = {"arch": top["arch"], "score": top["score"], "epoch": ep}
        if self.log_enabled:
            make_dir(self.run_dir / "archs")
            save_arch(self.run_dir / "archs" / f"epoch_{ep:03d}.yaml", self.space, top["arch"], prov)
            save_arch(self.run_dir / "best_arch.yaml", self.space, top["arch"], prov)
            self._log_policy(sample, ep)
            finite = [v for v, _ in scored if math.isfinite(v)]
            self.log.log(ep, epoch=ep, **{
                "derive/score": top["score"], "derive/score_se": top["se"],
                "derive/score_mean": sum(finite) / max(len(finite), 1)})
            self.log.text("derive/arch", self.space.describe(top["arch"]), ep)
            self._draw(top["arch"], self.run_dir / "archs" / f"epoch_{ep:03d}.png", "derive/cell", ep)
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
        prov = {"run": str(self.run_dir), "epoch": self.epoch, "score": win["score"], "score_se": win["se"],
                "score_is": f"{self.scoring.describe(self.task.metric)} on {data}",
                "final_derive": {"candidates": len(rescored), "margin_in_se": margin, "paired": paired,
                                 "runner_up_score": rescored[1]["score"] if len(rescored) > 1 else None}}
        files = None
        if out is not None:
            save_arch(out, self.space, win["arch"], {**prov, **(provenance or {})})
        elif self.log_enabled:
            save_arch(self.run_dir / "best_arch.yaml", self.space, win["arch"], prov)
            (self.run_dir / "archs").mkdir(exist_ok=True)
            files = [self.run_dir / "archs" / f"final_{rank}.yaml" for rank in range(1, len(rescored) + 1)]
            for rank, (c, path) in enumerate(zip(rescored, files), start=1):
                save_arch(path, self.space, c["arch"], {
                    "run": str(self.run_dir), "epoch": self.epoch, "score": c["score"], "score_se": c["se"],
                    "score_is": prov["score_is"], "final_derive_rank": rank})
            self.log.log(self.epoch, epoch=self.epoch, **{
                "derive/final_score": win["score"], "derive/final_score_se": win["se"]})
            table = "\n".join(f"{c['score']:.4g} +- {c['se']:.2g} (derive {c['derive_score']:.4g}): "
                              f"{self.space.describe(c['arch']).splitlines()[0]}" for c in rescored)
            self.log.text("derive/final_candidates", table, self.epoch)
            self._draw(win["arch"], self.run_dir / "best_arch.png", "derive/final_cell", self.epoch)
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
        prov = {"run": str(self.run_dir), "epoch": self.epoch, "score": win["score"], "score_se": win["se"],
                "score_is": what, "final_stage": [{"score": c["score"], "derive_score": c["derive_score"],
                                                   "arch": self.space.describe(c["arch"]).splitlines()[0]}
                                                  for c in ranked]}
        name, value, se = self.as_metric(win["score"], win["se"], task_score=True)
        say(f"final stage: {len(ranked)} candidates trained from scratch for {s.final_train_epochs} epochs each; "
            f"best: {name.replace('_', ' ')} {value:.4g} +- {se:.2g} on the whole validation split",
            self.log_enabled)
        if self.log_enabled:
            save_arch(self.run_dir / "best_arch.yaml", self.space, win["arch"], prov)
            self.log.log(self.epoch, epoch=self.epoch, **{"derive/final_stage_score": win["score"]})
            self._draw(win["arch"], self.run_dir / "best_arch.png", "derive/final_cell", self.epoch)
        return {"arch": win["arch"], "score": win["score"], "se": win["se"], "epoch": self.epoch,
                "trained": True, "candidates": self.final.get("candidates", [])}

    def _draw(self, arch, png: Path, tag: str, step: int) -> None:
        draw = getattr(self.space, "draw", None)
        if draw is not None:  # drawn aside, then written whole (a link at png is replaced, not followed)
            write_atomic(png, produced(lambda p: draw(arch, p), png.name))
            self.log.image(tag, png, step)

    def _log_policy(self, sample, ep: int) -> None:
        """Per-decision choice probabilities (metrics.jsonl; TensorBoard: one heat map per
        decision group), mean entropy and the collapse warning."""
        figs = {}
        groups: dict[str, list] = {}
        free_mass, n_free = 0.0, 0
        free = getattr(self.space, "param_free_choices", set())
        for d in self.space.decisions():
            p = sample.probs[d.name].tolist()
            labels = list(d.choices) if d.kind == "categorical" else [str(j) for j in range(d.size)]
            for lab, v in zip(labels, p):
                figs[f"policy/{d.name}/{lab}"] = v
            if d.size > 1 or d.kind == "skip":  # a decision with one choice has nothing to show
                groups.setdefault(d.group, []).append((d.name, labels, p))
            if d.kind == "categorical" and free & set(d.choices):
                free_mass += sum(v for lab, v in zip(labels, p) if lab in free)
                n_free += 1
        entropy = float(sample.entropy.mean())
        figs["policy/entropy"] = entropy
        self.log.log(ep, epoch=ep, **figs)
        for g, rows in groups.items():
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


def _sort_key(score: float) -> float:
    """Best first; a non-finite score last."""
    return -score if math.isfinite(score) else math.inf


def _batches_text(n: int) -> str:
    return "all batches" if n == 0 else f"{n} batch{'es' if n > 1 else ''}"


def derive_again(search: Search, seed: int = 0) -> tuple[Path, dict]:
    """``enas derive``: sample ``search.derive_samples`` candidates from a reopened search's
    policy and derive as at the end of a search (score all, re-score the best on
    ``search.final_batches``); the result goes to RUN/archs/derive-<time>-n<samples>.yaml."""
    n = search.cfg.search.derive_samples
    search.gen.manual_seed(seed)  # the same candidates for the same --seed
    search._derive()
    out = search.run_dir / "archs" / f"derive-{time.strftime('%Y%m%d-%H%M%S')}-n{n}.yaml"
    make_dir(out.parent)
    derived = search.final_derive(out, {"derived_from": "checkpoint.pt", "samples": n, "seed": seed})
    return out, derived
