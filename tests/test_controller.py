"""The generic controller over synthetic decision lists of every kind."""
import math

import pytest
import torch

from enas.config import ControllerSection, PerKind
from enas.nas.controller import Controller, RandomPolicy
from enas.nas.reinforce import Reinforce
from enas.nas.space import ArchError, Decision, validate

OPS = ("a", "b", "c")


def mixed_decisions():
    """Two scopes with two given inputs each (micro-like), plus a skip layer scope (macro-like)."""
    ds = []
    for cell in ("normal", "reduction"):
        for k in range(2, 4):
            ds.append(Decision(f"{cell}/node{k}/input", "index", num_inputs=k, scope=cell))
            ds.append(Decision(f"{cell}/node{k}/op", "categorical", choices=OPS, group="op", scope=cell,
                               anchor=True, bias_init=(1.0, 0.0, 0.0),
                               logit_offset=(0.25, -0.25, 0.0) if cell == "normal" else None))
    ds.append(Decision("layer0/op", "categorical", choices=OPS, group="op", scope="macro", anchor=True))
    for i in range(1, 4):
        ds.append(Decision(f"layer{i}/op", "categorical", choices=OPS, group="op", scope="macro"))
        ds.append(Decision(f"layer{i}/skips", "skip", num_inputs=i, scope="macro", anchor=True))
    return ds


def make(**kw):
    torch.manual_seed(0)
    return Controller(mixed_decisions(), {"normal": 2, "reduction": 2}, hidden=16,
                      tanh_constant=PerKind(1.5, 1.1, 1.5), temperature=PerKind(5.0, 5.0, 5.0), **kw)


def test_samples_are_valid_architectures():
    ctrl = make()
    g = torch.Generator().manual_seed(1)
    s = ctrl(32, generator=g)
    assert len(s.archs) == 32
    for a in s.archs:
        assert validate(ctrl.decisions, a) == a
    assert s.log_prob.shape == (32,) and s.entropy.shape == (32,)
    assert torch.all(s.log_prob < 0) and torch.all(s.entropy > 0)


def test_log_prob_and_entropy_recomputed_exactly():
    ctrl = make()
    s = ctrl(16, generator=torch.Generator().manual_seed(2))
    again = ctrl.evaluate(s.archs)
    assert torch.allclose(s.log_prob, again.log_prob, atol=1e-6)
    assert torch.allclose(s.entropy, again.entropy, atol=1e-6)
    assert torch.allclose(s.skip_penalty, again.skip_penalty, atol=1e-6)
    # and one at a time equals batched
    one = ctrl.evaluate(s.archs[:1])
    assert torch.allclose(one.log_prob, s.log_prob[:1], atol=1e-6)


def test_log_prob_is_a_distribution():
    """Probabilities of every arch of a tiny space sum to one."""
    ds = [Decision("x", "categorical", choices=("p", "q"), anchor=True),
          Decision("y", "index", num_inputs=1, anchor=True),
          Decision("z", "skip", num_inputs=2)]
    ctrl = Controller(ds, hidden=8, tanh_constant=PerKind(2.0, 2.0, 2.0))
    archs = [{"x": x, "y": 0, "z": z} for x in ("p", "q") for z in ([], [0], [1], [0, 1])]
    total = ctrl.evaluate(archs).log_prob.exp().sum()
    assert math.isclose(float(total.detach()), 1.0, rel_tol=1e-5)


def test_sampling_follows_seed():
    ctrl = make()
    a = ctrl(8, generator=torch.Generator().manual_seed(5)).archs
    b = ctrl(8, generator=torch.Generator().manual_seed(5)).archs
    assert a == b


def test_learned_bias_starts_at_stated_value_and_shaping_bounds_logits():
    ctrl = make()
    assert torch.equal(ctrl.biases["op"].detach(), torch.tensor([1.0, 0.0, 0.0]))
    d = Decision("t", "categorical", choices=OPS)
    big = torch.tensor([[100.0, -100.0, 0.0]])
    shaped = ctrl._shape(big, d)
    assert torch.allclose(shaped, 1.5 * torch.tanh(big / 5.0))


def test_anchor_count_mismatch_is_rejected():
    with pytest.raises(ValueError, match="num_inputs=2 but scope"):
        Controller([Decision("i", "index", num_inputs=2)], hidden=4)


def test_random_policy_uniform_and_parameter_free():
    pol = RandomPolicy(mixed_decisions())
    assert list(pol.parameters()) == []
    s = pol(400, generator=torch.Generator().manual_seed(0))
    seen = {a["layer2/op"] for a in s.archs}
    assert seen == set(OPS)
    for a in s.archs[:20]:
        validate(pol.decisions, a)


def test_reinforce_baseline_and_advantage():
    ctrl = make()
    cfg = ControllerSection(lr=1e-2, entropy_weight=0.0, baseline_decay=0.5)
    rl = Reinforce(ctrl, cfg)
    s = ctrl(2, generator=torch.Generator().manual_seed(0))
    before = [p.detach().clone() for p in ctrl.parameters()]
    stats = rl.step(s, [1.0, 3.0])
    # b: 0 -> 0.5 -> 1.75 ; advantages 0.5, 1.25
    assert stats["baseline"] == pytest.approx(1.75)
    assert stats["advantage"] == pytest.approx((0.5 + 1.25) / 2)
    assert any(not torch.equal(a, b) for a, b in zip(before, ctrl.parameters()))


def test_reinforce_drops_non_finite_rewards():
    ctrl = make()
    rl = Reinforce(ctrl, ControllerSection(entropy_weight=0.0, baseline_decay=0.5))
    s = ctrl(3, generator=torch.Generator().manual_seed(0))
    stats = rl.step(s, [2.0, float("nan"), float("inf")])
    assert stats["baseline"] == pytest.approx(1.0) and stats["dropped_rewards"] == 2


def test_reinforce_gradient_is_mean_over_aggregate():
    """One Adam step's gradient = mean of the per-sample REINFORCE gradients."""
    ctrl = make()
    cfg = ControllerSection(entropy_weight=0.0, baseline_decay=0.5)
    s = ctrl(3, generator=torch.Generator().manual_seed(3))
    rl = Reinforce(ctrl, cfg)
    rl.opt = torch.optim.SGD(ctrl.parameters(), lr=0.0)  # keep the gradient, leave weights alone
    rl.step(s, [1.0, 2.0, 4.0])
    batched = [p.grad.clone() for p in ctrl.parameters()]
    advantages = [1.0 - 0.5, 2.0 - 1.25, 4.0 - 2.625]  # b: 0 -> .5 -> 1.25 -> 2.625
    expected = [torch.zeros_like(p) for p in ctrl.parameters()]
    for arch, adv in zip(s.archs, advantages):
        ctrl.zero_grad()
        (-ctrl.evaluate([arch]).log_prob[0] * adv / 3).backward()
        for e, p in zip(expected, ctrl.parameters()):
            e += p.grad
    for b, e in zip(batched, expected):
        assert torch.allclose(b, e, atol=1e-6)


def test_entropy_bonus_enters_reward():
    ctrl = make()
    rl = Reinforce(ctrl, ControllerSection(entropy_weight=0.5, baseline_decay=0.0))
    s = ctrl(1, generator=torch.Generator().manual_seed(0))
    stats = rl.step(s, [1.0])
    assert stats["baseline"] == pytest.approx(1.0 + 0.5 * float(s.entropy[0].detach()))


def _gradient_after(rewards_seq, cfg):
    ctrl = make()
    rl = Reinforce(ctrl, cfg)
    rl.opt = torch.optim.SGD(ctrl.parameters(), lr=0.0)  # keep the gradient, leave weights alone
    for k, rewards in enumerate(rewards_seq):
        rl.step(ctrl(len(rewards), generator=torch.Generator().manual_seed(k)), rewards)
    return [p.grad.clone() for p in ctrl.parameters()]


def test_reward_norm_makes_the_update_independent_of_the_reward_scale():
    rewards = [[0.3, 0.5, 0.4], [0.6, 0.2, 0.45], [0.5, 0.55, 0.1]]
    scaled = [[1000 * r for r in rs] for rs in rewards]
    for norm, same in ((True, True), (False, False)):
        cfg = ControllerSection(entropy_weight=0.0, baseline_decay=0.9, reward_norm=norm)
        a, b = _gradient_after(rewards, cfg), _gradient_after(scaled, cfg)
        assert all(torch.allclose(x, y, rtol=1e-4, atol=1e-7) for x, y in zip(a, b)) == same
        if not same:  # the paper's update grows with the reward: 1000 x the gradient
            assert all(torch.allclose(1000 * x, y, rtol=1e-4, atol=1e-6) for x, y in zip(a, b))


def test_reward_norm_statistics_are_saved_and_restored():
    ctrl = make()
    rl = Reinforce(ctrl, ControllerSection(entropy_weight=1e-3, lr=1e-9, reward_norm=True))
    for k in range(5):
        rl.step(ctrl(8, generator=torch.Generator().manual_seed(k)), [0.5 + k] * 8)
    again = Reinforce(ctrl, rl.cfg)
    again.load_state_dict(rl.state_dict())
    assert (again.sq_dev, again.n_dev, again.baseline) == (rl.sq_dev, rl.n_dev, rl.baseline) and rl.n_dev == 5 * 8
    assert again.entropy_weight == 1e-3  # the paper's fixed weight


def test_validate_rejects_missing_extra_and_out_of_range():
    ds = mixed_decisions()
    a = make()(1, generator=torch.Generator().manual_seed(0)).archs[0]
    with pytest.raises(ArchError, match="missing"):
        validate(ds, {k: v for k, v in a.items() if k != "layer1/op"})
    with pytest.raises(ArchError, match="unknown decision"):
        validate(ds, {**a, "layer9/op": "a"})
    with pytest.raises(ArchError, match="out of range"):
        validate(ds, {**a, "normal/node2/input": 2})
    with pytest.raises(ArchError, match="not one of"):
        validate(ds, {**a, "layer1/op": "zz"})
    with pytest.raises(ArchError, match="skips"):
        validate(ds, {**a, "layer2/skips": [5]})


class Const(torch.nn.Module):
    """Stands in for a head or the attention output: fixed raw logits."""

    def __init__(self, value, per_input=False):
        super().__init__()
        self.value, self.per_input = torch.tensor(value), per_input

    def forward(self, x):
        if self.per_input:  # attention: [K, n, H] -> [K, n, 1]
            return self.value.expand(*x.shape[:-1], 1)
        return self.value.expand(x.shape[0], -1)


def macro_like(tanh=1.5):
    ds = [Decision("layer0/op", "categorical", choices=OPS, group="op", scope="layers", anchor_step="after")]
    for i in (1, 2):
        ds.append(Decision(f"layer{i}/op", "categorical", choices=OPS, group="op", scope="layers"))
        ds.append(Decision(f"layer{i}/skips", "skip", num_inputs=i, scope="layers", anchor=True))
    return Controller(ds, hidden=8, tanh_constant=PerKind(tanh, 0.0, tanh), skip_target=0.4)


@pytest.mark.parametrize("q", [-100.0, -0.7, 0.0, 0.3, 100.0])
def test_macro_skip_probability_and_penalty_match_the_official_controller(q):
    """general_controller.py 220-234: skip logits [-q, q] through 1.5 * tanh, sampled by a
    softmax over the pair: p(skip) = sigmoid(2 * 1.5 * tanh(q)), 0.047..0.953; the KL
    penalty is of sigmoid(1.5 * tanh(q)) (the pair's sigmoid, not the sampled p) against
    [0.6, 0.4], summed over a layer's bits and averaged over the layers (line 268)."""
    ctrl = macro_like()
    ctrl.attn_v = Const([q], per_input=True)
    s = ctrl(4, generator=torch.Generator().manual_seed(0))
    p = torch.sigmoid(torch.tensor(2 * 1.5 * math.tanh(q)))
    assert torch.allclose(s.probs["layer1/skips"], p.expand(1), atol=1e-6)
    assert torch.allclose(s.probs["layer2/skips"], p.expand(2), atol=1e-6)
    pair = torch.sigmoid(torch.tensor([-1.5 * math.tanh(q), 1.5 * math.tanh(q)]))
    kl = (pair * torch.log(pair / torch.tensor([0.6, 0.4]))).sum()
    assert torch.allclose(s.skip_penalty, ((1 * kl + 2 * kl) / 2).expand(4), atol=1e-5)
    if q == 100.0:
        assert float(p) == pytest.approx(0.9526, abs=1e-4)


def test_macro_skip_penalty_settles_the_sampled_rate_near_031():
    """The official penalty is smallest where sigmoid(1.5 tanh q) = 0.4, where the sampled
    p(skip) = sigmoid(2 * 1.5 tanh q) is 0.4^2 / (0.4^2 + 0.6^2) = 0.308, not 0.4."""
    ctrl = macro_like()
    qs = torch.linspace(-1.0, 1.0, 401)
    penalty, sampled = [], []
    for q in qs.tolist():
        ctrl.attn_v = Const([q], per_input=True)
        s = ctrl(1, generator=torch.Generator().manual_seed(0))
        penalty.append(float(s.skip_penalty[0]))
        sampled.append(float(s.probs["layer1/skips"][0]))
    best = min(range(len(qs)), key=penalty.__getitem__)
    assert sampled[best] == pytest.approx(0.16 / 0.52, abs=3e-3)


def test_op_probabilities_follow_the_tanh_constant():
    ctrl = macro_like()
    raw = [0.3, -2.0, 1.0]
    ctrl.heads["op"] = Const(raw)
    s = ctrl(2, generator=torch.Generator().manual_seed(0))
    expect = torch.softmax(1.5 * torch.tanh(torch.tensor(raw)), 0)
    for i in range(3):
        assert torch.allclose(s.probs[f"layer{i}/op"], expect, atol=1e-6)


def test_macro_config_lets_one_op_dominate():
    """The macro search config shapes op logits with 1.5 (no op_tanh_reduce in the macro
    controller): one op can reach p = 0.80 of six; 0.6 capped every op below 0.40."""
    from pathlib import Path

    from enas.config import load_search
    from enas.nas.controller import build_policy
    from enas.nas.space import build_space

    root = Path(__file__).resolve().parents[1]
    for name in ("cifar10_macro_search.yaml", "smoke/cifar10_macro_search.yaml"):
        cfg = load_search(root / "configs" / name)
        space = build_space(cfg.space.name, cfg.space.args)
        ctrl = build_policy("enas", space, cfg.controller)
        ctrl.heads["op"] = Const([100.0] + [-100.0] * 5)
        s = ctrl(1, generator=torch.Generator().manual_seed(0))
        assert float(s.probs["layer3/op"].max()) == pytest.approx(math.exp(1.5) / (math.exp(1.5) + 5 * math.exp(-1.5)),
                                                                  abs=1e-5), name


def test_tied_heads_score_choices_with_their_input_embedding():
    """enas_lm controller.py: logits = next_h . w_emb^T, the embedding that feeds the
    choice back; no separate head."""
    ds = [Decision("a", "categorical", choices=OPS, group="op"), Decision("b", "categorical", choices=OPS, group="op")]
    torch.manual_seed(0)
    ctrl = Controller(ds, hidden=8, tanh_constant=PerKind(2.25, 0.0, 0.0), temperature=PerKind(5.0, 0.0, 0.0),
                      tie_heads=True)
    assert len(ctrl.heads) == 0 and ctrl.embeds["op"].weight.shape == (3, 8)
    arch = {"a": "c", "b": "a"}
    E = ctrl.embeds["op"].weight
    h, c = ctrl.lstm(ctrl.go, (torch.zeros(1, 8), torch.zeros(1, 8)))
    lp = torch.log_softmax(2.25 * torch.tanh(h @ E.T / 5.0), -1)[0, 2]
    h, c = ctrl.lstm(E[2:3], (h, c))
    lp = lp + torch.log_softmax(2.25 * torch.tanh(h @ E.T / 5.0), -1)[0, 0]
    assert torch.allclose(ctrl.evaluate([arch]).log_prob[0], lp, atol=1e-6)
