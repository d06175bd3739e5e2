"""ENAS micro (cell) space for CIFAR-10 (paper section 2.3; ENAS_REFERENCE section 4).

A normal and a reduction cell are designed; each has two inputs (the outputs of the
two previous cells, nodes 0 and 1) and ``num_nodes`` computed nodes (2, 3, ...).
Node k = op_a(x[input_a]) + op_b(x[input_b]); the cell output is the concatenation
of every node no other node reads (inputs included, as in both official
implementations), followed by ReLU -> 1x1 conv back to C -> BN.

Supernet and child are the *same* modules: ``MicroCell`` is built either with every
candidate (input j, op) per node slot, or with only the arch's. Weights live per
(cell, node, slot, input, op) as in the official search code, under keys like
``cells.3.nodes.4.a.1.sep_conv_3x3.1.weight``. The output 1x1 conv keeps one C x C
slice per node (``cells.3.out_w.4``); concatenating the loose ends and convolving
with the concatenated slices is the official ``final_conv`` with its weights
gathered per node, so a child holds only the slices of its own loose ends and
computes exactly what the supernet computes for that arch. Only the sampled path
runs in the supernet (the official search ran all five ops per node, ~3.9x work).

Deviation from the official retraining child: there the concatenation is reduced
to C by the *next* cell's calibration conv; here every cell ends with the 1x1 conv
(the search-time layout), so supernet and child are one network.

Deviation from the official search network: its reduction cell was a stride-1 cell on
[previous, factorized reduction of previous] (micro_child.py 273-279, both inputs
calibrated to the reduced size, 209-238), while its retraining child runs stride-2 ops
on [two back, previous]. Here the search uses the child's layout, so a reward scores
the reduction cell as it will be retrained (docs/fidelity.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from enas.nas.budget import count_by_parts
from enas.errors import ConfigError
from enas.nas.space import SPACES, Arch, Decision, InputAnchors, validate

from .draw import draw_cells
from .ops import (OPS, FactorizedReduce, Identity, ReLUConvBN, bn, conv, downsampling_steps, drop_path, he_init,
                  part_params,
                  side_after, stem, stem_activations)

MICRO_OPS = ("sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3", "identity")
CELLS = ("normal", "reduction")
# Controller op prior (official micro_controller.py): learned bias initialised to 10
# for the separable convs, and a fixed +-0.25 offset for the normal cell only.
_OP_BIAS = {"sep_conv_3x3": 10.0, "sep_conv_5x5": 10.0}
_NORMAL_OFFSET = {"sep_conv_3x3": 0.25, "sep_conv_5x5": 0.25}


@dataclass(frozen=True)
class MicroArgs:
    num_nodes: int = 5  # B computed nodes per cell (paper 2.3)
    ops: tuple[str, ...] = MICRO_OPS

    def __post_init__(self):
        if self.num_nodes < 1:
            raise ValueError(f"num_nodes must be >= 1, got {self.num_nodes}")
        bad = [o for o in self.ops if o not in MICRO_OPS]
        if not self.ops or bad or len(set(self.ops)) != len(self.ops):
            raise ValueError(f"ops must be distinct names from {list(MICRO_OPS)}, got {list(self.ops)}")


@dataclass(frozen=True)
class MicroModelArgs:
    channels: int = 20  # C of the first stage (paper: 20 search, 36 final)
    num_cells: int = 2  # N normal cells per stage (paper: 2 search, 5 final)
    aux_head: bool = True  # auxiliary head after the cell that follows the 2nd reduction (loss weight set by the task)
    dropout: float = 0.1  # before the classifier (paper: 0.1 search, 0.2 final)
    drop_path: float = 0.0  # initial model.drop_path_prob; the trainer schedules it

    def __post_init__(self):
        if self.channels < 2 or self.channels % 2:
            raise ValueError(f"channels must be even and >= 2 (factorized reduction), got {self.channels}")
        if self.num_cells < 1:
            raise ValueError(f"num_cells must be >= 1, got {self.num_cells}")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.drop_path < 1.0:
            raise ValueError("dropout and drop_path must be in [0, 1)")


@dataclass(frozen=True)
class Node:
    input_a: int
    input_b: int
    op_a: str
    op_b: str


@dataclass(frozen=True)
class Genotype:
    normal: tuple[Node, ...]
    reduction: tuple[Node, ...]

    def cell(self, kind: str) -> tuple[Node, ...]:
        return self.normal if kind == "normal" else self.reduction


def loose_ends(nodes: tuple[Node, ...]) -> tuple[int, ...]:
    """Nodes (inputs 0, 1 included) that no node reads: they form the cell output."""
    used = {i for n in nodes for i in (n.input_a, n.input_b)}
    return tuple(i for i in range(len(nodes) + 2) if i not in used)


def to_genotype(arch: Arch, num_nodes: int) -> Genotype:
    cells = []
    for c in CELLS:
        cells.append(
            tuple(
                Node(
                    arch[f"{c}/node{k}/a/input"],
                    arch[f"{c}/node{k}/b/input"],
                    arch[f"{c}/node{k}/a/op"],
                    arch[f"{c}/node{k}/b/op"],
                )
                for k in range(2, num_nodes + 2)
            )
        )
    return Genotype(*cells)


def from_genotype(g: Genotype) -> Arch:
    arch: Arch = {}
    for c in CELLS:
        for k, n in enumerate(g.cell(c), start=2):
            arch[f"{c}/node{k}/a/input"] = n.input_a
            arch[f"{c}/node{k}/b/input"] = n.input_b
            arch[f"{c}/node{k}/a/op"] = n.op_a
            arch[f"{c}/node{k}/b/op"] = n.op_b
    return arch


# The paper's cells, as released in the official repo (scripts/cifar10_micro_final.sh):
#   fixed_arc = "0 2 0 0 0 4 0 1 0 4 1 1 1 0 0 1 0 2 1 1"      (normal)
#             + "1 0 1 0 0 3 0 2 1 1 3 1 1 0 0 4 0 3 1 1"      (reduction)
# four numbers per node: input_a op_a input_b op_b; ops 0 sep3, 1 sep5, 2 avg, 3 max, 4 identity.
ENAS_MICRO_OFFICIAL_ARC = "0 2 0 0 0 4 0 1 0 4 1 1 1 0 0 1 0 2 1 1 1 0 1 0 0 3 0 2 1 1 3 1 1 0 0 4 0 3 1 1"
ENAS_MICRO_GENOTYPE = Genotype(
    normal=(
        Node(0, 0, "avg_pool_3x3", "sep_conv_3x3"),
        Node(0, 0, "identity", "sep_conv_5x5"),
        Node(0, 1, "identity", "sep_conv_5x5"),
        Node(1, 0, "sep_conv_3x3", "sep_conv_5x5"),
        Node(0, 1, "avg_pool_3x3", "sep_conv_5x5"),
    ),  # loose ends 2..6
    reduction=(
        Node(1, 1, "sep_conv_3x3", "sep_conv_3x3"),
        Node(0, 0, "max_pool_3x3", "avg_pool_3x3"),
        Node(1, 3, "sep_conv_5x5", "sep_conv_5x5"),
        Node(1, 0, "sep_conv_3x3", "identity"),
        Node(0, 1, "max_pool_3x3", "sep_conv_5x5"),
    ),  # loose ends 2, 4, 5, 6
)
ENAS_MICRO_CELL: Arch = from_genotype(ENAS_MICRO_GENOTYPE)


class MicroCell(nn.Module):
    """One cell. ``edges[(k, slot)]`` maps an input index to the op names to build
    for it; ``outputs`` lists the nodes whose output-conv slice to hold."""

    def __init__(self, c_pp, c_p, c, reduction, reduction_prev, num_nodes, edges, outputs):
        super().__init__()
        self.reduction = reduction
        # Calibrate the inputs to [C, H, W] (official _maybe_calibrate_size).
        if reduction_prev:
            self.pre0 = nn.Sequential(nn.ReLU(inplace=False), FactorizedReduce(c_pp, c))
        else:
            self.pre0 = ReLUConvBN(c_pp, c) if c_pp != c else Identity()
        self.pre1 = ReLUConvBN(c_p, c) if c_p != c else Identity()
        self.nodes = nn.ModuleDict()
        for k in range(2, num_nodes + 2):
            slots = nn.ModuleDict()
            for slot in ("a", "b"):
                inputs = nn.ModuleDict()
                for j, ops in sorted(edges.get((k, slot), {}).items()):
                    stride = 2 if reduction and j < 2 else 1  # ops reading a cell input reduce
                    inputs[str(j)] = nn.ModuleDict({op: OPS.get(op)(c, stride) for op in ops})
                slots[slot] = inputs
            self.nodes[str(k)] = slots
        self.out_w = nn.ParameterDict({str(i): nn.Parameter(torch.empty(c, c, 1, 1)) for i in sorted(outputs)})
        for w in self.out_w.values():
            nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu")
        # In a reduction cell an unused cell input is still full size (official _fixed_combine).
        self.out_reduce = nn.ModuleDict(
            {str(i): FactorizedReduce(c, c) for i in sorted(outputs) if reduction and i < 2}
        )
        self.out_bn = bn(c)

    def forward(self, s0, s1, nodes: tuple[Node, ...], loose: tuple[int, ...], drop_prob: float):
        # s0: [B, C_pp, H0, W0], s1: [B, C_p, H, W] -> [B, C, H', W'] (H' = H/2 if reduction)
        states = [self.pre0(s0), self.pre1(s1)]
        for k, n in enumerate(nodes, start=2):
            slots = self.nodes[str(k)]
            h = self._edge(slots["a"], n.input_a, n.op_a, states, drop_prob)
            h = h + self._edge(slots["b"], n.input_b, n.op_b, states, drop_prob)
            states.append(h)
        outs = [self.out_reduce[str(i)](states[i]) if self.reduction and i < 2 else states[i] for i in loose]
        w = torch.cat([self.out_w[str(i)] for i in loose], dim=1)  # [C, len(loose) * C, 1, 1]
        return self.out_bn(F.conv2d(F.relu(torch.cat(outs, dim=1)), w))

    def _edge(self, slot, j: int, op: str, states, drop_prob: float):
        h = slot[str(j)][op](states[j])
        if op != "identity" and self.training and drop_prob > 0:  # official: no drop-path on identity
            h = drop_path(h, drop_prob)
        return h


class AuxHead(nn.Sequential):
    """ReLU -> avgpool 5/3 -> 1x1 conv 128 -> BN -> ReLU -> 2x2 conv 768 -> BN -> ReLU ->
    global average -> FC (official micro_child.py 294-322; 8x8 input -> 2x2 -> 2x2). The
    2x2 conv pads as TF's SAME does (one zero row and column after the map), so its
    output keeps the pooled map's size. It needs at least 8 x 8 input (the pool must
    leave 2 x 2 for the 2x2 conv)."""

    MIN_SIDE = 8

    def __init__(self, c: int, num_classes: int):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
            conv(c, 128, 1), bn(128), nn.ReLU(inplace=False),
            nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(128, 768, 2, bias=False), bn(768), nn.ReLU(inplace=False),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(768, num_classes, bias=False),
        )


class MicroNetwork(nn.Module):
    """Stem, N normal, reduction, N normal, reduction, N normal; channels double at each
    reduction. ``genotype=None`` builds the supernet (forward needs ``arch``); a genotype
    builds that child (``arch`` is ignored). forward -> (logits, aux_logits or None).
    Inputs are ``image_size`` px square; the stem downsamples larger ones (ops.stem)."""

    def __init__(self, genotype, num_nodes, ops, channels, num_cells, num_classes, aux_head, dropout, drop_path,
                 image_size: int = 32):
        super().__init__()
        if aux_head:
            side = side_after(image_size, downsampling_steps(image_size) + 2)  # after the 2nd reduction
            if side < AuxHead.MIN_SIDE:
                least = next(s for s in range(image_size, 10**4)
                             if side_after(s, downsampling_steps(s) + 2) >= AuxHead.MIN_SIDE)
                raise ConfigError(f"model.aux_head: the auxiliary head needs a feature map of at least "
                                  f"{AuxHead.MIN_SIDE} x {AuxHead.MIN_SIDE} after the second reduction, and "
                                  f"{image_size} px images leave {side} x {side}; set model.aux_head: false "
                                  f"(or data.image_size: {least} or more)")
        self.genotype, self.num_nodes = genotype, num_nodes
        self.drop_path_prob = float(drop_path)
        c = channels
        stem_c = 3 * c  # paper / official: stem to 3C
        self.stem = stem(stem_c, image_size)
        total = 3 * num_cells + 2
        reductions = (num_cells, 2 * num_cells + 1)
        # the aux head reads the first normal cell after the second reduction (official
        # micro_child.py 112-113: aux_head_indices = [pool_layers[-1] + 1])
        self.aux_index = reductions[1] + 1
        c_pp, c_p, red_prev = stem_c, stem_c, False
        self.cells = nn.ModuleList()
        for i in range(total):
            red = i in reductions
            if red:
                c *= 2
            kind = "reduction" if red else "normal"
            if genotype is None:
                edges = {(k, s): {j: list(ops) for j in range(k)} for k in range(2, num_nodes + 2) for s in "ab"}
                outputs = range(num_nodes + 2)
            else:
                nodes = genotype.cell(kind)
                edges = {}
                for k, n in enumerate(nodes, start=2):
                    edges[(k, "a")] = {n.input_a: [n.op_a]}
                    edges[(k, "b")] = {n.input_b: [n.op_b]}
                outputs = loose_ends(nodes)
            self.cells.append(MicroCell(c_pp, c_p, c, red, red_prev, num_nodes, edges, outputs))
            if i == self.aux_index:
                c_aux = c
            c_pp, c_p, red_prev = c_p, c, red
        self.aux_head = AuxHead(c_aux, num_classes) if aux_head else None
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c_p, num_classes, bias=False)
        he_init(self)

    def forward(self, x: torch.Tensor, arch: Arch | None = None):
        # x: [B, 3, H, W] -> logits [B, K], aux [B, K] (training with aux head) or None
        g = self.genotype if self.genotype is not None else to_genotype(arch, self.num_nodes)
        loose = {kind: loose_ends(g.cell(kind)) for kind in CELLS}
        s0 = s1 = self.stem(x)
        aux = None
        n = len(self.cells)
        for i, cell in enumerate(self.cells):
            kind = "reduction" if cell.reduction else "normal"
            p = self.drop_path_prob * (i + 1) / n  # linear in depth (official _apply_drop_path)
            s0, s1 = s1, cell(s0, s1, g.cell(kind), loose[kind], p)
            if i == self.aux_index and self.aux_head is not None and self.training:
                aux = self.aux_head(s1)
        out = F.adaptive_avg_pool2d(F.relu(s1), 1).flatten(1)  # [B, C_last]
        return self.classifier(self.dropout(out)), aux


@SPACES.register("enas_micro")
class EnasMicroSpace:
    name = "enas_micro"
    modality = "image"
    Args = MicroArgs
    ModelArgs = MicroModelArgs
    arg_limits = {"num_nodes": 32, "ops": 32}  # the paper: 5 nodes, 5 ops
    model_limits = {"num_cells": 16}  # the paper: 5 per stage (17 cells); a supernet cell is ~900 modules
    param_free_choices = {"avg_pool_3x3", "max_pool_3x3", "identity"}
    small_model = {"channels": 4, "num_cells": 1, "aux_head": True, "dropout": 0.0}  # tests/test_every_space.py
    retrain_model = {"channels": 36, "num_cells": 5}  # what search.max_params counts by default (paper 3.3)

    def __init__(self, args: MicroArgs | None = None):
        self.args = args if args is not None else MicroArgs()
        # The two cell inputs: one controller step each on the go embedding gives their
        # attention keys, and picking one feeds zeros (official micro_controller.py 135-140).
        self.initial_anchors = {c: InputAnchors(2, "step_zero") for c in CELLS}

    def decisions(self) -> list[Decision]:
        ops = tuple(self.args.ops)
        bias = tuple(_OP_BIAS.get(o, 0.0) for o in ops)
        out = []
        for cell in CELLS:
            offset = tuple(_NORMAL_OFFSET.get(o, -0.25) for o in ops) if cell == "normal" else None
            for k in range(2, self.args.num_nodes + 2):
                p = f"{cell}/node{k}"
                # official sampler order: index_a, index_b, op_a, op_b; then one more step,
                # on op_b's embedding, makes the node's anchor and the next node starts
                # from the go embedding (official micro_controller.py 198-201).
                out.append(Decision(f"{p}/a/input", "index", num_inputs=k, scope=cell))
                out.append(Decision(f"{p}/b/input", "index", num_inputs=k, scope=cell))
                for slot in ("a", "b"):
                    out.append(
                        Decision(
                            f"{p}/{slot}/op", "categorical", choices=ops, group="op", scope=cell,
                            anchor_step="after" if slot == "b" else "", bias_init=bias, logit_offset=offset,
                        )
                    )
        return out

    def genotype(self, arch: Arch) -> Genotype:
        return to_genotype(validate(self.decisions(), arch), self.args.num_nodes)

    def _net(self, genotype, model_args: MicroModelArgs, num_classes: int, image_size: int) -> MicroNetwork:
        m = model_args
        return MicroNetwork(genotype, self.args.num_nodes, self.args.ops, m.channels, m.num_cells,
                            num_classes, m.aux_head, m.dropout, m.drop_path, image_size)

    def supernet(self, model_args: MicroModelArgs, num_classes: int = 10, image_size: int = 32,
                 **_) -> MicroNetwork:
        return self._net(None, model_args, num_classes, image_size)

    def child(self, arch: Arch, model_args: MicroModelArgs, num_classes: int = 10, image_size: int = 32,
              **_) -> MicroNetwork:
        return self._net(self.genotype(arch), model_args, num_classes, image_size)

    def count_params(self, arch: Arch, model_args: MicroModelArgs, num_classes: int = 10, image_size: int = 32,
                     **_) -> int:
        """The child's parameter count without building it (search.max_params): per cell,
        its nodes' ops (stride 2 on a reduction cell's inputs), one C x C slice of the
        output conv per loose end, and a factorized reduction per loose cell input of a
        reduction cell (MicroCell); the rest of the network does not depend on the arch."""
        m = model_args
        n = m.num_cells
        plan, c = [], m.channels  # (C, reduction) of each cell, as MicroNetwork builds them
        for i in range(3 * n + 2):
            red = i in (n, 2 * n + 1)
            c = 2 * c if red else c
            plan.append((c, red))

        def variable(a: Arch) -> int:
            g, total = self.genotype(a), 0
            for c, red in plan:
                nodes = g.cell("reduction" if red else "normal")
                for node in nodes:
                    for j, op in ((node.input_a, node.op_a), (node.input_b, node.op_b)):
                        total += part_params(OPS.get(op), c, 2 if red and j < 2 else 1)
                loose = loose_ends(nodes)
                total += len(loose) * c * c + sum(part_params(FactorizedReduce, c, c) for i in loose if red and i < 2)
            return total
        return count_by_parts(self, arch, m, {"num_classes": num_classes, "image_size": image_size}, variable)

    def activation_elements(self, model_args: MicroModelArgs, batch_size: int, image_size: int = 32, **_) -> int:
        """Values one training step keeps for its backward pass (enas/train/memory.py), rounded up:
        measured ~15 per node and channel of the cells' pixel map per normal cell of a stage,
        ~13 more per node, over the three stages (tests/test_bounded_input.py checks that this
        stays above a measured step)."""
        m = model_args
        kept, pixels = stem_activations(3 * m.channels, image_size)
        return batch_size * (kept + 20 * self.args.num_nodes * (m.num_cells + 1) * m.channels * pixels)

    def describe(self, arch: Arch) -> str:
        g = self.genotype(arch)
        lines = []
        for cell in CELLS:
            nodes = g.cell(cell)
            lines.append(f"{cell} cell:")
            for k, n in enumerate(nodes, start=2):
                lines.append(f"  node{k} = {n.op_a}(node{n.input_a}) + {n.op_b}(node{n.input_b})")
            lines.append(f"  output = concat({', '.join(f'node{i}' for i in loose_ends(nodes))})")
        return "\n".join(lines)

    def draw(self, arch: Arch, path):
        """Write a PNG of both cells; returns the ``draw.Drawing`` (label and node extents)."""
        g = self.genotype(arch)
        cells = {c: [(n.input_a, n.input_b, n.op_a, n.op_b) for n in g.cell(c)] for c in CELLS}
        return draw_cells(cells, {c: loose_ends(g.cell(c)) for c in CELLS}, path)
