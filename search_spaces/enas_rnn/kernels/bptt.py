"""The ENAS cell unrolled over a BPTT window, with a hand-written backward pass.

Why not plain autograd: at hidden 256 and batch 64 each time step is a few [64, H] x
[H, 2H k] matmuls and ~40 tiny element-wise ops. Through autograd every op also builds
a graph node, and every slice of a node's [h, c] product costs a zero-filled gradient
buffer in the backward pass. On CPU that book-keeping took as long as the cell's
matmuls (measured with benchmarks/throughput.py). This function runs the same equations (paper eq. 1-2,
see ../cell.py) with preallocated buffers and

* one matmul per group of nodes that read the same node (``RNNModel._plan``);
* per node, three element-wise ops forward (sigmoid, activation, lerp) and seven backward;
* the weight gradients deferred to the end of the window: one [H, T B] x [T B, 2H k]
  matmul per weight group instead of T small ones with inner size B (the dense GEMMs
  the RNN benchmark target asks for; same FLOPs).

Inputs: ``xw`` [T, B, 2H] is x_t W_x for every step (computed outside, with its
dropout); ``s`` [B, H] the carried state; ``m_l`` the locked mask applied to every
node's input state inside its matmul (or None); ``w_s`` [H, 2H] node 0's state matrix;
``gw`` one [H, 2H k] matrix per group, columns [h_1, c_1, h_2, c_2, ...] in the order
of the group's nodes. Output: the states s_1..s_T, [T, B, H].

tests/test_fast_paths.py checks values and gradients against plain autograd code of the
same equations (and gradcheck in float64).
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor


# Activations by code. Every derivative is a function of the output, so the forward
# saves f(h) only.
ACT = ("tanh", "sigmoid", "relu", "identity")


def _act(a: int, x: Tensor, out: Tensor):
    if a == 0:
        torch.tanh(x, out=out)
    elif a == 1:
        torch.sigmoid(x, out=out)
    elif a == 2:
        torch.clamp_min(x, 0.0, out=out)
    else:
        out.copy_(x)


def _act_backward(a: int, f: Tensor, grad: Tensor, out: Tensor):
    """out = grad * f'(h), from the output f = f(h)."""
    if a == 0:
        torch.ops.aten.tanh_backward(grad, f, grad_input=out)
    elif a == 1:
        torch.ops.aten.sigmoid_backward(grad, f, grad_input=out)
    elif a == 2:
        torch.ops.aten.threshold_backward(grad, f, 0.0, grad_input=out)
    else:
        out.copy_(grad)


def _forward_rows(act0: int, parents: List[int], kids: List[List[int]], acts: List[List[int]], outs: List[int],
                  xw: Tensor, s: Tensor, m_l: Optional[Tensor], w_s: Tensor, gw: List[Tensor], save: bool,
                  raw: Tensor, S: Tensor, G: Tensor, Fh: Tensor, s_in: Optional[Tensor], sp_in: List[Tensor]):
    """The recurrence over the window, into the buffers of ``_buffers``."""
    T, B = xw.size(0), xw.size(1)
    H = s.size(1)
    xw_t, raw_t = xw.unbind(0), raw.unbind(0)  # all per-step views in one call
    out_idx = torch.tensor(outs, device=s.device)
    for t in range(T):
        i = t if save else 0
        St = S[i]
        Sv, Gv, Fv = St.unbind(0), G[i].unbind(0), Fh[i].unbind(0)
        si = s
        if m_l is not None:
            si = torch.mul(s, m_l, out=s_in[t]) if s_in is not None else s * m_l
        hc0 = torch.addmm(xw_t[t], si, w_s).to(s.dtype)  # autocast: bf16 matmul
        torch.sigmoid(hc0[:, H:], out=Gv[0])
        _act(act0, hc0[:, :H], Fv[0])
        torch.lerp(s, Fv[0], Gv[0], out=Sv[0])  # s + g (f(h) - s), paper eq. 1
        for j in range(len(parents)):
            sp = Sv[parents[j]]
            spi = sp
            if m_l is not None:
                spi = torch.mul(sp, m_l, out=sp_in[j][t]) if len(sp_in) > 0 else sp * m_l
            ch = kids[j]
            hc = torch.mm(spi, gw[j]).to(s.dtype).view(B, 2 * len(ch), H).unbind(1)  # h_1, c_1, h_2, ...
            for k in range(len(ch)):
                torch.sigmoid(hc[2 * k + 1], out=Gv[ch[k]])
                _act(acts[j][k], hc[2 * k], Fv[ch[k]])
                torch.lerp(sp, Fv[ch[k]], Gv[ch[k]], out=Sv[ch[k]])  # paper eq. 2
        if len(outs) == 1:
            raw_t[t].copy_(Sv[outs[0]])
        else:
            torch.mean(St.index_select(0, out_idx), dim=[0], out=raw_t[t])
        s = raw_t[t]


def _backward_rows(act0: int, parents: List[int], kids: List[List[int]], acts: List[List[int]], outs: List[int],
                   d_raw: Tensor, raw: Tensor, S: Tensor, G: Tensor, Fh: Tensor, s_init: Tensor,
                   m_l: Optional[Tensor], w_sT: Tensor, gwT: List[Tensor], d_hc0: Tensor, d_hc: List[Tensor],
                   d_s: Tensor):
    """Backward recurrence over the window: fills d_hc0, d_hc (gradients of every
    matmul output) and d_s (of the initial state)."""
    T, B, H = raw.size(0), raw.size(1), raw.size(2)
    dS = raw.new_empty(S.size(1), B, H)
    dSv = dS.unbind(0)
    tmp, tmp2 = raw.new_empty(B, H), raw.new_empty(B, H)
    carry = torch.zeros_like(s_init)  # d loss / d s_t via step t+1
    carry_next = s_init.new_empty(B, H)
    inv = 1.0 / len(outs)
    d_raw_t, raw_t, d_hc0_t = d_raw.unbind(0), raw.unbind(0), d_hc0.unbind(0)
    for t in range(T - 1, -1, -1):
        Sv, Gv, Fv = S[t].unbind(0), G[t].unbind(0), Fh[t].unbind(0)
        dS.zero_()
        d_out = carry.add_(d_raw_t[t])
        for o in outs:
            dSv[o].add_(d_out, alpha=inv)
        # Groups in decreasing parent order: a node's gradient is complete once
        # every group reading it (all have larger parents) has been processed.
        for j in range(len(parents) - 1, -1, -1):
            p, ch = parents[j], kids[j]
            d_hcj = d_hc[j][t]
            dh = d_hcj.view(B, 2 * len(ch), H).unbind(1)  # d h_1, d c_1, ...
            for k in range(len(ch)):
                _node_backward(dSv[ch[k]], Sv[p], Gv[ch[k]], Fv[ch[k]], acts[j][k], dh[2 * k], dh[2 * k + 1],
                               dSv[p], tmp, tmp2)
            _input_grad(dSv[p], d_hcj, gwT[j], m_l)
        carry, carry_next = carry_next.zero_(), carry
        d_hc0t = d_hc0_t[t]
        sp = s_init if t == 0 else raw_t[t - 1]
        _node_backward(dSv[0], sp, Gv[0], Fv[0], act0, d_hc0t[:, :H], d_hc0t[:, H:], carry, tmp, tmp2)
        _input_grad(carry, d_hc0t, w_sT, m_l)
    d_s.copy_(carry)


def _node_backward(ds: Tensor, sp: Tensor, g: Tensor, f: Tensor, a: int, d_h: Tensor, d_c: Tensor,
                   d_parent: Tensor, tmp: Tensor, tmp2: Tensor):
    """s = lerp(sp, f(h), g), g = sigmoid(c): grads for h, c and (added) sp."""
    torch.mul(ds, g, out=tmp)  # d f(h)
    d_parent.add_(ds).sub_(tmp)  # ds (1 - g)
    _act_backward(a, f, tmp, d_h)
    torch.sub(f, sp, out=tmp2)
    tmp2.mul_(ds)  # d g
    torch.ops.aten.sigmoid_backward(tmp2, g, grad_input=d_c)


def _input_grad(d_parent: Tensor, d_hc: Tensor, wT: Tensor, m_l: Optional[Tensor]):
    """d_parent += (d_hc W^T) * m_l: the parent state entered the matmul masked."""
    if m_l is None:
        d_parent.addmm_(d_hc, wT)
    else:
        d_parent.addcmul_(torch.mm(d_hc, wT), m_l)


def _codes(plan):
    """The plan as lists of activation codes and node indices: node 0's activation, each group's parent,
    its nodes and their activations, the output nodes."""
    act0, groups, outs = plan
    code = ACT.index
    return (code(act0), [p for p, _ in groups], [[l for l, _ in ch] for _, ch in groups],
            [[code(a) for _, a in ch] for _, ch in groups], list(outs))


def _buffers(plan, xw, s, m_l, save: bool):
    """The window's output and, per step and node, state, gate sigmoid(c) and activation
    f(h) (only the last step's when nothing will be differentiated), plus the masked
    matmul inputs when there is a mask to differentiate through."""
    T, B, H2 = xw.shape
    H = H2 // 2
    N = 1 + sum(len(ch) for _, ch in plan[1])
    new = lambda *shape: s.new_empty(*shape)  # noqa: E731
    S, G, Fh = (new(T if save else 1, N, B, H) for _ in range(3))
    s_in = new(T, B, H) if save and m_l is not None else None  # node 0's masked input
    sp_in = [new(T, B, H) for _ in plan[1]] if save and m_l is not None else []
    return new(T, B, H), (S, G, Fh, s_in, sp_in)


def weight_grads(groups, s, raw, saved, d_hc0, d_hc) -> list[Tensor]:
    """The deferred weight gradients [d_ws, *d_gw]: per matrix, one matmul over the whole
    window with that matrix's inputs as they entered it (masked when the forward saved
    them so)."""
    S, _, _, s_in, sp_in = saved
    T, B, H = raw.shape
    if s_in is None:
        s_in, sp_in = torch.cat([s[None], raw[:-1]]), [S[:, p] for p, _ in groups]
    pairs = [(s_in, d_hc0)] + list(zip(sp_in, d_hc))
    return [torch.mm(x.reshape(T * B, H).t(), d.view(T * B, -1)) for x, d in pairs]


def _forward(plan, xw, s, m_l, w_s, gw, save: bool):
    raw, saved = _buffers(plan, xw, s, m_l, save)
    with torch.no_grad():
        _forward_rows(*_codes(plan), xw, s, m_l, w_s, list(gw), save, raw, *saved)
    return raw, saved


class _CellBPTT(torch.autograd.Function):
    @staticmethod
    def forward(ctx, plan, xw, s, m_l, w_s, *gw):
        raw, (S, G, Fh, s_in, sp_in) = _forward(plan, xw, s, m_l, w_s, gw, save=True)
        ctx.plan = plan
        ctx.save_for_backward(s, m_l, w_s, raw, S, G, Fh, *gw, s_in, *sp_in)
        ctx.xw_dtype = xw.dtype
        return raw

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_raw):
        groups = ctx.plan[1]
        s_init, m_l, w_s, raw, S, G, Fh, *rest = ctx.saved_tensors
        gw, s_in, sp_in = rest[: len(groups)], rest[len(groups)], rest[len(groups) + 1 :]
        T, B, H = raw.shape
        d_raw = d_raw.contiguous()
        d_hc0 = raw.new_empty(T, B, 2 * H)
        d_hc = [raw.new_empty(T, B, 2 * H * len(ch)) for _, ch in groups]
        d_s = s_init.new_empty(B, H)  # d loss / d s_init
        # transposed once: the per-step input-gradient matmuls then read contiguous rows
        w_sT, gwT = w_s.t().contiguous(), [w.t().contiguous() for w in gw]
        _backward_rows(*_codes(ctx.plan), d_raw, raw, S, G, Fh, s_init, m_l, w_sT, gwT, d_hc0, d_hc, d_s)
        d_ws, *d_gw = weight_grads(groups, s_init, raw, (S, G, Fh, s_in, sp_in), d_hc0, d_hc)
        return (None, d_hc0.to(ctx.xw_dtype), d_s, None, d_ws.to(w_s.dtype), *(d.to(w.dtype) for d, w in zip(d_gw, gw)))


def cell_bptt(plan, xw, s, m_l, w_s, gw):
    """States s_1..s_T [T, B, H] of the cell ``plan`` over the window (see module doc)."""
    tensors = (xw, s, w_s, *gw)
    if torch.is_grad_enabled() and any(x.requires_grad for x in tensors):
        return _CellBPTT.apply(plan, xw, s, m_l, w_s, *gw)
    return _forward(plan, xw, s, m_l, w_s, gw, save=False)[0]
