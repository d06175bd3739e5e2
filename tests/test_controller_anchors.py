"""The controller feeds its LSTM what the official controllers feed theirs, space by space.

Each reference below restates one official sampler's loop (file:line in its docstring)
with the controller's own weights, teacher-forced on a given architecture, and records
every LSTM input; the generic controller, reading only the space's declarations, must
produce the same inputs in the same order and the same log-probability.
"""
import pytest
import torch
import torch.nn.functional as F

from enas.config import PerKind
from enas.nas.controller import Controller
from enas.nas.space import Decision, InputAnchors
from search_spaces.enas_macro import EnasMacroSpace, MacroArgs
from search_spaces.enas_micro import EnasMicroSpace, MicroArgs
from search_spaces.enas_rnn import Args, EnasRNNSpace

H = 8


class Reference:
    """LSTM steps and log-probabilities of a restated official sampler (one architecture)."""

    def __init__(self, ctrl: Controller):
        self.ctrl, self.inputs = ctrl, []
        self.h = self.c = torch.zeros(1, H)
        self.log_prob = torch.zeros(())
        self.decisions = {d.name: d for d in ctrl.decisions}

    def step(self, x):
        self.inputs.append(x)
        self.h, self.c = self.ctrl.lstm(x, (self.h, self.c))
        return self.h

    def categorical(self, name, choice):
        d, c = self.decisions[name], self.ctrl
        logits = c.heads[d.group](self.h) + (c.biases[d.group] if d.group in c.biases else 0)
        i = d.choices.index(choice)
        self.log_prob = self.log_prob + F.log_softmax(c._shape(logits, d), -1)[0, i]
        return c.embeds[d.group](torch.tensor([i]))

    def _attention(self, key_sources):
        c = self.ctrl
        keys = c.attn_anchor(torch.cat(key_sources))  # [n, H]
        return c.attn_v(torch.tanh(keys + c.attn_query(self.h))).T  # [1, n]

    def index(self, name, key_sources, j):
        d = self.decisions[name]
        self.log_prob = self.log_prob + F.log_softmax(self.ctrl._shape(self._attention(key_sources), d), -1)[0, j]

    def skips(self, name, key_sources, chosen):
        d = self.decisions[name]
        logits = 2 * self.ctrl._shape(self._attention(key_sources), d)[0]
        bits = torch.tensor([1.0 if j in chosen else 0.0 for j in range(len(key_sources))])
        self.log_prob = self.log_prob - F.binary_cross_entropy_with_logits(logits, bits, reduction="sum")


def official_micro(ctrl, arch, num_nodes):
    """melodyguan/enas src/cifar10/micro_controller.py 133-201: per cell, two steps on g_emb
    whose outputs are attention keys while the anchors fed back are zeros; per node, the
    steps of index_a, index_b (fed the picked anchor), op_a, op_b (fed the op embedding),
    one more step on op_b's embedding that makes the node's anchor, then g_emb again. The
    reduction cell's sampler continues the normal cell's LSTM state (lines 79-80)."""
    ref, go = Reference(ctrl), ctrl.go
    for cell in ("normal", "reduction"):
        fed, keys = [], []
        for _ in range(2):
            keys.append(ref.step(go))
            fed.append(torch.zeros(1, H))
        x = go
        for k in range(2, num_nodes + 2):
            for slot in "ab":
                ref.step(x)
                j = arch[f"{cell}/node{k}/{slot}/input"]
                ref.index(f"{cell}/node{k}/{slot}/input", keys, j)
                x = fed[j]
            for slot in "ab":
                ref.step(x)
                x = ref.categorical(f"{cell}/node{k}/{slot}/op", arch[f"{cell}/node{k}/{slot}/op"])
            h = ref.step(x)
            fed.append(h)
            keys.append(h)
            x = go
    return ref


def official_macro(ctrl, arch, num_layers):
    """melodyguan/enas src/cifar10/general_controller.py 144-253 (search_whole_channels):
    per layer, a step that picks the op, a step on the op's embedding that picks the skips
    over the earlier anchors and is this layer's anchor; the next input is the mean of the
    picked anchors over 1 + their count (layer 0: g_emb)."""
    ref, go = Reference(ctrl), ctrl.go
    x, anchors = go, []
    for i in range(num_layers):
        ref.step(x)
        x = ref.categorical(f"layer{i}/op", arch[f"layer{i}/op"])
        h = ref.step(x)
        if i > 0:
            skips = arch[f"layer{i}/skips"]
            ref.skips(f"layer{i}/skips", anchors, skips)
            x = sum((anchors[j] for j in skips), torch.zeros(1, H)) / (1.0 + len(skips))
        else:
            x = go
        anchors.append(h)
    return ref


def official_ptb(ctrl, arch, num_nodes):
    """melodyguan/enas src/ptb/ptb_enas_controller.py 102-163: node l's first step makes its
    anchor and (l > 0) picks its input among the earlier anchors, whose anchor is fed back
    divided by 0.1 + the distance (line 143); node 0's first step reads g_emb and picks
    nothing, and its activation step reads g_emb again; the activation's embedding feeds
    the next node."""
    ref, go = Reference(ctrl), ctrl.go
    x, anchors = go, []
    for l in range(num_nodes):
        h = ref.step(x)
        if l > 0:
            j = arch[f"node{l}/input"]
            ref.index(f"node{l}/input", anchors, j)
            x = anchors[j] / (0.1 + l - j)
        else:
            x = go
        anchors.append(h)
        ref.step(x)
        x = ref.categorical(f"node{l}/activation", arch[f"node{l}/activation"])
    return ref


def official_enas_lm(ctrl, arch, num_nodes):
    """google-research enas_lm/src/controller.py _build_sampler: anchor 0 (the fixed node 0)
    is a row of zeros for both the fed value and the attention key; node l >= 1 as in the
    melodyguan PTB controller, without a node 0 decision."""
    ref, go = Reference(ctrl), ctrl.go
    x, anchors = go, [torch.zeros(1, H)]
    for l in range(1, num_nodes):
        h = ref.step(x)
        j = arch[f"node{l}/input"]
        ref.index(f"node{l}/input", anchors, j)
        x = anchors[j] / (0.1 + l - j)
        anchors.append(h)
        ref.step(x)
        x = ref.categorical(f"node{l}/activation", arch[f"node{l}/activation"])
    return ref


CASES = {
    "micro": (lambda: EnasMicroSpace(MicroArgs(num_nodes=3)), official_micro, 3),
    "macro": (lambda: EnasMacroSpace(MacroArgs(num_layers=5)), official_macro, 5),
    "ptb": (lambda: EnasRNNSpace(Args(num_nodes=5)), official_ptb, 5),
    "enas_lm": (lambda: EnasRNNSpace(Args(num_nodes=5, fixed_node0="tanh",
                                          activations=("tanh", "relu", "sigmoid", "identity"))),
                official_enas_lm, 5),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_lstm_inputs_and_log_prob_match_the_official_sampler(case):
    make_space, official, size = CASES[case]
    space = make_space()
    torch.manual_seed(0)
    ctrl = Controller(space.decisions(), space.initial_anchors, hidden=H,
                      tanh_constant=PerKind(1.5, 1.1, 1.5), temperature=PerKind(0.0, 5.0, 0.0))
    with torch.no_grad():
        torch.nn.init.normal_(ctrl.go)  # a go embedding unlike zeros, so every input is told apart
    seen = []
    ctrl.lstm.register_forward_hook(lambda mod, args, out: seen.append(args[0].detach().clone()))
    archs = ctrl(3, generator=torch.Generator().manual_seed(4)).archs
    for arch in archs:
        seen.clear()
        ours = ctrl.evaluate([arch])
        inputs = list(seen)  # the reference's steps run through the same hook
        ref = official(ctrl, arch, size)
        assert len(inputs) == len(ref.inputs), f"{len(inputs)} LSTM steps, the official sampler takes {len(ref.inputs)}"
        for t, (a, b) in enumerate(zip(inputs, ref.inputs)):
            assert torch.allclose(a, b.detach(), atol=1e-6), f"LSTM input {t} differs"
        assert torch.allclose(ours.log_prob[0], ref.log_prob, atol=1e-5)


def test_anchor_declarations_are_checked():
    with pytest.raises(ValueError, match="set one"):
        Decision("x", "categorical", choices=("a",), anchor=True, anchor_step="after")
    with pytest.raises(ValueError, match="anchor_step"):
        Decision("x", "categorical", choices=("a",), anchor_step="later")
    with pytest.raises(ValueError, match="index decisions"):
        Decision("x", "categorical", choices=("a",), distance_offset=0.1)
    with pytest.raises(ValueError, match="kind"):
        InputAnchors(1, "ones")
    # an anchor made before a decision counts for that decision's own attention
    with pytest.raises(ValueError, match="num_inputs=1 but scope"):
        Controller([Decision("x", "index", num_inputs=1, anchor_step="after")], hidden=4)
    Controller([Decision("x", "categorical", choices=("a", "b"), anchor_step="before"),
                Decision("y", "index", num_inputs=1)], hidden=4)
