"""What a search and a retrain have in common: position, checkpoints, signals, SGD pass.

Position in a run is (epoch, phase, step). ``maybe_checkpoint`` is called between
two steps: on SIGINT/SIGTERM it checkpoints and raises StopRequested (the CLI
prints the resume command and exits non-zero); every ``checkpoint_minutes`` it
checkpoints and goes on. ``sgd_pass`` is one pass over the training split with a
non-finite guard: a step whose gradient norm is not finite is skipped and counted,
and ``max_bad_steps`` in a row stop the run with the last good checkpoint intact.

Under torchrun (enas/train/distributed.py) every process runs this loop in lockstep on its
shard of each minibatch: gradients (and the logged figures) are averaged over the
processes before clipping, so all of them apply the same update and take the same
skip decision; the stop / checkpoint decision is agreed at ``maybe_checkpoint``
(a signal on any process stops all of them at the same step, rank 0's clock decides
time-based checkpoints); only rank 0 (``log_enabled``) writes files.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import torch

from enas.storage import checkpoint as ckpt
from enas.train import distributed as dist
from enas.train.interrupt import GracefulStop, StopRequested
from enas.storage.runlog import RunLog, progress, say
from enas.train.schedule import fill_momentum


class NonFiniteError(RuntimeError):
    pass


class BNStats:
    """The BN running statistics of a model, saved before each step and restored when the
    step is skipped: the forward has already folded the bad batch into them.

    The buffers are gathered once into one flat tensor per dtype and every module's
    buffer becomes a view of it, so saving is one copy and a conditional restore decided
    on the device is one select, whatever the number of BN layers."""

    def __init__(self, model: torch.nn.Module):
        bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        slots = [(m, k) for m in bns for k in ("running_mean", "running_var", "num_batches_tracked")
                 if m._buffers.get(k) is not None]
        self.flats: list[torch.Tensor] = []
        for dtype in sorted({m._buffers[k].dtype for m, k in slots}, key=str):
            group = [(m, k) for m, k in slots if m._buffers[k].dtype == dtype]
            flat = torch.cat([m._buffers[k].reshape(-1) for m, k in group])
            at = 0
            for m, k in group:
                b = m._buffers[k]
                m._buffers[k] = flat[at:at + b.numel()].view_as(b)
                at += b.numel()
            self.flats.append(flat)
        self.saved = [f.clone() for f in self.flats]

    @staticmethod
    def of(model: torch.nn.Module) -> "BNStats":
        """One per model: the buffers are made views once (a compiled model sees them stay)."""
        stats = model.__dict__.get("_enas_bn_stats")
        if stats is None:
            stats = model.__dict__["_enas_bn_stats"] = BNStats(model)
        return stats

    def save(self) -> None:
        if self.flats:
            torch._foreach_copy_(self.saved, self.flats)

    def restore(self, bad: torch.Tensor | None = None) -> None:
        """Back to the saved values: always, or where the device flag ``bad`` is set."""
        for f, s in zip(self.flats, self.saved):
            f.copy_(s if bad is None else torch.where(bad, s, f))


class Loop:
    kind = "run"  # "search" or "retrain": names the command that resumes

    def __init__(self, run_dir, log: bool, checkpoint_minutes: float, max_bad_steps: int, log_every: int,
                 kind: str | None = None, state: Callable[[], dict] | None = None):
        """``kind`` and ``state`` for a loop that a run holds rather than extends (a search):
        the command that resumes it, and the whole checkpoint ``save`` writes."""
        if kind is not None:
            self.kind = kind
        self._state = state
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.log_enabled = log
        self.checkpoint_minutes = checkpoint_minutes
        self.max_bad_steps = max_bad_steps
        self.log_every = log_every
        self.epoch, self.phase, self.step, self.global_step = 0, "train", 0, 0
        self.bad_steps = self.skipped_steps = 0
        # Figures of the steps since the last log line; checkpointed, so a resumed run logs
        # the same averages as an uninterrupted one.
        self.window: dict = {}
        self.window_count = 0
        self.epoch_sums: dict = {}  # the same for the whole current pass (the epoch's means)
        self.epoch_count = 0
        self.log: RunLog | None = None
        self._pending: list = []  # steps decided on the device, not yet read (settle)
        self.stop = GracefulStop()
        self._last_save = time.monotonic()
        self._paced = False  # pace_note said its line

    # ---- state ------------------------------------------------------------------------
    def position(self) -> dict:
        self.settle()
        return {"epoch": self.epoch, "phase": self.phase, "step": self.step,
                "global_step": self.global_step, "skipped_steps": self.skipped_steps,
                "window": {k: float(v) for k, v in self.window.items()}, "window_count": self.window_count,
                "epoch_sums": {k: float(v) for k, v in self.epoch_sums.items()}, "epoch_count": self.epoch_count}

    def set_position(self, pos: dict) -> None:
        self.epoch, self.phase, self.step = pos["epoch"], pos["phase"], pos["step"]
        self.global_step, self.skipped_steps = pos["global_step"], pos["skipped_steps"]
        self.window, self.window_count = dict(pos["window"]), pos["window_count"]
        self.epoch_sums, self.epoch_count = dict(pos["epoch_sums"]), pos["epoch_count"]

    def state_dict(self) -> dict:  # extended by subclasses
        return {"kind": self.kind, "position": self.position(),
                "metrics_offset": self.log.offset() if self.log else 0}

    def check_kind(self, state: dict) -> None:
        if state.get("kind") != self.kind:
            raise ckpt.CheckpointError(
                f"this checkpoint is from `enas {state.get('kind')}`, not `enas {self.kind}`")

    def save(self) -> None:
        # Several processes: state_dict may gather shards (a task's carried state), so
        # every rank builds it; rank 0 writes it.
        state = (self._state or self.state_dict)() if self.log_enabled or dist.world() > 1 else None
        if self.log_enabled:
            self.log.flush()
            ckpt.save(self.run_dir, state)
        self._last_save = time.monotonic()

    def open_log(self, resume_offset: int | None) -> None:
        purge = self.global_step if resume_offset is not None else None
        self.log = RunLog(self.run_dir, resume_offset, purge_step=purge, enabled=self.log_enabled, kind=self.kind)
        self._last_save = time.monotonic()

    def resume_command(self) -> str:
        return f"enas {self.kind} --resume {self.run_dir}"

    def smoke_note(self, smoke: bool) -> None:
        """A smoke run says what it is, so its figures are not taken for a bug."""
        if smoke:
            say(f"smoke run ({self.kind}.smoke: true): a tiny network on a little data, to check that everything "
                f"works; after its first epoch it says how long the rest takes. Figures near chance are expected; "
                f"the configs outside configs/smoke/ are the real runs.", self.log_enabled)

    def pace_note(self, smoke: bool, seconds: float, epochs_left: int) -> None:
        """After a smoke run's first epoch in this process: how long the rest takes at that
        pace. Its length depends on the cell and on the machine's load more than any fixed
        figure in a banner could say."""
        if not smoke or self._paced:
            return
        self._paced = True
        if epochs_left > 0:
            minutes = seconds * epochs_left / 60
            left = f"{minutes:.0f} min" if minutes >= 1 else f"{seconds * epochs_left:.0f} s"
            say(f"at this pace the {epochs_left} epochs left take about {left}", self.log_enabled)

    def maybe_checkpoint(self) -> None:
        """Between two steps: on a stop signal, or when checkpoint_minutes have passed."""
        signum = self.stop.signum or 0
        due = time.monotonic() - self._last_save > 60 * self.checkpoint_minutes
        if dist.world() > 1:  # one decision for all ranks: any rank's signal, rank 0's clock
            signum, due = dist.max_ints([signum, due and dist.is_main()])
            self.stop.signum = signum or None
        if signum:
            self.save()
            raise StopRequested(signum, self.resume_command())
        if due:
            self.save()

    def stop_if_requested(self, undo: Callable[[], None] | None = None) -> None:
        """Within a long piece of work that a resume redoes whole (a derive of thousands of
        candidates takes minutes): on a stop signal, ``undo()`` what it changed so far,
        checkpoint, stop. Several processes reach this at the same candidates and decide
        together (any rank's signal stops all): one rank leaving a derive alone would
        strand the others in their next collective."""
        if dist.world() > 1:
            self.stop.signum = dist.max_ints([self.stop.signum or 0])[0] or None
        if self.stop.requested:
            if undo is not None:
                undo()
            self.save()
            raise StopRequested(self.stop.signum, self.resume_command())

    # ---- one pass of SGD --------------------------------------------------------------
    def sgd_pass(self, task, model, opt, grad_clip: float, arch_at: Callable[[int], object], desc: str,
                 on_step: Callable[[], None] | None = None, prefix: str = "train", check: str = "host") -> dict:
        """Train ``model`` on one pass of ``task``'s training split from ``self.step``.

        ``arch_at(i)`` is the architecture of minibatch i (None for a child). Returns
        the mean of the task's step figures over the applied steps. ``check``: how a
        non-finite step is skipped (OptimSection.nonfinite_check, resolved): "host"
        decides after every step; "device" needs a fused SGD and no ``on_step``.
        """
        n = task.num_train_batches(self.epoch)
        if self.step == 0:
            task.start_epoch(self.epoch)
        model.train()
        params = [p for p in model.parameters()]
        clip = grad_clip if grad_clip > 0 else math.inf
        bn_stats = BNStats.of(model)
        lr_scale = getattr(task, "lr_scale", None)
        reset = getattr(task, "on_bad_step", None)  # e.g. LM: drop a poisoned carried state
        on_device = check == "device"
        if on_device:
            assert on_step is None and opt.defaults.get("fused"), "device checks need a fused SGD and no on_step"
            fill_momentum(opt)
        if self.step == 0:
            self.epoch_sums, self.epoch_count = {}, 0
        bar = progress(n, desc, self.step, self.log_enabled)
        for i, batch in enumerate(task.train_batches(self.epoch)):
            if i < self.step:
                continue  # resumed mid-epoch: same order, already trained
            scale = lr_scale(batch) if lr_scale is not None else 1.0
            if on_device:  # no host sync: the step is skipped (or not) on the device, read later
                bn_stats.save()  # the forward updates BN running statistics even if the step is skipped
                norm, stats = self.gradients(task, model, opt, params, clip, batch, arch_at(i))
                self.step = i + 1
                bad = ~torch.isfinite(norm)
                self._sgd_step(opt, scale, found_inf=bad.float())
                bn_stats.restore(bad)
                if reset is not None:
                    reset(bad)
                # a skipped step's figures are never added (settle), so they are kept as they are
                self._pending.append((bad, {k: v.detach() for k, v in stats.items()}))
            else:  # the host decides: one sync per step
                applied, stats = self.train_step(task, model, opt, params, clip, batch, arch_at(i), bn_stats,
                                                 scale, reset)
                self.step = i + 1
                if applied and on_step is not None:
                    on_step()
                self._count_step(applied, stats if applied else {})
            self.global_step += 1
            bar.update(1)
            if self.global_step % self.log_every == 0:
                self.settle()
                if self.window_count:
                    figs = {f"{prefix}/{k}": float(v) / self.window_count for k, v in self.window.items()}
                    self.window, self.window_count = {}, 0
                    self.log.log(self.global_step, epoch=self.epoch + 1,
                                 **{f"{prefix}/lr": opt.param_groups[0]["lr"]},
                                 **figs, **{f"{prefix}/skipped_steps": self.skipped_steps})
                    bar.set_postfix({k.split("/")[1]: f"{v:.3g}" for k, v in figs.items()})
            self.maybe_checkpoint()
        self.settle()
        bar.close()
        return {k: float(v) / max(self.epoch_count, 1) for k, v in self.epoch_sums.items()}

    @staticmethod
    def gradients(task, model, opt, params, clip: float, batch, arch) -> tuple[torch.Tensor, dict]:
        """(clipped gradient norm, the task's step figures) of one minibatch."""
        opt.zero_grad(set_to_none=True)
        stats = Loop._backward(task, model, batch, arch)
        stats = dist.average_gradients(params, stats)  # several processes: the whole minibatch's
        return torch.nn.utils.clip_grad_norm_(params, clip), stats  # really clips (official CIFAR bug: it did not)

    @staticmethod
    def train_step(task, model, opt, params, clip: float, batch, arch, bn_stats: BNStats | None = None,
                   scale: float = 1.0, reset: Callable | None = None) -> tuple[bool, dict]:
        """One training step whose skip the host decides (one sync): gradients, clipping,
        then the SGD step unless the norm is not finite, in which case the BN statistics
        the forward moved are restored and ``reset()`` is called. Returns (applied,
        figures). benchmarks/_bench.py times exactly this step."""
        if bn_stats is not None:
            bn_stats.save()  # the forward updates BN running statistics even if the step is skipped
        norm, stats = Loop.gradients(task, model, opt, params, clip, batch, arch)
        if not torch.isfinite(norm):
            if bn_stats is not None:
                bn_stats.restore()
            opt.zero_grad(set_to_none=True)
            if reset is not None:
                reset()
            return False, stats
        Loop._sgd_step(opt, scale)
        return True, stats

    @staticmethod
    def _backward(task, model, batch, arch) -> dict:
        """Gradients of one step's architecture; the task's figures of the step."""
        loss, stats = task.train_loss(model, batch, arch)
        loss.backward()
        return stats

    @staticmethod
    def _sgd_step(opt, scale: float, found_inf: torch.Tensor | None = None) -> None:
        """One SGD step, its LR times ``scale`` (variable BPTT: the step, not the loss, so
        clipping keeps it); with ``found_inf`` the fused kernel skips it on the device."""
        if scale != 1.0:
            for g in opt.param_groups:
                g["lr"] *= scale
        if found_inf is not None:
            opt.found_inf = found_inf
        try:
            opt.step()
        finally:
            opt.__dict__.pop("found_inf", None)
            if scale != 1.0:
                for g in opt.param_groups:
                    g["lr"] /= scale

    def _count_step(self, applied: bool, stats: dict) -> None:
        """The host's books for one step: figures of applied steps, runs of skipped ones."""
        if not applied:
            self._bad_step()
            return
        self.bad_steps = 0
        for k, v in stats.items():
            self.epoch_sums[k] = self.epoch_sums.get(k, 0.0) + v.detach()
            self.window[k] = self.window.get(k, 0.0) + v.detach()
        self.epoch_count += 1
        self.window_count += 1

    def settle(self) -> None:
        """Read the outcome of the steps decided on the device (one sync) into the books."""
        if not self._pending:
            return
        flags = torch.stack([b for b, _ in self._pending]).tolist()
        pending, self._pending = self._pending, []
        for bad, (_, stats) in zip(flags, pending):
            self._count_step(not bad, stats)

    def _bad_step(self) -> None:
        self.bad_steps += 1
        self.skipped_steps += 1
        if self.bad_steps >= self.max_bad_steps:
            head = f"{self.bad_steps} training steps in a row had a non-finite loss or gradient; stopping. "
            if self.run_dir is not None and (self.run_dir / ckpt.NAME).exists():
                raise NonFiniteError(
                    head + f"The last good checkpoint in {self.run_dir} is intact: lower train.lr or set "
                    f"train.grad_clip, then continue with `{self.resume_command()} --set ... --allow-config-change`")
            raise NonFiniteError(head + "No checkpoint was written before it: lower train.lr or set "
                                 "train.grad_clip and start the run again (in a new --run-dir)")
