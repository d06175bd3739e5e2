"""The benchmark harness compares like with like: the child it builds from the supernet
(weights copied by key) computes the same loss and gradients on the same batch, in
both memory formats. No timing here (benchmarks/ measures; tests only check)."""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from enas.train.loop import Loop

# benchmarks/ is a folder of scripts, not a package: load its harness by path
_spec = importlib.util.spec_from_file_location("_bench", Path(__file__).resolve().parents[1] / "benchmarks" / "_bench.py")
_bench = sys.modules["_bench"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(_bench)
SIZES, Workload, sample_archs = _bench.SIZES, _bench.Workload, _bench.sample_archs

TINY = {
    "enas_rnn": {"model": {"hidden": 8, "dropout_e": 0.0, "dropout_i": 0.0, "dropout_x": 0.0,
                           "dropout_l": 0.0, "dropout_o": 0.0}, "batch": 3, "bptt": 4, "eval_batch": 3},
    "enas_micro": {"model": {"channels": 4, "num_cells": 1, "aux_head": True, "dropout": 0.0},
                   "batch": 4, "eval_batch": 4},
    "enas_macro": {"model": {"channels": 4, "dropout": 0.0}, "batch": 4, "eval_batch": 4},
    "nb201": {"model": {"channels": 4, "cells_per_stage": 1, "dropout": 0.0}, "batch": 4, "eval_batch": 4},
}


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("space", list(TINY))
def test_benchmark_child_matches_supernet(space, channels_last):
    torch.manual_seed(0)
    size = replace(SIZES[space]["smoke"], **TINY[space])
    sup = Workload(space, size, torch.device("cpu"), channels_last=channels_last)
    for arch in sample_archs(sup.space, 2, seed=1):
        child = sup.child(arch)
        losses, grads = [], []
        for w, a in ((sup, arch), (child, None)):
            w.model.zero_grad(set_to_none=True)
            loss = w.loss(a)
            loss.backward()
            losses.append(loss.detach())
            grads.append({k: p.grad for k, p in w.model.named_parameters() if p.grad is not None})
        torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
        assert set(grads[1]) <= set(grads[0])
        for k, g in grads[1].items():
            torch.testing.assert_close(grads[0][k], g, rtol=1e-4, atol=1e-6)
        assert sup.tokens_or_images() == child.tokens_or_images()
        sup.step(arch)  # the timed step runs
        child.step(None)


def test_benchmark_step_is_the_engine_step(monkeypatch):
    """The timed step is Loop.train_step itself, not a copy of it: it applies a finite
    step and skips a non-finite one as the loop does."""
    size = replace(SIZES["nb201"]["smoke"], **TINY["nb201"])
    w = Workload("nb201", size, torch.device("cpu"))
    arch = sample_archs(w.space, 1, seed=1)[0]
    calls = []
    engine_step = Loop.train_step
    monkeypatch.setattr(Loop, "train_step", staticmethod(lambda *a, **k: calls.append(a[0]) or engine_step(*a, **k)))
    before = [p.detach().clone() for p in w.params]
    w.step(arch)
    assert calls == [w]
    assert any(not torch.equal(b, p) for b, p in zip(before, w.params))  # applied
    w.loss = lambda a: float("nan") * sum(p.sum() for p in w.params)  # non-finite gradients
    before = [p.detach().clone() for p in w.params]
    w.step(arch)
    assert len(calls) == 2 and all(torch.equal(b, p) for b, p in zip(before, w.params))  # skipped
