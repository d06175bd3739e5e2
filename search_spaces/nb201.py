"""NAS-Bench-201 cell space (Dong & Yang, ICLR 2020; ENAS_REFERENCE section 6).

A cell has 4 nodes; node 0 is the cell input and node i (1..3) is the sum of one op
applied to every earlier node j: 6 edges, 5 ops each, 5^6 = 15,625 cells. The cell
output is node 3. Every cell of the network has the same genotype:

    stem: 3x3 conv (C) + BN
    N cells (C) | resnet block (2C, /2) | N cells (2C) | resnet block (4C, /2) | N cells (4C)
    BN -> ReLU -> global average pool -> FC (with bias, as NB201's nn.Linear)

(NB201: C = 16, N = 5.) The standard text form of a cell, used by the benchmark's
tables and accepted wherever an architecture is typed (``enas rank --archs``), is
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``: node 1 | node 2 | node 3, ``op~j`` the edge
from node j.

Supernet and child are the same modules (``NB201Network``): the supernet holds all
five candidates per edge in ``cells.<k>.edges.<i><-<j>.<op>`` (NB201's own edge
keys), a child only its cell's op, under the same key. Only the sampled op of each
edge runs; ``none`` edges are not run (they add zeros), nor are nodes from which no
path of non-``none`` edges reaches the output (they cannot change it). Parameter init
is PyTorch's default, as in NB201's training code.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from enas.nas.budget import count_by_parts
from enas.nas.space import SPACES, Arch, ArchError, Decision, validate

from .draw import draw_dag
from .ops import OPS, Zero, bn, part_params, stem, stem_activations

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NUM_NODES = 4  # node 0 = cell input, nodes 1..3 computed; node 3 is the output
_COLOURS = {"nor_conv_1x1": "#8c564b", "nor_conv_3x3": "#1f77b4", "skip_connect": "#7f7f7f"}
EDGES = tuple((i, j) for i in range(1, NUM_NODES) for j in range(i))  # (1,0) (2,0) (2,1) (3,0) (3,1) (3,2)

# Published cells, as cell strings (tests rebuild them):
# a ResNet basic block as a cell: node 3 = x + conv(conv(x)) (NB201 paper, figure 1 / ResNet_CODE)
RESNET_CELL = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
# the best cell on CIFAR-10 (94.37% test, NB201 paper table 5); NATS-Bench fixes it as
# the topology of its size search space
BEST_CIFAR10_CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def decision_name(i: int, j: int) -> str:
    return f"node{i}/from{j}"


@dataclass(frozen=True)
class NB201Args:
    """The benchmark's space is fixed (4 nodes, the five ops above); nothing to set."""


@dataclass(frozen=True)
class NB201ModelArgs:
    channels: int = 16  # C of the first stage (NB201: 16)
    cells_per_stage: int = 5  # N (NB201: 5)
    dropout: float = 0.0  # before the classifier (NB201: none)

    def __post_init__(self):
        if self.channels < 1 or self.cells_per_stage < 1:
            raise ValueError("channels and cells_per_stage must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class Genotype:
    """ops[i - 1][j]: the op on edge j -> i."""

    ops: tuple[tuple[str, ...], ...]

    def edges(self) -> list[tuple[int, int, str]]:
        return [(i, j, self.ops[i - 1][j]) for i, j in EDGES]

    def live(self) -> frozenset[int]:
        """Nodes on a path of non-``none`` edges into the output (node 3 always counts).
        A dead node cannot change the output, so it is not computed (its ops still
        belong to the cell, as in NB201's parameter counts)."""
        live = {NUM_NODES - 1}
        for i in range(NUM_NODES - 1, 0, -1):
            if i in live:
                live |= {j for j, op in enumerate(self.ops[i - 1]) if op != "none"}
        return frozenset(live)


def to_genotype(arch: Arch) -> Genotype:
    return Genotype(tuple(tuple(arch[decision_name(i, j)] for j in range(i)) for i in range(1, NUM_NODES)))


def to_cell_string(arch: Arch) -> str:
    g = to_genotype(arch)
    return "+".join("|" + "|".join(f"{op}~{j}" for j, op in enumerate(node)) + "|" for node in g.ops)


def parse_cell_string(text: str) -> Arch:
    """``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` -> arch. Edges of a node may come in any
    order; each earlier node must appear exactly once."""
    if not isinstance(text, str):
        raise ArchError(f"a cell string must be text, got {type(text).__name__}")
    s = text.strip()
    example = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|none~1|avg_pool_3x3~2|"
    nodes = s.split("+")
    if len(nodes) != NUM_NODES - 1:
        raise ArchError(f"cell string {s!r}: expected {NUM_NODES - 1} nodes separated by '+', got {len(nodes)} "
                        f"(e.g. {example})")
    arch: Arch = {}
    for i, part in enumerate(nodes, start=1):
        if len(part) < 2 or not part.startswith("|") or not part.endswith("|"):
            raise ArchError(f"cell string {s!r}: node {i} {part!r} must look like |op~0|...| (e.g. {example})")
        seen = set()
        tokens = part[1:-1].split("|")
        if len(tokens) != i:
            raise ArchError(f"cell string {s!r}: node {i} needs {i} edges (from nodes 0..{i - 1}), got {len(tokens)}")
        for tok in tokens:
            op, sep, j = tok.partition("~")
            if not sep or not j.isdigit():
                raise ArchError(f"cell string {s!r}: edge {tok!r} of node {i} must be op~j")
            j = int(j)
            if j >= i:
                raise ArchError(f"cell string {s!r}: node {i} cannot read node {j} (only 0..{i - 1})")
            if j in seen:
                raise ArchError(f"cell string {s!r}: node {i} lists the edge from node {j} twice")
            if op not in NB201_OPS:
                raise ArchError(f"cell string {s!r}: unknown op {op!r} (ops: {', '.join(NB201_OPS)})")
            seen.add(j)
            arch[decision_name(i, j)] = op
    return arch


class NB201Cell(nn.Module):
    """``edge_ops[(i, j)]``: the op names to build on edge j -> i (all five in the
    supernet, one in a child)."""

    def __init__(self, c: int, edge_ops: dict):
        super().__init__()
        self.edges = nn.ModuleDict(
            {f"{i}<-{j}": nn.ModuleDict({op: OPS.get(op)(c, 1) for op in edge_ops[(i, j)]}) for i, j in EDGES}
        )

    def forward(self, x: torch.Tensor, g: Genotype) -> torch.Tensor:
        # x: [B, C, H, W] -> node 3: [B, C, H, W]
        nodes = [x]
        live = g.live()
        for i in range(1, NUM_NODES):
            if i not in live:
                nodes.append(None)  # read by nothing that reaches the output
                continue
            h = None
            for j in range(i):
                op = self.edges[f"{i}<-{j}"][g.ops[i - 1][j]]
                if isinstance(op, Zero):  # `none`: contributes zeros, nothing to compute
                    continue
                y = op(nodes[j])
                h = y if h is None else h + y
            nodes.append(torch.zeros_like(x) if h is None else h)
        return nodes[-1]


class NB201Network(nn.Module):
    """``genotype=None`` builds the supernet (forward needs ``arch``); a genotype builds
    that child (``arch`` is ignored). forward -> (logits [B, K], None). Inputs are
    ``image_size`` px square; the stem downsamples larger ones (ops.stem)."""

    def __init__(self, genotype: Genotype | None, channels: int, cells_per_stage: int, num_classes: int,
                 dropout: float, image_size: int = 32):
        super().__init__()
        self.genotype = genotype
        self.drop_path_prob = 0.0  # image-model contract; NB201 has no drop-path
        c = channels
        self.stem = stem(c, image_size)
        if genotype is None:
            edge_ops = {e: NB201_OPS for e in EDGES}
        else:
            edge_ops = {(i, j): (op,) for i, j, op in genotype.edges()}
        self.cells = nn.ModuleList()
        for stage in range(3):
            if stage > 0:
                self.cells.append(OPS.get("nb201/resnet_block")(c, 2))
                c *= 2
            for _ in range(cells_per_stage):
                self.cells.append(NB201Cell(c, edge_ops))
        self.lastact = nn.Sequential(bn(c), nn.ReLU(inplace=False))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor, arch: Arch | None = None):
        # x: [B, 3, H, W] -> logits [B, K]
        g = self.genotype if self.genotype is not None else to_genotype(arch)
        h = self.stem(x)
        for cell in self.cells:
            h = cell(h, g) if isinstance(cell, NB201Cell) else cell(h)
        out = F.adaptive_avg_pool2d(self.lastact(h), 1).flatten(1)  # [B, 4C]
        return self.classifier(self.dropout(out)), None


@SPACES.register("nb201")
class NB201Space:
    name = "nb201"
    modality = "image"
    Args = NB201Args
    ModelArgs = NB201ModelArgs
    param_free_choices = {"none", "skip_connect", "avg_pool_3x3"}
    small_model = {"channels": 4, "cells_per_stage": 1, "dropout": 0.0}  # tests/test_every_space.py
    retrain_model: dict = {}  # search.max_params counts NB201's network (C=16, N=5: the defaults)
    model_limits = {"cells_per_stage": 32}  # NB201: 5 (17 cells); a supernet cell is ~230 modules
    extra_keys = ("cell_string",)

    def __init__(self, args: NB201Args | None = None):
        self.args = args if args is not None else NB201Args()
        self.initial_anchors: dict = {}

    def decisions(self) -> list[Decision]:
        # One categorical decision per edge, node by node (the cell string's order);
        # all share one controller head and embedding (group "op").
        return [Decision(decision_name(i, j), "categorical", choices=NB201_OPS, group="op") for i, j in EDGES]

    def genotype(self, arch: Arch) -> Genotype:
        return to_genotype(validate(self.decisions(), arch))

    def _net(self, genotype, model_args: NB201ModelArgs, num_classes: int, image_size: int) -> NB201Network:
        m = model_args
        return NB201Network(genotype, m.channels, m.cells_per_stage, num_classes, m.dropout, image_size)

    def supernet(self, model_args: NB201ModelArgs, num_classes: int = 10, image_size: int = 32,
                 **_) -> NB201Network:
        return self._net(None, model_args, num_classes, image_size)

    def child(self, arch: Arch, model_args: NB201ModelArgs, num_classes: int = 10, image_size: int = 32,
              **_) -> NB201Network:
        return self._net(self.genotype(arch), model_args, num_classes, image_size)

    def count_params(self, arch: Arch, model_args: NB201ModelArgs, num_classes: int = 10, image_size: int = 32,
                     **_) -> int:
        """The child's parameter count without building it (search.max_params): the network
        around the cells, plus each cell's edge ops at its stage's width."""
        m = model_args

        def cells(a: Arch) -> int:
            ops = [op for _, _, op in self.genotype(a).edges()]
            return m.cells_per_stage * sum(part_params(OPS.get(op), m.channels * 2 ** stage, 1)
                                           for stage in range(3) for op in ops)
        return count_by_parts(self, arch, m, {"num_classes": num_classes, "image_size": image_size}, cells)

    # ---- text forms -------------------------------------------------------------------
    def to_text(self, arch: Arch) -> str:
        """The cell string (the inverse of ``parse_text``)."""
        return to_cell_string(validate(self.decisions(), arch))

    def parse_text(self, line: str) -> Arch:
        return validate(self.decisions(), parse_cell_string(line))

    def extras(self, arch: Arch) -> dict:
        return {"cell_string": self.to_text(arch)}

    def check_extras(self, arch: Arch, doc: dict) -> None:
        """An arch file's ``cell_string`` (informational) must agree with its ``arch``."""
        if "cell_string" not in doc:
            return
        written = doc["cell_string"]
        if parse_cell_string(written) != arch:
            raise ArchError(f"cell_string {written!r} disagrees with the file's arch ({self.to_text(arch)}); "
                            f"fix or delete one of them")

    def activation_elements(self, model_args: NB201ModelArgs, batch_size: int, image_size: int = 32, **_) -> int:
        """Values one training step keeps for its backward pass (enas/train/memory.py), rounded up:
        measured ~14 per cell and channel of the cells' pixel map, ~8 for the residual
        reductions and the classifier."""
        m = model_args
        kept, pixels = stem_activations(m.channels, image_size)
        return batch_size * (kept + (20 * m.cells_per_stage + 12) * m.channels * pixels)

    def describe(self, arch: Arch) -> str:
        g = self.genotype(arch)
        lines = [f"cell: {to_cell_string(arch)}"]
        for i, node in enumerate(g.ops, start=1):
            terms = [f"{op}(node{j})" for j, op in enumerate(node) if op != "none"]
            lines.append(f"  node{i} = {' + '.join(terms) if terms else 'zeros'}")
        lines.append("  output = node3")
        return "\n".join(lines)

    def draw(self, arch: Arch, path):
        """Write a PNG of the cell; returns the ``draw.Drawing`` (label and node extents)."""
        g = self.genotype(arch)
        labels = [{0: "in (0)", NUM_NODES - 1: "out (3)"}.get(k, str(k)) for k in range(NUM_NODES)]
        edges = [(j, i, op, {1: 0.0, 2: 0.55}.get(i - j, 1.05))
                 for i, j, op in g.edges() if op != "none"]  # a `none` edge is no connection
        return draw_dag(labels, edges, to_cell_string(arch), path, _COLOURS)
