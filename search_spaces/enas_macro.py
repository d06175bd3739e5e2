"""ENAS macro (whole-network) space for CIFAR-10 (paper section 2.2; ENAS_REFERENCE section 5).

``num_layers`` layers in a chain. Layer i applies one op to layer i-1's output, adds
any subset of earlier layers' outputs (skip connections) and applies BN:
``out_i = BN(op_i(out_{i-1}) + sum_{j in skips_i} out_j)``. After the layers at
``L//3 - 1`` and ``2L//3 - 1`` (3 and 7 for L = 12) a factorized reduction halves
every earlier output still needed later. Stem 3x3 conv + BN; global average pool,
dropout, FC.

Supernet and child are the same ``MacroNetwork``: the supernet holds every op per
layer in ``layers.<i>.ops.<op>``; a child holds the chosen op only, and the
reductions of the outputs it reads again (``reductions.<p>.<j>``). Only the sampled
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

from enas.space import SPACES, Arch, Decision, validate

from .ops import OPS, FactorizedReduce, bn, conv, he_init

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
    skips: tuple[tuple[int, ...], ...]  # skips[i]: earlier layers added to layer i


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
    """Outputs j <= p read by some layer i > p (as its input i-1 or as a skip)."""
    return {j for i in range(p + 1, len(g.ops)) for j in (i - 1, *g.skips[i]) if j <= p}


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
    that child. forward(x, arch) -> (logits, None)."""

    def __init__(self, genotype, num_layers, ops, channels, num_classes, dropout, double_channels):
        super().__init__()
        self.genotype, self.num_layers = genotype, num_layers
        self.pool_layers = pool_layers(num_layers)
        self.drop_path_prob = 0.0  # image-model contract; the macro space has no drop-path
        c = channels
        self.stem = nn.Sequential(conv(3, c, 3), bn(c))
        self.layers = nn.ModuleList()
        self.reductions = nn.ModuleDict()
        for i in range(num_layers):
            self.layers.append(MacroLayer(c, ops if genotype is None else (genotype.ops[i],)))
            if i in self.pool_layers:
                c_next = 2 * c if double_channels else c
                keep = range(i + 1) if genotype is None else sorted(needed_after(genotype, i))
                self.reductions[str(i)] = nn.ModuleDict({str(j): FactorizedReduce(c, c_next) for j in keep})
                c = c_next
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c, num_classes, bias=False)
        he_init(self)

    def forward(self, x: torch.Tensor, arch: Arch | None = None):
        # x: [B, 3, H, W] -> logits [B, K]
        g = self.genotype if self.genotype is not None else to_genotype(arch, self.num_layers)
        outs: list[torch.Tensor | None] = []  # layer outputs at the current resolution
        prev = self.stem(x)
        for i, layer in enumerate(self.layers):
            prev = layer(prev, g.ops[i], [outs[j] for j in g.skips[i]])
            outs.append(prev)
            if i in self.pool_layers:
                red, need = self.reductions[str(i)], needed_after(g, i)
                outs = [red[str(j)](o) if j in need else None for j, o in enumerate(outs)]
                prev = outs[-1]
        out = F.adaptive_avg_pool2d(prev, 1).flatten(1)  # official: no ReLU before the pool
        return self.classifier(self.dropout(out)), None


@SPACES.register("enas_macro")
class EnasMacroSpace:
    name = "enas_macro"
    modality = "image"
    Args = MacroArgs
    ModelArgs = MacroModelArgs
    param_free_choices = {"avg_pool_3x3", "max_pool_3x3"}

    def __init__(self, args: MacroArgs | None = None):
        self.args = args if args is not None else MacroArgs()
        self.initial_anchors = {"layers": 0}

    def decisions(self) -> list[Decision]:
        out = []
        for i in range(self.args.num_layers):
            # official macro controller: op, then the skip attention over earlier layers'
            # anchors; the layer's anchor is the LSTM output after its last decision.
            out.append(Decision(f"layer{i}/op", "categorical", choices=tuple(self.args.ops), group="op",
                                scope="layers", anchor=i == 0))
            if i > 0:
                out.append(Decision(f"layer{i}/skips", "skip", num_inputs=i, scope="layers", anchor=True))
        return out

    def genotype(self, arch: Arch) -> MacroGenotype:
        return to_genotype(validate(self.decisions(), arch), self.args.num_layers)

    def _net(self, genotype, m: MacroModelArgs, num_classes: int) -> MacroNetwork:
        return MacroNetwork(genotype, self.args.num_layers, self.args.ops, m.channels, num_classes,
                            m.dropout, m.double_channels)

    def supernet(self, model_args: MacroModelArgs, num_classes: int = 10, **_) -> MacroNetwork:
        return self._net(None, model_args, num_classes)

    def child(self, arch: Arch, model_args: MacroModelArgs, num_classes: int = 10, **_) -> MacroNetwork:
        return self._net(self.genotype(arch), model_args, num_classes)

    def describe(self, arch: Arch) -> str:
        g = self.genotype(arch)
        pools = set(pool_layers(self.args.num_layers))
        lines = []
        for i, (op, skips) in enumerate(zip(g.ops, g.skips)):
            s = f"  + skips from {', '.join(f'layer{j}' for j in skips)}" if skips else ""
            src = f"layer{i - 1}" if i else "stem"
            lines.append(f"layer{i}: {op}({src}){s}")
            if i in pools:
                lines.append("  -- factorized reduction (H, W halved) --")
        return "\n".join(lines)

    def draw(self, arch: Arch, path) -> None:
        from .draw import draw_chain

        g = self.genotype(arch)
        draw_chain(list(g.ops), [list(s) for s in g.skips], list(pool_layers(self.args.num_layers)), path)
