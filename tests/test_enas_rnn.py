"""The ENAS recurrent cell space: decisions, supernet == child, sampled-path gradients."""
import random

import pytest
import torch

from enas.nas.space import validate
from search_spaces.enas_rnn import ENAS_PTB_CELL, Args, EnasRNNSpace, ModelArgs

from conftest import random_arch

V, H, T, B = 50, 16, 7, 3
SMALL = ModelArgs(hidden=H, tar=0.5, ar=0.5)


def test_decisions_and_paper_cell():
    space = EnasRNNSpace()
    ds = space.decisions()
    assert len(ds) == 23
    assert [d.name for d in ds[:5]] == [
        "node0/activation", "node1/input", "node1/activation", "node2/input", "node2/activation"
    ]
    assert all(d.group == "activation" for d in ds if d.kind == "categorical")
    d3 = next(d for d in ds if d.name == "node3/input")
    assert d3.num_inputs == 3 and d3.logit_offset == pytest.approx((-9 / 6, -4 / 6, -1 / 6))
    # node 0's anchor comes from a step before its activation, node l's from its input step
    assert ds[0].anchor_step == "before" and all(d.anchor for d in ds if d.kind == "index")
    anchors = 1
    for d in ds:
        if d.kind == "index":
            assert d.num_inputs == anchors and d.distance_offset == 0.1
        anchors += d.anchor
    assert validate(ds, ENAS_PTB_CELL) == ENAS_PTB_CELL
    assert space.loose_ends(ENAS_PTB_CELL) == [3, 4, 7, 9, 10, 11]
    text = space.describe(ENAS_PTB_CELL)
    assert "node 6 <- node 5  relu" in text and "{3, 4, 7, 9, 10, 11}" in text


def test_fixed_node0_is_enas_lms_search_cell():
    """enas_lm child.py _rnn_fn: node 0 is always tanh, the controller picks (input,
    activation) for nodes 1..9, and the output is the mean of nodes 1..9."""
    space = EnasRNNSpace(Args(num_nodes=10, fixed_node0="tanh", weights="pair_activation", output="all",
                              activations=("tanh", "relu", "sigmoid", "identity")))
    ds = space.decisions()
    assert len(ds) == 18 and ds[0].name == "node1/input" and ds[0].num_inputs == 1
    assert space.initial_anchors[""].count == 1 and space.initial_anchors[""].kind == "zero"
    arch = random_arch(space, random.Random(3))
    assert "node0/activation" not in arch and validate(ds, arch) == arch
    assert "node 0 <- x_t, s_(t-1)  tanh" in space.describe(arch)
    # the fixed node's activation is the one the cell computes: the same as searching it as tanh
    searched = EnasRNNSpace(Args(num_nodes=10, weights="pair_activation", output="all",
                                 activations=("tanh", "relu", "sigmoid", "identity")))
    torch.manual_seed(0)
    fixed_child = space.child(arch, SMALL, vocab_size=V).eval()
    twin = searched.child({**arch, "node0/activation": "tanh"}, SMALL, vocab_size=V).eval()
    twin.load_state_dict(fixed_child.state_dict())
    sup = space.supernet(SMALL, vocab_size=V).eval()
    sup.load_state_dict({k: v for k, v in sup.state_dict().items()} | fixed_child.state_dict())
    tokens, h0 = torch.randint(0, V, (T, B)), torch.randn(B, H) * 0.1
    with torch.no_grad():
        out = fixed_child(tokens, h0)[0]
        assert torch.allclose(out, twin(tokens, h0)[0], atol=1e-6)
        assert torch.allclose(out, sup(tokens, h0, arch)[0], atol=1e-6)
    with pytest.raises(ValueError, match="fixed_node0"):
        Args(fixed_node0="swish")


def test_enas_lm_cell_file_is_its_readme_arc():
    """configs/archs/enas_lm_ptb.yaml is the cell behind enas_lm's 56.1: its README's
    --fixed_arc, (input, activation) for nodes 1..8 in the order tanh, relu, sigmoid, identity."""
    from pathlib import Path

    from enas.nas.archfile import load_arch

    space, arch, _ = load_arch(Path(__file__).resolve().parents[1] / "configs/archs/enas_lm_ptb.yaml")
    codes = [int(c) for c in "0 2 1 0 2 1 2 2 4 0 5 0 3 2 6 2".split()]
    acts = ("tanh", "relu", "sigmoid", "identity")
    assert space.args.fixed_node0 == "tanh" and space.args.output == "all" and space.args.num_nodes == 9
    assert arch == {k: v for l in range(1, 9)
                    for k, v in ((f"node{l}/input", codes[2 * l - 2]), (f"node{l}/activation", acts[codes[2 * l - 1]]))}


@pytest.mark.parametrize("weights", ["pair", "pair_activation"])
@pytest.mark.parametrize("output", ["loose_ends", "all"])
def test_supernet_equals_child(weights, output):
    torch.manual_seed(0)
    space = EnasRNNSpace(Args(weights=weights, output=output))
    sup = space.supernet(SMALL, vocab_size=V).eval()
    state = sup.state_dict()
    rng = random.Random(1)
    archs = [ENAS_PTB_CELL] + [random_arch(space, rng) for _ in range(10)]
    tokens = torch.randint(0, V, (T, B))
    h0 = torch.randn(B, H) * 0.1
    for arch in archs:
        child = space.child(arch, SMALL, vocab_size=V).eval()
        keys = set(child.state_dict())
        assert keys < set(state)
        child.load_state_dict({k: state[k] for k in keys})
        with torch.no_grad():
            ls, hs, es = sup(tokens, h0, arch)
            lc, hc, ec = child(tokens, h0)
        assert ls.shape == (T, B, V) and hs.shape == (B, H)
        assert torch.allclose(ls, lc, atol=1e-6) and torch.allclose(hs, hc, atol=1e-6)
        assert float(es) == float(ec) == 0.0  # no AR/TAR in eval mode


def test_child_holds_only_chosen_weights():
    space = EnasRNNSpace(Args(weights="pair_activation"))
    child = space.child(ENAS_PTB_CELL, SMALL, vocab_size=V)
    cell = sorted(k for k in child.state_dict() if k.startswith("cell."))
    assert "cell.nodes.6.w.5.relu" in cell and "cell.nodes.0.w_x" in cell
    assert len(cell) == 2 + 11
    sup = EnasRNNSpace().supernet(SMALL, vocab_size=V)
    assert "cell.nodes.3.w.1" in sup.state_dict()
    assert sum(k.startswith("cell.nodes.11.w.") for k in sup.state_dict()) == 11


@pytest.mark.parametrize("weights", ["pair", "pair_activation"])
def test_only_sampled_path_gets_gradients(weights):
    torch.manual_seed(0)
    space = EnasRNNSpace(Args(weights=weights))
    sup = space.supernet(SMALL, vocab_size=V).train()
    arch = ENAS_PTB_CELL
    logits, h, extra = sup(torch.randint(0, V, (T, B)), sup.init_hidden(B), arch)
    assert extra.item() > 0  # AR/TAR active in training
    (logits.logsumexp(-1).mean() + extra).backward()
    used = {f"cell.nodes.{l}.w.{arch[f'node{l}/input']}" + (f".{arch[f'node{l}/activation']}" if weights != "pair" else "")
            for l in range(1, 12)}
    used |= {"cell.nodes.0.w_x", "cell.nodes.0.w_s", "encoder.weight"}
    for name, p in sup.named_parameters():
        if name in used:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_train_mode_dropout_and_errors():
    space = EnasRNNSpace()
    sup = space.supernet({"hidden": H}, vocab_size=V)  # a plain mapping is accepted too
    with pytest.raises(ValueError):
        sup(torch.randint(0, V, (T, B)), sup.init_hidden(B))  # the supernet needs an arch
    with pytest.raises(ValueError):
        Args(activations=("tanh", "swish"))
    one = EnasRNNSpace(Args(num_nodes=1))
    assert len(one.decisions()) == 1
    m = one.child({"node0/activation": "relu"}, SMALL, vocab_size=V).eval()
    logits, h, _ = m(torch.randint(0, V, (T, B)), m.init_hidden(B))
    assert logits.shape == (T, B, V)
