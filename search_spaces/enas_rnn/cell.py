"""The ENAS recurrent cell for language modelling (paper section 2.1, 3.2).

A cell of N nodes runs once per time step. Node 0 mixes the input and the previous
state; node l >= 1 reads one earlier node p_l and applies one activation f_l:

    [h, c] = [x_t, s_{t-1}] W_0             s_0 = s_{t-1} + sigmoid(c) * (f_0(h) - s_{t-1})
    [h, c] = s_p W_{l,p}                    s_l = s_p     + sigmoid(c) * (f_l(h) - s_p)

(highway connections, paper eq. 1-2). The next state s_t is the average of the loose
ends (nodes no other node reads), or, as in the authors' enas_lm code, of every node
except node 0.

``enas_cell`` below is the cell exactly as those equations write it: the reference
every other path is tested against and the one that runs wherever no fast path applies.
One module class, ``RNNModel``, is both the supernet (``arch=None`` at construction:
every (node, input[, activation]) matrix exists) and the child (only the chosen
matrices exist, under the same state-dict keys). Both run the same ``forward``, so
"supernet weights loaded into the child give the same outputs" holds by construction
and is tested in tests/test_enas_rnn.py.

Kernels (``model.kernel``): ``reference`` runs ``enas_cell`` through autograd;
``fused`` runs the same equations with a hand-written backward pass
(kernels/bptt.py) and the loss with a one-pass backward (kernels/cross_entropy.py);
``compiled`` runs them one step at a time under ``torch.compile``, the architecture
passed as tensors so that one graph serves every sampled cell (kernels/compiled.py; CUDA graphs on CUDA); ``auto`` is
``fused`` on the CPU and ``reference`` elsewhere, CUDA included: a fast kernel becomes a
device's ``auto`` only once benchmarks/gpu_check.py shows it correct and faster there
(docs/gpu.md). tests/test_fast_paths.py checks the fused and
compiled kernels' values and gradients against ``enas_cell``.

Stability (why the PTB search configs clip at 0.1, not the paper's 0.25). This
forward matches enas_lm's search cell step for step: highway formula, U(-r, r) init,
where each mask is applied, and the carried state, which is detached. There is no
normalisation, as in enas_lm. The paper's own search code (melodyguan/enas,
``_rhn_enas``) batch-normalised every node's [h, c] and the averaged output (eps 1.0),
and that bounds the state. Without it, identity and ReLU chains make the recurrence
unbounded. Sigmoid nodes also give the state a +0.5 offset, and through the tied,
bias-free decoder a single step can then move a logit by tens of nats. With SGD lr 20,
one clipped step moves the weights by up to lr * clip in L2. At 0.25 that is enough to
make a cell matrix expansive, and the state carried from window to window then grows
without bound (TAR ~1e6 to 1e12). enas_lm's search clip (0.1) avoids that at hidden 200.
Smaller models need smaller steps (configs/smoke/ptb_search.yaml).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from enas.nas.budget import count_by_parts
from enas.config import from_dict
from enas.nas.space import SPACES, Arch, Decision, InputAnchors, validate

from ..draw import draw_rnn_cell
from ..ops import ACTIVATIONS
from .kernels import compiled
from .kernels.bptt import cell_bptt
from .kernels.cross_entropy import token_cross_entropy


@dataclass(frozen=True)
class Args:
    num_nodes: int = 12  # N, paper 3.2
    # The paper samples all four; the official repo's num_funcs=2 (tanh/ReLU only) is a bug.
    activations: tuple[str, ...] = ("tanh", "relu", "identity", "sigmoid")
    # "pair": one W_{l,p} per node pair, whatever the activation (paper 2.1).
    # "pair_activation": one per (pair, activation), as the official code keeps them.
    weights: Literal["pair", "pair_activation"] = "pair"
    # "loose_ends": average of nodes nobody reads (paper); "all": average of nodes
    # 1..N-1 (enas_lm; node 0 alone when N = 1).
    output: Literal["loose_ends", "all"] = "loose_ends"
    # "": node 0's activation is searched (paper 2.1: 2N - 1 decisions). An activation
    # name fixes it, leaving nodes 1..N-1 to search (enas_lm child.py: tanh; its
    # controller makes N - 1 = 9 (input, activation) pairs).
    fixed_node0: str = ""

    def __post_init__(self):
        if self.num_nodes < 1:
            raise ValueError(f"num_nodes must be >= 1, got {self.num_nodes}")
        if not self.activations:
            raise ValueError("activations must not be empty")
        unknown = [a for a in self.activations if a not in ACTIVATIONS]
        if unknown:
            raise ValueError(f"unknown activation {unknown[0]!r} (known: {', '.join(ACTIVATIONS.names())})")
        if len(set(self.activations)) != len(self.activations):
            raise ValueError(f"repeated activation in {list(self.activations)}")
        if self.fixed_node0 and self.fixed_node0 not in self.activations:
            raise ValueError(f"fixed_node0 {self.fixed_node0!r} must be one of the activations {list(self.activations)}")


def with_node0(arch: Mapping[str, Any], args: Args) -> Mapping[str, Any]:
    """``arch`` with node 0's activation, which a fixed node 0 (``Args.fixed_node0``) does not search."""
    if not args.fixed_node0 or "node0/activation" in arch:
        return arch
    return {**arch, "node0/activation": args.fixed_node0}


@dataclass(frozen=True)
class ModelArgs:
    """Network size and regularisation. Defaults: the enas_lm search child (H = 200);
    its final model uses hidden 800, drops e .125 i .175 x .725 l .225 o .75, ar 0.7, tar 0."""

    hidden: int = 200  # state size = embedding size (tied input/output embeddings)
    dropout_e: float = 0.10  # word-level embedding dropout: whole rows of the embedding
    dropout_i: float = 0.20  # locked dropout on the embedded inputs
    dropout_x: float = 0.75  # locked mask on x_t where it enters node 0's matmul
    dropout_l: float = 0.25  # locked mask on every node's input state inside its matmul
    dropout_o: float = 0.75  # locked dropout on the cell outputs before the decoder
    ar: float = 0.0  # activation regularisation: ar * mean(s_t^2) (enas_lm "alpha")
    tar: float = 1.0  # temporal AR: tar * mean((s_t - s_{t-1})^2) (enas_lm "beta", search)
    init_range: float = 0.04  # every weight ~ U(-r, r) (enas_lm: 0.04 search, 0.05 final)
    # how the cell runs (module docstring): the readable reference, the hand-written fused
    # kernel, the reference under torch.compile, or auto (fused on the CPU, reference
    # elsewhere, CUDA included: docs/gpu.md); the values are the same
    kernel: Literal["auto", "reference", "fused", "compiled"] = "auto"

    def __post_init__(self):
        if self.hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {self.hidden}")
        for k in ("dropout_e", "dropout_i", "dropout_x", "dropout_l", "dropout_o"):
            if not 0.0 <= getattr(self, k) < 1.0:
                raise ValueError(f"{k} must be in [0, 1), got {getattr(self, k)}")


# The cell found by the paper on PTB (Figure 6 / reference section 3): loose ends
# {3, 4, 7, 9, 10, 11}. A retraining fixture.
ENAS_PTB_CELL: Arch = {
    "node0/activation": "tanh",
    **{f"node{l}/{k}": v for l, p, a in [
        (1, 0, "tanh"), (2, 1, "relu"), (3, 2, "relu"), (4, 2, "tanh"), (5, 2, "tanh"),
        (6, 5, "relu"), (7, 1, "tanh"), (8, 6, "relu"), (9, 8, "relu"), (10, 8, "relu"),
        (11, 8, "relu"),
    ] for k, v in (("input", p), ("activation", a))},
}


def cell_edges(arch: Mapping[str, Any], num_nodes: int) -> list[tuple[int, int, str]]:
    """[(node, input, activation)] for nodes 1..N-1."""
    return [(l, arch[f"node{l}/input"], arch[f"node{l}/activation"]) for l in range(1, num_nodes)]


def output_nodes(arch: Mapping[str, Any], num_nodes: int, output: str) -> list[int]:
    """The nodes averaged into the next state."""
    if num_nodes == 1:
        return [0]
    if output == "all":
        return list(range(1, num_nodes))
    used = {p for _, p, _ in cell_edges(arch, num_nodes)}
    return [l for l in range(num_nodes) if l not in used]


def enas_cell(xw: torch.Tensor, s: torch.Tensor, w_s: torch.Tensor, weights: Mapping[int, torch.Tensor],
              arch: Mapping[str, Any], num_nodes: int, output: str, m_l: torch.Tensor | None = None) -> torch.Tensor:
    """The ENAS cell over a window, as the paper writes it (eq. 1-2): the reference.

    xw [T, B, 2H]: x_t W_x for every step; s [B, H]: the state carried in; w_s [H, 2H]:
    node 0's state matrix; weights[l] [H, 2H]: W_{l,p} of node l's chosen input p;
    m_l [B, H]: the locked dropout mask on every state entering a matmul. Returns the
    states s_1..s_T [T, B, H].
    """
    edges, outs = cell_edges(arch, num_nodes), output_nodes(arch, num_nodes, output)
    drop = (lambda v: v * m_l) if m_l is not None else (lambda v: v)  # noqa: E731

    def highway(prev, hc, act):  # s = prev + sigmoid(c) * (f(h) - prev)
        h, c = hc.chunk(2, dim=-1)  # [B, H] each
        return prev + torch.sigmoid(c) * (ACTIVATIONS.get(act)(h) - prev)

    steps = []
    for t in range(xw.size(0)):
        nodes = [highway(s, xw[t] + drop(s) @ w_s, arch["node0/activation"])]  # s_0 [B, H]
        for l, p, act in edges:
            nodes.append(highway(nodes[p], drop(nodes[p]) @ weights[l], act))  # s_l [B, H]
        s = torch.stack([nodes[o] for o in outs]).mean(0)  # s_t: the average of the outputs [B, H]
        steps.append(s)
    return torch.stack(steps)  # [T, B, H]


def _locked_mask(like: torch.Tensor, shape, p: float) -> torch.Tensor | None:
    """Variational dropout mask (Gal & Ghahramani 2016), one per sequence, scaled 1/(1-p)."""
    if p == 0.0:
        return None
    return like.new_empty(shape).bernoulli_(1.0 - p).div_(1.0 - p)


class Node0(nn.Module):
    """[h, c] = [x_t, s_{t-1}] W_0, W_0 split as w_x (input) and w_s (state), H x 2H each.
    Shared across activations in both weight modes (official w_prev is one matrix)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.w_x = nn.Parameter(torch.empty(hidden, 2 * hidden))
        self.w_s = nn.Parameter(torch.empty(hidden, 2 * hidden))


class Node(nn.Module):
    """W_{l,p} (H x 2H) for the inputs p this node may read: keys ``w.{p}`` or ``w.{p}.{act}``."""

    def __init__(self, hidden: int, inputs, per_activation: bool):
        super().__init__()
        new = lambda: nn.Parameter(torch.empty(hidden, 2 * hidden))  # noqa: E731
        if per_activation:
            self.w = nn.ModuleDict(
                {str(p): nn.ParameterDict({a: new() for a in acts}) for p, acts in inputs.items()}
            )
        else:
            self.w = nn.ParameterDict({str(p): new() for p in inputs})
        self.per_activation = per_activation

    def weight(self, p: int, act: str) -> torch.Tensor:
        return self.w[str(p)][act] if self.per_activation else self.w[str(p)]


class RNNModel(nn.Module):
    """Tied-embedding LM around the ENAS cell; supernet when ``arch`` is None, else child."""

    def __init__(self, space_args: Args, model_args: ModelArgs, vocab_size: int, arch: Arch | None = None):
        super().__init__()
        self.space_args, self.model_args = space_args, model_args
        self.arch = None if arch is None else with_node0(arch, space_args)
        H, N, acts = model_args.hidden, space_args.num_nodes, space_args.activations
        per_act = space_args.weights == "pair_activation"
        self.encoder = nn.Embedding(vocab_size, H)
        nodes = [Node0(H)]
        for l in range(1, N):
            if arch is None:  # supernet: every earlier node, every activation
                inputs = {p: acts for p in range(l)}
            else:  # child: the chosen input (and activation) only, same keys
                inputs = {arch[f"node{l}/input"]: (arch[f"node{l}/activation"],)}
            nodes.append(Node(H, inputs, per_act))
        self.cell = nn.Module()
        self.cell.nodes = nn.ModuleList(nodes)
        # Tied input/output embeddings (Inan et al. 2017; paper 3.2). No decoder bias,
        # as in enas_lm (logits = s . w_emb^T).
        self.decoder = nn.Linear(H, vocab_size, bias=False)
        self.decoder.weight = self.encoder.weight
        r = model_args.init_range
        for prm in self.parameters():
            nn.init.uniform_(prm, -r, r)
        self._plans: dict[tuple, tuple] = {}

    def kernel(self, device: torch.device) -> str:
        """The kernel that runs on ``device``: model.kernel, with auto resolved; the reference
        under torch.export (enas export), which traces plain tensor operations only."""
        if torch.compiler.is_exporting():
            return "reference"
        k = self.model_args.kernel
        return ("fused" if device.type == "cpu" else "reference") if k == "auto" else k

    def kernel_note(self, device: torch.device) -> str:
        """One line for the run's log: which kernel runs, and why."""
        k = self.kernel(torch.device(device))
        how = {"reference": "enas_cell through autograd",
               "fused": "hand-written BPTT",
               "compiled": "enas_cell's equations per step under torch.compile"
                           + (", replayed as CUDA graphs" if torch.device(device).type == "cuda" else "")}[k]
        auto = f"auto on {torch.device(device).type}: " if self.model_args.kernel == "auto" else ""
        return f"RNN cell kernel: {k} ({auto}{how}; model.kernel=reference|fused|compiled to choose)"

    def init_hidden(self, batch_size: int) -> torch.Tensor:
        w = self.encoder.weight
        return w.new_zeros(batch_size, self.model_args.hidden)

    def _plan(self, arch: Mapping[str, Any]):
        """Group nodes by the node they read, so each group is one matmul per step."""
        N = self.space_args.num_nodes
        key = tuple(arch[f"node{l}/{k}"] for l in range(1, N) for k in ("input", "activation")) + (
            arch["node0/activation"],
        )
        if key not in self._plans:
            if len(self._plans) > 4096:  # sampled archs rarely repeat; keep the cache bounded
                self._plans.clear()
            groups: dict[int, list[tuple[int, str]]] = {}
            for l, p, a in cell_edges(arch, N):
                groups.setdefault(p, []).append((l, a))
            outs = output_nodes(arch, N, self.space_args.output)
            # Parents in increasing order: every parent p is itself a child of some
            # p' < p, so s_p exists by the time its group runs.
            self._plans[key] = (arch["node0/activation"], sorted(groups.items()), outs)
        return self._plans[key]

    def _decode(self, raw: torch.Tensor, m_o: torch.Tensor | None, target: torch.Tensor | None,
                loss=F.cross_entropy) -> torch.Tensor:
        """Logits [T, B, V] of the states [T, B, H], or given ``target`` the mean token
        cross-entropy (``loss``), in fp32 under bf16 autocast."""
        logits = F.linear(raw if m_o is None else raw * m_o, self.decoder.weight)
        if target is None:
            return logits
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        return loss(logits.reshape(-1, logits.size(-1)), target.reshape(-1))

    def forward(self, tokens: torch.Tensor, hidden: torch.Tensor, arch: Mapping[str, Any] | None = None,
                target: torch.Tensor | None = None):
        # tokens: [T, B] int64; hidden: [B, H]
        # -> logits [T, B, V], hidden [B, H], extra_loss (AR/TAR; 0 in eval mode)
        # Given target [T, B], the first output is the mean token cross-entropy instead of
        # the logits (the fused kernel's with a one-pass backward, kernels/cross_entropy.py).
        if self.arch is not None:
            arch = self.arch  # a child's arch is fixed
        elif arch is None:
            raise ValueError("the supernet needs an arch: model(tokens, hidden, arch)")
        else:
            arch = with_node0(arch, self.space_args)
        ma, nodes = self.model_args, self.cell.nodes
        T, B = tokens.shape
        H = ma.hidden
        train = self.training

        # Word-level embedding dropout: drop whole vocabulary rows (AWD-LSTM, enas_lm drop_e).
        # (w * m)[tokens] == w[tokens] * m[tokens]: masking the looked-up rows gives the
        # same values without writing and differentiating a masked copy of the [V, H] table.
        w_emb = self.encoder.weight
        x = F.embedding(tokens, w_emb)  # [T, B, H]
        if train and ma.dropout_e > 0:
            x = x * _locked_mask(w_emb, (w_emb.size(0), 1), ma.dropout_e)[tokens]
        m_i = _locked_mask(x, (1, B, H), ma.dropout_i) if train else None
        m_x = _locked_mask(x, (B, H), ma.dropout_x) if train else None
        m_l = _locked_mask(x, (B, H), ma.dropout_l) if train else None
        m_o = _locked_mask(x, (1, B, H), ma.dropout_o) if train else None  # on the states before the decoder
        if m_i is not None:
            x = x * m_i
        if m_x is not None:
            x = x * m_x  # locked: the same mask at every step
        # Input projection for all steps at once: one [T*B, H] x [H, 2H] matmul.
        xw = x @ nodes[0].w_x  # [T, B, 2H]

        kernel, N = self.kernel(tokens.device), self.space_args.num_nodes
        if kernel == "reference":
            weights = {l: nodes[l].weight(p, a) for l, p, a in cell_edges(arch, N)}
            raw = enas_cell(xw, hidden, nodes[0].w_s, weights, arch, N, self.space_args.output, m_l)  # [T, B, H]
            logits = self._decode(raw, m_o, target)
        elif kernel == "compiled":  # the same equations, arch as tensors
            edges = cell_edges(arch, N)
            w = (torch.stack([nodes[l].weight(p, a) for l, p, a in edges]) if edges
                 else xw.new_zeros((0, H, 2 * H)))  # [N-1, H, 2H]
            choice = compiled.arch_tensors(arch, N, self.space_args.activations, self._plan(arch)[2], tokens.device)
            raw = compiled.cell(compiled.compiled_step(tokens.device), xw, hidden, nodes[0].w_s, w, *choice, m_l,
                                self.space_args.activations)
            logits = self._decode(raw, m_o, target)
        else:  # the same values, computed by the fused kernel
            plan = self._plan(arch)
            # each group's weights concatenated once per forward: [H, 2H * k]
            gw = [torch.cat([nodes[l].weight(p, a) for l, a in ch], dim=1) for p, ch in plan[1]]
            raw = cell_bptt(plan, xw, hidden, m_l, nodes[0].w_s, gw)  # [T, B, H]
            logits = self._decode(raw, m_o, target, token_cross_entropy)
        s = raw[-1]

        extra = raw.new_zeros(())
        if train:
            if ma.ar > 0:  # enas_lm: alpha * mean(all_s^2) on the undropped states
                extra = extra + ma.ar * raw.pow(2).mean()
            if ma.tar > 0 and T > 1:
                extra = extra + ma.tar * (raw[1:] - raw[:-1]).pow(2).mean()
        return logits, s, extra


@SPACES.register("enas_rnn")
class EnasRNNSpace:
    name = "enas_rnn"
    modality = "lm"
    Args = Args
    ModelArgs = ModelArgs
    arg_limits = {"num_nodes": 64, "activations": 16}  # the paper: 12 nodes, 4 activations
    initial_anchors: dict = {}
    param_free_choices: set = set()
    small_model = {"hidden": 8, "ar": 0.5, "tar": 0.5}  # tests/test_every_space.py
    retrain_model = {"hidden": 800}  # the network search.max_params counts by default (enas_lm's final model)

    def __init__(self, args: Args | None = None):
        self.args = args if args is not None else Args()
        # A fixed node 0 is given to the controller as one anchor of zeros (enas_lm
        # controller.py: all_h and all_h_w start with a zero row).
        self.initial_anchors = {"": InputAnchors(1, "zero")} if self.args.fixed_node0 else {}

    def decisions(self) -> list[Decision]:
        """Paper order: node 0's activation, then (input, activation) per node: 23 for N = 12
        (with ``fixed_node0``, no node 0 decision). Anchors as the official controllers make
        them (melodyguan ptb_enas_controller.py 109-145, enas_lm controller.py): node l's
        anchor is the output of the step that picks its input, the picked anchor is fed back
        divided by 0.1 + its distance, and node 0's anchor is one step on the go embedding
        before its activation."""
        acts = self.args.activations
        out = []
        if not self.args.fixed_node0:
            out.append(Decision("node0/activation", "categorical", choices=acts, group="activation",
                                anchor_step="before"))
        for l in range(1, self.args.num_nodes):
            # Prior toward recent nodes, -(l - j)^2 / 6, as in the official controller.
            prior = tuple(-((l - j) ** 2) / 6.0 for j in range(l))
            out.append(Decision(f"node{l}/input", "index", num_inputs=l, logit_offset=prior, anchor=True,
                                distance_offset=0.1))
            out.append(Decision(f"node{l}/activation", "categorical", choices=acts, group="activation"))
        return out

    def _model_args(self, model_args) -> ModelArgs:
        if isinstance(model_args, ModelArgs):
            return model_args

        return from_dict(ModelArgs, dict(model_args or {}), "model")

    def supernet(self, model_args, vocab_size: int, **ignored) -> RNNModel:
        return RNNModel(self.args, self._model_args(model_args), vocab_size)

    def child(self, arch: Mapping[str, Any], model_args, vocab_size: int, **ignored) -> RNNModel:
        arch = validate(self.decisions(), arch)
        return RNNModel(self.args, self._model_args(model_args), vocab_size, arch=arch)

    def count_params(self, arch: Mapping[str, Any], model_args, vocab_size: int, **ignored) -> int:
        """The child's parameter count (search.max_params): every node holds one H x 2H
        matrix whatever its input and activation, so no architecture changes it."""
        return count_by_parts(self, arch, self._model_args(model_args), {"vocab_size": vocab_size}, lambda a: 0)

    def loose_ends(self, arch: Mapping[str, Any]) -> list[int]:
        return output_nodes(arch, self.args.num_nodes, "loose_ends")

    def draw(self, arch: Mapping[str, Any], path):
        """Write a PNG of the cell (x_t, h_{t-1} -> node 0 -> ... -> avg -> h_t); returns
        the ``draw.Drawing`` (node extents)."""
        arch = with_node0(validate(self.decisions(), arch), self.args)
        N = self.args.num_nodes
        what = ("its loose ends" if self.args.output == "loose_ends" else
                "node 0" if N == 1 else "node 1" if N == 2 else f"nodes 1..{N - 1}")
        return draw_rnn_cell(cell_edges(arch, N), arch["node0/activation"], output_nodes(arch, N, self.args.output),
                             path, title=f"enas_rnn cell, {N} node{'s' * (N > 1)}: " + r"$h_t$" + f" = average of {what}")

    def activation_elements(self, model_args, batch_size: int, vocab_size: int, seq_len: int = 1, **_) -> int:
        """Values one training step of ``seq_len`` x ``batch_size`` tokens keeps for its
        backward pass (enas/train/memory.py), rounded up: per token ~4 H per node and ~2 per word
        of the vocabulary (the logits and their softmax), and once a step the embedding as
        its word-level dropout leaves it (V x H)."""
        h, v = self._model_args(model_args).hidden, vocab_size
        return v * h + seq_len * batch_size * (h * (5 * (self.args.num_nodes + 1) + 8) + 2 * v)

    def describe(self, arch: Mapping[str, Any]) -> str:
        arch = with_node0(validate(self.decisions(), arch), self.args)
        N = self.args.num_nodes
        lines = [
            f"enas_rnn cell: {N} nodes, weights per {self.args.weights.replace('_', '+')}, output {self.args.output}",
            f"node 0 <- x_t, s_(t-1)  {arch['node0/activation']}" + (" (fixed)" if self.args.fixed_node0 else ""),
        ]
        lines += [f"node {l} <- node {p}  {a}" for l, p, a in cell_edges(arch, N)]
        outs = output_nodes(arch, N, self.args.output)
        what = "loose ends" if self.args.output == "loose_ends" else "nodes"
        lines.append(f"s_t = average of {what} {{{', '.join(map(str, outs))}}}")
        return "\n".join(lines)
