"""The guarded SGD pass (enas/loop.py sgd_pass) on a hand-made task: the step's learning
rate scale acts after clipping, and a skipped step leaves BN statistics untouched."""
import math

import pytest
import torch
import torch.nn as nn

from enas.loop import Loop


class Task:
    """Batches {"x", "scale"}; loss = sum(model(x)); lr_scale from the batch."""

    def __init__(self, xs, scales):
        self.xs, self.scales = xs, scales

    def num_train_batches(self, epoch=None):
        return len(self.xs)

    def start_epoch(self, epoch):
        pass

    def train_batches(self, epoch):
        for x, s in zip(self.xs, self.scales):
            yield {"x": x, "scale": s}

    def train_loss(self, model, batch, arch):
        loss = model(batch["x"]).sum()
        return loss, {"loss": loss.detach()}

    def lr_scale(self, batch):
        return batch["scale"]


def loop():
    lp = Loop(None, log=False, checkpoint_minutes=1e9, max_bad_steps=5, log_every=1000)
    lp.log = type("NoLog", (), {"log": lambda *a, **k: None})()
    return lp


def test_lr_scale_applies_to_the_clipped_step():
    """Variable BPTT scales the step by L / bptt after clipping (enas_lm scales the LR):
    with a binding clip, a window of half length moves the weights half as far."""
    model = nn.Linear(3, 1, bias=False)
    nn.init.ones_(model.weight)
    x = torch.full((4, 3), 10.0)  # gradient 40 per weight: norm 69, clipped to 0.5
    before = model.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=2.0)
    loop().sgd_pass(Task([x], [0.5]), model, opt, 0.5, lambda i: None, "test")
    step = (before - model.weight.detach()).norm().item()
    assert step == pytest.approx(2.0 * 0.5 * 0.5, rel=1e-5)
    assert opt.param_groups[0]["lr"] == 2.0  # the base LR is back after the step


def test_a_skipped_step_restores_bn_running_statistics():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    bn = model[1]
    good = torch.randn(8, 3)
    bad = good.clone()
    bad[0, 0] = math.inf
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    lp = loop()
    lp.sgd_pass(Task([good], [1.0]), model, opt, 0.0, lambda i: None, "test")
    stats = [bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()]
    weights = [p.detach().clone() for p in model.parameters()]
    lp.step = 0
    lp.sgd_pass(Task([bad], [1.0]), model, opt, 0.0, lambda i: None, "test")
    assert lp.skipped_steps == 1
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert torch.equal(bn.num_batches_tracked, stats[2])
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights))
