"""Keep freed host memory in the process instead of handing it back to the OS.

PyTorch has no caching allocator for CPU tensors; they come from the C library's
malloc. glibc serves every block above 32 MB with a fresh mmap and unmaps it on free,
so each large tensor of a step (the PTB search's [2240, 10000] logits and their
gradient are 90 MB each) is page-faulted in again, every step. That cost 150-180 ms of
an 850 ms RNN step at hidden 256 (measured with benchmarks/throughput.py). Serving large blocks from the
heap and never trimming it makes the second step reuse the first step's pages.

The price: the process keeps its peak memory until it exits, which is what a
training run does anyway. Set ENAS_KEEP_FREED_MEMORY=0 to leave malloc alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc <malloc.h>


def keep_freed_memory() -> bool:
    """Tell glibc malloc not to mmap large blocks nor trim the heap. True if applied."""
    if os.environ.get("ENAS_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False
    # mallopt returns 1 on success. If the heap cannot grow, glibc still falls back to mmap.
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
