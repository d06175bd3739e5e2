"""Modalities: what the search loop trains and how it scores an architecture.

The loop in enas/nas/search.py never mentions tokens, images, perplexity or accuracy;
a task (language modelling, image classification) supplies data, loss and reward.
Each space names its modality (``SearchSpace.modality``); ``build_task`` picks the
matching task.

Task interface (enas/tasks/lm.py and enas/tasks/image.py implement it)::

    task = TASKS.get(modality)(data_cfg, data_dir, device, seed, split="search"|"final",
                               reward_c=..., reward_warmup=..., eval_bn=..., amp=...,
                               channels_last=..., aux_weight=..., shard=..., train_batch=...)
    task.metric: str                     # "ppl" or "accuracy", the headline figure
    task.valid_is_test: bool             # the final split has no validation set of its own
    task.model_kwargs() -> dict          # for space.supernet/child: lm {vocab_size},
                                         # image {num_classes, image_size}
    task.num_train_batches(epoch) -> int
    task.start_epoch(epoch)              # reset carried state (LM hidden state)
    task.train_batches(epoch) -> iterator of batches, deterministic in (seed, epoch)
    task.train_loss(model, batch, arch) -> (loss tensor, {name: detached tensor})
    task.lr_scale(batch) -> float        # optional: the step's LR factor (variable BPTT), after clipping
    task.num_valid_batches() -> int
    task.score(model, arch, num_batches=0, first=0) -> (value, standard error)
                                         # num_batches valid batches from batch first (0 = all);
                                         # higher is better
    task.reward(model, arch, num_batches, first) -> 0-d device tensor
                                         # a controller reward: reward batches first.. of the
                                         # task's reward stream (any first >= 0; the task wraps)
    task.evaluate(model, arch, split) -> {"loss", metric} on "valid" or "test"
    task.as_metric(value, se) -> (metric, se)   # a score as the metric (c / ppl -> ppl)
    task.paired_se(model, a, b, num_batches=0, first=0) -> float
                                         # standard error of score(a) - score(b)
                                         # measured on the same validation data (paired)
    task.state_dict() / load_state_dict()           # carried state (exact resume)
    task.on_bad_step()                   # optional: after a skipped non-finite step
    task.prepare_model(model)            # optional: layout changes (channels_last) before use

Model contracts, by modality (``arch=None`` for a child, whose arch is fixed):

* lm:    ``model(tokens[T, B], hidden[B, H], arch, target=None) -> (out, hidden[B, H], extra_loss)``
         where ``out`` is the logits [T, B, V], or with ``target`` [T, B] the mean token
         cross-entropy; ``model.init_hidden(batch_size) -> hidden``; extra_loss holds AR/TAR.
* image: ``model(x[B, 3, S, S], arch) -> (logits[B, K], aux_logits or None)`` for a model
         built with ``num_classes=K, image_size=S`` (the dataset's: CIFAR 10 or 100 classes
         at 32 px, an image folder's classes at ``data.image_size``; a space that does not
         adapt to S takes it in ``**kwargs`` and ignores it);
         ``model.drop_path_prob`` is a float attribute the trainer may set.
* any:   ``model.kernel_note(device) -> str`` (optional): which kernel runs, for the log.
"""
from __future__ import annotations

import importlib
from typing import Any, ClassVar, Iterator, Protocol

import torch

from enas.registry import Registry


class Task(Protocol):
    """What the search, the final stage and the retrain call on a task (the interface
    above, as a type: enas/tasks/lm.py and image.py implement it). The optional hooks
    (``lr_scale``, ``on_bad_step``, ``prepare_model``) are not part of it: a task
    without them trains with neither."""

    metric: ClassVar[str]
    valid_is_test: bool

    def model_kwargs(self) -> dict: ...

    def num_train_batches(self, epoch: int | None = None) -> int: ...

    def start_epoch(self, epoch: int) -> None: ...

    def train_batches(self, epoch: int) -> Iterator[Any]: ...

    def train_loss(self, model, batch, arch) -> tuple[torch.Tensor, dict]: ...

    def num_valid_batches(self) -> int: ...

    def score(self, model, arch, num_batches: int = 0, first: int = 0, sync: bool = True): ...

    def reward(self, model, arch, num_batches: int = 1, first: int = 0) -> torch.Tensor: ...

    def paired_se(self, model, arch_a, arch_b, num_batches: int = 0, first: int = 0) -> float: ...

    def as_metric(self, value: float, se: float) -> tuple[float, float]: ...

    def evaluate(self, model, arch, split: str) -> dict: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

TASKS: Registry[type] = Registry("task")


def build_task(modality: str, *args, **kwargs):
    """Import only the modality's module (enas/tasks/<modality>.py), which registers it."""
    if modality in ("lm", "image"):
        importlib.import_module(f".{modality}", __name__)
    return TASKS.get(modality)(*args, **kwargs)
