"""The ENAS cell for ``torch.compile``: one time step with the architecture as tensors.

On a GPU the cell's loop (12 nodes x 35 steps, each node a [B, H] x [H, 2H] matmul and
a handful of element-wise ops on [B, H]) is bound by kernel launches, not arithmetic:
eager PyTorch launches about seven kernels per node and step. Compiling fuses each
node's element-wise ops into one kernel, and on CUDA the compiled step is replayed as
a CUDA graph (one launch for the whole step).

``enas_cell`` (../cell.py) cannot be compiled as it stands for a search: it reads the
architecture as Python values, so every newly sampled architecture (one per minibatch)
would be a new graph to compile. ``step`` below computes the same equations with the
choices as integer tensors, so one compiled graph serves every architecture of the
space:

* node l reads s_{p_l}: a ``torch.where`` chain over the earlier nodes picks it (exact:
  a select, no arithmetic on the other nodes);
* f_l: every activation is computed and ``torch.where`` keeps the chosen one (the
  others cost a few fused element-wise ops);
* the next state is the mean of the output nodes: the selected nodes are summed and
  divided by their count, so its rounding can differ from ``enas_cell``'s
  ``stack().mean(0)`` in the last bit.

``cell`` runs ``step`` over a window; tests/test_fast_paths.py checks it, eager and
compiled, against ``enas_cell``: values and gradients.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from ...ops import ACTIVATIONS


def arch_tensors(arch: Mapping[str, Any], num_nodes: int, activations: tuple[str, ...], outs: list[int],
                 device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(parents [N-1], activation indices [N], output mask [N]) of ``arch``."""
    parents = [arch[f"node{l}/input"] for l in range(1, num_nodes)]
    acts = [activations.index(arch[f"node{l}/activation"]) for l in range(num_nodes)]
    mask = [l in outs for l in range(num_nodes)]
    # From pinned memory a copy to the GPU is queued without the host waiting for the
    # work already on the stream (a pageable copy would wait: a sync per step).
    pin = torch.device(device).type == "cuda"
    as_t = lambda v, dt: torch.tensor(v, dtype=dt, pin_memory=pin).to(device, non_blocking=True)  # noqa: E731
    return as_t(parents, torch.long), as_t(acts, torch.long), as_t(mask, torch.bool)


def step(xw_t: torch.Tensor, s: torch.Tensor, w_s: torch.Tensor, w: torch.Tensor, parents: torch.Tensor,
         acts: torch.Tensor, outs: torch.Tensor, m_l: torch.Tensor | None,
         activations: tuple[str, ...]) -> torch.Tensor:
    """One step of the cell (paper eq. 1-2). xw_t [B, 2H]: x_t W_x; s [B, H]; w_s [H, 2H];
    w [N-1, H, 2H]: W_{l, p_l} of nodes 1..N-1; parents [N-1], acts [N] (indices into
    ``activations``), outs [N] (bool); m_l [B, H] or None. Returns s_t [B, H]."""
    fns = [ACTIVATIONS.get(a) for a in activations]

    def highway(prev, hc, a):  # s = prev + sigmoid(c) * (f_a(h) - prev), f_a picked by index a
        h, c = hc.chunk(2, dim=-1)
        f = fns[0](h)
        for i in range(1, len(fns)):
            f = torch.where(a == i, fns[i](h), f)
        return prev + torch.sigmoid(c) * (f - prev)

    drop = (lambda v: v * m_l) if m_l is not None else (lambda v: v)  # noqa: E731
    nodes = [highway(s, xw_t + drop(s) @ w_s, acts[0])]
    for l in range(1, w.size(0) + 1):
        prev = nodes[0]
        for j in range(1, l):
            prev = torch.where(parents[l - 1] == j, nodes[j], prev)
        nodes.append(highway(prev, drop(prev) @ w[l - 1], acts[l]))
    total = torch.zeros_like(s)
    for j, node in enumerate(nodes):
        total = total + torch.where(outs[j], node, torch.zeros_like(node))
    return total / outs.sum().to(s.dtype)


def cell(step_fn: Callable, xw: torch.Tensor, s: torch.Tensor, w_s: torch.Tensor, w: torch.Tensor,
         parents: torch.Tensor, acts: torch.Tensor, outs: torch.Tensor, m_l: torch.Tensor | None,
         activations: tuple[str, ...]) -> torch.Tensor:
    """``step_fn`` (``step`` or its compiled form) over a window: xw [T, B, 2H] -> [T, B, H]."""
    states = []
    for t in range(xw.size(0)):
        s = step_fn(xw[t], s, w_s, w, parents, acts, outs, m_l, activations)
        states.append(s)
    return torch.stack(states)


_COMPILED: dict[str, Callable] = {}


def compiled_step(device: torch.device) -> Callable:
    """``step`` under ``torch.compile``, one per device type. On CUDA in
    ``reduce-overhead`` mode (CUDA graphs: the step's shapes are fixed for a run, and
    a changed batch or hidden size records another graph); elsewhere the default mode."""
    kind = torch.device(device).type
    if kind not in _COMPILED:
        mode = "reduce-overhead" if kind == "cuda" else None
        _COMPILED[kind] = torch.compile(step, mode=mode, dynamic=False)
    return _COMPILED[kind]
