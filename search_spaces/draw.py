"""PNG drawings of architectures (used by ``enas show`` and ``enas report``): micro cells,
the macro chain, the recurrent cell, and ``draw_dag`` for a space of labelled edges between
nodes in a row (NB201's cell, or a space of your own).

Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend). Names
with subscripts are mathtext (``$c_{k-1}$``, ``$h_{t-1}$``).

Edge labels are placed, not just dropped at a fixed point: every edge is laid out first
(its clipped path, in display pixels, as the renderer will draw it), then each label is
measured with the renderer and put at the best of a set of candidate spots along its own
edge (different fractions of the edge, nudged off the edge along its normal). A spot that
overlaps an already placed label, an arrowhead, a node box or leaves the axes is rejected
whenever a free one exists; among free spots the one nearest the middle of its edge and
crossing the fewest other edges wins. Each ``draw_*`` returns a ``Drawing`` with the
extents it measured, so tests can check that nothing collides.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch
from matplotlib.transforms import Bbox

_DPI = 120  # figure dpi == save dpi, so measured extents are the saved image's pixels
_BOX = dict(boxstyle="round,pad=0.35", fc="#eef3fb", ec="#3b5b92", lw=1.2)
_IN_BOX = dict(boxstyle="round,pad=0.35", fc="#e8f5e9", ec="#2e7d32", lw=1.2)
_OUT_BOX = dict(boxstyle="round,pad=0.35", fc="#fff3e0", ec="#e65100", lw=1.2)
_OP_COLOURS = {
    "sep_conv_3x3": "#1f77b4", "sep_conv_5x5": "#9467bd", "conv_3x3": "#17becf", "conv_5x5": "#8c564b",
    "avg_pool_3x3": "#2ca02c", "max_pool_3x3": "#d62728", "identity": "#7f7f7f",
}
_ACT_COLOURS = {"tanh": "#1f77b4", "relu": "#d62728", "identity": "#7f7f7f", "sigmoid": "#2ca02c"}
_LABEL_FONT = 7
_LABEL_PAD = 0.15  # label box padding, in units of the font size (matplotlib's boxstyle pad)


@dataclass
class Drawing:
    """What a drawing placed, in pixels of the saved image (before the tight crop)."""

    path: Path
    labels: list[tuple[str, Bbox]] = field(default_factory=list)  # edge labels, white box included
    nodes: list[tuple[str, Bbox]] = field(default_factory=list)  # node boxes, by their text
    heads: list[Bbox] = field(default_factory=list)  # arrowheads

    def collisions(self) -> list[tuple[str, str]]:
        """Pairs (label, what it overlaps) for labels on labels, arrowheads or nodes."""
        out = []
        for i, (a, box) in enumerate(self.labels):
            out += [(a, b) for b, other in self.labels[i + 1:] if _overlap(box, other) > 0]
            out += [(a, "arrowhead") for h in self.heads if _overlap(box, h) > 0]
            out += [(a, f"node {b!r}") for b, n in self.nodes if _overlap(box, n) > 0]
        return out

    def __add__(self, other: "Drawing") -> "Drawing":
        return Drawing(self.path, self.labels + other.labels, self.nodes + other.nodes, self.heads + other.heads)


def _overlap(a: Bbox, b: Bbox) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def _outside(box: Bbox, frame: Bbox) -> float:
    return box.width * box.height - _overlap(box, frame)


class _Edge(FancyArrowPatch):
    """An arrow clipped by its nodes' boxes. The boxes are positioned when their text is
    drawn; refresh them first, so the clip is right whatever the draw order and dpi."""

    def __init__(self, *args, texts=(), **kwargs):
        super().__init__(*args, **kwargs)
        self._texts = texts

    def draw(self, renderer):
        for t in self._texts:
            t.update_bbox_position_size(renderer)
        super().draw(renderer)


class Diagram:
    """Nodes (text boxes) and edges (arrows, optionally labelled) on one axes. Declare
    everything, set the axes limits, then call ``finish`` to lay it out."""

    def __init__(self, ax):
        self.ax = ax
        self._nodes: dict = {}
        self._edges: list[dict] = []

    def node(self, key, xy, text, style=_BOX, fontsize=9, **text_kw) -> None:
        self._nodes[key] = dict(xy=xy, text=text, style=style, fontsize=fontsize, kw=text_kw)

    def edge(self, src, dst, label=None, colour="#555555", *, rad=0.0, bend=None, dashed=False,
             head=True, lw=1.2, connection=None, zorder=2) -> None:
        """src/dst: a node key or an (x, y) point (a tuple). ``bend``: the height of the
        arc's middle above the chord (left of the direction of travel), in the axes' y
        data units; ``rad``: matplotlib's arc3 rad instead, or "auto": the least curved
        arc that passes through no other node and does not run along an edge routed
        before it; ``connection``: any other connection style, as a string."""
        self._edges.append(dict(src=src, dst=dst, label=label, colour=colour, rad=rad, bend=bend,
                                dashed=dashed, head=head, lw=lw, connection=connection, zorder=zorder))

    def finish(self) -> Drawing:
        ax = self.ax
        fig = ax.figure
        renderer = fig.canvas.get_renderer()
        texts = {}
        for key, n in self._nodes.items():
            texts[key] = ax.text(*n["xy"], n["text"], ha="center", va="center", fontsize=n["fontsize"],
                                 bbox=n["style"], zorder=3, **n["kw"])
            texts[key].update_bbox_position_size(renderer)
        px = ax.transData.transform
        y_px = abs(px((0, 1))[1] - px((0, 0))[1])  # pixels per y data unit
        boxes = {k: t.get_bbox_patch().get_window_extent(renderer) for k, t in texts.items()}
        routed: list[np.ndarray] = []  # sample points of the edges routed so far
        geometry = []  # (label, colour, line in pixels, head polygon in pixels or None)
        for e in self._edges:
            if e["rad"] == "auto" and e["connection"] is None and e["bend"] is None:
                e = dict(e, rad=_route(e, self._nodes, boxes, px, routed))
            ends, patches, tx = [], [], []
            for end in (e["src"], e["dst"]):
                if isinstance(end, tuple):
                    ends.append(end)
                    patches.append(None)
                else:
                    ends.append(self._nodes[end]["xy"])
                    patches.append(texts[end].get_bbox_patch())
                    tx.append(texts[end])
            conn = e["connection"]
            if conn is None:
                rad = e["rad"]
                if e["bend"] is not None:
                    (x0, y0), (x1, y1) = px(ends[0]), px(ends[1])
                    rad = -2.0 * e["bend"] * y_px / max(np.hypot(x1 - x0, y1 - y0), 1e-9)
                conn = f"arc3,rad={rad}"
            arrow = _Edge(ends[0], ends[1], texts=tx, patchA=patches[0], patchB=patches[1],
                          arrowstyle="-|>" if e["head"] else "-", mutation_scale=12, lw=e["lw"],
                          color=e["colour"], connectionstyle=conn, zorder=e["zorder"],
                          shrinkA=1.5 if patches[0] is not None else 0,
                          shrinkB=1.5 if patches[1] is not None else 0,
                          linestyle="--" if e["dashed"] else "-")
            ax.add_patch(arrow)
            polys = ax.transData.transform_path(arrow.get_path()).to_polygons(closed_only=False)
            routed.append(_resample(polys[0]))
            geometry.append((e["label"], e["colour"], polys[0], polys[1] if e["head"] and len(polys) > 1 else None))
        nodes = [(self._nodes[k]["text"], t.get_bbox_patch().get_window_extent(renderer)) for k, t in texts.items()]
        heads = [Bbox.from_extents(*h.min(0), *h.max(0)) for *_, h in geometry if h is not None]
        labels = _place_labels(ax, renderer, geometry, [b for _, b in nodes] + heads)
        return Drawing(Path(), labels, nodes, heads)


def _arc3(p, q, rad: float, n: int = 60) -> np.ndarray:
    """Points of matplotlib's arc3 connection from p to q (display pixels)."""
    (x0, y0), (x1, y1) = p, q
    c = ((x0 + x1) / 2 + rad * (y1 - y0), (y0 + y1) / 2 - rad * (x1 - x0))
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * np.array(p) + 2 * t * (1 - t) * np.array(c) + t * t * np.array(q)


def _inside(pts: np.ndarray, box: Bbox, margin: float = 0.0) -> np.ndarray:
    return ((pts[:, 0] > box.x0 - margin) & (pts[:, 0] < box.x1 + margin)
            & (pts[:, 1] > box.y0 - margin) & (pts[:, 1] < box.y1 + margin))


def _route(e: dict, nodes: dict, boxes: dict, px, routed: list) -> float:
    """The arc3 rad for an edge: the least curved candidate that crosses no other node's
    box and shares the least length with edges already routed (parallel edges between the
    same nodes, or an edge running along another, collinear one)."""
    ends = [e[k] if isinstance(e[k], tuple) else nodes[e[k]]["xy"] for k in ("src", "dst")]
    p, q = px(ends[0]), px(ends[1])
    own = [boxes[e[k]] for k in ("src", "dst") if not isinstance(e[k], tuple)]
    others = [b for k, b in boxes.items() if all(b is not o for o in own)]
    prev = np.concatenate(routed) if routed else np.empty((0, 2))
    best = None
    for rad in (0.0, 0.12, -0.12, 0.22, -0.22, 0.35, -0.35, 0.5, -0.5):
        pts = _arc3(p, q, rad)
        pts = pts[~np.any([_inside(pts, b) for b in own], axis=0)] if own else pts  # the part outside its ends
        hits = sum(int(_inside(pts, b, 4.0).sum()) for b in others)
        # Edges leaving one node run close together near it: only the middle half counts.
        mid = pts[len(pts) // 4: len(pts) - len(pts) // 4]
        shared = 0.0
        if len(prev) and len(mid):
            d = np.min(np.hypot(mid[:, None, 0] - prev[None, :, 0], mid[:, None, 1] - prev[None, :, 1]), axis=1)
            shared = float((d < 4.0).mean())
        cost = (hits, (10 * shared if shared > 0.4 else 0.0) + 2 * abs(rad))
        if best is None or cost < best[0]:
            best = (cost, rad)
    return best[1]


def _resample(line: np.ndarray, step: float = 3.0) -> np.ndarray:
    """Points every ``step`` pixels along a polyline."""
    seg = np.hypot(*np.diff(line, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] <= 0:
        return line[:1]
    t = np.linspace(0.0, s[-1], max(2, int(s[-1] / step) + 1))
    return np.stack([np.interp(t, s, line[:, 0]), np.interp(t, s, line[:, 1])], axis=1)


def _place_labels(ax, renderer, geometry, obstacles) -> list[tuple[str, Bbox]]:
    """Put each edge label at the best free spot along its edge (see the module docstring)."""
    frame = ax.get_window_extent(renderer)
    lines = [_resample(g[2]) for g in geometry]
    pad = _LABEL_PAD * _LABEL_FONT * ax.figure.dpi / 72 + 1.0  # box padding, plus one pixel of air
    placed: list[tuple[str, Bbox]] = []
    order = sorted((i for i, g in enumerate(geometry) if g[0]), key=lambda i: len(lines[i]))  # short first
    fractions = np.arange(0.15, 0.86, 0.05)
    for i in order:
        label, colour, *_ = geometry[i]
        t = ax.text(0, 0, label, fontsize=_LABEL_FONT, color=colour, ha="center", va="center", zorder=4,
                    bbox=dict(boxstyle=f"round,pad={_LABEL_PAD}", fc="white", ec="none", alpha=0.9))
        ext = t.get_window_extent(renderer)
        w, h = ext.width + 2 * pad, ext.height + 2 * pad
        pts = lines[i]
        others = np.concatenate([lines[j] for j in range(len(lines)) if j != i] or [np.empty((0, 2))])
        hard_boxes = obstacles + [b for _, b in placed]
        best = None
        # On the edge, then beside it (touching it), then further off only if nothing nearer is free.
        for reach in ((0, 0.5), (0.8, 1.1), (1.5, 2.0, 2.6, 3.4)):
            for f in fractions:
                k = min(int(round(f * (len(pts) - 1))), len(pts) - 2)
                (x0, y0), (x1, y1) = pts[k], pts[k + 1]
                d = np.hypot(x1 - x0, y1 - y0) or 1.0
                nx, ny = -(y1 - y0) / d, (x1 - x0) / d  # unit normal of the edge there
                across = abs(nx) * w + abs(ny) * h  # the label's extent along that normal
                for m in reach:
                    for sign in ((1,) if m == 0 else (1, -1)):
                        cx, cy = pts[k][0] + sign * m * nx * across, pts[k][1] + sign * m * ny * across
                        box = Bbox.from_bounds(cx - w / 2, cy - h / 2, w, h)
                        hard = sum(_overlap(box, b) for b in hard_boxes) + _outside(box, frame)
                        inside = ((others[:, 0] > box.x0) & (others[:, 0] < box.x1)
                                  & (others[:, 1] > box.y0) & (others[:, 1] < box.y1)).sum()
                        cost = (hard, 2 * abs(f - 0.55) + 0.5 * m + 0.5 * min(inside / 30, 1.0))
                        if best is None or cost < best[0]:
                            best = (cost, cx, cy)
            if best[0][0] == 0:
                break
        _, cx, cy = best
        t.set_position(ax.transData.inverted().transform((cx, cy)))
        box = t.get_window_extent(renderer)  # the text as placed, plus its white box
        p = pad - 1.0
        placed.append((label, Bbox.from_extents(box.x0 - p, box.y0 - p, box.x1 + p, box.y1 + p)))
    return placed


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    fig.savefig(path, dpi=fig.dpi, bbox_inches="tight")
    return path


def draw_dag(labels: list[str], edges: list[tuple[int, int, str, float]], title: str, path,
             colours: dict | None = None) -> Drawing:
    """A cell as nodes in a row (the first is the input, the last the output) joined by
    labelled edges ``(from, to, label, bend)``; ``bend`` curves an edge (0: straight) so
    edges that skip nodes do not cross the ones between. ``colours``: label -> colour, on
    top of the ops' usual colours."""
    fig = _figure(8, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    d = Diagram(ax)
    colours = dict(_OP_COLOURS, **(colours or {}))
    last = len(labels) - 1
    for k, label in enumerate(labels):
        d.node(k, (2.0 * k, 0.0), label, _IN_BOX if k == 0 else _OUT_BOX if k == last else _BOX)
    for src, dst, label, bend in edges:
        d.edge(src, dst, label, colours.get(label, "#555555"), bend=bend)
    ax.set_xlim(-0.8, 2.0 * last + 0.8)
    ax.set_ylim(-0.6, 1.5)
    ax.set_title(title, fontsize=8, pad=12)
    ax.axis("off")
    drawing = d.finish()
    drawing.path = _save(fig, path)
    return drawing


def draw_cells(cells: dict, loose: dict, path) -> Drawing:
    """cells: {name: [(input_a, input_b, op_a, op_b) per node 2, 3, ...]};
    loose: {name: node ids concatenated into the output}."""
    fig = _figure(8.5, 4.4 * len(cells))
    drawing = Drawing(Path(path))
    for row, (name, nodes) in enumerate(cells.items()):
        ax = fig.add_subplot(len(cells), 1, row + 1)
        d = Diagram(ax)
        depth = {0: 0, 1: 0}
        for k, (a, b, _, _) in enumerate(nodes, start=2):
            depth[k] = 1 + max(depth[a], depth[b])
        out_x = max(depth.values()) + 1
        by_depth: dict[int, list[int]] = {}
        for k, dk in depth.items():
            by_depth.setdefault(dk, []).append(k)
        pos = {}
        for dk, ks in by_depth.items():
            for r, k in enumerate(ks):
                pos[k] = (1.8 * dk, 1.4 * ((len(ks) - 1) / 2 - r))
        pos["out"] = (1.8 * out_x, 0.0)
        labels = {0: "$c_{k-2}$", 1: "$c_{k-1}$", "out": "$c_{k}$\nconcat"}
        for k, xy in pos.items():
            style = _IN_BOX if k in (0, 1) else _OUT_BOX if k == "out" else _BOX
            d.node(k, xy, labels.get(k, str(k)), style)
        for k, (a, b, op_a, op_b) in enumerate(nodes, start=2):
            for j, op in ((a, op_a), (b, op_b)):
                d.edge(j, k, op, _OP_COLOURS.get(op, "#555555"), rad="auto")
        for i in loose[name]:
            d.edge(i, "out", colour="#e65100", dashed=True, rad="auto")
        ys = [y for _, y in pos.values()]
        ax.set_xlim(-0.7, 1.8 * out_x + 0.7)
        ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
        ax.set_title(f"{name} cell", fontsize=10)
        ax.axis("off")
        drawing = drawing + d.finish()
    _save(fig, path)
    return drawing


def draw_chain(ops: list, skips: list, reductions: list, path) -> Drawing:
    """Macro network: layers left to right, op in each box, skips as arcs above (higher
    for longer skips), factorized reductions as dashed vertical lines."""
    n = len(ops)
    fig = _figure(max(8, 1.1 * (n + 2)), 4.6)
    ax = fig.add_subplot(1, 1, 1)
    d = Diagram(ax)
    d.node(-1, (0, 0.0), "stem", _IN_BOX, fontsize=8)
    for i, op in enumerate(ops):
        d.node(i, (i + 1, 0.0), f"{i}\n{op}", dict(_BOX, ec=_OP_COLOURS.get(op, "#3b5b92")), fontsize=7)
    d.node("out", (n + 1, 0.0), "pool\nFC", _OUT_BOX, fontsize=8)
    top = 4.0
    for i in range(n):
        d.edge(i - 1, i)
        for j in skips[i]:
            span = i - j
            if span > 1 or j == -1:
                d.edge(j, i, colour="#8a8a8a", lw=0.8, bend=0.55 + (top - 0.55) * ((span - 1) / max(n - 1, 1)) ** 0.7)
            else:  # the previous layer is also the main input: a small arc beside the chain arrow
                d.edge(j, i, colour="#8a8a8a", lw=0.8, bend=0.3)
    d.edge(n - 1, "out")
    for p in reductions:
        ax.plot([p + 1.5] * 2, [-0.6, 0.45], color="#e65100", ls="--", lw=1, zorder=1)
        ax.text(p + 1.5, -0.75, "reduce", color="#e65100", ha="center", fontsize=7)
    ax.text(0, top + 0.4, "grey arcs: skip connections (added to the layer's input)", fontsize=8, color="#666666")
    ax.set_xlim(-0.7, n + 1.7)
    ax.set_ylim(-1.0, top + 0.8)
    ax.axis("off")
    drawing = d.finish()
    drawing.path = _save(fig, path)
    return drawing


def draw_rnn_cell(nodes: list[tuple[int, int, str]], act0: str, averaged: list[int], path,
                  title: str | None = None) -> Drawing:
    """The ENAS recurrent cell as a tree (every node reads exactly one earlier node).

    nodes: [(node, input, activation)] for nodes 1..N-1; act0: node 0's activation;
    averaged: the nodes averaged into h_t. Layout: one row per node in depth-first order,
    one column per depth, each node to the right of and below its input (so no edge or
    output line crosses a node); x_t and h_{t-1} feed node 0; averaged nodes join a bus
    that goes into "avg", then h_t.
    """
    children: dict[int, list[int]] = {}
    act = {0: act0}
    for l, p, a in nodes:
        children.setdefault(p, []).append(l)
        act[l] = a
    order, depth = [], {0: 0}
    stack = [0]
    while stack:  # pre-order, smaller node numbers first
        k = stack.pop()
        order.append(k)
        for c in sorted(children.get(k, []), reverse=True):
            depth[c] = depth[k] + 1
            stack.append(c)
    row = {k: r for r, k in enumerate(order)}
    sx = 1.6  # column width (x data units; the figure is scaled so that 1 unit = 1 row height)
    max_depth = max(depth.values())
    bus_x = sx * max_depth + 1.0
    avg_y = -np.mean([row[k] for k in averaged])
    n_rows = len(order)
    width, height = 0.62 * (bus_x + 2 * sx + 2.2), 0.42 * (n_rows + 2.4)
    fig = _figure(max(width, 5.0), max(height, 2.6))
    ax = fig.add_subplot(1, 1, 1)
    fig.subplots_adjust(0.02, 0.02, 0.98, 0.92 if title else 0.98)
    d = Diagram(ax)
    d.node("x", (-sx, 0.55), "$x_t$", _IN_BOX)
    d.node("h", (-sx, -0.55), "$h_{t-1}$", _IN_BOX)
    for k in order:
        d.node(k, (sx * depth[k], -row[k]), f"{k}  {act[k]}",
               dict(_BOX, ec=_ACT_COLOURS.get(act[k], "#3b5b92"), lw=1.6 if k in averaged else 1.2))
    d.node("avg", (bus_x + 1.0, avg_y), "avg", _OUT_BOX)
    d.node("ht", (bus_x + 1.0 + sx, avg_y), "$h_t$", _OUT_BOX)
    d.edge("x", 0)
    d.edge("h", 0)
    for l, p, _ in nodes:  # down from the input, then right into the node
        d.edge(p, l, connection="angle,angleA=-90,angleB=180,rad=4")
    bus = "#e65100"
    for k in averaged:
        d.edge(k, (bus_x, -row[k]), colour=bus, dashed=True, head=False, lw=1.0)
    ys = [-row[k] for k in averaged]
    ax.plot([bus_x, bus_x], [min(ys + [avg_y]), max(ys + [avg_y])], color=bus, lw=1.4, zorder=2)
    ax.plot([bus_x] * len(ys), ys, "o", ms=3, color=bus, zorder=2)
    d.edge((bus_x, avg_y), "avg", colour=bus)
    d.edge("avg", "ht", colour=bus)
    ax.set_xlim(-sx - 0.8, bus_x + 1.0 + sx + 0.8)
    ax.set_ylim(-(n_rows - 1) - 1.0, 1.2)
    if title:
        ax.set_title(title, fontsize=9)
    ax.axis("off")
    drawing = d.finish()
    drawing.path = _save(fig, path)
    return drawing
