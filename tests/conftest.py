"""Shared fixtures and helpers: tiny generated corpora, CIFAR-10 batch files, image folders,
configs and architectures (never ../shared)."""
from __future__ import annotations

import importlib
import random
import shutil
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from enas.nas.archfile import arch_to_yaml, save_arch
from enas.cli import main
from enas.data.cifar import CIFAR10 as C10
from enas.evaluate.table import read_table
from enas.evaluate.rank import arch_text, parse_arch_line
from enas.nas.space import build_space
from search_spaces.enas_micro import ENAS_MICRO_CELL


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
    from enas.nas.space import validate

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


# ---- CIFAR-10 batch files in the official format

N_PER_BATCH = 12  # 60 training images, 12 test images


def py2_pickle(data: np.ndarray, labels: list[int], batch_label: str, label_key: str = "labels") -> bytes:
    """Bytes of a batch file as the official Python 2 / numpy 1.x files are written
    (protocol 2, py2 ``str`` keys, ``numpy.core.multiarray._reconstruct``; CIFAR-100's
    label key is ``fine_labels``)."""
    assert data.dtype == np.uint8 and data.ndim == 2

    def s(x: str | bytes) -> bytes:  # SHORT_BINSTRING (py2 str)
        b = x.encode("latin1") if isinstance(x, str) else x
        return b"U" + bytes([len(b)]) + b

    arr = (
        b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + b"K\x00\x85" + s("b") + b"\x87R"
        + b"(K\x01" + b"M" + struct.pack("<H", data.shape[0]) + b"M" + struct.pack("<H", data.shape[1]) + b"\x86"
        + b"cnumpy\ndtype\n" + s("u1") + b"K\x00K\x01\x87R"
        + b"(K\x03" + s("|") + b"NNN" + b"J" + struct.pack("<i", -1) + b"J" + struct.pack("<i", -1) + b"K\x00tb"
        + b"\x89" + b"T" + struct.pack("<I", data.nbytes) + data.tobytes() + b"tb"
    )
    labs = b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    return (b"\x80\x02}(" + s("batch_label") + s(batch_label) + s(label_key) + labs + s("data") + arr
            + s("filenames") + b"](" + s("img.png") * len(labels) + b"eu.")


def make_images(n: int, labels: np.ndarray, rng) -> np.ndarray:
    """Each image is constant per channel, value 20 * label + channel: the centre pixel
    identifies the label after any crop/flip."""
    img = (20 * labels[:, None] + np.arange(3)[None, :]).astype(np.uint8)  # [n, 3]
    img = np.repeat(img[:, :, None], 1024, axis=2)  # [n, 3, 1024]
    return img.reshape(n, 3072)


def write_cifar(root: Path, seed: int = 0, noise: int = 0, per_batch: int = N_PER_BATCH) -> Path:
    """``noise`` > 0 adds uniform pixel noise of that amplitude (distinct images, for
    scores that compare inputs, such as naswot); ``per_batch`` images in each batch file."""
    rng = np.random.default_rng(seed)
    folder = root / C10.folder
    folder.mkdir(parents=True)
    for name in C10.files:
        labels = rng.integers(0, 10, per_batch)
        data = make_images(per_batch, labels, rng)
        if noise:
            data = np.clip(data.astype(int) + rng.integers(0, noise, data.shape), 0, 255).astype(np.uint8)
        (folder / name).write_bytes(py2_pickle(data, [int(v) for v in labels], name))
    return folder


@pytest.fixture()
def cifar_dir(tmp_path):
    write_cifar(tmp_path)
    return tmp_path


# ---- image folders

CLASSES = ("ant", "bee", "cow")
SIZES = ((16, 16), (20, 12))  # (width, height): square and not, both resized to image_size


def colour(label: int) -> tuple[int, int, int]:
    """A solid colour per class: pixel (c) = 40 * label + 10 * c survives any resize."""
    return tuple(40 * label + 10 * c for c in range(3))


def write_png(path: Path, label: int, size=(16, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour(label)).save(path)
    return path


def make_folder(root: Path, train: int = 3, val: int = 2) -> Path:
    """root/{train,val}/<class>/<i>.png of two sizes, plus files that must be ignored."""
    for label, c in enumerate(CLASSES):
        for split, n in (("train", train), ("val", val)):
            for i in range(n):
                write_png(root / split / c / f"{i}.png", label, SIZES[i % 2])
    write_png(root / "train" / "bee" / "UPPER.PNG", 1)  # extensions in any case
    (root / "train" / "ant" / "notes.txt").write_text("not an image")
    (root / "train" / "ant" / "._0.png").write_bytes(b"macOS metadata, not an image")
    (root / "val" / ".thumbs").mkdir()
    return root


# ---- retrains of each paper space

RNN_ARCH = {"node0/activation": "tanh", "node1/input": 0, "node1/activation": "relu",
            "node2/input": 1, "node2/activation": "tanh", "node3/input": 1, "node3/activation": "sigmoid"}
MACRO_ARCH = {"layer0/op": "conv_3x3", "layer1/op": "sep_conv_3x3", "layer1/skips": [0],
              "layer2/op": "max_pool_3x3", "layer2/skips": [], "layer3/op": "conv_5x5", "layer3/skips": [0, 2],
              "layer4/op": "avg_pool_3x3", "layer4/skips": [1], "layer5/op": "sep_conv_5x5", "layer5/skips": [3, 4]}

TINY_RETRAIN = {  # a tiny retrain config per space
    "enas_rnn": {"model": {"hidden": 8, "init_range": 0.1, "ar": 0.7, "tar": 0.0},
                 "data": {"dataset": "ptb", "batch_size": 4, "eval_batch_size": 4, "bptt": 6,
                          "variable_bptt": True, "bptt_max": 10},
                 "train": {"lr": 5.0, "grad_clip": 0.25, "weight_decay": 1.6e-6},
                 "retrain": {"epochs": 2, "asgd": True, "asgd_patience": 1, "log_every": 5}},
    "enas_micro": {"model": {"channels": 4, "num_cells": 1, "aux_head": True, "dropout": 0.2},
                   "data": {"dataset": "cifar10", "batch_size": 16, "eval_batch_size": 8, "cutout": 16},
                   "train": {"lr": 0.05, "lr_min": 1e-4, "schedule": "cosine", "t0": 2, "t_mul": 1,
                             "momentum": 0.9, "nesterov": True, "weight_decay": 4e-4, "grad_clip": 5.0},
                   "retrain": {"epochs": 2, "aux_weight": 0.4, "drop_path": 0.4, "log_every": 2}},
    "enas_macro": {"model": {"channels": 4, "double_channels": True, "dropout": 0.5},
                   "data": {"dataset": "cifar10", "batch_size": 16, "eval_batch_size": 8},
                   "train": {"lr": 0.05, "schedule": "cosine", "t0": 2, "t_mul": 1, "momentum": 0.9,
                             "weight_decay": 4e-4, "grad_clip": 5.0},
                   "retrain": {"epochs": 2, "log_every": 2}},
}


def run(*argv):
    """The command line in this process; its exit code."""
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_cifar(root / "cifar")
    make_corpus(root / "ptb")
    return {"enas_rnn": root / "ptb", "enas_micro": root / "cifar", "enas_macro": root / "cifar"}


def write_arch(folder: Path, name: str) -> Path:
    space, arch = {
        "enas_rnn": (build_space("enas_rnn", {"num_nodes": 4}), RNN_ARCH),
        "enas_micro": (build_space("enas_micro", {}), ENAS_MICRO_CELL),
        "enas_macro": (build_space("enas_macro", {"num_layers": 6}), MACRO_ARCH),
    }[name]
    return save_arch(folder / f"{name}.yaml", space, arch, {"run": "test"})


def write_retrain_config(folder: Path, name: str, **sections) -> Path:
    cfg = yaml.safe_load(yaml.safe_dump(TINY_RETRAIN[name]))
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    path = folder / f"{name}_retrain.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def retrain(tmp_path, data, name, run_dir, **sections):
    arch = write_arch(tmp_path, name)
    cfg = write_retrain_config(tmp_path, name, **sections)
    assert run("retrain", arch, "--config", cfg, "--data-dir", data[name], "--run-dir", run_dir,
               "--device", "cpu") == 0
    return run_dir


def tiny_nb201_config(folder, overrides=None, name="tiny_nb201.yaml"):
    return write_config(folder, TINY_NB201, name, **(overrides or {}))


# ---- processes

FAST_CKPT = {"search": {"epochs": 3, "checkpoint_minutes": 0.0005}}  # a checkpoint ~every step


def wait_for(path, proc, timeout=60):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() - t0 < timeout
        time.sleep(0.02)


# ---- finished tiny runs

def finished_search(root, **search):
    """A tiny finished PTB search in root/run (and its corpus in root/ptb): (run, data)."""
    data = make_corpus(root / "ptb")
    cfg = write_config(root, TINY_PTB, "c.yaml", search={"epochs": 1, **search})
    run = root / "run"
    assert main(["search", str(cfg), "--data-dir", str(data), "--run-dir", str(run), "--device", "cpu"]) == 0
    return run, data


def finished_retrain(root, data):
    """A tiny finished PTB retrain of a random cell in root/retrain, on ``data``."""
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


# ---- received run folders (a run someone sent you): the commands that open one

CPU = ["--device", "cpu"]
RESUME = ["search", "--resume", "RUN", "--set", "search.epochs=2", "--allow-config-change"]


@pytest.fixture
def received(finished_runs, tmp_path):
    """Fresh copies of a finished search and a finished retrain, as someone sent them."""
    run, data, retrain = finished_runs
    return shutil.copytree(run, tmp_path / "run"), data, shutil.copytree(retrain, tmp_path / "retrain")


def argv_for(argv, run, tmp_path):
    return [str(run) if a == "RUN" else str(tmp_path / "out.html") if a == "OUT" else a for a in argv]


def study(name: str):
    """The study script benchmarks/studies/NAME.py as a module (a folder of scripts, not a
    package: its folder goes on the path, as running the script puts it there)."""
    folder = str(Path(__file__).resolve().parents[1] / "benchmarks" / "studies")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


def one_error(capsys, *says) -> str:
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("error")]  # after any progress lines
    assert "Traceback" not in err and len(errors) == 1 and err.endswith(errors[0]), err
    for s in says:
        assert s in errors[0], err
    return errors[0]


EVIL = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\n"


def plant_module(tmp_path, run, section, key, name="evil"):
    """config.yaml (and the checkpoint's copy of the config) of ``run`` name a Python file
    that leaves a marker when it is imported."""
    marker, code = tmp_path / f"{name}-ran", tmp_path / f"{name}.py"
    code.write_text(EVIL.format(marker=str(marker)))
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg[section][key] = str(code)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        if (run / name).exists():  # so a resume sees no config change
            state = torch.load(run / name, weights_only=True)
            state["config"][section][key] = str(code)
            torch.save(state, run / name)
    return code, marker


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory):
    """(search run, its data, retrain run): tiny finished PTB runs, made once per module."""
    root = tmp_path_factory.mktemp("finished")
    run, data = finished_search(root)
    return run, data, finished_retrain(root, data)


# ---- published tables

NB201_CELLS = [  # four cells of a tiny published table
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"]


def write_nb201_table(path, rows=None):
    """A published-table CSV (index, cell, cifar10_valid) of NB201_CELLS."""
    rows = rows if rows is not None else [(i, c, v) for i, (c, v) in enumerate(zip(NB201_CELLS, [10.0, 90.0, 50.0, 70.0]))]
    path.write_text("index,cell,cifar10_valid\n" + "".join(f"{i},{c},{v}\n" for i, c, v in rows))
    return path


def read_nb201_table(path, **kw):
    """``path`` read as enas table reads a published NB201 table."""
    space = build_space("nb201")
    return read_table(path, space, lambda a: arch_text(space, a), lambda s: parse_arch_line(space, s), **kw)
