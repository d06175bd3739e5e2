"""search_spaces/enas_rnn/kernels/lanes.py: lanes run at once on 1-thread workers and report errors; row blocks cover
the batch; the pipeline's lane plan (search_spaces/enas_rnn/kernels/pipeline.py)."""
import threading

import pytest
import torch

from search_spaces.enas_rnn.kernels.lanes import row_blocks, run_lanes
from search_spaces.enas_rnn.kernels.pipeline import MIN_ROWS, lane_plan


def covered(blocks):
    return [i for b in blocks for i in range(b.start, b.stop)]


def test_row_blocks_partition_the_batch():
    assert row_blocks(64, 2) == [slice(0, 32), slice(32, 64)]
    for batch, n in [(5, 3), (7, 2), (2, 5), (9, 1)]:
        blocks = row_blocks(batch, n)
        assert covered(blocks) == list(range(batch)) and len(blocks) == min(n, batch)


def test_lane_plan_splits_the_threads():
    cpu = torch.device("cpu")
    keep = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert lane_plan(64, cpu) == ([slice(0, 64)], 1)  # recurrence on one core, decoder on the other
        torch.set_num_threads(4)
        assert lane_plan(64, cpu) == ([slice(0, 32), slice(32, 64)], 2)
        assert lane_plan(2 * MIN_ROWS - 1, cpu) == ([slice(0, 2 * MIN_ROWS - 1)], 3)
        torch.set_num_threads(1)
        assert lane_plan(64, cpu) is None  # nothing to run beside the recurrence
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.set_num_threads(2)
            assert lane_plan(64, cpu) is None
    finally:
        torch.set_num_threads(keep)
    assert lane_plan(64, torch.device("cuda")) is None  # the GPU parallelises itself
    assert lane_plan(5, cpu, lanes=(2, 1)) == ([slice(0, 2), slice(2, 5)], 1)
    assert lane_plan(8, cpu, lanes=(2, 0)) == ([slice(0, 4), slice(4, 8)], 0)  # recurrence lanes decode too


def test_run_lanes_runs_every_lane_on_workers_without_autograd():
    out = torch.zeros(3)
    w = torch.ones(3, requires_grad=True)
    seen = []
    together = threading.Barrier(3, timeout=20)  # broken (an error) unless all three run at once

    def lane(i):
        def fn():
            seen.append((threading.current_thread().name, torch.is_grad_enabled(), torch.get_num_threads()))
            out[i] = (w[i] * (i + 1)).detach()
            together.wait()
        return fn

    keep = torch.get_num_threads()
    run_lanes([lane(i) for i in range(3)])
    assert out.tolist() == [1, 2, 3]
    assert all(name.startswith("enas-rows") and not grad and n == 1 for name, grad, n in seen)
    assert len({name for name, _, _ in seen}) == 3  # at once (the barrier): three workers
    assert torch.get_num_threads() == keep  # the caller's setting is untouched


def test_run_lanes_raises_a_workers_error():
    def fails():
        raise ValueError("lane 2 failed")

    with pytest.raises(ValueError, match="lane 2 failed"):
        run_lanes([lambda: None, fails])


def test_callers_on_two_threads_take_turns():
    """Two callers whose lanes wait on each other, their submissions interleaved: caller
    A's first lane and caller B's first lane would hold both workers while their partners
    queue behind them, for ever. run_lanes lets one caller's lanes run at a time."""
    run_lanes([lambda: None, lambda: None])  # a pool of two workers
    b_started, errors = threading.Event(), []

    def pair(first_started=None):
        partners = threading.Barrier(2, timeout=20)  # broken (an error) if the partner never runs

        def first():
            if first_started is not None:
                first_started.set()
            partners.wait()
        return [first, partners.wait]

    class AfterB(list):  # A's second lane is submitted once B's first runs (or 2 s later)
        def __iter__(self):
            yield self[0]
            b_started.wait(timeout=2)
            yield self[1]

    def caller(lanes):
        try:
            run_lanes(lanes)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    a = threading.Thread(target=caller, args=(AfterB(pair()),))
    a.start()
    b = threading.Thread(target=caller, args=(pair(b_started),))
    b.start()
    a.join(timeout=120)
    b.join(timeout=120)
    assert not errors, errors


def test_forked_child_starts_its_own_workers():
    """A pool inherited through fork has no threads; the child must not wait on it."""
    import multiprocessing

    run_lanes([lambda: None, lambda: None])  # pool exists here
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as p:
        assert p.apply_async(_sum_in_lanes, (6,)).get(timeout=60) == 15  # hangs without the reset


def _sum_in_lanes(n):
    out = torch.zeros(n)
    run_lanes([lambda r=r: out[r].copy_(torch.arange(n)[r].float()) for r in row_blocks(n, 2)])
    return int(out.sum())
