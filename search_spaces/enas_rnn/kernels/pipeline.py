"""The cell's recurrence and the tied decoder on separate CPU cores, pipelined over time.

Why: the recurrence (bptt.py) is a chain of small matmuls, one time step after
another; the decoder ([T B, H] x [H, V]: 60 % of a PTB step's FLOPs) is one large GEMM
that needs only the states. Splitting the recurrence's rows over both cores of a
2-core machine kept both busy, but at 32 rows a core's matmuls run at ~45 GFLOP/s
against ~55 at 64 rows, and the element-wise ops and interpreter cost the same per
block: one core runs the 64-row recurrence in ~175 ms of core time per forward window,
two cores in ~250 (measured with benchmarks/throughput.py). Here the recurrence keeps whole
rows on fewer cores, and the other cores compute the decoder for every chunk of steps as
soon as the chunk's states exist:

* forward: R lanes (row blocks of the recurrence) run the window in chunks of steps;
  D lanes turn each finished chunk into logits, or, given the targets, into the chunk's
  softmax and cross-entropy while its logits are still in cache (the [T B, V] logits
  are then never stored). An R lane that is done takes chunks too.
* backward: D lanes compute the decoder's input gradient chunk by chunk from the last
  step (with targets, softmax - one_hot first); R lanes run the backward recurrence over
  a chunk as soon as its gradient exists, and compute the next chunk's gradient
  themselves rather than wait for it. Then every lane takes the independent
  weight-gradient GEMMs: the decoder's in vocabulary blocks, the cell's one per matrix
  (once the recurrence is done).

Same equations and the same buffers as cell_bptt followed by the decoder and
token_cross_entropy; tests/test_fast_paths.py checks values and gradients against the
reference cell, F.linear and F.cross_entropy.
"""
from __future__ import annotations

import threading

import torch
import torch.nn.functional as F

from .lanes import dispatch_mode_on, row_blocks, run_lanes
from .cross_entropy import nll_from_softmax, softmax_to_grad_, token_cross_entropy
from .bptt import (
    _backward_rows, _buffers, _codes, _forward_rows, backward_block, cell_bptt, compiled, forward_block, weight_grads,
)

CHUNK_ROWS = 256  # decoder rows per chunk: big enough for a GEMM near the large-matmul rate
VOCAB_BLOCK = 1024  # rows of the decoder's weight gradient per job
MIN_ROWS = 16  # fewer rows per recurrence block: its matmuls are too thin to be worth a core


class _Aborted(Exception):
    """Another lane failed; this one stops quietly and the failure is raised instead."""


class _Countdown:
    """Per chunk, how many lanes still have to finish it; waiting lanes wake when it is
    done, or raise _Aborted once any lane has failed (so none waits forever)."""

    def __init__(self, chunks: int, parties: int):
        self.left, self.failed = [parties] * chunks, False
        self.cv = threading.Condition()

    def arrive(self, i: int) -> None:
        with self.cv:
            self.left[i] -= 1
            if self.left[i] == 0:
                self.cv.notify_all()

    def is_done(self, i: int) -> bool:
        with self.cv:
            return self.left[i] == 0

    def wait(self, i: int) -> None:
        with self.cv:
            self.cv.wait_for(lambda: self.left[i] == 0 or self.failed)
            if self.failed:
                raise _Aborted

    def fail(self) -> None:
        with self.cv:
            self.failed = True
            self.cv.notify_all()


class _Queue:
    """Items handed out one at a time to whichever lane asks first."""

    def __init__(self, items):
        self.items, self.next, self.lock = list(items), 0, threading.Lock()

    def take(self):
        with self.lock:
            if self.next == len(self.items):
                return None
            self.next += 1
            return self.items[self.next - 1]

    def run(self, fn=lambda job: job()) -> None:
        for item in iter(self.take, None):
            fn(item)


def _run(lanes, syncs) -> None:
    """run_lanes, with a failing lane waking every other lane (which then ends quietly)."""
    def guarded(fn):
        def lane():
            try:
                fn()
            except _Aborted:
                pass
            except BaseException:
                for sync in syncs:
                    sync.fail()
                raise
        return lane

    run_lanes([guarded(fn) for fn in lanes])


def lane_plan(batch: int, device: torch.device, lanes: tuple[int, int] | None = None):
    """(recurrence row blocks, number of decoder lanes), or None where the plain path runs:
    off CPU, under autocast, on one thread, and under a dispatch mode such as
    FlopCounterMode (modes are per thread: work on a worker would escape it). Half the
    threads run the recurrence (at least MIN_ROWS rows each), the rest the decoder.
    ``lanes`` forces (row blocks, decoder lanes) (tests)."""
    if lanes is None:
        n = torch.get_num_threads()
        if device.type != "cpu" or n < 2 or torch.is_autocast_enabled("cpu") or dispatch_mode_on():
            return None
        r = max(1, min(n // 2, batch // MIN_ROWS))
        lanes = (r, n - r)
    r, d = lanes
    return row_blocks(batch, r), d


def _chunks(T: int, B: int) -> list[tuple[int, int]]:
    """Time chunks of ~CHUNK_ROWS rows, the last ones of 2 and 1 steps: the last chunk is
    where the forward's decoder trails the recurrence and where the backward's recurrence
    waits for its first gradient, so a short one keeps both waits short."""
    steps = max(1, -(-CHUNK_ROWS // B))
    ends, t = [], T
    for n in [1, 2] if steps > 2 else []:
        if t > 0:
            ends.append(t)
            t -= n
    ends += list(range(t, 0, -steps))
    bounds = [0] + ends[::-1]
    return list(zip(bounds, bounds[1:]))


def _forward(plan, xw, s, m_l, w_s, gw, m_o, w_dec, target, save: bool, rows, d: int):
    """States, then logits [T, B, V] (target None) or softmax [T, B, V] and per-token
    cross-entropy [T, B]; plus the decoder's input and the cell's saved buffers."""
    T, B, H2 = xw.shape
    H, V = H2 // 2, w_dec.size(0)
    raw, saved = _buffers(plan, xw, s, m_l, save)
    out = raw if m_o is None else raw.new_empty(T, B, H)  # the decoder's input
    # logits, or with a target their softmax (kept only for the backward: without one,
    # each chunk's softmax is a temporary)
    probs = raw.new_empty(T, B, V) if target is None or save else None
    nll = raw.new_empty(T, B) if target is not None else None
    chunks, gw = _chunks(T, B), list(gw)
    done = _Countdown(len(chunks), len(rows))
    todo = _Queue(range(len(chunks)))
    loop, codes = compiled(_forward_rows), _codes(plan)

    def decode(i):
        done.wait(i)
        t0, t1 = chunks[i]
        if m_o is not None:
            torch.mul(raw[t0:t1], m_o, out=out[t0:t1])
        x = out[t0:t1].view(-1, H)
        if target is None:
            torch.mm(x, w_dec.t(), out=probs[t0:t1].view(-1, V))
            return
        # The loss of the chunk while its logits are in cache, as token_cross_entropy
        # computes it; the softmax is kept where there will be a backward.
        logits = x @ w_dec.t()
        p = probs[t0:t1].view(-1, V) if probs is not None else torch.empty_like(logits)
        torch._softmax(logits, 1, False, out=p)
        nll[t0:t1] = nll_from_softmax(logits, p, target[t0:t1].reshape(-1)).view(t1 - t0, -1)

    def recur(r):
        for i, (t0, t1) in enumerate(chunks):
            forward_block(loop, codes, xw, s, m_l, w_s, gw, save, raw, saved, r, t0, t1)
            done.arrive(i)
        todo.run(decode)

    _run([lambda r=r: recur(r) for r in rows] + [lambda: todo.run(decode)] * d, [done])
    return raw, probs, nll, out, saved


class _CellDecoder(torch.autograd.Function):
    @staticmethod
    def forward(ctx, plan, rows, d, target, xw, s, m_l, w_s, m_o, w_dec, *gw):
        raw, probs, nll, out, (S, G, Fh, s_in, sp_in) = _forward(plan, xw, s, m_l, w_s, gw, m_o, w_dec, target,
                                                                 True, rows, d)
        ctx.plan, ctx.rows, ctx.d, ctx.used = plan, rows, d, False
        ctx.save_for_backward(s, m_l, w_s, m_o, w_dec, raw, out, target, S, G, Fh, s_in, *gw, *sp_in)
        ctx.set_materialize_grads(False)
        if target is None:
            return raw, probs
        ctx.probs = probs  # becomes the logits' gradient in place (not a saved tensor: it is overwritten)
        return raw, nll.mean()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_raw, d_second):
        """d_second: the gradient of the logits, or of the mean cross-entropy."""
        groups, rows = ctx.plan[1], ctx.rows
        s, m_l, w_s, m_o, w_dec, raw, out, target, S, G, Fh, s_in, *rest = ctx.saved_tensors
        gw, sp_in = rest[: len(groups)], rest[len(groups):]
        saved = (S, G, Fh, s_in, list(sp_in))
        T, B, H = raw.shape
        V = w_dec.size(0)
        chunks = _chunks(T, B)
        d_tot = raw.new_empty(T, B, H)  # gradient of the states: decoder's + the caller's own
        d_hc0 = raw.new_empty(T, B, 2 * H)
        d_hc = [raw.new_empty(T, B, 2 * H * len(ch)) for _, ch in groups]
        d_s = [s.new_empty(B, H) for _ in chunks]  # gradient of the state before each chunk
        w_sT, gwT = w_s.t().contiguous(), [w.t().contiguous() for w in gw]
        loop, codes = compiled(_backward_rows), _codes(ctx.plan)
        if target is None:
            d_logits = None if d_second is None else d_second.contiguous()
        else:  # softmax - one_hot, scaled, chunk by chunk in state_grad
            if ctx.used:
                raise RuntimeError("the cross-entropy pipeline does not support a second backward (retain_graph)")
            ctx.used = True
            d_logits, scale = (None, None) if d_second is None else (ctx.probs, d_second / target.numel())
            del ctx.probs
        d_w = None if d_logits is None else torch.empty_like(w_dec)

        ready = _Countdown(len(chunks), 1)
        recurred = _Countdown(1, len(rows))
        grads = _Queue(reversed(range(len(chunks))))
        cell_jobs, (d_ws, *d_gw) = weight_grads(groups, s, raw, saved, d_hc0, d_hc)
        cell_jobs = _Queue(cell_jobs)
        vocab = range(0, V if d_logits is not None else 0, VOCAB_BLOCK)
        dec_jobs = _Queue(slice(v, min(v + VOCAB_BLOCK, V)) for v in vocab)

        def state_grad(i):  # d loss / d raw over chunk i, from the decoder and the caller
            t0, t1 = chunks[i]
            g = d_tot[t0:t1]
            if d_logits is None:
                g.zero_()
            else:
                dl = d_logits[t0:t1].view(-1, V)
                if target is not None:  # d CE / d logits = (softmax - one_hot) / tokens
                    softmax_to_grad_(dl, target[t0:t1].reshape(-1), scale)
                torch.mm(dl, w_dec, out=g.view(-1, H))
                if m_o is not None:
                    g.mul_(m_o)
            if d_raw is not None:
                g.add_(d_raw[t0:t1])
            ready.arrive(i)

        def decoder_weight(v):  # rows v of d W = d_logits^T out, once every chunk's exists
            for i in range(len(chunks)):
                ready.wait(i)
            torch.mm(d_logits.view(T * B, V)[:, v].t(), out.view(T * B, H), out=d_w[v])

        def recur(r):
            for i in reversed(range(len(chunks))):
                # Rather than wait for chunk i's gradient (a decoder lane is computing
                # it), compute the next chunk's: each chunk's decoder gradient takes
                # longer than its recurrence, so a recurrence lane would otherwise idle.
                while not ready.is_done(i) and (j := grads.take()) is not None:
                    state_grad(j)
                ready.wait(i)
                t0, t1 = chunks[i]
                carry = d_s[i + 1] if i + 1 < len(chunks) else None
                backward_block(loop, codes, d_tot, raw, saved, s, m_l, w_sT, gwT, d_hc0, d_hc, d_s[i], carry, r,
                               t0, t1)
            recurred.arrive(0)
            recurred.wait(0)
            cell_jobs.run()
            dec_jobs.run(decoder_weight)

        def decoder_lane():
            grads.run(state_grad)
            dec_jobs.run(decoder_weight)
            recurred.wait(0)
            cell_jobs.run()

        _run([lambda r=r: recur(r) for r in rows] + [decoder_lane] * ctx.d, [ready, recurred])
        return (None, None, None, None, d_hc0, d_s[0], None, d_ws, None, d_w, *d_gw)


def cell_and_decoder(plan, xw, s, m_l, w_s, gw, m_o, w_dec, target=None, lanes: tuple[int, int] | None = None):
    """States s_1..s_T [T, B, H] of the cell ``plan`` over the window, and the bias-free
    decoder ``w_dec`` [V, H] on the states times ``m_o`` (the output dropout mask, or
    None): its logits [T, B, V], or given ``target`` [T, B] the mean token cross-entropy
    (token_cross_entropy of the logits). Pipelined over the CPU's cores (module doc)
    where lane_plan allows; else cell_bptt, F.linear and token_cross_entropy."""
    plan_lanes = lane_plan(xw.size(1), xw.device, lanes)
    if plan_lanes is None:
        raw = cell_bptt(plan, xw, s, m_l, w_s, gw)
        logits = F.linear(raw if m_o is None else raw * m_o, w_dec)
        if target is None:
            return raw, logits
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 autocast: loss in fp32
        return raw, token_cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1))
    rows, d = plan_lanes
    if torch.is_grad_enabled() and any(x.requires_grad for x in (xw, s, w_s, w_dec, *gw)):
        return _CellDecoder.apply(plan, rows, d, target, xw, s, m_l, w_s, m_o, w_dec, *gw)
    raw, probs, nll, _, _ = _forward(plan, xw, s, m_l, w_s, gw, m_o, w_dec, target, False, rows, d)
    return raw, probs if target is None else nll.mean()
