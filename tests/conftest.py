"""Shared fixtures: tiny generated corpora and configs (never ../shared)."""
import random

import pytest
import torch
import yaml


def make_corpus(folder, names=("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"), lines=(300, 60, 60), seed=0):
    """A small word-level corpus with a learnable structure (a few repeated phrases)."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(40)]
    phrases = [[rng.choice(words) for _ in range(rng.randint(3, 8))] for _ in range(12)]
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in zip(names, lines):
        text = "\n".join(" ".join(rng.choice(phrases)) for _ in range(n))
        (folder / name).write_text(text + "\n")
    return folder


@pytest.fixture
def ptb_dir(tmp_path):
    return make_corpus(tmp_path / "ptb")


TINY_PTB = {
    "space": {"name": "enas_rnn", "args": {"num_nodes": 4}},
    "model": {"hidden": 8},
    "data": {"dataset": "ptb", "batch_size": 4, "eval_batch_size": 4, "bptt": 6},
    "train": {"lr": 5.0, "grad_clip": 0.25},
    "controller": {"hidden": 8, "lr": 1e-2, "updates_per_epoch": 3, "num_aggregate": 2,
                   "tanh_constant": {"categorical": 2.5, "index": 2.5},
                   "temperature": {"categorical": 5.0, "index": 5.0}},
    "search": {"epochs": 2, "derive_samples": 3, "derive_batches": 2, "log_every": 5},
}


# A tiny NB201 search on tests/test_cifar10.py's generated images.
TINY_NB201 = {
    "space": {"name": "nb201"},
    "model": {"channels": 4, "cells_per_stage": 1},
    "data": {"dataset": "cifar10", "batch_size": 8, "eval_batch_size": 10, "train_size": 40, "valid_size": 20},
    "train": {"lr": 0.05, "momentum": 0.9, "grad_clip": 5.0},
    "controller": {"hidden": 8, "lr": 1e-2, "updates_per_epoch": 2, "num_aggregate": 2,
                   "tanh_constant": {"categorical": 2.5}, "temperature": {"categorical": 5.0}},
    "search": {"epochs": 2, "derive_samples": 2, "derive_batches": 0, "log_every": 2},
}


def write_config(folder, base, name, **sections):
    """Write ``base`` (a config dict, left untouched) to folder/name as YAML, with each
    section's keys updated from ``sections``; returns the path."""
    cfg = yaml.safe_load(yaml.safe_dump(base))
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    path = folder / name
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def tiny_ptb_config(tmp_path):
    def write(overrides=None, name="tiny_ptb.yaml"):
        return write_config(tmp_path, TINY_PTB, name, **(overrides or {}))

    return write


def random_arch(space, rng):
    """A uniformly random architecture of ``space`` (rng: random.Random); skip bits p = 0.4."""
    from enas.space import validate

    arch = {}
    for d in space.decisions():
        if d.kind == "categorical":
            arch[d.name] = rng.choice(d.choices)
        elif d.kind == "index":
            arch[d.name] = rng.randrange(d.num_inputs)
        else:
            arch[d.name] = sorted(j for j in range(d.num_inputs) if rng.random() < 0.4)
    return validate(space.decisions(), arch)


def randomize_bn(model, gen):
    """Non-trivial BN statistics and affine parameters, so eval-mode comparisons of a
    supernet and its child exercise BN too."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


def finished_search(root, **search):
    """A tiny finished PTB search in root/run (and its corpus in root/ptb): (run, data)."""
    from enas.cli import main

    data = make_corpus(root / "ptb")
    cfg = write_config(root, TINY_PTB, "c.yaml", search={"epochs": 1, **search})
    run = root / "run"
    assert main(["search", str(cfg), "--data-dir", str(data), "--run-dir", str(run), "--device", "cpu"]) == 0
    return run, data


def finished_retrain(root, data):
    """A tiny finished PTB retrain of a random cell in root/retrain, on ``data``."""
    from enas.archfile import arch_to_yaml
    from enas.cli import main
    from enas.space import build_space

    space = build_space("enas_rnn", {"num_nodes": 4})
    arch = root / "arch.yaml"
    arch.write_text(arch_to_yaml(space, random_arch(space, random.Random(0))))
    cfg = write_config(root, {"model": {"hidden": 8}, "data": {"dataset": "ptb", "batch_size": 4, "eval_batch_size": 4,
                                                             "bptt": 6},
                              "train": {"lr": 5.0, "grad_clip": 0.25}, "retrain": {"epochs": 1}}, "r.yaml")
    run = root / "retrain"
    assert main(["retrain", str(arch), "--config", str(cfg), "--data-dir", str(data), "--run-dir", str(run),
                 "--device", "cpu"]) == 0
    return run


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory):
    """(search run, its data, retrain run): tiny finished PTB runs, made once per module."""
    root = tmp_path_factory.mktemp("finished")
    run, data = finished_search(root)
    return run, data, finished_retrain(root, data)
