"""On CUDA the defaults run the plain paths (docs/gpu.md): no compiled child, no compiled
or hand-fused RNN cell, until benchmarks/gpu_check.py has run those paths on a GPU. The
device is only named here: nothing runs on it, so the test needs no GPU."""
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from enas.config import load_retrain, load_search
from enas.child.retrain import Retrain
from enas.nas.space import build_space

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CUDA = torch.device("cuda")


def compiles(mode: str, modality: str, monkeypatch) -> bool:
    """Whether Retrain would torch.compile the child on CUDA with retrain.compile = mode."""
    called = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: called.append(model) or model)
    fake = SimpleNamespace(cfg=SimpleNamespace(retrain=SimpleNamespace(compile=mode)), device=CUDA,
                           space=SimpleNamespace(modality=modality))
    Retrain._maybe_compile(fake, torch.nn.Linear(1, 1))
    return bool(called)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*_retrain.yaml")), ids=lambda p: p.name)
def test_shipped_retrain_configs_do_not_compile_on_cuda(path, monkeypatch):
    cfg = load_retrain(path)
    assert not compiles(cfg.retrain.compile, "image", monkeypatch)
    assert not compiles(cfg.retrain.compile, "lm", monkeypatch)


def test_retrain_compile_auto_is_plain_on_cuda_and_on_still_compiles(monkeypatch):
    assert not compiles("auto", "image", monkeypatch) and not compiles("off", "image", monkeypatch)
    assert compiles("on", "image", monkeypatch)  # the switch that turns it on (docs/gpu.md)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("ptb_search*.yaml")), ids=lambda p: p.name)
def test_ptb_search_configs_run_the_reference_cell_on_cuda(path):
    cfg = load_search(path)
    space = build_space(cfg.space.name, cfg.space.args)
    model = space.supernet({**cfg.model, "hidden": 4}, vocab_size=5)
    assert model.kernel(CUDA) == "reference"
    assert "RNN cell kernel: reference (auto on cuda" in model.kernel_note(CUDA)


def test_rnn_kernel_switches_still_choose_the_fast_paths_on_cuda():
    space = build_space("enas_rnn", {})
    for k in ("compiled", "fused"):
        assert space.supernet({"hidden": 4, "kernel": k}, vocab_size=5).kernel(CUDA) == k
