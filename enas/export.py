"""``enas export RETRAIN_RUN --out FILE``: a retrained network as one file that runs
with PyTorch alone, without enas or its search spaces (docs/export.md).

The file is a ``torch.export`` program (``torch.export.save``): the network's graph
and weights, in eval mode, with what it needs to be used:

* images: the input is float images ``[N, 3, S, S]`` with values in [0, 1]; the
  normalisation by the training images' per-channel mean and standard deviation is
  inside the program. Output: logits ``[N, classes]``.
* language models: one step per call, ``(tokens [B] int64, hidden [B, H]) -> (logits
  [B, V], hidden [B, H])``; a text starts from a zero ``hidden``. The vocabulary maps
  words to token ids.

Beside the program the file holds ``enas.json`` (read with ``torch.export.load(FILE,
extra_files={"enas.json": ""})``): the class names or the vocabulary, the input
description, the normalisation constants, the architecture and the run's test figure
with how it was measured, so that anyone can check the file reproduces it.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from enas.errors import RunDirError
from enas.storage.files import check_out, make_parents, write_atomic
from enas.child.retrain import load_tested_weights, read_result
from enas.runs import reopen_retrain, require_run

FORMAT_VERSION = 1
META = "enas.json"
CHECK_EXAMPLES = 8  # test examples the command runs through both networks to compare


class ImageClassifier(nn.Module):
    """images [N, 3, S, S] in [0, 1] -> logits [N, K], normalised as in training."""

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean.reshape(1, -1, 1, 1).float().clone())
        self.register_buffer("std", std.reshape(1, -1, 1, 1).float().clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std, None)[0]


class LanguageModelStep(nn.Module):
    """tokens [B], hidden [B, H] -> logits [B, V], hidden [B, H]: one step of the text."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, hidden: torch.Tensor):
        logits, hidden, _ = self.model(tokens[None], hidden)
        return logits[0], hidden


def export_run(run_dir: Path, out: Path, force: bool = False, data_dir=None, allow_data_change: bool = False,
               space_module: str | None = None) -> dict:
    """Write ``out``; return what was written and the check of its outputs against the run's.
    ``space_module``: the code of the run's space, if it is the user's own (--space-module)."""
    run_dir, out = Path(run_dir), Path(out)
    check_out(out, force, ours=lambda name: name.endswith(".pt2"))  # a run never writes .pt2
    require_run(run_dir, "retrain", then=f"`enas export RETRAIN_RUN --out {out}`")
    result = read_result(run_dir)
    if result is None:
        raise RunDirError(f"{run_dir} has no result.json: the retrain has not finished. Finish it with "
                          f"`enas retrain --resume {run_dir}`, then export")
    cpu = torch.device("cpu")
    rt = reopen_retrain(run_dir, data_dir, cpu, allow_data_change, space_module)
    weights, ctx = load_tested_weights(rt)
    task, model = rt.task, rt.model
    with ctx:
        model.eval()
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}  # outlives the swap
    model.load_state_dict(state)
    model.eval()
    test_key = next((k for k in result if k.startswith("test_") and k != "test_loss"), None)
    if test_key is None:
        raise RunDirError(f"{run_dir / 'result.json'} holds no test figure (test_accuracy or test_perplexity); "
                          f"`enas evaluate {run_dir}` recomputes it from the saved weights")
    meta = {"format": "enas-export", "format_version": FORMAT_VERSION, "torch": torch.__version__,
            "space": rt.space.name, "arch": json.loads(json.dumps(dict(rt.arch), default=str)),
            "run": str(run_dir.resolve()), "weights": weights,
            "test": {"metric": test_key, "value": result[test_key]}}
    if space_is_lm := rt.space.modality == "lm":
        net = LanguageModelStep(model).eval()
        columns = rt.cfg.data.eval_batch_size
        hidden = model.init_hidden(columns)
        args = (task.test_data[0, :columns].contiguous(), hidden)
        batch = torch.export.Dim("batch")
        shapes = {"tokens": {0: batch}, "hidden": {0: batch}}
        meta.update(kind="language_model", vocabulary=list(task.vocab.itos), hidden_size=int(hidden.shape[1]),
                    input="tokens: int64 [B] (ids in the vocabulary); hidden: float32 [B, hidden_size], zeros "
                          "at the start of a text",
                    output="logits: float32 [B, len(vocabulary)] for the next token; hidden: the new state")
        meta["test"]["measured"] = (
            f"the test text split into words, '<eos>' after each line, words not in the vocabulary as '<unk>'; "
            f"the ids laid out in {columns} columns (column b holds the b-th of {columns} equal consecutive "
            f"parts; the remainder is dropped), each column read from a zero state; perplexity = exp(mean "
            f"cross-entropy of every next token)")
        meta["test"]["columns"] = columns
    else:
        size = int(task.test_x.shape[-1])
        # Weights in the standard layout: training keeps conv weights channels_last for speed
        # (enas/tasks/image.py), which is no part of the network; torch.export.save stores a
        # tensor that does not cover its storage contiguously as the whole storage and warns
        # "No complete tensor found in the group!" for each one.
        net = ImageClassifier(model, task.mean, task.std).to(memory_format=torch.contiguous_format).eval()
        raw = (task.test_x[:CHECK_EXAMPLES].float() * net.std + net.mean).contiguous()  # back to [0, 1]
        args = (raw[:2],)
        shapes = {"images": {0: torch.export.Dim("batch")}}
        names = getattr(task, "class_names", None) or [str(i) for i in range(task.num_classes)]
        meta.update(kind="image_classifier", classes=list(names), image_size=size,
                    normalisation={"mean": task.mean.tolist(), "std": task.std.tolist(),
                                   "note": "applied inside the program: pass images in [0, 1]"},
                    input=f"images: float32 [N, 3, {size}, {size}], RGB, values in [0, 1] (pixel / 255)",
                    output="logits: float32 [N, len(classes)]; the class is the argmax")
        meta["test"]["measured"] = "accuracy of the argmax over every image of the test split"
    with torch.no_grad():
        program = torch.export.export(net, args, dynamic_shapes=shapes, strict=False)
    meta_text = json.dumps(meta, indent=1)
    make_parents(out)
    write_atomic(out, lambda f: torch.export.save(program, f, extra_files={META: meta_text}))
    check = _check(out, net, task, space_is_lm, raw if not space_is_lm else None)
    return {"out": out, "kind": meta["kind"], "test": meta["test"], "check": check}


def _check(out: Path, net: nn.Module, task, lm: bool, raw: torch.Tensor | None) -> float:
    """Largest absolute difference between the written file's outputs and the run's
    network's on a few test examples."""
    loaded = torch.export.load(str(out)).module()
    with torch.no_grad():
        if lm:
            tokens = task.test_data[0, :CHECK_EXAMPLES].contiguous()
            hidden = net.model.init_hidden(tokens.shape[0])
            want, got = net(tokens, hidden)[0], loaded(tokens, hidden)[0]
        else:
            want, got = net(raw), loaded(raw)
    return float((want - got).abs().max())
