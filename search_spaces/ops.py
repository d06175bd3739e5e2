"""The op registry shared by every supernet and every child (DARTS operations.py).

An op name turns into computation here and nowhere else. Every factory takes
``(channels, stride)`` and returns an ``nn.Module``; supernets keep their candidates
in ``nn.ModuleDict`` keyed by op name and children instantiate the same factory with
the same arguments, which is what makes "supernet == child" hold exactly.

CIFAR conventions (ENAS_REFERENCE section 2, official code): no bias in any conv or
in the classifier (BN supplies the offset), He-normal init, BN momentum 0.1 in
PyTorch terms (TF decay 0.9), eps 1e-5.

Registry names: the micro cell ops use the paper's names (``sep_conv_3x3``,
``sep_conv_5x5``, ``avg_pool_3x3``, ``max_pool_3x3``, ``identity``). The macro
space's branches differ from the micro ops of the same name (a 1x1 conv-BN-ReLU in
front, a BN-ReLU behind), so they are registered as ``macro/<name>``; the macro
architecture still says ``conv_3x3`` etc.
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from enas.nas.budget import count_on_meta
from enas.registry import Registry

OPS: Registry = Registry("op")

BN_MOMENTUM = 0.1  # PyTorch convention; TF's decay 0.9 (official batch_norm)
BN_EPS = 1e-5


@functools.lru_cache(maxsize=4096)
def part_params(make, *args) -> int:
    """Parameters of the module ``make(*args)`` (an op factory of ``OPS``, a layer class):
    the parts of a space's closed-form ``count_params``, each counted once per shape."""
    return count_on_meta(lambda: make(*args))


def bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM, eps=BN_EPS)


def conv(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A 'SAME'-padded conv without bias."""
    return nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, groups=groups, bias=False)


def downsampling_steps(image_size: int) -> int:
    """How many stride-2 steps the stem takes for ``image_size`` x ``image_size`` inputs:
    the largest k with image_size / 2**k >= 32, so the cells see 32-64 px.

    Why: every space here was designed for CIFAR's 32 px (two reductions to an 8 px map,
    where the micro auxiliary head's 5x5/3 pool and 2x2 conv expect 8 px), and a cell's
    cost grows with its pixel count, so a 224 px image at full size would cost ~50x a
    CIFAR one per cell. Strided stems are how these cells run on larger images (DARTS
    NetworkImageNet: three stride-2 convs before the cells). Halving only while the
    cells keep at least 32 px never shrinks an image below the resolution the spaces
    were built for; images of 32 px or less are not downsampled."""
    return max(0, (image_size // 32).bit_length() - 1)


def side_after(image_size: int, halvings: int) -> int:
    """Feature-map side after ``halvings`` stride-2 steps ('SAME' padding: ceil(H / 2) each)."""
    for _ in range(halvings):
        image_size = -(-image_size // 2)
    return image_size


def stem(c_out: int, image_size: int = 32) -> nn.Sequential:
    """The CIFAR stem (3x3 conv to ``c_out`` + BN), after ``downsampling_steps(image_size)``
    stride-2 3x3 conv-BN-ReLU steps for larger images. At 32 px (and below) it is exactly
    the official stem, with the same parameter names (``stem.0``, ``stem.1``)."""
    layers, c_in = [], 3
    for _ in range(downsampling_steps(image_size)):
        layers += [conv(c_in, c_out, 3, stride=2), bn(c_out), nn.ReLU(inplace=False)]
        c_in = c_out
    return nn.Sequential(*layers, conv(c_in, c_out, 3), bn(c_out))


def stem_activations(c_out: int, image_size: int) -> tuple[int, int]:
    """(values one image keeps in the stem for the backward pass, pixels of the map the
    cells see): the input, then each conv's, BN's and ReLU's output. For the activation
    estimates of the image spaces (``activation_elements``, enas/train/memory.py)."""
    side, kept = image_size, 3 * image_size ** 2
    for _ in range(downsampling_steps(image_size)):
        side = -(-side // 2)
        kept += 3 * c_out * side * side
    return kept + 3 * c_out * side * side, side * side


def he_init(module: nn.Module) -> None:
    """He-normal (fan_in) for convs and linears, BN to identity (official create_weight)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ReLUConvBN(nn.Sequential):
    """ReLU -> k x k conv -> BN: the 'calibrate' step of the official micro child."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, stride: int = 1):
        super().__init__(nn.ReLU(inplace=False), conv(c_in, c_out, k, stride), bn(c_out))


class ConvBNReLU(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int = 1, stride: int = 1):
        super().__init__(conv(c_in, c_out, k, stride), bn(c_out), nn.ReLU(inplace=False))


class FactorizedReduce(nn.Module):
    """Halve H and W without dropping pixels: two stride-2 1x1 convs on pixel grids
    offset by one, concatenated, then BN (official ``_factorized_reduction``).

    The official code has no ReLU inside; callers that want one (input calibration)
    put it in front. For odd sizes the second path pads right/bottom first, exactly
    as the official code does, so both paths give ceil(H/2).
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {c_out}")
        self.conv1 = nn.Conv2d(c_in, c_out // 2, 1, bias=False)
        self.conv2 = nn.Conv2d(c_in, c_out // 2, 1, bias=False)
        self.bn = bn(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C_in, H, W] -> [B, C_out, ceil(H/2), ceil(W/2)]
        p1 = x[:, :, ::2, ::2]
        p2 = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:][:, :, ::2, ::2]
        return self.bn(torch.cat([self.conv1(p1), self.conv2(p2)], dim=1))


class SepConv(nn.Sequential):
    """(ReLU -> depthwise k x k -> pointwise 1x1 -> BN) x 2; the stride is on the first
    depthwise conv (official ``_fixed_conv`` with stack_convs=2)."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int):
        layers = []
        for i in range(2):
            s = stride if i == 0 else 1
            cin = c_in if i == 0 else c_out
            layers += [nn.ReLU(inplace=False), conv(cin, cin, k, s, groups=cin), conv(cin, c_out, 1), bn(c_out)]
        super().__init__(*layers)


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _pool(kind: str, stride: int) -> nn.Module:
    # TF 'SAME' average pooling ignores the padding: count_include_pad=False.
    if kind == "avg":
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    return nn.MaxPool2d(3, stride=stride, padding=1)


# ---------------------------------------------------------------------------
# micro cell ops (paper section 2.3); every op maps C channels to C channels
# ---------------------------------------------------------------------------

OPS.register("sep_conv_3x3")(lambda c, stride: SepConv(c, c, 3, stride))
OPS.register("sep_conv_5x5")(lambda c, stride: SepConv(c, c, 5, stride))
OPS.register("avg_pool_3x3")(lambda c, stride: _pool("avg", stride))
OPS.register("max_pool_3x3")(lambda c, stride: _pool("max", stride))
# identity in a reduction cell becomes a factorized reduction (official _fixed_layer)
OPS.register("identity")(lambda c, stride: Identity() if stride == 1 else FactorizedReduce(c, c))


# ---------------------------------------------------------------------------
# macro branches (paper section 2.2, official general_child._conv_branch/_pool_branch)
# ---------------------------------------------------------------------------


class MacroConvBranch(nn.Sequential):
    """1x1 conv -> BN -> ReLU -> k x k (separable) conv -> BN -> ReLU."""

    def __init__(self, c: int, k: int, separable: bool, stride: int = 1):
        if separable:
            body = [conv(c, c, k, stride, groups=c), conv(c, c, 1)]
        else:
            body = [conv(c, c, k, stride)]
        super().__init__(*ConvBNReLU(c, c, 1), *body, bn(c), nn.ReLU(inplace=False))


class MacroPoolBranch(nn.Sequential):
    """1x1 conv -> BN -> ReLU -> 3x3 pool."""

    def __init__(self, c: int, kind: str, stride: int = 1):
        super().__init__(*ConvBNReLU(c, c, 1), _pool(kind, stride))


OPS.register("macro/conv_3x3")(lambda c, stride: MacroConvBranch(c, 3, False, stride))
OPS.register("macro/sep_conv_3x3")(lambda c, stride: MacroConvBranch(c, 3, True, stride))
OPS.register("macro/conv_5x5")(lambda c, stride: MacroConvBranch(c, 5, False, stride))
OPS.register("macro/sep_conv_5x5")(lambda c, stride: MacroConvBranch(c, 5, True, stride))
OPS.register("macro/avg_pool_3x3")(lambda c, stride: MacroPoolBranch(c, "avg", stride))
OPS.register("macro/max_pool_3x3")(lambda c, stride: MacroPoolBranch(c, "max", stride))


# ---------------------------------------------------------------------------
# activations of the ENAS recurrent cell (paper section 2.1: tanh, ReLU, identity, sigmoid)
# ---------------------------------------------------------------------------

ACTIVATIONS: Registry = Registry("activation")
ACTIVATIONS.register("tanh")(torch.tanh)
ACTIVATIONS.register("relu")(torch.relu)
ACTIVATIONS.register("identity")(lambda h: h)
ACTIVATIONS.register("sigmoid")(torch.sigmoid)


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples with probability drop_prob, rescale the rest (official drop_path)."""
    if drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x * mask / keep


# ---------------------------------------------------------------------------
# NAS-Bench-201 ops (Dong & Yang, ICLR 2020; ENAS_REFERENCE section 6), used by
# search_spaces/nb201.py. The official xautodl cell_operations.py, reproduced:
#   none          zeros (the nb201 cell skips computing it: a `none` edge adds nothing)
#   skip_connect  identity (NB201 cells never reduce: stride 1 only)
#   nor_conv_kxk  ReLU -> k x k conv -> BN (ReLUConvBN above, 'SAME' padding)
#   avg_pool_3x3  the micro op above: AvgPool2d(3, 1, 1, count_include_pad=False),
#                 exactly NB201's POOLING(C, C, 1, "avg") (no preprocess when C_in == C_out)
#   nb201/resnet_block  the block between stages, C -> 2C and H/2 when stride 2
# ---------------------------------------------------------------------------


class Zero(nn.Module):
    """The ``none`` op: zeros shaped like the (strided) input. Cells that see an
    instance skip it instead of calling it (nothing to compute)."""

    def __init__(self, stride: int = 1):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x[:, :, :: self.stride, :: self.stride])


class ResNetBasicBlock(nn.Module):
    """ReLU-conv3x3-BN (stride) -> ReLU-conv3x3-BN, plus a shortcut: avg-pool 2x2 stride 2
    + 1x1 conv when reducing, ReLU-conv1x1-BN when only the width changes (NB201's
    ResNetBasicblock; its shortcut conv has no BN)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"ResNetBasicBlock stride must be 1 or 2, got {stride}")
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1)
        if stride == 2:
            # ceil_mode: an odd side halves to ceil(H / 2) like conv_a (same as NB201 on even sides)
            self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2, padding=0, ceil_mode=True),
                                            conv(c_in, c_out, 1))
        elif c_in != c_out:
            self.downsample = ReLUConvBN(c_in, c_out, 1, 1)
        else:
            self.downsample = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C_in, H, W] -> [B, C_out, H / stride, W / stride]
        residual = x if self.downsample is None else self.downsample(x)
        return residual + self.conv_b(self.conv_a(x))


def _nb201_stride1(name: str, make):
    def factory(c: int, stride: int) -> nn.Module:
        if stride != 1:
            raise ValueError(f"{name}: NAS-Bench-201 cells never reduce (stride 1 only), got stride {stride}")
        return make(c)

    return factory


OPS.register("none")(lambda c, stride: Zero(stride))
OPS.register("skip_connect")(_nb201_stride1("skip_connect", lambda c: Identity()))
OPS.register("nor_conv_1x1")(lambda c, stride: ReLUConvBN(c, c, 1, stride))
OPS.register("nor_conv_3x3")(lambda c, stride: ReLUConvBN(c, c, 3, stride))
# between stages: channels double as the resolution halves (stride 2), else C -> C
OPS.register("nb201/resnet_block")(lambda c, stride: ResNetBasicBlock(c, c * stride, stride))
