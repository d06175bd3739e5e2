"""The CNN spaces: the paper's micro cells, the official macro arc, live choices, shapes.
Small widths so the file runs in seconds on a CPU (supernet == child and the sampled-path
gradients are tests/test_every_space.py's, for every space)."""
from __future__ import annotations

import random

import pytest
import torch

from enas.nas.space import InputAnchors, validate
from search_spaces.enas_macro import MACRO_OPS, EnasMacroSpace, MacroArgs, MacroModelArgs, pool_layers
from search_spaces.enas_micro import (
    ENAS_MICRO_CELL,
    ENAS_MICRO_OFFICIAL_ARC,
    MICRO_OPS,
    EnasMicroSpace,
    MicroArgs,
    MicroModelArgs,
    loose_ends,
)
from search_spaces.ops import OPS, FactorizedReduce

from conftest import random_arch, randomize_bn

# Measured once (this implementation, C=36, N=5, aux head, 10 classes); the paper
# reports 4.6M for its (differently wired) child, whose next-cell calibration convs
# read the 5C-channel concatenation twice; here each cell ends with one 1x1 conv.
PAPER_MICRO_PARAMS = 3_611_980
PAPER_MICRO_AUX_PARAMS = 421_120


MICRO_SMALL = MicroModelArgs(channels=4, num_cells=1, aux_head=True, dropout=0.0)
MACRO_SMALL = MacroModelArgs(channels=4, dropout=0.0)


def test_paper_micro_cells():
    space = EnasMicroSpace()
    assert validate(space.decisions(), ENAS_MICRO_CELL) == ENAS_MICRO_CELL
    # the arch literal decodes the official fixed_arc string (index_a op_a index_b op_b)
    codes = [int(c) for c in ENAS_MICRO_OFFICIAL_ARC.split()]
    for cell, off in (("normal", 0), ("reduction", 20)):
        for k in range(2, 7):
            ia, oa, ib, ob = codes[off + 4 * (k - 2): off + 4 * (k - 1)]
            assert ENAS_MICRO_CELL[f"{cell}/node{k}/a/input"] == ia
            assert ENAS_MICRO_CELL[f"{cell}/node{k}/b/input"] == ib
            assert ENAS_MICRO_CELL[f"{cell}/node{k}/a/op"] == MICRO_OPS[oa]
            assert ENAS_MICRO_CELL[f"{cell}/node{k}/b/op"] == MICRO_OPS[ob]
    g = space.genotype(ENAS_MICRO_CELL)
    assert loose_ends(g.normal) == (2, 3, 4, 5, 6) and loose_ends(g.reduction) == (2, 4, 5, 6)
    child = space.child(ENAS_MICRO_CELL, MicroModelArgs(channels=36, num_cells=5, aux_head=True))
    assert sum(p.numel() for p in child.parameters()) == PAPER_MICRO_PARAMS
    assert sum(p.numel() for p in child.aux_head.parameters()) == PAPER_MICRO_AUX_PARAMS
    assert len(child.cells) == 17
    assert "node4 = sep_conv_5x5(node1) + sep_conv_5x5(node3)" in space.describe(ENAS_MICRO_CELL)


@pytest.mark.parametrize("num_cells", [1, 2])
@pytest.mark.parametrize("supernet", [True, False])
def test_micro_aux_head_position_and_shape(num_cells, supernet):
    """Official micro_child.py 112-113 and 289-315: the head reads the first normal cell after
    the second reduction, and its 2x2 conv to 768 channels pads SAME, keeping the pooled
    2 x 2 map (32 px images: 8 x 8 -> 2 x 2 -> 2 x 2), in the search network and the child."""
    space = EnasMicroSpace(MicroArgs(num_nodes=2))
    args = MicroModelArgs(channels=4, num_cells=num_cells, aux_head=True, dropout=0.0)
    arch = random_arch(space, random.Random(0))
    net = space.supernet(args) if supernet else space.child(arch, args)
    after_second_reduction = 2 * num_cells + 2
    assert not net.cells[after_second_reduction].reduction and net.cells[after_second_reduction - 1].reduction
    seen = {}
    net.cells[after_second_reduction].register_forward_hook(lambda m, a, out: seen.__setitem__("cell", out))
    net.aux_head.register_forward_pre_hook(lambda m, a: seen.__setitem__("head_in", a[0]))
    conv768 = next(m for m in net.aux_head if isinstance(m, torch.nn.Conv2d) and m.out_channels == 768)
    conv768.register_forward_hook(lambda m, a, out: seen.__setitem__("conv768", out))
    _, aux = net.train()(torch.randn(2, 3, 32, 32), None if not supernet else arch)
    assert seen["head_in"] is seen["cell"] and seen["cell"].shape[-1] == 8
    assert conv768.kernel_size == (2, 2) and seen["conv768"].shape == (2, 768, 2, 2)
    assert aux.shape == (2, 10)


def test_micro_decisions():
    space = EnasMicroSpace(MicroArgs(ops=("max_pool_3x3", "sep_conv_5x5", "identity")))
    ds = space.decisions()
    assert len(ds) == 2 * 5 * 4
    assert [d.name for d in ds[:4]] == ["normal/node2/a/input", "normal/node2/b/input",
                                        "normal/node2/a/op", "normal/node2/b/op"]
    assert ds[20].name == "reduction/node2/a/input"
    assert [d.anchor_step for d in ds[:8]] == ["", "", "", "after"] * 2 and not any(d.anchor for d in ds)
    assert ds[4].num_inputs == 3 and ds[4].scope == "normal" and ds[20].scope == "reduction"
    op = ds[2]
    assert op.group == "op" and op.bias_init == (0.0, 10.0, 0.0) and op.logit_offset == (-0.25, 0.25, -0.25)
    assert ds[22].logit_offset is None and ds[22].bias_init == (0.0, 10.0, 0.0)
    assert space.initial_anchors == {"normal": InputAnchors(2, "step_zero"), "reduction": InputAnchors(2, "step_zero")}
    with pytest.raises(ValueError):
        MicroArgs(ops=("conv_3x3",))


def test_macro_decisions():
    space = EnasMacroSpace()
    ds = space.decisions()
    assert len(ds) == 12 + 11 and ds[0].name == "layer0/op" and ds[0].anchor_step == "after"
    assert ds[1].name == "layer1/op" and not ds[1].anchor
    assert ds[2].name == "layer1/skips" and ds[2].kind == "skip" and ds[2].num_inputs == 1 and ds[2].anchor
    assert ds[-1].num_inputs == 11 and pool_layers(12) == (3, 7)
    assert space.initial_anchors == {"layers": 0}
    assert all(d.scope == "layers" for d in ds)


def _macro_eval_setup():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    space = EnasMacroSpace(MacroArgs(num_layers=6))
    sup = space.supernet(MACRO_SMALL)
    randomize_bn(sup, gen)
    sup.eval()
    arch = random_arch(space, random.Random(2))
    return space, sup, arch, torch.randn(2, 3, 32, 32, generator=gen)


def test_macro_op_choice_is_live():
    """Every op of a layer gives a different output (the official search ran max-pool
    whatever was sampled; this test fails for that bug)."""
    space, sup, arch, x = _macro_eval_setup()
    outs = []
    for op in MACRO_OPS:
        a = dict(arch, **{"layer3/op": op})
        with torch.no_grad():
            outs.append(sup(x, a)[0])
    for i in range(len(outs)):
        for j in range(i + 1, len(outs)):
            assert not torch.allclose(outs[i], outs[j]), (MACRO_OPS[i], MACRO_OPS[j])


def test_macro_skip_choice_is_live():
    space, sup, arch, x = _macro_eval_setup()
    base = dict(arch, **{"layer5/skips": []})
    with torch.no_grad():
        y0 = sup(x, base)[0]
        for j in range(5):
            assert not torch.allclose(y0, sup(x, dict(base, **{"layer5/skips": [j]}))[0]), j


def test_macro_skips_follow_the_official_arc():
    """Official general_child: layer i has i skip bits and bit k adds [stem, layer0, ...][k];
    the layer's own input (layer i-1) is never a skip. Hooks tag every tensor with the
    output it is (a factorized reduction passes its input's tag on)."""
    space = EnasMacroSpace(MacroArgs(num_layers=6))  # reductions after layers 1 and 3
    arc = "0  1 1  2 1 0  3 0 1 1  4 1 0 0 1  5 0 1 1 1 1"
    arch = space.parse_text(arc)
    assert space.to_text(arch) == " ".join(arc.split())
    child = space.child(arch, MACRO_SMALL)
    tags, seen, keep = {}, {}, []

    def tag(name):
        def hook(module, args, out):
            keep.append(out)  # keep it alive: ids must stay unique
            tags[id(out)] = name if name is not None else tags[id(args[0])]
        return hook

    def layer_hook(i):
        def hook(module, args, out):
            x, _, skip_inputs = args
            seen[i] = (tags[id(x)], [tags[id(t)] for t in skip_inputs])
            tag(f"layer{i}")(module, args, out)
        return hook

    child.stem.register_forward_hook(tag("stem"))
    for i, layer in enumerate(child.layers):
        layer.register_forward_hook(layer_hook(i))
    for red in child.reductions.values():
        for m in red.values():
            m.register_forward_hook(tag(None))
    child(torch.randn(2, 3, 32, 32))
    assert seen == {
        0: ("stem", []),
        1: ("layer0", ["stem"]),
        2: ("layer1", ["stem"]),
        3: ("layer2", ["layer0", "layer1"]),
        4: ("layer3", ["stem", "layer2"]),
        5: ("layer4", ["layer0", "layer1", "layer2", "layer3"]),
    }
    assert "layer4: avg_pool_3x3(layer3)  + skips from stem, layer2" in space.describe(arch)


def test_micro_op_and_input_choices_are_live():
    torch.manual_seed(0)
    space = EnasMicroSpace()
    sup = space.supernet(MICRO_SMALL)
    randomize_bn(sup, torch.Generator().manual_seed(0))
    sup.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        outs = [sup(x, dict(ENAS_MICRO_CELL, **{"normal/node6/b/op": op}))[0] for op in MICRO_OPS]
        alt = sup(x, dict(ENAS_MICRO_CELL, **{"normal/node6/b/input": 4}))[0]
    for i in range(len(outs)):
        for j in range(i + 1, len(outs)):
            assert not torch.allclose(outs[i], outs[j])
    assert not torch.allclose(alt, outs[MICRO_OPS.index("sep_conv_5x5")])


def test_drop_path_only_in_training():
    torch.manual_seed(0)
    child = EnasMicroSpace().child(ENAS_MICRO_CELL, MICRO_SMALL)
    x = torch.randn(4, 3, 32, 32)
    child.eval()
    with torch.no_grad():
        y = child(x)[0]
        child.drop_path_prob = 0.5
        assert torch.equal(child(x)[0], y)
        child.train()
        torch.manual_seed(1)
        a = child(x)[0]
        child.drop_path_prob = 0.0
        torch.manual_seed(1)
        b = child(x)[0]
    assert not torch.allclose(a, b)


def test_factorized_reduce_and_op_shapes():
    fr = FactorizedReduce(8, 16)
    assert fr(torch.randn(2, 8, 32, 32)).shape == (2, 16, 16, 16)
    assert fr(torch.randn(2, 8, 7, 7)).shape == (2, 16, 4, 4)
    x = torch.randn(2, 6, 16, 16)
    for op in MICRO_OPS:
        assert OPS.get(op)(6, 1)(x).shape == (2, 6, 16, 16)
        assert OPS.get(op)(6, 2)(x).shape == (2, 6, 8, 8)
    for op in MACRO_OPS:
        assert OPS.get(f"macro/{op}")(6, 1)(x).shape == (2, 6, 16, 16)
    for m in EnasMicroSpace().child(ENAS_MICRO_CELL, MICRO_SMALL).modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            assert m.bias is None


def test_draw_and_describe(tmp_path):
    rng = random.Random(3)
    for space in (EnasMicroSpace(), EnasMacroSpace()):
        arch = random_arch(space, rng)
        out = tmp_path / f"{space.name}.png"
        space.draw(arch, out)
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert space.describe(arch).count("\n") >= 10
