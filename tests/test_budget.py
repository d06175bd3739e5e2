"""search.max_params: counts on the network to retrain (closed forms equal the built
network), draws that never exceed the budget in any space, the check at config time, and
a search whose every trained, rewarded, derived and final candidate fits."""
import random
from pathlib import Path

import pytest
import torch

from conftest import TINY_NB201, random_arch, write_cifar, write_config
from enas.nas.archfile import load_arch
from enas.nas.budget import MAX_DRAWS, Budget, budget_model_args
from enas.cli import main
from enas.config import ConfigError, from_dict, load_search
from enas.nas.controller import Controller, RandomPolicy, Sample
from enas.errors import UserError
from enas.nas.space import build_space, import_space_module
from enas.nas.training_free import count_params

import_space_module(str(Path(__file__).resolve().parents[1] / "examples" / "convnet_space.py"))
NAMES = ["nb201", "enas_micro", "enas_macro", "enas_rnn", "convnet"]


def kwargs_of(space):
    return {"vocab_size": 50} if space.modality == "lm" else {"num_classes": 10}


def small(space):
    return from_dict(type(space).ModelArgs, dict(getattr(type(space), "small_model", {})), "model")


@pytest.mark.parametrize("name", NAMES)
def test_the_fast_count_equals_the_built_network(name):
    """Every space's count (a closed form, or the meta-device build for a space without
    one) equals the parameters of the child really built, at the test size and, for NB201,
    at the network the budget counts by default (C=16, 5 cells per stage)."""
    space = build_space(name)
    sizes = [small(space)] + ([budget_model_args(space, {})] if name == "nb201" else [])
    for margs in sizes:
        budget = Budget(space, margs, kwargs_of(space), None)
        rng = random.Random(0)
        for _ in range(6):
            arch = random_arch(space, rng)
            assert budget.count(arch) == count_params(space.child(arch, margs, **kwargs_of(space)))


def test_nb201_counts_the_benchmark_network_by_default():
    """Empty search.budget_model: NB201's own network; the largest cell (six 3x3 convs)
    has about 1.53 M parameters there (NB201's published size)."""
    space = build_space("nb201")
    margs = budget_model_args(space, {})
    assert (margs.channels, margs.cells_per_stage) == (16, 5)
    arch = {d.name: "nor_conv_3x3" for d in space.decisions()}
    assert 1_520_000 < Budget(space, margs, {"num_classes": 10}, None).count(arch) < 1_540_000


@pytest.mark.parametrize("name", NAMES)
def test_no_draw_exceeds_the_budget(name):
    """The controller's and the uniform sampler's draws under a budget that about half of
    each one's draws fit: every one kept fits, and the kept log-probabilities and entropies
    are the policy's for them."""
    space = build_space(name)
    margs, kw = small(space), kwargs_of(space)
    probe = Budget(space, margs, kw, None)
    gen = torch.Generator().manual_seed(0)
    controller = Controller(space.decisions(), space.initial_anchors, hidden=16)
    for policy in (controller, RandomPolicy(space.decisions())):
        counts = sorted(probe.count(a) for a in policy(20, generator=gen).archs)
        limit = counts[len(counts) // 2]
        budget = Budget(space, margs, kw, limit)
        sample = budget.draw(lambda k: policy(k, generator=gen), 30, "the policy")
        assert len(sample.archs) == 30 and sample.log_prob.shape == (30,)
        assert all(budget.count(a) <= limit for a in sample.archs)
        again = policy.evaluate(sample.archs)
        assert torch.allclose(sample.log_prob, again.log_prob, atol=1e-5)
        assert torch.allclose(sample.entropy, again.entropy, atol=1e-5)
        if counts[0] < counts[-1]:  # a space whose size the architecture decides: some draws were refused
            assert budget.fit_rate() < 1.0


def test_the_controller_gradient_flows_through_the_kept_samples():
    space = build_space("nb201")
    controller = Controller(space.decisions(), {}, hidden=16)
    probe = Budget(space, small(space), {"num_classes": 10}, None)
    budget = Budget(space, small(space), {"num_classes": 10}, sorted(probe.count(a) for a in controller(20).archs)[10])
    sample = budget.draw(lambda k: controller(k, generator=torch.Generator().manual_seed(0)), 10, "the controller")
    sample.log_prob.sum().backward()
    assert controller.heads["op"].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_a_budget_no_architecture_fits_is_refused_up_front(name):
    """One line naming search.max_params and the smallest count; for NB201 (a count that
    sums over edges) the smallest is exact: the cell of parameter-free ops."""
    space = build_space(name)
    margs, kw = small(space), kwargs_of(space)
    _, smallest = Budget(space, margs, kw, None).smallest()
    Budget(space, margs, kw, smallest).check()  # the smallest fits exactly
    with pytest.raises(ConfigError, match=r"search\.max_params = .*smallest it finds has " + f"{smallest:,}"):
        Budget(space, margs, kw, smallest - 1).check()
    if name == "nb201":
        empty = {d.name: "none" for d in space.decisions()}
        assert smallest == Budget(space, margs, kw, None).count(empty)


def test_draws_stop_with_one_line_when_almost_nothing_fits():
    space = build_space("nb201")
    budget = Budget(space, small(space), {"num_classes": 10}, 1_000_000)
    big = {d.name: "nor_conv_3x3" for d in space.decisions()}
    budget.max_params = budget.count(big) - 1
    calls = []

    def sample(k):
        calls.append(k)
        return Sample([dict(big) for _ in range(k)], torch.zeros(k), torch.zeros(k), torch.zeros(k))

    with pytest.raises(UserError, match=r"search\.max_params = .*0 of .* architectures drawn by the test fit"):
        budget.draw(sample, 3, "the test")
    assert sum(calls) == MAX_DRAWS * 3


@pytest.mark.parametrize("value", ["0", "-5"])
def test_a_budget_must_be_positive(value):
    with pytest.raises(ConfigError, match=r"search\.max_params must be a positive"):
        load_search("configs/smoke/nb201_search.yaml", [f"search.max_params={value}"])


def test_budget_model_is_checked_against_the_space():
    with pytest.raises(ConfigError, match=r"search\.budget_model"):
        load_search("configs/smoke/nb201_search.yaml", ["search.budget_model={channels: 16}"])
    with pytest.raises(ConfigError, match=r"search\.budget_model\.chanels"):
        budget_model_args(build_space("nb201"), {"chanels": 16})
    assert budget_model_args(build_space("enas_micro"), {"channels": 8}).channels == 8


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "cifar"
    write_cifar(root)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("shared", [{"uniform_shared": 1.0}, {"uniform_shared": 0.0}], ids=["uniform", "policy"])
def test_a_search_under_a_budget_never_touches_a_larger_architecture(tmp_path, cifar, monkeypatch, capsys, shared):
    """Every architecture the supernet runs (shared steps, rewards, derives, the final
    derive) and every child the final stage trains fits search.max_params, counted on
    NB201's network; the architecture files and `enas show` carry the budget and the count."""
    from search_spaces import nb201

    seen = []
    forward, child = nb201.NB201Network.forward, nb201.NB201Space.child

    def spy_forward(self, x, arch=None):
        if arch is not None:
            seen.append(dict(arch))
        return forward(self, x, arch)

    def spy_child(self, arch, *a, **k):
        seen.append(dict(arch))
        return child(self, arch, *a, **k)

    monkeypatch.setattr(nb201.NB201Network, "forward", spy_forward)
    monkeypatch.setattr(nb201.NB201Space, "child", spy_child)
    limit = 400_000
    path = write_config(tmp_path, TINY_NB201, "c.yaml", search={
        **shared, "max_params": limit, "final_candidates": 2, "final_train": 1, "final_train_epochs": 1})
    run = tmp_path / "run"
    assert main(["search", str(path), "--data-dir", str(cifar), "--run-dir", str(run), "--device", "cpu"]) == 0
    space = build_space("nb201")
    budget = Budget(space, budget_model_args(space, {}), {"num_classes": 10, "image_size": 32}, None)
    assert len(seen) > 20 and max(budget.count(a) for a in seen) <= limit
    for f in [run / "best_arch.yaml", *sorted((run / "archs").glob("*.yaml"))]:
        _, arch, doc = load_arch(f)
        prov = doc["provenance"]
        assert prov["max_params"] == limit and prov["params"] == budget.count(arch) <= limit, f
    capsys.readouterr()
    assert main(["show", str(run / "best_arch.yaml")]) == 0
    params = load_arch(run / "best_arch.yaml")[2]["provenance"]["params"]
    assert f"parameters: {params} (search.max_params: {limit}" in capsys.readouterr().out
    if shared.get("uniform_shared") == 1.0:  # the report's architecture table, once
        assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
        assert f"parameters (budget)</th><td>{params} of at most {limit}" in (tmp_path / "r.html").read_text()


def test_refused_draws_reach_the_update_below_every_draw_that_fits():
    space = build_space("nb201")
    controller = Controller(space.decisions(), {}, hidden=16)
    probe = Budget(space, small(space), {"num_classes": 10}, None)
    limit = sorted(probe.count(a) for a in controller(20).archs)[10]
    budget = Budget(space, small(space), {"num_classes": 10}, limit)
    kept, refused = budget.draw_both(lambda k: controller(k, generator=torch.Generator().manual_seed(0)), 10, "it")
    assert refused is not None and all(budget.count(a) > limit for a in refused.archs)
    rewards = [0.5 + 0.01 * i for i in range(10)]
    both, all_rewards = Budget.with_refused(kept, rewards, refused)
    assert both.archs == kept.archs + refused.archs and all_rewards[:10] == rewards
    assert all(r == pytest.approx(0.5 - 0.09) for r in all_rewards[10:])
    assert Budget.with_refused(kept, [0.5] * 10, refused)[1][-1] == pytest.approx(0.0)  # no spread: below by |r|


@pytest.mark.slow
def test_the_controller_stays_under_the_budget_when_the_reward_prefers_size():
    """REINFORCE on a reward that grows with the count (what pulls a search to the largest
    cells) under a budget: the refused draws' penalty keeps most draws fitting."""
    from enas.nas.reinforce import Reinforce

    space = build_space("nb201")
    margs = budget_model_args(space, {})
    cfg = load_search("configs/nb201_search_cpu.yaml").controller
    torch.manual_seed(0)
    controller = Controller(space.decisions(), {}, hidden=cfg.hidden, tanh_constant=cfg.tanh_constant,
                            temperature=cfg.temperature)
    rl, gen = Reinforce(controller, cfg), torch.Generator().manual_seed(0)
    budget = Budget(space, margs, {"num_classes": 10}, 400_000)
    for _ in range(100):
        kept, refused = budget.draw_both(lambda k: controller(k, generator=gen), 10, "the controller")
        rl.step(*budget.with_refused(kept, [budget.count(a) / 1e6 for a in kept.archs], refused))
    budget.fit_rate()
    budget.draw(lambda k: controller(k, generator=gen), 200, "the controller")
    assert budget.fit_rate() > 0.5
