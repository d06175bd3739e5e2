"""Cell drawings: the recurrent cell, labels placed clear of each other, mathtext subscripts."""
import random
import re
import struct

import pytest

from enas.nas.archfile import load_arch
from enas.nas.space import build_space
from search_spaces.draw import Diagram, _figure, _save
from search_spaces.enas_rnn import ENAS_PTB_CELL, output_nodes

from conftest import random_arch

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])  # IHDR width, height


def overlapping_pairs(items):
    """Pairs of (text, Bbox) whose boxes share some area (touching edges do not count)."""
    out = []
    for i, (a, p) in enumerate(items):
        for b, q in items[i + 1:]:
            if min(p.x1, q.x1) > max(p.x0, q.x0) and min(p.y1, q.y1) > max(p.y0, q.y0):
                out.append((a, b))
    return out


def assert_math_subscripts(texts):
    """Every subscript (x_t, h_{t-1}, c_{k-2}) sits inside $...$ (mathtext), none is literal."""
    for t in texts:
        plain = re.sub(r"\$[^$]*\$", "", t)
        assert not re.search(r"_\{|\b[a-z]_[a-z0-9]\b", plain), f"literal subscript in {t!r}"


def test_published_ptb_cell_drawing(tmp_path):
    space = build_space("enas_rnn", {})
    drawing = space.draw(ENAS_PTB_CELL, tmp_path / "ptb.png")
    w, h = png_size(tmp_path / "ptb.png")
    assert 700 < w < 3000 and 400 < h < 2000, (w, h)
    texts = [t for t, _ in drawing.nodes]
    # inputs, every node with its number and activation, the output
    assert {"$x_t$", "$h_{t-1}$", "avg", "$h_t$"} <= set(texts)
    for l in range(12):
        act = ENAS_PTB_CELL[f"node{l}/activation"]
        assert f"{l}  {act}" in texts
    assert_math_subscripts(texts)
    assert overlapping_pairs(drawing.nodes) == []
    # an arrow per input of node 0, per node 1..11, bus -> avg and avg -> h_t
    assert len(drawing.heads) == 2 + 11 + 2
    assert drawing.collisions() == []


@pytest.mark.parametrize("args", [{}, {"output": "all"}, {"num_nodes": 4}, {"num_nodes": 1}])
def test_random_rnn_cells_draw_cleanly(tmp_path, args):
    space = build_space("enas_rnn", args)
    rng = random.Random(7)
    for i in range(2):
        arch = random_arch(space, rng)
        drawing = space.draw(arch, tmp_path / f"rnn{i}.png")
        w, h = png_size(tmp_path / f"rnn{i}.png")
        assert 300 < w < 3000 and 200 < h < 2000, (w, h)
        n = space.args.num_nodes
        assert len(drawing.nodes) == n + 4
        assert len(drawing.heads) == 2 + (n - 1) + 2
        assert overlapping_pairs(drawing.nodes) == []
        # the averaged nodes are the ones the space averages
        assert output_nodes(arch, n, space.args.output)  # never empty
        assert_math_subscripts([t for t, _ in drawing.nodes])


def test_micro_cells_labels_never_overlap(tmp_path):
    space, arch, _ = load_arch("configs/archs/enas_micro.yaml")
    archs = [arch] + [random_arch(space, random.Random(s)) for s in range(2)]
    for i, a in enumerate(archs):
        drawing = space.draw(a, tmp_path / f"micro{i}.png")
        png_size(tmp_path / f"micro{i}.png")
        assert len(drawing.labels) == 2 * 2 * 5  # two cells, five nodes, two ops each
        assert {t for t, _ in drawing.labels} <= set(space.args.ops)
        assert overlapping_pairs(drawing.labels) == []
        assert drawing.collisions() == []  # nor on an arrowhead or a node
        texts = [t for t, _ in drawing.nodes]
        assert {"$c_{k-2}$", "$c_{k-1}$", "$c_{k}$\nconcat"} <= set(texts)
        assert_math_subscripts(texts + [t for t, _ in drawing.labels])


def test_nb201_labels_never_overlap(tmp_path):
    space = build_space("nb201", {})
    rng = random.Random(3)
    for i in range(4):
        arch = random_arch(space, rng)
        drawing = space.draw(arch, tmp_path / f"nb{i}.png")
        png_size(tmp_path / f"nb{i}.png")
        assert len(drawing.labels) == sum(v != "none" for v in arch.values())
        assert drawing.collisions() == []


def test_macro_chain_draws(tmp_path):
    space = build_space("enas_macro", {"num_layers": 6})
    arch = random_arch(space, random.Random(1))
    drawing = space.draw(arch, tmp_path / "macro.png")
    w, h = png_size(tmp_path / "macro.png")
    assert w > h > 100
    assert len(drawing.nodes) == 6 + 2  # layers, stem, pool/FC
    assert overlapping_pairs(drawing.nodes) == []


def test_crowded_labels_are_placed_apart(tmp_path):
    """Twelve labelled edges leaving one node for targets close together: the placer must
    still find a free spot for every label (a fixed position would stack them)."""
    fig = _figure(4, 3)
    ax = fig.add_subplot(1, 1, 1)
    d = Diagram(ax)
    d.node("src", (0, 0), "$s_{0}$")
    for k in range(12):
        d.node(k, (2, k * 0.35 - 2), str(k))
        d.edge("src", k, f"op_{k}x{k}", rad=0.1 * (k % 3 - 1))
    ax.set_xlim(-0.5, 2.5)
    ax.set_ylim(-2.5, 2.2)
    ax.axis("off")
    drawing = d.finish()
    _save(fig, tmp_path / "crowded.png")
    assert len(drawing.labels) == 12
    assert drawing.collisions() == []
    frame = ax.get_window_extent()
    assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1
               for _, b in drawing.labels)
