"""Retrain an exported architecture from scratch and evaluate it (paper 3.2, 3.3 "final").

The child is ``space.child(arch, model_args, **task.model_kwargs())``: the very
module the search scored, built from the arch file alone. The task is built with
``split="final"``: all training data, the validation split for model selection
(PTB), the test split at the end. CIFAR-10 has no validation split in the final
setting (all 50,000 images train), so there the per-epoch figure *is* the test set
(logged as ``test/...``), the last model is the result, and nothing is selected on it.

Recipes (ENAS_REFERENCE sections 3-5): SGD with the epoch's LR from ``lr_at``
(cosine for CIFAR, constant for PTB); CIFAR: scheduled drop-path, aux head, cutout;
PTB: variable BPTT, AR, and NT-ASGD (an average of the weights from the epoch the
valid ppl stopped improving; evaluation and the best-valid model use the average).

A run folder is self-contained: ``config.yaml`` + ``arch.yaml`` rebuild the model,
``checkpoint.pt`` continues it (``enas retrain --resume``), ``best.pt`` holds the
best-validation weights (LM), ``result.json`` the test metric that ``enas evaluate``
recomputes. Resume is exact on CPU: data order and BPTT lengths come from (seed,
epoch), dropout from the RNG state in the checkpoint.

Several processes (torchrun; enas/train/distributed.py, docs/distributed.md):
``data.batch_size`` is per process, the global batch ``batch_size x processes``; each
epoch's permutation (or the LM's streams) is the same on every rank and each takes its
share of every global batch; gradients are averaged, so the weights stay identical.
``train.lr_scaling: linear`` multiplies the LR by the number of processes.
``retrain.sync_bn`` turns BN into SyncBatchNorm on CUDA. Evaluation is sharded too,
with rank 0's BN statistics; the checkpoint is a single-process state, so a run can
resume on another number of processes (mid-epoch: at the same fraction of the epoch).
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import torch

from enas.storage import checkpoint as ckpt
from enas.train import distributed as dist
from enas.train.asgd import WeightAverage, should_start
from enas.config import ConfigError, RetrainConfig, from_dict, to_dict
from enas.errors import CheckpointError, RunDirError, brief
from enas.storage.files import read_json_if_any, write_atomic
from enas.train.loop import Loop
from enas.train.memory import check_fits, check_step, sizes_of
from enas.storage.runlog import say
from enas.train.schedule import lr_at, make_sgd, nonfinite_check, set_lr
from enas.nas.space import check_arg_limits
from enas.storage import runfolder
from enas.tasks import build_task

BEST = runfolder.BEST
RESULT = runfolder.RESULT
MAX_RESULT_BYTES = 2**20  # result.json: a dozen figures


def drop_path_at(final: float, epoch: int, epochs: int) -> float:
    """Drop-path probability of 0-based ``epoch``: linear from 0 to ``final`` over training
    (official micro child: scaled by training progress; the model adds the depth factor)."""
    return final * epoch / epochs


def count_params(model: torch.nn.Module, test_time: bool = True) -> int:
    """Parameters (tied weights once) of the network used at test time: an auxiliary head
    (``model.aux_head``, a training-time loss only) is left out unless ``test_time`` is
    False; ``result.json`` reports it apart as ``params_aux_head``."""
    n = sum(p.numel() for p in model.parameters())
    aux = getattr(model, "aux_head", None)
    if test_time and isinstance(aux, torch.nn.Module):
        n -= sum(p.numel() for p in aux.parameters())
    return n


class Retrain(Loop):
    """Everything a retrain holds; ``state_dict`` is the checkpoint."""

    kind = "retrain"

    def __init__(self, cfg: RetrainConfig, space, arch: dict, run_dir: Path | None, data_dir,
                 device: torch.device, log: bool = True):
        r = cfg.retrain
        super().__init__(run_dir, log, r.checkpoint_minutes, r.max_bad_steps, r.log_every)
        self.cfg, self.space, self.arch, self.device = cfg, space, arch, torch.device(device)
        check_config_space(cfg, space)
        check_arg_limits(type(space), cfg.model, "model")  # before anything is built of it
        self.model_args = from_dict(type(space).ModelArgs, cfg.model, "model")
        n = dist.world()
        dist.require_multiple("data.eval_batch_size", cfg.data.eval_batch_size,
                              "each process scores an equal share of every evaluation batch")
        self.task_data_dir = str(data_dir)
        self.task = build_task(space.modality, cfg.data, data_dir, self.device, r.seed, split="final",
                               aux_weight=r.aux_weight, label_smoothing=r.label_smoothing,
                               amp=r.amp, channels_last=r.channels_last,
                               shard=dist.shard(), train_batch=cfg.data.batch_size * n)
        self.lr_scale = n if cfg.train.lr_scaling == "linear" else 1  # linear scaling rule
        # Higher is better for accuracy; NT-ASGD and model selection compare "lower is better".
        self.lower_is_better = self.task.metric != "accuracy"
        # CIFAR final: "valid" is the test set (see module docstring); select nothing on it.
        self.valid_is_test = self.task.valid_is_test
        self.select_best = not self.valid_is_test
        if log or n > 1:  # a retrain that trains (a run reopened to evaluate, log=False, does not)
            check_step(space, self.model_args, self.task.model_kwargs(), cfg.data, cfg.data.batch_size, cfg.model,
                       self.device, n if self.device.type == "cpu" else 1)
        check_fits(lambda: space.child(arch, self.model_args, **self.task.model_kwargs()), "network",
                   sizes_of("model", cfg.model), self.device)
        torch.manual_seed(r.seed)  # the child's initial weights
        self.model = space.child(arch, self.model_args, **self.task.model_kwargs()).to(self.device)
        note = getattr(self.model, "kernel_note", None)  # a model with several kernels says which runs
        if note is not None:
            say(note(self.device), log)
        self.sync_bn = n > 1 and r.sync_bn and self.device.type == "cuda" and _has_bn(self.model)
        if self.sync_bn:  # same state-dict keys: checkpoints load into a plain child
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        elif n > 1 and r.sync_bn and _has_bn(self.model):
            say("note: retrain.sync_bn has no effect on CPU (PyTorch's SyncBatchNorm needs a GPU); "
                "each process normalises with its own share's BN statistics", log)
        prepare = getattr(self.task, "prepare_model", None)
        if prepare is not None:
            prepare(self.model)
        self.train_model = self._maybe_compile(self.model)
        # NT-ASGD folds every applied step into its average: that needs the host's decision
        self.check = "host" if r.asgd else nonfinite_check(cfg.train, self.device)
        self.opt = make_sgd(self.model.parameters(), cfg.train, fused=self.check == "device")
        self.history: list[float] = []  # per-epoch valid figure (eval weights), oldest first
        self.best: dict = {}  # {"epoch", "valid"} of best.pt
        self.average = WeightAverage(self.model)  # NT-ASGD, once the valid figure stops improving
        self.wall_before = 0.0  # seconds spent before this process (resumed runs)
        self._t_start = time.monotonic()

    # ---- helpers ------------------------------------------------------------------------
    def _maybe_compile(self, model):
        # "auto" is the plain module: a compiled child becomes a device's default only once
        # benchmarks/gpu_check.py shows it correct and faster there (RetrainSection.compile, docs/gpu.md)
        if self.cfg.retrain.compile == "on":
            return torch.compile(model)  # state_dict / eval use the plain module
        return model

    def wall_time(self) -> float:
        return self.wall_before + time.monotonic() - self._t_start

    def eval_weights(self):
        """The weights to evaluate: the NT-ASGD average once started, else the SGD weights."""
        return self.average.swapped_in()

    def _key(self, value: float) -> float:
        return value if self.lower_is_better else -value

    # ---- checkpoint -----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "config": to_dict(self.cfg),
            "space": {"name": self.space.name, "args": to_dict(self.space.args)},
            "arch": dict(self.arch),
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "task": self.task.state_dict(),
            "rng": ckpt.rng_state(),
            "history": list(self.history),
            "best": dict(self.best),
            "asgd": self.average.state_dict(),
            "wall_time_s": self.wall_time(),
            # processes and steps of this epoch: a resume on another number of processes
            # (another global batch) continues at the same fraction of the epoch
            "world": dist.world(),
            "steps_in_epoch": self.task.num_train_batches(self.epoch),
        }

    def load_state_dict(self, st: dict) -> None:
        self.check_kind(st)
        if st["arch"] != dict(self.arch):
            raise ckpt.CheckpointError("checkpoint.pt was trained on a different architecture than arch.yaml")
        self.set_position(st["position"])
        try:
            self.model.load_state_dict(st["model"])
        except RuntimeError as e:
            raise ckpt.CheckpointError(f"checkpoint does not fit this child: {str(e)[:300]}") from None
        self.opt.load_state_dict(st["opt"])
        self.task.load_state_dict(st["task"])
        ckpt.set_rng_state(st["rng"])
        self.history, self.best = list(st["history"]), dict(st["best"])
        self.average.load_state_dict(st["asgd"], self.device)
        self.wall_before = float(st["wall_time_s"])
        self._t_start = time.monotonic()
        if st.get("world", 1) != dist.world() and self.step > 0:
            old = self.step
            self.step = self.step * self.task.num_train_batches(self.epoch) // st["steps_in_epoch"]
            self.global_step += self.step - old
            say(f"checkpoint written by {st.get('world', 1)} processes, resumed on {dist.world()}: "
                f"epoch {self.epoch + 1} continues at step {self.step} (was {old}), a new global batch",
                self.log_enabled)

    def _save_best(self, value: float) -> None:
        self.best = {"epoch": self.epoch + 1, "valid": value}
        if self.log_enabled:
            with self.eval_weights():
                state = {"kind": "retrain-best", "epoch": self.epoch + 1, "valid": value,
                         "model": self.model.state_dict()}
            write_atomic(self.run_dir / BEST, lambda f: torch.save(state, f))

    # ---- the loop -------------------------------------------------------------------------
    def run(self, resume_offset: int | None = None) -> dict:
        self.open_log(resume_offset)
        dist.decorrelate_rng()  # ranks > 0: their own dropout masks
        r, m = self.cfg.retrain, self.task.metric
        split = "test" if self.valid_is_test else "valid"
        if resume_offset is None and self.log_enabled:
            self.log.log(0, params=count_params(self.model))
        self.smoke_note(r.smoke)
        try:
            with self.stop:
                while self.epoch < r.epochs:
                    t0 = time.monotonic()
                    lr = lr_at(self.cfg.train, self.epoch) * self.lr_scale
                    set_lr(self.opt, lr)
                    schedule = {}
                    if hasattr(self.model, "drop_path_prob"):  # image models (task contract)
                        self.model.drop_path_prob = schedule["drop_path"] = drop_path_at(r.drop_path, self.epoch,
                                                                                         r.epochs)
                    train = self.sgd_pass(self.task, self.train_model, self.opt, self.cfg.train.grad_clip,
                                          lambda i: None, f"epoch {self.epoch + 1}/{r.epochs}",
                                          on_step=self.average.update if r.asgd else None, check=self.check)
                    dist.broadcast_module(self.model, buffers_only=True)  # rank 0's BN statistics
                    with self.eval_weights():
                        ev = self.task.evaluate(self.model, None, "valid")
                    value = ev[m]
                    dist.check_in_sync("the child's weights", self.model.parameters(), [value])
                    if self.select_best and (not self.best or self._key(value) < self._key(self.best["valid"])):
                        self._save_best(value)
                    if r.asgd and not self.average.started and should_start(
                            [self._key(v) for v in self.history], self._key(value), r.asgd_patience):
                        self.average.start(self.epoch)
                        say(f"epoch {self.epoch + 1}: valid {m} stopped improving; averaging the weights "
                            f"from here on (NT-ASGD)", self.log_enabled)
                    self.history.append(value)
                    # the epoch's headline figures, which move while training works (TensorBoard's
                    # first charts, x = epoch); the schedule that drives them in a group of its own
                    figs = {**{f"train_{k}": v for k, v in train.items()}, **{f"{split}_{k}": v for k, v in ev.items()}}
                    schedule.update(lr=lr, averaging=int(self.average.started))
                    self.log.log(self.epoch + 1, epoch=self.epoch + 1, **{f"overview/{k}": v for k, v in figs.items()},
                                 **{f"schedule/{k}": v for k, v in schedule.items()})
                    self.epoch, self.step = self.epoch + 1, 0
                    self.save()
                    # one line a person can read; every figure on it is named in docs/glossary.md
                    parts = [f"epoch {self.epoch}/{r.epochs}"]
                    parts += [f"train {k.replace('_', ' ')} {v:.4g}" for k, v in train.items()]
                    parts += [f"{split} {m} {value:.4g}", f"lr {lr:.3g}", f"time {time.monotonic() - t0:.0f}s"]
                    say("  ".join(parts), self.log_enabled)
                    self.pace_note(r.smoke, time.monotonic() - t0, r.epochs - self.epoch)
                result = self._finish()
        finally:
            self.log.close()
        return result

    def _finish(self) -> dict:
        """Test metric of the selected model (best-valid LM, last CIFAR) -> result.json."""
        m = self.task.metric
        name = "perplexity" if m == "ppl" else m
        result = {"space": self.space.name, "metric": m}
        if self.select_best and self.best:
            best = _load_best(self.run_dir) if self.log_enabled else None
            if best is not None:
                self.model.load_state_dict(best["model"])
            use_best = dist.broadcast_object(best is not None)
            if use_best:  # several processes: rank 0 read best.pt, the others get its weights
                dist.broadcast_module(self.model)
            ctx = contextlib.nullcontext() if use_best else self.eval_weights()
            with ctx:
                test = self.task.evaluate(self.model, None, "test")
                valid = self.task.evaluate(self.model, None, "valid")
            result.update({"weights": BEST, "best_epoch": self.best["epoch"], f"valid_{name}": valid[m]})
        else:
            with self.eval_weights():
                test = self.task.evaluate(self.model, None, "test")
            result.update({"weights": ckpt.NAME, f"valid_{name}": test[m] if self.valid_is_test else None,
                           "valid_is_test": self.valid_is_test})
        result.update({
            f"test_{name}": test[m], "test_loss": test["loss"], "params": count_params(self.model),
            "epochs": self.epoch, "wall_time_s": round(self.wall_time(), 2),
            "asgd_start_epoch": None if self.average.start_epoch is None else self.average.start_epoch + 1,
            "averaged_weights": self.average.started, "device": str(self.device),
        })
        aux = getattr(self.model, "aux_head", None)
        if aux is not None:
            result["params_aux_head"] = count_params(aux, test_time=False)
        if self.log_enabled:
            write_atomic(self.run_dir / RESULT, json.dumps(result, indent=2) + "\n")
            self.log.log(self.epoch, epoch=self.epoch, **{f"result/test_{name}": test[m]})
        aux_note = f" (+{result['params_aux_head']:,} in the auxiliary head, training only)" if aux is not None else ""
        say(f"test {m} {test[m]:.4g} ({result['weights']}); params {result['params']:,}{aux_note}", self.log_enabled)
        return result


def _has_bn(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _load_best(run_dir: Path) -> dict | None:
    path = Path(run_dir) / BEST
    if not os.path.lexists(path):
        return None
    return ckpt.read(path)


def read_result(run_dir: Path) -> dict | None:
    """``result.json`` of a retrain run, or None before it is written; a file that is not
    a JSON object with a numeric test figure (truncated, edited) is an error naming it."""
    path = Path(run_dir) / RESULT
    rec = read_json_if_any(path, MAX_RESULT_BYTES, lambda e: RunDirError(
        f"{path} is unreadable ({type(e).__name__}: {getattr(e, 'strerror', None) or e}); move it away: "
        f"`enas evaluate {run_dir}` recomputes the test figure from the saved weights"))
    if rec is None:
        return None
    figures = {k: v for k, v in rec.items() if k.startswith("test_")} if isinstance(rec, dict) else {}
    if not isinstance(rec, dict) or not all(_is_figure(v) for v in figures.values()):
        raise RunDirError(f"{path} is not a result file of enas (a JSON object of figures); move it away: "
                          f"`enas evaluate {run_dir}` recomputes the test figure from the saved weights")
    return rec


def load_tested_weights(rt: Retrain):
    """Load into ``rt.model`` the weights its test figure is measured with (the best-valid
    model of an LM, else the last checkpoint). Returns (their file's name, the context to
    evaluate in: the NT-ASGD average swapped in where the run used it)."""
    best = _load_best(rt.run_dir) if rt.select_best else None
    if best is not None:
        try:  # a file anyone may have replaced: a list, or tensors that do not fit the network
            rt.model.load_state_dict(best["model"])
        except ckpt.DAMAGE as e:
            raise CheckpointError(f"{rt.run_dir / BEST} does not hold this run's network ({type(e).__name__}: "
                                  f"{brief(str(e))}); move it away to test the last checkpoint") from None
        return BEST, contextlib.nullcontext()
    ckpt.restore(rt, ckpt.load(rt.run_dir))
    return ckpt.NAME, rt.eval_weights()


def _is_figure(v) -> bool:
    """A JSON number that a float can hold (JSON allows an integer of any length)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        float(v)
    except OverflowError:
        return False
    return True


def check_config_space(cfg: RetrainConfig, space) -> None:
    want = {"lm": ("ptb", "text"), "image": ("cifar10", "cifar100", "imagefolder")}.get(space.modality)
    if want and cfg.data.dataset not in want:
        raise ConfigError(f"data.dataset {cfg.data.dataset!r} does not fit space {space.name} "
                          f"({space.modality}); use one of {list(want)}")
