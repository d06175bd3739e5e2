"""Rank statistics with ties, in numpy (scipy is not a dependency)."""
from __future__ import annotations

import math

import numpy as np


def rankdata(x) -> np.ndarray:
    """1-based ranks, ties get the average of the ranks they span (scipy's 'average')."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="mergesort")
    sx = x[order]
    ranks = np.empty(len(x), dtype=float)
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def _pair_signs(x, y, groups=None):
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape:
        raise ValueError("x and y must have the same length")
    # on ranks, so that infinite scores (a training-free score of a network whose output
    # ignores its input is -inf) order and tie as they should instead of giving NaN
    x, y = rankdata(x), rankdata(y)
    i, j = np.triu_indices(len(x), k=1)
    if groups is not None:  # only the pairs within a group
        g = np.asarray(groups)
        same = g[i] == g[j]
        i, j = i[same], j[same]
    return np.sign(x[i] - x[j]), np.sign(y[i] - y[j]), i, j


def within_pairs(groups) -> int:
    """The number of pairs of items in the same group."""
    _, counts = np.unique(np.asarray(groups), return_counts=True)
    return int(np.sum(counts * (counts - 1) // 2))


def kendall_tau_b(x, y, groups=None) -> float:
    """Kendall's tau-b: (concordant - discordant) / sqrt((n0 - tx) (n0 - ty)) over all
    pairs, tx / ty the pairs tied in x / y. NaN when either side is constant or n < 2.
    ``groups``: over the pairs within a group only, pooled (e.g. the architectures of equal
    parameter count: what a score knows beyond counting parameters)."""
    if len(x) < 2:
        if len(x) != len(y):
            raise ValueError("x and y must have the same length")
        return math.nan
    dx, dy, _, _ = _pair_signs(x, y, groups)
    denom = math.sqrt(float(np.count_nonzero(dx)) * float(np.count_nonzero(dy)))
    return float(np.sum(dx * dy) / denom) if denom > 0 else math.nan


def kendall_tau_b_se(x, y, groups=None) -> float:
    """The jackknife standard error of ``kendall_tau_b`` (leave one item out; Efron &
    Stein 1981): how much the tau of n items would move on another draw of n items.
    Computed from the pair signs once, so it costs one tau."""
    n = len(x)
    if n < 3:
        return math.nan
    dx, dy, i, j = _pair_signs(x, y, groups)
    prod, nx, ny = dx * dy, (dx != 0).astype(float), (dy != 0).astype(float)
    s, sx, sy = prod.sum(), nx.sum(), ny.sum()
    # per item: the sums over the pairs it is part of
    per = [np.bincount(i, w, n) + np.bincount(j, w, n) for w in (prod, nx, ny)]
    with np.errstate(invalid="ignore", divide="ignore"):
        taus = (s - per[0]) / np.sqrt((sx - per[1]) * (sy - per[2]))
    taus = taus[np.isfinite(taus)]
    if len(taus) < 3:
        return math.nan
    return float(math.sqrt((len(taus) - 1) / len(taus) * np.sum((taus - taus.mean()) ** 2)))


def spearman_rho(x, y) -> float:
    """Spearman's rho with ties: Pearson correlation of the average ranks."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape:
        raise ValueError("x and y must have the same length")
    if len(x) < 2:
        return math.nan
    rx, ry = rankdata(x) - (len(x) + 1) / 2.0, rankdata(y) - (len(y) + 1) / 2.0
    denom = math.sqrt(float(np.sum(rx * rx)) * float(np.sum(ry * ry)))
    return float(np.sum(rx * ry) / denom) if denom > 0 else math.nan


def top(values: dict, k: int) -> list:
    """The k keys with the highest values (ties broken by the key, so runs agree)."""
    return sorted(values, key=lambda a: (-values[a], a))[:k]


def topk_overlap(score: dict, truth: dict, k: int) -> tuple[int, int]:
    """(|top-k by score  &  top-k by truth|, k used) over the keys both share; k is
    clipped to the number of shared keys."""
    common = set(score) & set(truth)
    k = min(k, len(common))
    s = {a: score[a] for a in common}
    t = {a: truth[a] for a in common}
    return len(set(top(s, k)) & set(top(t, k))), k


def percentile(value: float, others) -> float:
    """Share (in %) of ``others`` that ``value`` beats, ties counting half."""
    others = np.asarray(list(others), dtype=float)
    if not len(others):
        return math.nan
    return float(100.0 * (np.sum(others < value) + 0.5 * np.sum(others == value)) / len(others))
