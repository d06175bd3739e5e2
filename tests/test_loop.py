"""The guarded SGD pass (enas/train/loop.py sgd_pass) on a hand-made task, with the non-finite
check on the host (a sync per step) and on the device (fused SGD skips the step, read
every log_every steps): the step's learning-rate scale acts after clipping, a skipped step
leaves weights, momentum and BN statistics untouched, and both keep the same books."""
import math

import pytest
import torch
import torch.nn as nn

from enas.train.loop import Loop, NonFiniteError


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


CHECKS = ["host", "device"]


def loop(max_bad_steps=5, log_every=1000):
    lp = Loop(None, log=False, checkpoint_minutes=1e9, max_bad_steps=max_bad_steps, log_every=log_every)
    lp.log = type("NoLog", (), {"log": lambda *a, **k: None})()
    return lp


def sgd(params, check, **kw):
    return torch.optim.SGD(params, fused=True if check == "device" else None, **kw)


@pytest.mark.parametrize("check", CHECKS)
def test_lr_scale_applies_to_the_clipped_step(check):
    """Variable BPTT scales the step by L / bptt after clipping (enas_lm scales the LR):
    with a binding clip, a window of half length moves the weights half as far."""
    model = nn.Linear(3, 1, bias=False)
    nn.init.ones_(model.weight)
    x = torch.full((4, 3), 10.0)  # gradient 40 per weight: norm 69, clipped to 0.5
    before = model.weight.detach().clone()
    opt = sgd(model.parameters(), check, lr=2.0)
    loop().sgd_pass(Task([x], [0.5]), model, opt, 0.5, lambda i: None, "test", check=check)
    step = (before - model.weight.detach()).norm().item()
    assert step == pytest.approx(2.0 * 0.5 * 0.5, rel=1e-5)
    assert opt.param_groups[0]["lr"] == 2.0  # the base LR is back after the step


@pytest.mark.parametrize("check", CHECKS)
def test_a_skipped_step_restores_bn_running_statistics(check):
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    bn = model[1]
    good = torch.randn(8, 3)
    bad = good.clone()
    bad[0, 0] = math.inf
    opt = sgd(model.parameters(), check, lr=0.1, momentum=0.9)
    lp = loop()
    lp.sgd_pass(Task([good], [1.0]), model, opt, 0.0, lambda i: None, "test", check=check)
    stats = [bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()]
    weights = [p.detach().clone() for p in model.parameters()]
    momentum = [opt.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    lp.step = 0
    lp.sgd_pass(Task([bad], [1.0]), model, opt, 0.0, lambda i: None, "test", check=check)
    assert lp.skipped_steps == 1
    assert all(torch.equal(opt.state[p]["momentum_buffer"], m) for p, m in zip(model.parameters(), momentum))
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert torch.equal(bn.num_batches_tracked, stats[2])
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights))


def test_device_check_keeps_the_books_of_the_host_check():
    """The same steps, some of them non-finite: weights, momentum, BN statistics, the mean
    figures and the counts of skipped steps agree; a run of max_bad_steps stops both."""
    torch.manual_seed(0)
    xs = [torch.randn(8, 3) for _ in range(7)]
    for i in (2, 3):
        xs[i][1, 2] = math.nan
    results = {}
    for check in CHECKS:
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
        opt = sgd(model.parameters(), check, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
        lp = loop(log_every=3)
        means = lp.sgd_pass(Task(xs, [1.0] * 7), model, opt, 1.0, lambda i: None, "test", check=check)
        results[check] = (model.state_dict(), means, lp.skipped_steps, lp.epoch_count)
    (a, ma, sa, ca), (b, mb, sb, cb) = results["host"], results["device"]
    assert sa == sb == 2 and ca == cb == 5 and ma["loss"] == pytest.approx(mb["loss"], rel=1e-5)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k
    for check in CHECKS:  # three bad steps in a row with max_bad_steps 3: stopped, in either mode
        model = nn.Sequential(nn.Linear(3, 1))
        lp = loop(max_bad_steps=3, log_every=2)
        # run_dir None: nothing was saved, and the message does not pretend otherwise
        with pytest.raises(NonFiniteError, match="3 training steps in a row.*No checkpoint was written"):
            lp.sgd_pass(Task([torch.full((2, 3), math.nan)] * 6, [1.0] * 6), model,
                        sgd(model.parameters(), check, lr=0.1), 1.0, lambda i: None, "test", check=check)
