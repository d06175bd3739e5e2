"""A search space of your own: depth, width and kernel size of a small conv net.

This file is a complete, commented example of the protocol in enas/nas/space.py. Name it in
a search config (``space.module: convnet_space.py``, relative to the config) and
``enas search``, ``derive``, ``rank``, ``report`` and TensorBoard work for it unchanged;
name it in a retrain config (``retrain.space_module``) to retrain an exported
architecture. examples/convnet_search.yaml and examples/convnet_retrain.yaml do both.

The network (MobileNetV2-style blocks, Sandler et al. 2018, the block family that
ProxylessNAS and Once-for-All search over)::

    stem: 3x3 conv (C) + BN + ReLU            (stride 2 per halving that leaves >= 32 px)
    stage 1: up to ``max_depth`` blocks at C channels
    3x3 conv stride 2 to 2C + BN + ReLU
    stage 2: up to ``max_depth`` blocks at 2C channels
    global average pool -> dropout -> linear classifier

A block is ``x + BN(1x1(ReLU(BN(kxk depthwise(ReLU(BN(1x1 expand(x))))))))``: expand
C -> e*C, a depthwise k x k conv, project back to C, add the input. The decisions:

* ``stage<s>/depth``: how many of the stage's blocks run (1 .. max_depth); the rest are
  skipped, which for a residual block is the identity.
* ``stage<s>/block<i>/width``: the expansion e (the block's hidden width).
* ``stage<s>/block<i>/kernel``: the depthwise kernel size k.

Weight sharing, as ENAS shares an op's weights across the architectures that choose it
(paper, section 2): every (block, width, kernel) combination owns its weights, stored
under the same name in the supernet and in a child, so a child built from an exported
architecture holds exactly the supernet's weights for it (tests/test_every_space.py
checks that the two compute the same outputs).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn
import torch.nn.functional as F

from enas.nas.space import SPACES, Arch, Decision, validate
from search_spaces.ops import downsampling_steps


@dataclass(frozen=True)
class ConvNetArgs:
    """What defines the space: written into every architecture file (``space.args``)."""

    max_depth: int = 3  # blocks per stage at most
    widths: tuple[int, ...] = (1, 3, 6)  # expansion factors (MobileNetV2 uses 6)
    kernels: tuple[int, ...] = (3, 5, 7)  # depthwise kernel sizes (odd: "same" padding)

    def __post_init__(self):
        if self.max_depth < 1:
            raise ValueError(f"max_depth must be >= 1, got {self.max_depth}")
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"widths must be expansion factors >= 1, got {list(self.widths)}")
        if not self.kernels or any(k < 1 or k % 2 == 0 for k in self.kernels):
            raise ValueError(f"kernels must be odd sizes >= 1, got {list(self.kernels)}")


@dataclass(frozen=True)
class ConvNetModelArgs:
    """What sizes the networks (the ``model:`` section): differs between search and retrain."""

    channels: int = 16  # C of the first stage
    dropout: float = 0.0  # before the classifier

    def __post_init__(self):
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.channels}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def op_name(width: int, kernel: int) -> str:
    return f"e{width}_k{kernel}"


class Block(nn.Module):
    """One inverted-residual block with expansion ``e`` and depthwise kernel ``k``."""

    def __init__(self, c: int, e: int, k: int):
        super().__init__()
        hidden = c * e
        self.body = nn.Sequential(
            nn.Conv2d(c, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(),
            nn.Conv2d(hidden, hidden, k, padding=k // 2, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, c, 1, bias=False), nn.BatchNorm2d(c),
        )

    def forward(self, x):
        return x + self.body(x)


def conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU())


class ConvNet(nn.Module):
    """Supernet (``choices`` = None: every combination of every block) or child (the
    chosen combination of each running block). Both are called as ``model(x, arch)``
    with ``arch`` None for a child (enas/tasks/__init__.py, the image model contract)."""

    def __init__(self, args: ConvNetArgs, m: ConvNetModelArgs, num_classes: int, image_size: int,
                 choices: dict | None = None):
        super().__init__()
        self.args = args
        self.choices = choices  # child: {(stage, block): op name} of the blocks that run
        self.drop_path_prob = 0.0  # the trainer sets it; these blocks have no drop path
        # Large images: stride-2 stem steps while at least 32 px remain, so the blocks see
        # CIFAR-sized maps whatever the image size (the rule of the built-in spaces).
        steps = downsampling_steps(image_size)
        stem = [conv_bn_relu(3, m.channels, 2 if steps else 1)]
        stem += [conv_bn_relu(m.channels, m.channels, 2) for _ in range(steps - 1)]
        self.stem = nn.Sequential(*stem)
        self.stages = nn.ModuleList()
        for s, c in enumerate((m.channels, 2 * m.channels)):
            blocks = nn.ModuleList()
            for i in range(args.max_depth):
                ops = nn.ModuleDict()
                for e in args.widths:
                    for k in args.kernels:
                        name = op_name(e, k)
                        if choices is None or choices.get((s, i)) == name:
                            ops[name] = Block(c, e, k)
                blocks.append(ops)
            self.stages.append(blocks)
        self.reduce = conv_bn_relu(m.channels, 2 * m.channels, 2)
        self.dropout = nn.Dropout(m.dropout)
        self.classifier = nn.Linear(2 * m.channels, num_classes)

    def forward(self, x, arch: Arch | None = None):
        choices = self.choices if arch is None else _choices(arch, self.args)
        h = self.stem(x)
        for s, blocks in enumerate(self.stages):
            if s == 1:
                h = self.reduce(h)
            for i, ops in enumerate(blocks):
                name = choices.get((s, i))
                if name is not None:  # a block beyond the stage's depth is skipped
                    h = ops[name](h)
        out = F.adaptive_avg_pool2d(h, 1).flatten(1)
        return self.classifier(self.dropout(out)), None  # no auxiliary head


def _choices(arch: Arch, args: ConvNetArgs) -> dict:
    """{(stage, block): op name} of the blocks that run under ``arch``."""
    out = {}
    for s in range(2):
        for i in range(int(arch[f"stage{s}/depth"])):
            out[(s, i)] = op_name(int(arch[f"stage{s}/block{i}/width"]), int(arch[f"stage{s}/block{i}/kernel"]))
    return out


@SPACES.register("convnet")
class ConvNetSpace:
    name = "convnet"
    modality = "image"  # trained by enas/tasks/image.py: CIFAR-10/100 or your image folder
    Args = ConvNetArgs
    ModelArgs = ConvNetModelArgs
    arg_limits = {"max_depth": 16, "widths": 16, "kernels": 8}  # the most a config may ask for
    small_model = {"channels": 4}  # sizes for the tests every space gets
    param_free_choices: set = set()  # every choice has weights: no collapse to watch for

    def __init__(self, args: ConvNetArgs | None = None):
        self.args = args if args is not None else ConvNetArgs()
        self.initial_anchors: dict = {}  # no index/skip decisions, so no anchors

    def decisions(self) -> list[Decision]:
        """Categorical choices are names (strings), so depths and sizes are written as text;
        ``group`` gives each kind of choice its own controller head."""
        a = self.args
        out = []
        for s in range(2):
            out.append(Decision(f"stage{s}/depth", "categorical", choices=tuple(str(d) for d in
                                                                                range(1, a.max_depth + 1)),
                                group="depth"))
            for i in range(a.max_depth):
                out.append(Decision(f"stage{s}/block{i}/width", "categorical",
                                    choices=tuple(str(e) for e in a.widths), group="width"))
                out.append(Decision(f"stage{s}/block{i}/kernel", "categorical",
                                    choices=tuple(str(k) for k in a.kernels), group="kernel"))
        return out

    def supernet(self, model_args: ConvNetModelArgs, num_classes: int = 10, image_size: int = 32,
                 **_) -> ConvNet:
        return ConvNet(self.args, model_args, num_classes, image_size)

    def child(self, arch: Arch, model_args: ConvNetModelArgs, num_classes: int = 10, image_size: int = 32,
              **_) -> ConvNet:
        arch = validate(self.decisions(), arch)
        return ConvNet(self.args, model_args, num_classes, image_size, choices=_choices(arch, self.args))

    def describe(self, arch: Arch) -> str:
        """The readable form printed by `enas show` and written into architecture files."""
        arch = validate(self.decisions(), arch)
        lines = []
        for s in range(2):
            depth = int(arch[f"stage{s}/depth"])
            blocks = [f"e{arch[f'stage{s}/block{i}/width']} k{arch[f'stage{s}/block{i}/kernel']}"
                      for i in range(depth)]
            lines.append(f"stage {s + 1} ({depth} block{'s' if depth > 1 else ''}): " + ", ".join(blocks))
        return "\n".join(lines)
