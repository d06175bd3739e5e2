"""Lanes: independent pieces of CPU work, each on its own 1-thread worker, all at once.

Why: the ENAS cell's recurrence (search_spaces/enas_rnn/kernels/bptt.py) is a chain of small
[B, H] x [H, 2H k] matmuls and element-wise ops, one time step after another. On CPU
such a matmul gains little from a second intra-op thread (fork/join, and moving the
inputs just written on one core to the other, cost about what the second core saves),
and the element-wise ops are under ATen's parallel grain size, so they run on one core
anyway: the cell forward took as long on 1 thread as on 2 (measured with benchmarks/throughput.py). So
the cores get separate work instead: search_spaces/enas_rnn/kernels/pipeline.py runs the
recurrence on one lane and the decoder's GEMMs on another (and, with more threads, the
recurrence's rows in several blocks, which are independent sequences). A lane that runs
a Python loop of many small ops holds the GIL between every two ops and the lanes end
up taking turns, so the recurrence runs as a TorchScript-compiled loop.

The workers are persistent and set their intra-op thread count to 1 once, when they
start. The caller's thread count is never switched back and forth: torch.set_num_threads
on one thread also changes the count the caller's matmuls use until the caller sets it
again (measured with benchmarks/throughput.py), which is what made a per-step switching
2.5-3.5x slower.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Callable

import torch

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_lock = threading.Lock()
# One set of lanes at a time: lanes wait on each other, so two callers' lanes sharing
# the pool could each hold a worker while their partners queue behind them, for ever.
_running = threading.Lock()


def row_blocks(batch: int, blocks: int) -> list[slice]:
    """``batch`` rows in ``blocks`` contiguous, near-equal ranges (at most one per row)."""
    blocks = max(1, min(blocks, batch))
    edges = [batch * i // blocks for i in range(blocks + 1)]
    return [slice(a, b) for a, b in zip(edges, edges[1:])]


def dispatch_mode_on() -> bool:
    """A TorchDispatchMode (FlopCounterMode, fake tensors) is active on this thread. Modes
    are per thread: work on a worker would escape it, so such calls stay on the caller's."""
    try:
        from torch.utils._python_dispatch import _get_current_dispatch_mode
    except ImportError:
        return False
    return _get_current_dispatch_mode() is not None


def _one_thread(ready: threading.Barrier) -> None:
    # ATen sets a thread's count from the process-wide setting the first time the thread
    # asks for it; ask now, so the 1 below is this thread's own and stays after the caller
    # restores the process-wide setting.
    torch.get_num_threads()
    torch.set_num_threads(1)
    ready.wait()


def _workers(n: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < n:
            if _pool is not None:
                _pool.shutdown(wait=True)
            keep = torch.get_num_threads()
            ready = threading.Barrier(n + 1)
            _pool = ThreadPoolExecutor(n, thread_name_prefix="enas-rows")
            for _ in range(n):  # start every worker now, each blocked until all have started
                _pool.submit(_one_thread, ready)
            ready.wait()
            # torch.set_num_threads also records the count for threads started later;
            # give that back to the caller's setting (its own thread is unaffected).
            torch.set_num_threads(keep)
            _pool_size = n
        return _pool


def _forget_workers() -> None:
    """In a forked child the pool's threads do not exist: start a new pool if needed."""
    global _pool, _pool_size, _lock, _running
    _pool, _pool_size, _lock, _running = None, 0, threading.Lock(), threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_workers)


def run_lanes(lanes: list[Callable[[], None]]) -> None:
    """Every lane at once, each on its own 1-thread worker (a single lane on the caller),
    without autograd recording, as inside an autograd.Function; callers on other threads
    wait their turn. Returns when all have ended, then re-raises the first failed lane's
    error."""
    def task(fn: Callable[[], None]) -> None:
        with torch.no_grad():  # grad mode is per thread; workers start with it on
            fn()

    if len(lanes) == 1:
        return task(lanes[0])
    with _running:  # another thread's lanes finish first (see _running)
        futures = [_workers(len(lanes)).submit(task, fn) for fn in lanes]
        wait(futures)  # every lane done (or failed) before anything is raised or read
    for f in futures:
        f.result()  # re-raises a worker's exception here

