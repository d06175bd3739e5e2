"""Modalities: what the search loop trains and how it scores an architecture.

The loop in enas/search.py never mentions tokens, images, perplexity or accuracy;
a task (language modelling, image classification) supplies data, loss and reward.
Each space names its modality (``SearchSpace.modality``); ``build_task`` picks the
matching task.

Task interface (see enas/tasks/lm.py and enas/tasks/image.py)::

    task = TASKS.get(modality)(data_cfg, data_dir, device, seed, split="search"|"final",
                               reward_c=..., eval_bn=..., amp=..., channels_last=...)
    task.model_kwargs() -> dict          # vocab_size / num_classes for space.supernet/child
    task.num_train_batches(epoch) -> int
    task.train_batches(epoch) -> iterator of batches, deterministic in (seed, epoch)
    task.start_epoch(epoch)              # reset carried state (LM hidden state)
    task.train_loss(model, batch, arch) -> (loss tensor, {name: detached tensor})
    task.num_valid_batches() -> int
    task.score(model, arch, num_batches=0, first=0) -> (value, standard error)
                                         # num_batches valid batches from batch first (0 = all);
                                         # higher is better; a controller reward is one batch
    task.evaluate(model, arch, split) -> dict of floats on "valid" or "test"
    task.state_dict() / load_state_dict()           # carried state (exact resume)
    task.on_bad_step()                   # optional: after a skipped non-finite step
    task.metric: str                     # "ppl" or "accuracy", the headline figure

Model contracts, by modality (``arch=None`` for a child, whose arch is fixed):

* lm:    ``model(tokens[T, B], hidden, arch) -> (logits[T, B, V], hidden, extra_loss)``,
         ``model.init_hidden(batch_size) -> hidden``; extra_loss holds AR/TAR terms.
* image: ``model(x[B, 3, H, W], arch) -> (logits[B, K], aux_logits or None)``;
         ``model.drop_path_prob`` is a float attribute the trainer may set.
"""
from __future__ import annotations

from ..registry import Registry

TASKS: Registry[type] = Registry("task")


def build_task(modality: str, *args, **kwargs):
    """Import only the modality's module (enas/tasks/<modality>.py), which registers it."""
    import importlib

    if modality in ("lm", "image"):
        importlib.import_module(f".{modality}", __name__)
    return TASKS.get(modality)(*args, **kwargs)
