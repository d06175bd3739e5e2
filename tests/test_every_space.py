"""The tests every registered search space gets without writing them (timm's
tests/test_models.py, parametrized over the model registry): supernet equals child,
architecture files round trip, forward and backward through the sampled path, the
drawing, and the controller's sample/evaluate agreement on the space's decisions.

A space registered through the ``enas.search_spaces`` entry-point group is found here,
and so is the example of a space of your own (examples/convnet_space.py, imported from
its file as ``space.module`` does); ``small_model`` on the space class sizes its
networks for these tests.
"""
import random
from pathlib import Path

import pytest
import torch

from enas.nas.archfile import load_arch, save_arch
from enas.config import PerKind, from_dict
from enas.nas.controller import Controller
from enas.nas.space import _plugins, build_space, import_space_module, space_class

from conftest import random_arch, randomize_bn

import_space_module(str(Path(__file__).resolve().parents[1] / "examples" / "convnet_space.py"))
NAMES = sorted(set(_plugins()) | {"convnet"})
VOCAB, T, B = 11, 5, 3


def setup(name):
    space = build_space(name)
    margs = from_dict(type(space).ModelArgs, dict(getattr(type(space), "small_model", {})), "model")
    kwargs = {"vocab_size": VOCAB} if space.modality == "lm" else {"num_classes": 10}
    return space, margs, kwargs


def inputs(space, gen):
    if space.modality == "lm":
        return torch.randint(0, VOCAB, (T, B), generator=gen)
    return torch.randn(2, 3, 32, 32, generator=gen)


def run(model, space, x, arch=None, gen=None):
    """(outputs to compare, a scalar to differentiate)."""
    if space.modality == "lm":
        h0 = torch.randn(x.size(1), model.init_hidden(1).size(1), generator=gen) * 0.1
        logits, h, extra = model(x, h0, arch)
        return (logits, h), logits.square().mean() + h.sum() + extra
    logits, aux = model(x, arch)
    return (logits,) + ((aux,) if aux is not None else ()), logits.square().mean() + (0 if aux is None else aux.sum())


def test_every_space_is_found():
    assert {"enas_rnn", "enas_micro", "enas_macro", "nb201", "convnet"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_supernet_equals_child(name):
    """The supernet's weights for an architecture, loaded into that child, compute the
    same outputs, in eval mode and in train mode (batch statistics, the same dropout
    masks): what makes "export, then retrain" trustworthy."""
    space, margs, kwargs = setup(name)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    sup = space.supernet(margs, **kwargs)
    randomize_bn(sup, gen)
    sup.eval()
    state = sup.state_dict()
    x = inputs(space, gen)
    for seed in range(3):
        arch = random_arch(space, random.Random(seed))
        child = space.child(arch, margs, **kwargs)
        keys = set(child.state_dict())
        assert keys <= set(state), sorted(keys - set(state))[:5]
        child.load_state_dict({k: state[k] for k in keys})
        assert sum(p.numel() for p in child.parameters()) < sum(p.numel() for p in sup.parameters())
        for train in (False, True):
            outs = []
            for model, a in ((sup, arch), (child, None)):
                model.train(train)
                torch.manual_seed(1)  # the same dropout masks
                with torch.no_grad():
                    outs.append(run(model, space, x, a, torch.Generator().manual_seed(1))[0])
            for u, v in zip(*outs):
                assert torch.allclose(u, v, atol=1e-5, rtol=1e-4), (name, arch, train)


@pytest.mark.parametrize("name", NAMES)
def test_architecture_file_round_trip(name, tmp_path):
    space, _, _ = setup(name)
    arch = random_arch(space, random.Random(7))
    path = save_arch(tmp_path / "a.yaml", space, arch, {"run": "test"})
    space2, arch2, doc = load_arch(path)
    assert space2.name == space.name and space2.args == space.args and arch2 == arch
    assert doc["description"] == space.describe(arch) and doc["provenance"]["run"] == "test"
    if hasattr(space, "to_text"):  # the space's text form reads back
        assert space.parse_text(space.to_text(arch)) == arch


@pytest.mark.parametrize("name", NAMES)
def test_forward_and_backward_reach_the_sampled_path(name):
    space, margs, kwargs = setup(name)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    sup = space.supernet(margs, **kwargs).train()
    arch = random_arch(space, random.Random(3))
    _, loss = run(sup, space, inputs(space, gen), arch, gen)
    loss.backward()
    with_grad = {n for n, p in sup.named_parameters() if p.grad is not None}
    assert with_grad and all(torch.isfinite(p.grad).all() for p in sup.parameters() if p.grad is not None)
    child = {n for n, _ in space.child(arch, margs, **kwargs).named_parameters()}
    assert with_grad == child  # exactly the sampled path's weights get a gradient


@pytest.mark.parametrize("name", [n for n in NAMES if hasattr(space_class(n), "draw")])  # an optional hook
def test_drawing(name, tmp_path):
    space, _, _ = setup(name)
    out = tmp_path / "cell.png"
    space.draw(random_arch(space, random.Random(5)), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 2000


@pytest.mark.parametrize("name", NAMES)
def test_controller_samples_valid_archs_and_rescores_them_exactly(name):
    from enas.nas.space import validate

    space, _, _ = setup(name)
    torch.manual_seed(0)
    ctrl = Controller(space.decisions(), space.initial_anchors, hidden=8,
                      tanh_constant=PerKind(2.5, 1.1, 1.5), temperature=PerKind(5.0, 5.0, 0.0))
    s = ctrl(6, generator=torch.Generator().manual_seed(2))
    for a in s.archs:
        assert validate(space.decisions(), a) == a
    again = ctrl.evaluate(s.archs)
    assert torch.allclose(s.log_prob, again.log_prob, atol=1e-5)
    assert torch.allclose(s.entropy, again.entropy, atol=1e-5)
