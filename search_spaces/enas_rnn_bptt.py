"""The ENAS cell unrolled over a BPTT window, with a hand-written backward pass.

Why not plain autograd: at hidden 256 and batch 64 each time step is a few [64, H] x
[H, 2H k] matmuls and ~40 tiny element-wise ops. Through autograd every op also builds
a graph node, and every slice of a node's [h, c] product costs a zero-filled gradient
buffer in the backward pass. On CPU that book-keeping took as long as the cell's
matmuls (benchmarks/RESULTS.md). This function runs the same equations (paper eq. 1-2,
see enas_rnn.py) with preallocated buffers and

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

import torch

aten = torch.ops.aten

# activation name -> (f(x, out=...), df given the output: grad * f'(x) into out).
# Every derivative is a function of the output, so the forward saves f(h) only.
ACT = {
    "tanh": (lambda x, out: torch.tanh(x, out=out), lambda f, g, out: aten.tanh_backward.grad_input(g, f, grad_input=out)),
    "sigmoid": (lambda x, out: torch.sigmoid(x, out=out), lambda f, g, out: aten.sigmoid_backward.grad_input(g, f, grad_input=out)),
    "relu": (lambda x, out: torch.clamp_min(x, 0, out=out), lambda f, g, out: aten.threshold_backward.grad_input(g, f, 0, grad_input=out)),
    "identity": (lambda x, out: out.copy_(x), lambda f, g, out: out.copy_(g)),
}


def _forward(plan, xw, s, m_l, w_s, gw, save: bool):
    act0, groups, outs = plan
    T, B, H2 = xw.shape
    H = H2 // 2
    N = 1 + sum(len(ch) for _, ch in groups)
    dtype = s.dtype
    new = lambda *shape: s.new_empty(*shape)  # noqa: E731
    raw = new(T, B, H)
    # Per step and node: state, gate sigmoid(c), activation f(h). Only the last step's
    # are kept when nothing will be differentiated.
    S, G, Fh = (new(T if save else 1, N, B, H) for _ in range(3))
    s_in = new(T, B, H) if save and m_l is not None else None  # node 0's masked input
    sp_in = [new(T, B, H) for _ in groups] if save and m_l is not None else None
    f0 = ACT[act0][0]
    fs = [[ACT[a][0] for _, a in ch] for _, ch in groups]
    out_idx = torch.tensor(outs, device=s.device)
    # unbind: all per-step / per-node views in one call each (indexing costs one op per view)
    xw_t, raw_t = xw.unbind(0), raw.unbind(0)
    s_in_t = s_in.unbind(0) if s_in is not None else [None] * T
    sp_in_t = [x.unbind(0) for x in sp_in] if sp_in is not None else [[None] * T for _ in groups]
    for t in range(T):
        i = t if save else 0
        St, (Sv, Gv, Fv) = S[i], (x[i].unbind(0) for x in (S, G, Fh))
        si = s if m_l is None else torch.mul(s, m_l, out=s_in_t[t])
        h, c = torch.addmm(xw_t[t], si, w_s).to(dtype).split(H, dim=1)  # autocast: bf16 matmul
        torch.sigmoid(c, out=Gv[0])
        f0(h, Fv[0])
        torch.lerp(s, Fv[0], Gv[0], out=Sv[0])  # s + g (f(h) - s), paper eq. 1
        for j, ((p, ch), w, f) in enumerate(zip(groups, gw, fs)):
            sp = Sv[p]
            spi = sp if m_l is None else torch.mul(sp, m_l, out=sp_in_t[j][t])
            hc = (spi @ w).to(dtype).view(B, 2 * len(ch), H).unbind(1)  # h_1, c_1, h_2, c_2, ...
            for k, (l, _) in enumerate(ch):
                torch.sigmoid(hc[2 * k + 1], out=Gv[l])
                f[k](hc[2 * k], Fv[l])
                torch.lerp(sp, Fv[l], Gv[l], out=Sv[l])  # paper eq. 2
        if len(outs) == 1:
            raw_t[t].copy_(Sv[outs[0]])
        else:
            torch.mean(St.index_select(0, out_idx), 0, out=raw_t[t])
        s = raw_t[t]
    return raw, (S, G, Fh, s_in, sp_in)


class _CellBPTT(torch.autograd.Function):
    @staticmethod
    def forward(ctx, plan, xw, s, m_l, w_s, *gw):
        raw, (S, G, Fh, s_in, sp_in) = _forward(plan, xw, s, m_l, w_s, gw, save=True)
        ctx.plan = plan
        ctx.save_for_backward(s, m_l, w_s, raw, S, G, Fh, *gw, s_in, *(sp_in or ()))
        ctx.xw_dtype = xw.dtype
        return raw

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_raw):
        act0, groups, outs = ctx.plan
        s_init, m_l, w_s, raw, S, G, Fh, *rest = ctx.saved_tensors
        gw, s_in, sp_in = rest[: len(groups)], rest[len(groups)], rest[len(groups) + 1 :]
        T, B, H = raw.shape
        N = S.size(1)
        d_raw = d_raw.contiguous()
        d_hc0 = raw.new_empty(T, B, 2 * H)
        d_hc = [raw.new_empty(T, B, 2 * H * len(ch)) for _, ch in groups]
        dS = raw.new_empty(N, B, H)
        dSv = dS.unbind(0)
        tmp, tmp2 = raw.new_empty(B, H), raw.new_empty(B, H)
        carry, carry_next = torch.zeros_like(s_init), s_init.new_empty(B, H)  # d loss / d s_t via step t+1
        df0 = ACT[act0][1]
        dfs = [[ACT[a][1] for _, a in ch] for _, ch in groups]
        inv = 1.0 / len(outs)
        # transposed once: the per-step input-gradient matmuls then read contiguous rows
        w_sT, gwT = w_s.t().contiguous(), [w.t().contiguous() for w in gw]
        d_raw_t, raw_t, d_hc0_t = d_raw.unbind(0), raw.unbind(0), d_hc0.unbind(0)
        d_hc_t = [x.unbind(0) for x in d_hc]

        def node_backward(ds, sp, g, f, df, d_h, d_c, d_parent):
            """s = lerp(sp, f(h), g), g = sigmoid(c): grads for h, c and (added) sp."""
            torch.mul(ds, g, out=tmp)  # d f(h)
            d_parent.add_(ds).sub_(tmp)  # ds (1 - g)
            df(f, tmp, d_h)
            torch.sub(f, sp, out=tmp2)
            tmp2.mul_(ds)  # d g
            aten.sigmoid_backward.grad_input(tmp2, g, grad_input=d_c)

        def input_grad(d_parent, d_hc, wT):
            """d_parent += (d_hc W^T) * m_l: the parent state entered the matmul masked."""
            if m_l is None:
                d_parent.addmm_(d_hc, wT)
            else:
                d_parent.addcmul_(d_hc @ wT, m_l)

        for t in range(T - 1, -1, -1):
            Sv, Gv, Fv = S[t].unbind(0), G[t].unbind(0), Fh[t].unbind(0)
            dS.zero_()
            d_out = carry.add_(d_raw_t[t])
            for o in outs:
                dSv[o].add_(d_out, alpha=inv)
            # Groups in decreasing parent order: a node's gradient is complete once
            # every group reading it (all have larger parents) has been processed.
            for j in range(len(groups) - 1, -1, -1):
                p, ch = groups[j]
                dh = d_hc_t[j][t].view(B, 2 * len(ch), H).unbind(1)  # d h_1, d c_1, ...
                for k, (l, _) in enumerate(ch):
                    node_backward(dSv[l], Sv[p], Gv[l], Fv[l], dfs[j][k], dh[2 * k], dh[2 * k + 1], dSv[p])
                input_grad(dSv[p], d_hc_t[j][t], gwT[j])
            carry, carry_next = carry_next.zero_(), carry
            dh, dc = d_hc0_t[t].split(H, dim=1)
            node_backward(dSv[0], s_init if t == 0 else raw_t[t - 1], Gv[0], Fv[0], df0, dh, dc, carry)
            input_grad(carry, d_hc0_t[t], w_sT)

        # Deferred weight gradients: one matmul over the whole window per matrix, with
        # each matrix's inputs as they entered it (masked when the forward saved them so).
        if s_in is None:
            s_in, sp_in = torch.cat([s_init[None], raw[:-1]]), [S[:, p] for p, _ in groups]
        d_ws = s_in.reshape(T * B, H).t() @ d_hc0.view(T * B, 2 * H)
        d_gw = [x.reshape(T * B, H).t() @ d.view(T * B, -1) for x, d in zip(sp_in, d_hc)]
        return (None, d_hc0.to(ctx.xw_dtype), carry, None, d_ws.to(w_s.dtype), *(d.to(w.dtype) for d, w in zip(d_gw, gw)))


def cell_bptt(plan, xw, s, m_l, w_s, gw):
    """States s_1..s_T [T, B, H] of the cell ``plan`` over the window (see module doc)."""
    tensors = (xw, s, w_s, *gw)
    if torch.is_grad_enabled() and any(x.requires_grad for x in tensors):
        return _CellBPTT.apply(plan, xw, s, m_l, w_s, *gw)
    return _forward(plan, xw, s, m_l, w_s, gw, save=False)[0]
