"""enas/row_parallel.py: row blocks cover the batch, run on workers, and report errors."""
import threading

import pytest
import torch

from enas.row_parallel import MIN_ROWS, row_blocks, run_rows


def covered(blocks):
    return [i for b in blocks for i in range(b.start, b.stop)]


def test_row_blocks_partition_the_batch():
    keep = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert row_blocks(64, torch.device("cpu")) == [slice(0, 32), slice(32, 64)]
        assert row_blocks(2 * MIN_ROWS - 1, torch.device("cpu")) == [slice(0, 2 * MIN_ROWS - 1)]
        torch.set_num_threads(1)
        assert row_blocks(64, torch.device("cpu")) == [slice(0, 64)]
    finally:
        torch.set_num_threads(keep)
    assert row_blocks(64, torch.device("cuda")) == [slice(0, 64)]  # the GPU parallelises itself
    for batch, n in [(5, 3), (7, 2), (2, 5)]:
        blocks = row_blocks(batch, torch.device("cpu"), blocks=n)
        assert covered(blocks) == list(range(batch)) and len(blocks) == min(n, batch)


def test_run_rows_runs_every_block_on_workers_without_autograd():
    out = torch.zeros(6)
    w = torch.ones(6, requires_grad=True)
    seen = []

    def fn(rows):
        seen.append((threading.current_thread().name, torch.is_grad_enabled(), torch.get_num_threads()))
        out[rows] = (w[rows] * (rows.start + 1)).detach()

    keep = torch.get_num_threads()
    run_rows(fn, row_blocks(6, torch.device("cpu"), blocks=3))
    assert out.tolist() == [1, 1, 3, 3, 5, 5]
    assert all(name.startswith("enas-rows") and not grad and n == 1 for name, grad, n in seen)
    assert torch.get_num_threads() == keep  # the caller's setting is untouched


def test_run_rows_raises_a_workers_error():
    def fn(rows):
        if rows.start == 2:
            raise ValueError("block 2 failed")

    with pytest.raises(ValueError, match="block 2 failed"):
        run_rows(fn, row_blocks(4, torch.device("cpu"), blocks=2))


def test_forked_child_starts_its_own_workers():
    """A pool inherited through fork has no threads; the child must not wait on it."""
    import multiprocessing

    run_rows(lambda rows: None, row_blocks(4, torch.device("cpu"), blocks=2))  # pool exists here
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as p:
        assert p.apply_async(_sum_in_blocks, (6,)).get(timeout=60) == 15  # hangs without the reset


def _sum_in_blocks(n):
    out = torch.zeros(n)
    run_rows(lambda rows: out[rows].copy_(torch.arange(n)[rows].float()), row_blocks(n, torch.device("cpu"), blocks=2))
    return int(out.sum())
