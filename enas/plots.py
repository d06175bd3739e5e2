"""Heat maps of the policy's choice probabilities (TensorBoard images, ``enas report``).

matplotlib's object API with the Agg canvas: no pyplot, no global backend, safe in
any thread and process.
"""
from __future__ import annotations

import math
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def heatmap(values: list[list[float]], rows: list[str], cols: list[str], title: str, xlabel: str = "",
            ylabel: str = "") -> np.ndarray:
    """A rows x cols grid of probabilities in [0, 1] (None: no such choice), each cell
    annotated when the grid is small enough to read, as an RGB uint8 array [H, W, 3] (a
    TensorBoard image: nothing is written here)."""
    grid = np.array([[math.nan if v is None else v for v in r] for r in values], dtype=float)
    h = max(2.2, 0.32 * len(rows) + 1.4)
    w = max(4.0, 0.55 * len(cols) + 2.6)
    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(np.ma.masked_invalid(grid), vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), labels=cols, rotation=45 if max(map(len, cols), default=0) > 3 else 0,
                  ha="right" if max(map(len, cols), default=0) > 3 else "center", fontsize=8)
    ax.set_yticks(range(len(rows)), labels=rows, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    if grid.size <= 400:
        annotate_cells(ax, grid, fontsize=6)
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="probability")
    fig.tight_layout()
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def annotate_cells(ax, grid, fontsize: float) -> None:
    """Each finite probability written in its cell, light on the dark end of viridis."""
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            v = grid[i, j]
            if math.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=fontsize,
                        color="white" if v < 0.6 else "black")
