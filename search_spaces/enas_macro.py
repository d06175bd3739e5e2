"""ENAS macro (whole-network) space for CIFAR-10 (paper section 2.2; ENAS_REFERENCE section 5).

``num_layers`` layers in a chain. Layer i applies one op to layer i-1's output, adds
any subset of the outputs before that (skip connections) and applies BN:
``out_i = BN(op_i(out_{i-1}) + sum_{k in skips_i} prev_k)``. The skip candidates of
layer i are exactly the official ones (``general_child._enas_layer``): ``prev =
[stem, layer0, ..., layer(i-2)]``, i.e. skip index 0 is the stem's output and index
k > 0 is layer k-1's; the layer's own input (layer i-1) is never a skip. So layer i
has i skip bits, the official arc string's bits in order. After the layers at
``L//3 - 1`` and ``2L//3 - 1`` (3 and 7 for L = 12) a factorized reduction halves
every earlier output (stem included) still needed later. Stem 3x3 conv + BN; global
average pool, dropout, FC.

Supernet and child are the same ``MacroNetwork``: the supernet holds every op per
layer in ``layers.<i>.ops.<op>``; a child holds the chosen op only, and the
reductions of the outputs it reads again (``reductions.<p>.<k>``, k indexing
``[stem, layer0, ...]``). Only the sampled
op runs. **Official bug not copied:** the official search built its branches as
``lambda: y`` closures, so every layer ran the last branch (max pool) whatever op
was sampled; here the sampled op is looked up by name and run (tests check that
changing one layer's op changes the output).

Small deviation: the official code applies the post-sum BN only for layers > 0;
here every layer, including layer 0, ends with it (the paper's formula).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from enas.nas.budget import count_by_parts
from enas.nas.space import SPACES, Arch, ArchError, Decision, validate

from .draw import draw_chain
from .ops import OPS, FactorizedReduce, bn, he_init, part_params, stem, stem_activations

MACRO_OPS = ("conv_3x3", "sep_conv_3x3", "conv_5x5", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3")


@dataclass(frozen=True)
class MacroArgs:
    num_layers: int = 12  # L (paper 2.2 / 3.1: 12 layers searched)
    ops: tuple[str, ...] = MACRO_OPS

    def __post_init__(self):
        if self.num_layers < 3:
            raise ValueError(f"num_layers must be >= 3 (two reductions), got {self.num_layers}")
        bad = [o for o in self.ops if o not in MACRO_OPS]
        if not self.ops or bad or len(set(self.ops)) != len(self.ops):
            raise ValueError(f"ops must be distinct names from {list(MACRO_OPS)}, got {list(self.ops)}")


@dataclass(frozen=True)
class MacroModelArgs:
    channels: int = 36  # paper: 36 channels throughout during search
    dropout: float = 0.1  # before the classifier (official keep_prob 0.9)
    # Official fixed-arc children double the channels at each reduction; the search
    # network does not.
    double_channels: bool = False

    def __post_init__(self):
        if self.channels < 2 or self.channels % 2:
            raise ValueError(f"channels must be even and >= 2 (factorized reduction), got {self.channels}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class MacroGenotype:
    ops: tuple[str, ...]
    # skips[i]: the outputs added to layer i, as indices k into [stem, layer0, ...]
    # (k = 0 the stem, k > 0 layer k-1; always k < i: never the layer's own input)
    skips: tuple[tuple[int, ...], ...]


def source_name(k: int) -> str:
    """The output that skip index k reads: 0 is the stem, k > 0 is layer k-1."""
    return "stem" if k == 0 else f"layer{k - 1}"


def pool_layers(num_layers: int) -> tuple[int, int]:
    d = num_layers // 3  # official general_child: pool_distance = num_layers // 3
    return (d - 1, 2 * d - 1)


def to_genotype(arch: Arch, num_layers: int) -> MacroGenotype:
    ops = tuple(arch[f"layer{i}/op"] for i in range(num_layers))
    skips = ((),) + tuple(tuple(arch[f"layer{i}/skips"]) for i in range(1, num_layers))
    return MacroGenotype(ops, skips)


def from_genotype(g: MacroGenotype) -> Arch:
    arch: Arch = {}
    for i, op in enumerate(g.ops):
        arch[f"layer{i}/op"] = op
        if i > 0:
            arch[f"layer{i}/skips"] = sorted(g.skips[i])
    return arch


def needed_after(g: MacroGenotype, p: int) -> set[int]:
    """Indices k into [stem, layer0, ..., layer p] read by some layer i > p: as its
    input (layer i-1, index i) or as a skip."""
    return {k for i in range(p + 1, len(g.ops)) for k in (i, *g.skips[i]) if k <= p + 1}


def parse_official_arc(text: str, ops: tuple[str, ...], num_layers: int) -> Arch:
    """The official whole-channels arc string (``scripts/cifar10_macro_*.sh``): per
    layer i, an op code (an index into ``ops``, the official branch order) followed by
    i skip bits, bit k selecting [stem, layer0, ...][k]."""
    try:
        codes = [int(t) for t in text.split()]
    except ValueError:
        raise ArchError(f"an official macro arc is whitespace-separated integers, got {text[:60]!r}") from None
    want = num_layers * (num_layers + 1) // 2
    if len(codes) != want:
        raise ArchError(f"an official arc of {num_layers} layers has {want} numbers, got {len(codes)}")
    arch: Arch = {}
    pos = 0
    for i in range(num_layers):
        if not 0 <= codes[pos] < len(ops):
            raise ArchError(f"layer {i}: op code {codes[pos]} is not in 0..{len(ops) - 1} ({', '.join(ops)})")
        arch[f"layer{i}/op"] = ops[codes[pos]]
        bits = codes[pos + 1:pos + 1 + i]
        if any(b not in (0, 1) for b in bits):
            raise ArchError(f"layer {i}: skip bits must be 0 or 1, got {bits}")
        if i:
            arch[f"layer{i}/skips"] = [k for k, b in enumerate(bits) if b]
        pos += 1 + i
    return arch


def official_arc(g: MacroGenotype, ops: tuple[str, ...]) -> str:
    """The inverse of ``parse_official_arc``."""
    codes = []
    for i, op in enumerate(g.ops):
        codes.append(ops.index(op))
        codes += [int(k in g.skips[i]) for k in range(i)]
    return " ".join(map(str, codes))


class MacroLayer(nn.Module):
    def __init__(self, c: int, ops):
        super().__init__()
        self.ops = nn.ModuleDict({op: OPS.get(f"macro/{op}")(c, 1) for op in ops})
        self.bn = bn(c)

    def forward(self, x, op: str, skip_inputs):
        # x: [B, C, H, W] (previous layer) -> [B, C, H, W]
        h = self.ops[op](x)  # the sampled op, looked up by name (see module docstring)
        for s in skip_inputs:
            h = h + s
        return self.bn(h)


class MacroNetwork(nn.Module):
    """``genotype=None`` builds the supernet (forward needs ``arch``); a genotype builds
    that child. forward(x, arch) -> (logits, None). Inputs are ``image_size`` px square;
    the stem downsamples larger ones (ops.stem)."""

    def __init__(self, genotype, num_layers, ops, channels, num_classes, dropout, double_channels,
                 image_size: int = 32):
        super().__init__()
        self.genotype, self.num_layers = genotype, num_layers
        self.pool_layers = pool_layers(num_layers)
        self.drop_path_prob = 0.0  # image-model contract; the macro space has no drop-path
        c = channels
        self.stem = stem(c, image_size)
        self.layers = nn.ModuleList()
        self.reductions = nn.ModuleDict()
        for i in range(num_layers):
            self.layers.append(MacroLayer(c, ops if genotype is None else (genotype.ops[i],)))
            if i in self.pool_layers:
                c_next = 2 * c if double_channels else c
                # the supernet reduces the stem and every layer so far (any may be read later)
                keep = range(i + 2) if genotype is None else sorted(needed_after(genotype, i))
                self.reductions[str(i)] = nn.ModuleDict({str(k): FactorizedReduce(c, c_next) for k in keep})
                c = c_next
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c, num_classes, bias=False)
        he_init(self)

    def forward(self, x: torch.Tensor, arch: Arch | None = None):
        # x: [B, 3, H, W] -> logits [B, K]
        g = self.genotype if self.genotype is not None else to_genotype(arch, self.num_layers)
        # official prev_layers: [stem, layer0, ...] at the current resolution (None once
        # no later layer reads it); layer i reads prev[-1] and adds prev[k], k in skips[i]
        prev: list[torch.Tensor | None] = [self.stem(x)]  # [B, C, H, W] each
        for i, layer in enumerate(self.layers):
            prev.append(layer(prev[-1], g.ops[i], [prev[k] for k in g.skips[i]]))
            if i in self.pool_layers:
                red, need = self.reductions[str(i)], needed_after(g, i)
                prev = [red[str(k)](o) if k in need else None for k, o in enumerate(prev)]
        out = F.adaptive_avg_pool2d(prev[-1], 1).flatten(1)  # official: no ReLU before the pool
        return self.classifier(self.dropout(out)), None


@SPACES.register("enas_macro")
class EnasMacroSpace:
    name = "enas_macro"
    modality = "image"
    Args = MacroArgs
    ModelArgs = MacroModelArgs
    arg_limits = {"num_layers": 64, "ops": 32}  # the paper: 12 layers (24 final), 6 ops
    param_free_choices = {"avg_pool_3x3", "max_pool_3x3"}
    small_model = {"channels": 4, "dropout": 0.0}  # tests/test_every_space.py
    # what search.max_params counts by default: the official fixed-arc child
    retrain_model = {"channels": 96, "double_channels": True}

    def __init__(self, args: MacroArgs | None = None):
        self.args = args if args is not None else MacroArgs()
        self.initial_anchors = {"layers": 0}

    def decisions(self) -> list[Decision]:
        out = []
        for i in range(self.args.num_layers):
            # official macro controller (general_controller.py 213-253): op, then one step on
            # the op's embedding that makes the skip decision over the earlier layers'
            # anchors and is the layer's anchor; layer 0 has no skips, so that step only
            # makes its anchor and layer 1 starts from the go embedding.
            out.append(Decision(f"layer{i}/op", "categorical", choices=tuple(self.args.ops), group="op",
                                scope="layers", anchor_step="after" if i == 0 else ""))
            if i > 0:
                out.append(Decision(f"layer{i}/skips", "skip", num_inputs=i, scope="layers", anchor=True))
        return out

    def genotype(self, arch: Arch) -> MacroGenotype:
        return to_genotype(validate(self.decisions(), arch), self.args.num_layers)

    def _net(self, genotype, m: MacroModelArgs, num_classes: int, image_size: int) -> MacroNetwork:
        return MacroNetwork(genotype, self.args.num_layers, self.args.ops, m.channels, num_classes,
                            m.dropout, m.double_channels, image_size)

    def supernet(self, model_args: MacroModelArgs, num_classes: int = 10, image_size: int = 32,
                 **_) -> MacroNetwork:
        return self._net(None, model_args, num_classes, image_size)

    def child(self, arch: Arch, model_args: MacroModelArgs, num_classes: int = 10, image_size: int = 32,
              **_) -> MacroNetwork:
        return self._net(self.genotype(arch), model_args, num_classes, image_size)

    def count_params(self, arch: Arch, model_args: MacroModelArgs, num_classes: int = 10, image_size: int = 32,
                     **_) -> int:
        """The child's parameter count without building it (search.max_params): each layer's
        op at its width, and a factorized reduction per output read again after a
        reduction (MacroNetwork); the rest does not depend on the arch."""
        m, pools = model_args, pool_layers(self.args.num_layers)

        def variable(a: Arch) -> int:
            g, c, total = self.genotype(a), m.channels, 0
            for i, op in enumerate(g.ops):
                total += part_params(OPS.get(f"macro/{op}"), c, 1)
                if i in pools:
                    c_next = 2 * c if m.double_channels else c
                    total += len(needed_after(g, i)) * part_params(FactorizedReduce, c, c_next)
                    c = c_next
            return total
        return count_by_parts(self, arch, m, {"num_classes": num_classes, "image_size": image_size}, variable)

    def activation_elements(self, model_args: MacroModelArgs, batch_size: int, image_size: int = 32, **_) -> int:
        """Values one training step keeps for its backward pass (enas/train/memory.py), rounded up:
        measured ~4 per layer and channel of the cells' pixel map (a wider layer after a
        reduction has a quarter of the pixels), with room for the reductions of every
        earlier output an architecture of many skips keeps."""
        kept, pixels = stem_activations(model_args.channels, image_size)
        return batch_size * (kept + 8 * self.args.num_layers * model_args.channels * pixels)

    def describe(self, arch: Arch) -> str:
        g = self.genotype(arch)
        pools = set(pool_layers(self.args.num_layers))
        lines = []
        for i, (op, skips) in enumerate(zip(g.ops, g.skips)):
            s = f"  + skips from {', '.join(source_name(k) for k in skips)}" if skips else ""
            src = f"layer{i - 1}" if i else "stem"
            lines.append(f"layer{i}: {op}({src}){s}")
            if i in pools:
                lines.append("  -- factorized reduction (H, W halved) --")
        return "\n".join(lines)

    def draw(self, arch: Arch, path):
        """Write a PNG of the layer chain; returns the ``draw.Drawing``."""
        g = self.genotype(arch)
        # draw_chain numbers the stem -1 and layer j as j
        return draw_chain(list(g.ops), [[k - 1 for k in s] for s in g.skips],
                          list(pool_layers(self.args.num_layers)), path)

    def to_text(self, arch: Arch) -> str:
        """The official arc string (op codes in the order of ``args.ops``, then skip bits)."""
        return official_arc(self.genotype(arch), tuple(self.args.ops))

    def parse_text(self, line: str) -> Arch:
        return parse_official_arc(line, tuple(self.args.ops), self.args.num_layers)
