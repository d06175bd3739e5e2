"""PNG drawings of architectures (used by ``enas show``): micro cells and the macro chain.

Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend).
"""
from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

_BOX = dict(boxstyle="round,pad=0.35", fc="#eef3fb", ec="#3b5b92", lw=1.2)
_IN_BOX = dict(boxstyle="round,pad=0.35", fc="#e8f5e9", ec="#2e7d32", lw=1.2)
_OUT_BOX = dict(boxstyle="round,pad=0.35", fc="#fff3e0", ec="#e65100", lw=1.2)
_OP_COLOURS = {
    "sep_conv_3x3": "#1f77b4", "sep_conv_5x5": "#9467bd", "conv_3x3": "#17becf", "conv_5x5": "#8c564b",
    "avg_pool_3x3": "#2ca02c", "max_pool_3x3": "#d62728", "identity": "#7f7f7f",
}


def _arrow(ax, p, q, label=None, rad=0.0, colour="#555555", dashed=False):
    ax.add_patch(FancyArrowPatch(p, q, arrowstyle="-|>", mutation_scale=12, lw=1.2, color=colour,
                                 connectionstyle=f"arc3,rad={rad}", shrinkA=14, shrinkB=14,
                                 linestyle="--" if dashed else "-"))
    if label:
        # on the (quadratic Bezier) edge, nearer the head, so labels of edges leaving
        # one node do not pile up at the same spot
        dx, dy = q[0] - p[0], q[1] - p[1]
        c = ((p[0] + q[0]) / 2 + rad * dy, (p[1] + q[1]) / 2 - rad * dx)
        t = 0.62
        x = (1 - t) ** 2 * p[0] + 2 * t * (1 - t) * c[0] + t * t * q[0]
        y = (1 - t) ** 2 * p[1] + 2 * t * (1 - t) * c[1] + t * t * q[1]
        ax.text(x, y, label, fontsize=7, color=colour, ha="center", va="center",
                bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.85))


def _save(fig: Figure, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def draw_cells(cells: dict, loose: dict, path) -> None:
    """cells: {name: [(input_a, input_b, op_a, op_b) per node 2, 3, ...]};
    loose: {name: node ids concatenated into the output}."""
    fig = Figure(figsize=(8, 4.2 * len(cells)))
    for row, (name, nodes) in enumerate(cells.items()):
        ax = fig.add_subplot(len(cells), 1, row + 1)
        depth = {0: 0, 1: 0}
        for k, (a, b, _, _) in enumerate(nodes, start=2):
            depth[k] = 1 + max(depth[a], depth[b])
        out_x = max(depth.values()) + 1
        by_depth: dict[int, list[int]] = {}
        for k, d in depth.items():
            by_depth.setdefault(d, []).append(k)
        pos = {}
        for d, ks in by_depth.items():
            for r, k in enumerate(ks):
                pos[k] = (1.6 * d, 1.4 * ((len(ks) - 1) / 2 - r))
        pos["out"] = (1.6 * out_x, 0.0)
        for k, (a, b, op_a, op_b) in enumerate(nodes, start=2):
            for j, op, rad in ((a, op_a, 0.15), (b, op_b, -0.15)):
                _arrow(ax, pos[j], pos[k], op, rad if a == b else 0.0, _OP_COLOURS.get(op, "#555555"))
        for i in loose[name]:
            _arrow(ax, pos[i], pos["out"], dashed=True, colour="#e65100")
        labels = {0: "c_{k-2}", 1: "c_{k-1}", "out": "c_{k}\nconcat"}
        for k, (x, y) in pos.items():
            style = _IN_BOX if k in (0, 1) else _OUT_BOX if k == "out" else _BOX
            ax.text(x, y, labels.get(k, str(k)), ha="center", va="center", fontsize=9, bbox=style)
        ys = [y for _, y in pos.values()]
        ax.set_xlim(-0.6, 1.6 * out_x + 0.6)
        ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
        ax.set_title(f"{name} cell", fontsize=10)
        ax.axis("off")
    _save(fig, path)


def draw_chain(ops: list, skips: list, reductions: list, path) -> None:
    """Macro network: layers left to right, op in each box, skips as arcs above,
    factorized reductions as dashed vertical lines."""
    n = len(ops)
    fig = Figure(figsize=(max(8, 1.1 * (n + 2)), 4.2))
    ax = fig.add_subplot(1, 1, 1)
    pos = {i: (i + 1, 0.0) for i in range(n)}
    pos[-1] = (0, 0.0)
    ax.text(0, 0, "stem", ha="center", va="center", fontsize=8, bbox=_IN_BOX)
    for i, op in enumerate(ops):
        _arrow(ax, pos[i - 1], pos[i])
        ax.text(*pos[i], f"{i}\n{op}", ha="center", va="center", fontsize=7,
                bbox=dict(_BOX, ec=_OP_COLOURS.get(op, "#3b5b92")))
        for j in skips[i]:
            _arrow(ax, pos[j], pos[i], rad=-0.5, colour="#999999")
    for p in reductions:
        ax.axvline(p + 1.5, color="#e65100", ls="--", lw=1)
        ax.text(p + 1.5, -0.9, "reduce", color="#e65100", ha="center", fontsize=7)
    ax.text(n + 1, 0, "pool\nFC", ha="center", va="center", fontsize=8, bbox=_OUT_BOX)
    _arrow(ax, pos[n - 1], (n + 1, 0.0))
    ax.set_xlim(-0.7, n + 1.7)
    ax.set_ylim(-1.2, max(2.5, 0.27 * n))
    ax.axis("off")
    _save(fig, path)
