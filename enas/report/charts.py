"""The report's charts: matplotlib figures (object API, Agg) turned into PNG bytes."""
from __future__ import annotations

import base64
import html
import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, ScalarFormatter
from matplotlib.transforms import blended_transform_factory

from enas.errors import one_line
from enas.plots import annotate_cells
from enas.report.runfolder import Series

_CHART_DPI = 100
# matplotlib fits the y-axis to the data, so a curve that moves by 0.04% fills the panel
# like one that moves by half. The y-axis spans at least MIN_SPAN of the figure's size
# (its largest absolute value), and a curve that moves by less than FLAT of it says so.
MIN_SPAN = 0.1
FLAT = 0.01


def _figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), dpi=_CHART_DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_CHART_DPI, bbox_inches="tight")
    return buf.getvalue()


def text(name) -> str:
    """A name from metrics.jsonl as matplotlib draws it literally: on one line, control
    characters and lone surrogates escaped (Agg cannot draw them), and ``$`` escaped
    (matplotlib reads text between two as a formula: ``$\\frac{$`` would not parse)."""
    return one_line(name).replace("$", r"\$")


def img(png: bytes, alt: str) -> str:
    return (f'<img alt="{html.escape(alt)}" src="data:image/png;base64,'
            f'{base64.b64encode(png).decode("ascii")}">')


def _plot_series(ax, s: Series, label: str | None = None, err: Series | None = None, **kw):
    x = np.asarray(s.x, dtype=float)
    y = np.asarray(s.values, dtype=float)
    finite = np.isfinite(y)
    style = dict(marker="o", ms=3) if len(x) <= 40 else {}
    style.update(kw)
    line, = ax.plot(x, np.where(finite, y, np.nan), label=text(label or s.name), lw=1.3, **style)
    if err is not None and len(err.values) == len(s.values):
        e = np.asarray(err.values, dtype=float)
        ok = finite & np.isfinite(e)
        ax.fill_between(x[ok], (y - e)[ok], (y + e)[ok], color=line.get_color(), alpha=0.2, lw=0)
    if (~finite).any():  # mark where the value was NaN/inf: a red x on the top edge
        t = blended_transform_factory(ax.transData, ax.transAxes)
        ax.plot(x[~finite], np.full((~finite).sum(), 0.97), "x", color="#c62828", ms=6, transform=t, clip_on=False,
                label=f"{text(label or s.name)}: non-finite")
    return line


def honest_ylim(ax, series: list) -> None:
    """Widen the y-axis of ``ax`` to MIN_SPAN of the figure's size and label a flat curve
    (``series``: the Series drawn in it, with their error bands as further Series)."""
    ys = [np.asarray(s.values, dtype=float) for s in series if s is not None]
    y = np.concatenate(ys) if ys else np.zeros(0)
    y = y[np.isfinite(y)]
    if y.size == 0:
        return
    lo, hi = float(y.min()), float(y.max())
    size = max(abs(lo), abs(hi))
    if size == 0.0 or hi - lo >= MIN_SPAN * size:
        return
    bottom, top = ax.get_ylim()
    mid, half = (lo + hi) / 2, MIN_SPAN * size / 2
    ax.set_ylim(min(bottom, mid - half), max(top, mid + half))
    if hi - lo < FLAT * size:
        change = "constant" if hi == lo else f"moves by {100 * (hi - lo) / size:.2g}% of its size"
        ax.text(0.5, 0.93, f"flat: {change}", transform=ax.transAxes, ha="center", va="top", fontsize=8,
                color="#555555")


def _band(s: Series, err: Series | None) -> list:
    """The values an error band reaches, as Series-like objects for honest_ylim."""
    if err is None or len(err.values) != len(s.values):
        return []
    e = np.asarray(err.values, dtype=float)
    y = np.asarray(s.values, dtype=float)
    return [Series(s.name, values=list(y - e)), Series(s.name, values=list(y + e))]


def chart(panels: list[dict], width: float = 11.0, height: float = 3.0) -> bytes:
    """panels: [{title, xlabel, curves: [(Series, label, err Series | None)]}] side by side."""
    fig = _figure(width, height)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, p in zip(axes, panels):
        for s, label, err in p["curves"]:
            _plot_series(ax, s, label, err)
        ax.set_title(text(p["title"]), fontsize=10)
        ax.set_xlabel(p.get("xlabel", ""), fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        honest_ylim(ax, [x for s, _, err in p["curves"] for x in [s, *_band(s, err)]])
        _style_axes(ax, all(s.by_epoch for s, _, _ in p["curves"]))
        if len(p["curves"]) > 1 or any(s.nonfinite for s, _, _ in p["curves"]):
            ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _png(fig)


def _style_axes(ax, by_epoch: bool) -> None:
    """Plain tick labels (no "+2.751e1" offset), whole epochs on an epoch axis."""
    for axis in (ax.xaxis, ax.yaxis):
        if isinstance(axis.get_major_formatter(), ScalarFormatter):
            axis.get_major_formatter().set_useOffset(False)
    if by_epoch:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


# the x-axis of each group's figures (enas.storage.runlog.TB_GROUPS names the same axes)
_AXES = {"controller": "controller update", "shared": "shared step", "train": "training step"}


def xlabel(series: list[Series]) -> str:
    if all(s.by_epoch for s in series):
        return "epoch"
    groups = {s.name.split("/")[0] for s in series}
    return _AXES.get(groups.pop(), "step") if len(groups) == 1 else "step"


def small_multiples(series: list[Series]) -> bytes:
    n = len(series)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig = _figure(2.75 * cols + 0.3, 2.3 * rows + 0.2)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, s in enumerate(series):
        ax = axes[i // cols][i % cols]
        _plot_series(ax, s, s.name)
        ax.set_title(text(s.name), fontsize=8)
        ax.set_xlabel("epoch" if s.by_epoch else "step", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        honest_ylim(ax, [s])
        _style_axes(ax, s.by_epoch)
    for j in range(n, rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.tight_layout()
    return _png(fig)


def heatmaps(panels: list[tuple[str, list[str], np.ndarray]], epochs: list) -> bytes:
    """One small heat map per decision: rows = choices, columns = epochs."""
    n = len(panels)
    most = max(len(c) for _, c, _ in panels)
    cols = min(n, 4 if most > 6 else 5)
    rows = -(-n // cols)
    panel_h = 0.55 + 0.2 * most
    fig = _figure(11.0, panel_h * rows + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False)
    im = None
    annotate = len(epochs) <= 8
    ticks = list(range(len(epochs)))
    if len(ticks) > 8:
        ticks = sorted(set(np.linspace(0, len(epochs) - 1, 6).round().astype(int)))
    for i, (name, choices, grid) in enumerate(panels):
        ax = axes[i // cols][i % cols]
        im = ax.imshow(np.ma.masked_invalid(grid), vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto",
                       interpolation="nearest")
        ax.set_title(text(name), fontsize=8)
        ax.set_yticks(range(len(choices)), labels=[text(c) for c in choices], fontsize=6)
        ax.set_xticks(ticks, labels=[text(epochs[t]) for t in ticks], fontsize=6)
        if i // cols == rows - 1 or i + cols >= n:  # the lowest panel of each column
            ax.set_xlabel("epoch", fontsize=7)
        if annotate and grid.shape[0] <= 12:
            annotate_cells(ax, grid, fontsize=5.5)
    for j in range(n, rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    if im is not None:
        cax = fig.add_axes((0.945, 0.15, 0.012, 0.7))
        fig.colorbar(im, cax=cax, label="probability")
    return _png(fig)
