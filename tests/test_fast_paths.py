"""Hand-written fast paths equal the plain autograd code they replace.

* search_spaces/enas_rnn/kernels/bptt.py (the fused kernel): the ENAS
  cell over a window with its own backward, against search_spaces/enas_rnn/cell.py's
  ``enas_cell`` (the paper's equations through autograd) and the model's reference kernel.
* search_spaces/enas_rnn/kernels/compiled.py (the compiled kernel): one step with the
  architecture as tensors, eager and under torch.compile, against ``enas_cell``.
* search_spaces/enas_rnn/kernels/cross_entropy.py: the LM loss against F.cross_entropy.
* enas/train/malloc.py: the allocator setting that makes them pay on CPU is applied.
"""
import random

import pytest
import torch
import torch.nn.functional as F

from search_spaces.enas_rnn.kernels.cross_entropy import token_cross_entropy
from search_spaces.enas_rnn import ENAS_PTB_CELL, Args, EnasRNNSpace, ModelArgs, enas_cell
from search_spaces.enas_rnn.kernels.bptt import cell_bptt

from conftest import random_arch

def reference_cell(space, plan, xw, s, m_l, w_s, gw):
    """enas_cell, the package's reference, fed from the fused kernel's plan and grouped
    weights ([H, 2H k] per group, columns [h_1, c_1, h_2, c_2, ...] in group order)."""
    act0, groups, _ = plan
    H = s.size(1)
    arch, weights = {"node0/activation": act0}, {}
    for (p, ch), w in zip(groups, gw):
        for k, (l, a) in enumerate(ch):
            arch[f"node{l}/input"], arch[f"node{l}/activation"] = p, a
            weights[l] = w[:, 2 * H * k:2 * H * (k + 1)]
    return enas_cell(xw, s, w_s, weights, arch, space.args.num_nodes, space.args.output, m_l)


def cell_inputs(space, arch, T, B, H, masked, seed):
    g = torch.Generator().manual_seed(seed)
    model = space.supernet(ModelArgs(hidden=H), vocab_size=5)
    plan = model._plan(arch)
    r = lambda *shape: (torch.rand(*shape, generator=g, dtype=torch.float64) - 0.5)  # noqa: E731
    xw, s, w_s = r(T, B, 2 * H) * 2, r(B, H), r(H, 2 * H) * 1.5
    gw = [r(H, 2 * H * len(ch)) * 1.5 for _, ch in plan[1]]
    m_l = (torch.rand(B, H, generator=g, dtype=torch.float64) > 0.3).double() / 0.7 if masked else None
    return plan, [xw, s, w_s, *gw], m_l


@pytest.mark.parametrize("output", ["loose_ends", "all"])
@pytest.mark.parametrize("masked", [True, False])
def test_cell_bptt_equals_autograd_reference(output, masked):
    space = EnasRNNSpace(Args(output=output))
    rng = random.Random(3)
    T, B, H = 5, 5, 4
    for i, arch in enumerate([ENAS_PTB_CELL] + [random_arch(space, rng) for _ in range(6)]):
        plan, leaves, m_l = cell_inputs(space, arch, T, B, H, masked, seed=i)
        grads = []
        outs = []
        for fn in (cell_bptt, lambda *a: reference_cell(space, *a)):
            xs = [x.clone().requires_grad_() for x in leaves]
            raw = fn(plan, xs[0], xs[1], m_l, xs[2], xs[3:])
            # a loss that weights every step and unit differently
            weight = torch.linspace(-1, 2, raw.numel(), dtype=raw.dtype).view_as(raw)
            (raw * weight).sum().backward()
            outs.append(raw.detach())
            grads.append([x.grad for x in xs])
        assert torch.allclose(outs[0], outs[1], atol=1e-12)
        for a, b in zip(*grads):
            assert torch.allclose(a, b, atol=1e-11), (arch, (a - b).abs().max())
        with torch.no_grad():  # the no-grad forward (evaluation) gives the same states
            states = cell_bptt(plan, leaves[0], leaves[1], m_l, leaves[2], leaves[3:])
            assert torch.allclose(states, outs[1], atol=1e-12)


def test_cell_bptt_gradcheck():
    space = EnasRNNSpace(Args(num_nodes=5))
    arch = {"node0/activation": "tanh", "node1/input": 0, "node1/activation": "sigmoid",
            "node2/input": 0, "node2/activation": "relu", "node3/input": 1,
            "node3/activation": "identity", "node4/input": 1, "node4/activation": "tanh"}
    plan, leaves, m_l = cell_inputs(space, arch, T=3, B=2, H=3, masked=True, seed=0)
    xs = [x.requires_grad_() for x in leaves]
    assert torch.autograd.gradcheck(lambda *a: cell_bptt(plan, a[0], a[1], m_l, a[2], a[3:]), xs)


def test_fused_kernel_equals_reference_kernel_end_to_end():
    """The model with model.kernel=fused (cell_bptt, F.linear and token_cross_entropy),
    with the cross-entropy computed outside the model or inside it (target=), gives the
    loss and gradients of model.kernel=reference."""
    torch.manual_seed(0)
    space = EnasRNNSpace()
    H, V = 6, 20
    models = {k: space.supernet(ModelArgs(hidden=H, tar=0.5, ar=0.5, kernel=k), vocab_size=V).double().train()
              for k in ("fused", "reference")}
    models["fused"].load_state_dict(models["reference"].state_dict())
    tokens, target = torch.randint(0, V, (4, 3)), torch.randint(0, V, (4, 3))
    runs = []
    # (kernel, loss computed inside the model)
    for kernel, inside in (("fused", False), ("fused", True), ("reference", True), ("reference", False)):
        model = models[kernel]
        torch.manual_seed(1)  # same dropout masks
        first, _, extra = model(tokens, torch.zeros(3, H, dtype=torch.float64), ENAS_PTB_CELL,
                                target=target if inside else None)
        model.zero_grad()
        ce = first if inside else F.cross_entropy(first.reshape(-1, V), target.reshape(-1))
        (ce + extra).backward()
        runs.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        runs[-1]["loss"] = ce.detach()
    reference = runs[-1]
    for run in runs[:-1]:
        assert run.keys() == reference.keys() and len(run) > 4
        for n in run:
            assert torch.allclose(run[n], reference[n], atol=1e-12), n


def kernel_run(model, tokens, arch, seed=1):
    """Loss (computed inside the model) and gradients of one training step."""
    model.zero_grad()
    torch.manual_seed(seed)  # the same dropout masks for every kernel
    loss, _, extra = model(tokens, torch.full((tokens.size(1), model.model_args.hidden), 0.1, dtype=torch.float64),
                           arch, target=tokens)
    (loss + extra).backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("space_args", [Args(), Args(output="all", weights="pair_activation"), Args(num_nodes=1)])
def test_tensor_arch_step_equals_reference_kernel(space_args, monkeypatch):
    """kernels/compiled.py step run eagerly (the arch as index tensors, picks by
    torch.where) gives the reference kernel's loss and gradients, for several archs."""
    import search_spaces.enas_rnn.kernels.compiled as compiled

    monkeypatch.setattr(compiled, "compiled_step", lambda device: compiled.step)
    torch.manual_seed(0)
    space, H, V = EnasRNNSpace(space_args), 5, 20
    models = {k: space.supernet(ModelArgs(hidden=H, tar=0.5, ar=0.5, kernel=k), vocab_size=V).double().train()
              for k in ("compiled", "reference")}
    models["compiled"].load_state_dict(models["reference"].state_dict())
    tokens, rng = torch.randint(0, V, (4, 3)), random.Random(0)
    for _ in range(3):
        arch = random_arch(space, rng)
        (l1, g1), (l2, g2) = (kernel_run(models[k], tokens, arch) for k in ("compiled", "reference"))
        assert torch.allclose(l1, l2, atol=1e-12, rtol=0) and g1.keys() == g2.keys() and len(g2) >= 3
        for n in g2:
            assert torch.allclose(g1[n], g2[n], atol=1e-12, rtol=0), n


@pytest.mark.slow
def test_compiled_kernel_equals_reference_and_compiles_once():
    """The cell under torch.compile (inductor on the CPU; the CUDA path adds CUDA graphs)
    equals the eager reference kernel, and one compiled graph serves every sampled arch:
    a new arch costs no recompilation. A 3-node cell keeps the compile short."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    torch.manual_seed(0)
    space, H, V = EnasRNNSpace(Args(num_nodes=3)), 4, 12
    models = {k: space.supernet(ModelArgs(hidden=H, tar=0.5, ar=0.5, kernel=k), vocab_size=V).double().train()
              for k in ("compiled", "reference")}
    models["compiled"].load_state_dict(models["reference"].state_dict())
    tokens, rng = torch.randint(0, V, (3, 2)), random.Random(1)
    graphs = []
    for _ in range(3):
        arch = random_arch(space, rng)
        (l1, g1), (l2, g2) = (kernel_run(models[k], tokens, arch) for k in ("compiled", "reference"))
        assert torch.allclose(l1, l2, atol=1e-10, rtol=0) and g1.keys() == g2.keys()
        for n in g2:
            assert torch.allclose(g1[n], g2[n], atol=1e-10, rtol=0), n
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[0] >= 1 and graphs[-1] == graphs[0]


def test_kernel_auto_picks_by_device_and_says_so():
    model = EnasRNNSpace().supernet(ModelArgs(hidden=4), vocab_size=5)
    assert model.kernel(torch.device("cpu")) == "fused" and model.kernel(torch.device("cuda")) == "reference"
    assert "RNN cell kernel: fused (auto on cpu" in model.kernel_note("cpu")
    compiled = EnasRNNSpace().supernet(ModelArgs(hidden=4, kernel="compiled"), vocab_size=5)
    assert "torch.compile, replayed as CUDA graphs" in compiled.kernel_note("cuda")
    ref = EnasRNNSpace().supernet(ModelArgs(hidden=4, kernel="reference"), vocab_size=5)
    assert ref.kernel(torch.device("cpu")) == "reference" and "kernel: reference (enas_cell" in ref.kernel_note("cpu")


def test_token_cross_entropy_equals_f_cross_entropy():
    torch.manual_seed(0)
    logits = (torch.randn(37, 11) * 4).requires_grad_()
    target = torch.randint(0, 11, (37,))
    ours = token_cross_entropy(logits, target)
    (ours * 3.0).backward()  # a non-unit upstream gradient (variable-BPTT scaling)
    g_ours = logits.grad.clone()
    logits.grad = None
    ref = F.cross_entropy(logits, target)
    (ref * 3.0).backward()
    assert torch.allclose(ours, ref, atol=1e-6)
    assert torch.allclose(g_ours, logits.grad, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(token_cross_entropy(logits, target), ref, atol=1e-6)


def test_token_cross_entropy_is_finite_when_the_target_probability_underflows():
    # row 0's target probability is about exp(-201), 0 in float32; its loss is about 201
    logits = torch.tensor([[0.0, -200.0, 1.0], [3.0, 2.0, 1.0]], requires_grad=True)
    target = torch.tensor([1, 0])
    ours = token_cross_entropy(logits, target)
    ref_logits = logits.detach().double().requires_grad_()
    ref = F.cross_entropy(ref_logits, target)
    ref.backward()
    assert torch.isfinite(ours) and abs(ours.item() - ref.item()) < 1e-4
    ours.backward()
    assert torch.allclose(logits.grad.double(), ref_logits.grad, atol=1e-6)


def test_token_cross_entropy_refuses_second_backward():
    logits = torch.randn(4, 5, requires_grad=True)
    loss = token_cross_entropy(logits, torch.tensor([0, 1, 2, 3]))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="second backward"):
        loss.backward()


def test_keep_freed_memory_applies_and_can_be_switched_off(monkeypatch):
    import platform

    from enas.train.malloc import keep_freed_memory

    monkeypatch.setenv("ENAS_KEEP_FREED_MEMORY", "0")
    assert keep_freed_memory() is False
    monkeypatch.delenv("ENAS_KEEP_FREED_MEMORY")
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is glibc


def test_single_node_cell_and_bf16_autocast():
    """N = 1 (no groups) matches the reference; under bf16 autocast (the CUDA amp path,
    exercised here through CPU autocast) the cell runs and stays close to fp32, and the
    loss computed inside the model is fp32 and equals the one computed from the logits."""
    space = EnasRNNSpace(Args(num_nodes=1))
    plan, leaves, m_l = cell_inputs(space, {"node0/activation": "relu"}, T=4, B=2, H=3, masked=True, seed=5)
    assert torch.allclose(cell_bptt(plan, leaves[0], leaves[1], m_l, leaves[2], leaves[3:]),
                          reference_cell(space, plan, leaves[0], leaves[1], m_l, leaves[2], leaves[3:]), atol=1e-12)

    torch.manual_seed(0)
    model = EnasRNNSpace().supernet(ModelArgs(hidden=16), vocab_size=30).train()
    tokens = torch.randint(0, 30, (6, 4))
    runs = []
    for amp in (False, True):
        model.zero_grad()
        torch.manual_seed(2)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            logits, hidden, extra = model(tokens, model.init_hidden(4), ENAS_PTB_CELL)
        assert hidden.dtype == torch.float32  # the recurrent state stays fp32
        assert logits.dtype == (torch.bfloat16 if amp else torch.float32)  # autocast took effect
        ce = token_cross_entropy(logits.float().reshape(-1, 30), tokens.reshape(-1))
        ce.backward()
        runs.append((logits.float().detach(), model.cell.nodes[1].w["0"].grad.clone()))
        # the loss computed inside the model (the LM task's train_loss) is the same, in fp32
        torch.manual_seed(2)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            inside, _, _ = model(tokens, model.init_hidden(4), ENAS_PTB_CELL, target=tokens)
        assert inside.dtype == torch.float32 and torch.allclose(inside, ce, atol=1e-6)
    for ref, amp in zip(*runs):  # bf16 rounding: within 5 % of the largest entry
        assert ref.abs().max() > 0 and torch.allclose(ref, amp, rtol=0, atol=0.05 * ref.abs().max().item())
