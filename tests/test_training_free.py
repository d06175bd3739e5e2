"""Training-free scores (enas/nas/training_free.py), each against a case computed by hand,
and on every space's small child."""
import math

import pytest
import torch
import torch.nn as nn

from enas.nas import training_free as tf
from enas.errors import ConfigError
from conftest import write_cifar


class Chain(nn.Module):
    """x -> W1 x -> W2 (.) : a two-layer linear chain without biases."""

    def __init__(self, w1, w2):
        super().__init__()
        self.l1 = nn.Linear(2, 2, bias=False)
        self.l2 = nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            self.l1.weight.copy_(torch.tensor(w1))
            self.l2.weight.copy_(torch.tensor(w2))

    def forward(self, x):
        return self.l2(self.l1(x))


def test_synflow_of_a_linear_chain_by_hand():
    # |W1| = [[1, 2], [3, 4]], |W2| = [[5, 6]]; input ones: h = [3, 7], R = 5*3 + 6*7 = 57.
    # dR/dW2 = h -> sum |W2 * h| = 15 + 42 = 57; dR/dW1[i, j] = |W2|[i] * 1 ->
    # sum |W1 * dR/dW1| = 5*(1+2) + 6*(3+4) = 57. Total 114 (each layer of a linear chain
    # carries the whole flow R: synaptic flow is conserved).
    net = Chain([[1.0, -2.0], [3.0, 4.0]], [[-5.0, 6.0]])  # signs do not matter: |theta|
    score = tf.synflow(net, lambda m: m(torch.ones(1, 2, dtype=torch.float64)))
    assert score == pytest.approx(math.log(114.0), rel=1e-12)


def test_synflow_of_a_network_that_ignores_its_weights_is_minus_infinity():
    net = Chain([[0.0, 0.0], [0.0, 0.0]], [[1.0, 1.0]])
    assert tf.synflow(net, lambda m: m(torch.ones(1, 2, dtype=torch.float64))) == -math.inf


def test_naswot_by_hand():
    # One ReLU over the identity: codes are the signs of the inputs themselves.
    # x0 = [+, +, -], x1 = [+, -, -], x2 = [-, -, +]: agreements K = [[3, 2, 0], [2, 3, 1], [0, 1, 3]],
    # det K = 3(9 - 1) - 2(6 - 0) + 0 = 12.
    net = nn.Sequential(nn.Identity(), nn.ReLU())
    x = torch.tensor([[1.0, 2.0, -1.0], [3.0, -1.0, -2.0], [-1.0, -3.0, 4.0]])
    assert tf.naswot(net, lambda m: m(x)) == pytest.approx(math.log(12.0), rel=1e-12)


def test_naswot_needs_relu_modules():
    net = nn.Sequential(nn.Linear(2, 2), nn.Tanh())
    with pytest.raises(ConfigError, match="naswot.*nn.ReLU"):
        tf.naswot(net, lambda m: m(torch.ones(3, 2)))


def test_params_leaves_the_auxiliary_head_out():
    net = nn.Sequential(nn.Linear(3, 2))  # 8 parameters
    net.aux_head = nn.Linear(2, 2)  # 6, training only
    assert tf.count_params(net) == 8


@pytest.mark.parametrize("name", ["enas_micro", "enas_macro", "nb201", "enas_rnn"])
def test_every_score_on_every_space(name, tmp_path, ptb_dir):
    """Each score is finite and repeatable for a space's small child; naswot where the
    network has ReLU modules, and a one-line error where it has none (the RNN cell)."""
    from enas.config import DataSection
    from enas.nas.controller import RandomPolicy
    from enas.nas.space import build_space
    from enas.tasks import build_task

    space = build_space(name)
    ma = type(space).ModelArgs(**getattr(space, "small_model", {}))
    if space.modality == "lm":
        data = DataSection(dataset="ptb", batch_size=4, eval_batch_size=4, bptt=5)
        task = build_task("lm", data, ptb_dir, "cpu", 0)
    else:
        write_cifar(tmp_path)
        data = DataSection(dataset="cifar10", batch_size=8, eval_batch_size=8, train_size=40, valid_size=16)
        task = build_task("image", data, tmp_path, "cpu", 0)
        # the generated images are constant per channel: distinct inputs for naswot's codes
        task.train_x = task.train_x + torch.randn(task.train_x.shape, generator=torch.Generator().manual_seed(0))
    arch = RandomPolicy(space.decisions())(1, generator=torch.Generator().manual_seed(0)).archs[0]
    for score in tf.NAMES:
        if score == "naswot" and name == "enas_rnn":
            with pytest.raises(ConfigError, match="naswot"):
                tf.score(score, space, arch, ma, task)
            continue
        a, b = tf.score(score, space, arch, ma, task), tf.score(score, space, arch, ma, task)
        assert math.isfinite(a) and a == b, score
