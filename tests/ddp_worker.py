"""One process of a torchrun launch in tests/test_distributed.py (not a test module).

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_worker.py MODE OUT ARGS...

MODE ``cli``: the enas CLI on ARGS; after ``run`` returns, every rank writes its
final weights to OUT/rank<r>.pt. MODE ``step``: ``step(config, data_dir)`` below,
every rank writes its result to OUT/rank<r>.pt. ``ENAS_TEST_FAIL_RANK=r`` makes rank r
raise in its first controller phase. ``ENAS_TEST_STOP_RANK=r`` with ``ENAS_TEST_STOP_IN``
(``epoch`` or ``final``): a SIGTERM reaches rank r alone while it scores that
derive's first candidate; every rank counts the candidates it scored there in
OUT/scored<r>.txt.
"""
from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import torch

from enas.train import distributed as dist


def _cpu(sd: dict) -> dict:
    return {k: v.detach().cpu().clone() for k, v in sd.items()}


def step(config, data_dir, out_dir) -> dict:
    """One shared step on the first minibatch, then one controller phase (no files).
    Under torchrun each rank computes its share; in one process the whole batch."""
    from enas.config import load_search
    from enas.nas.search import Search

    device = dist.setup(torch.device("cpu"))
    s = Search(load_search(config), Path(out_dir), data_dir, device, log=False)
    s.open_log(None)  # disabled RunLog: nothing written
    before = _cpu(s.supernet.state_dict())
    first = s.task.train_batches
    s.task.train_batches = lambda epoch: itertools.islice(first(epoch), 1)
    s.train_shared()
    after_step = _cpu(s.supernet.state_dict())
    rewards = []
    real_step = s.reinforce.step
    s.reinforce.step = lambda sample, r: (rewards.append(list(r)), real_step(sample, r))[1]
    s.phase, s.step = "controller", 0
    s.update_controller()
    return {"before": before, "after_step": after_step, "policy": _cpu(s.policy.state_dict()), "rewards": rewards,
            "baseline": s.reinforce.baseline, "adam": s.reinforce.opt.state_dict()}


def _dump_after_run(out: Path) -> None:
    from enas.child.retrain import Retrain
    from enas.nas.search import Search

    def wrap(cls, models):
        real = cls.run

        def run(self, *a, **k):
            result = real(self, *a, **k)
            state = {name: _cpu(getattr(self, name).state_dict()) for name in models}
            if hasattr(self, "reinforce"):
                state["baseline"] = self.reinforce.baseline
            torch.save(state, out / f"rank{dist.rank()}.pt")
            return result

        cls.run = run

    wrap(Search, ("supernet", "policy"))
    wrap(Retrain, ("model",))


def _fail_on(rank: int) -> None:
    from enas.nas.search import Search

    def boom(self):
        if dist.rank() == rank:
            raise RuntimeError(f"injected failure on rank {rank}")
        return real(self)

    real = Search.update_controller
    Search.update_controller = boom


def stop_in_derive(where: str, signal_here, scored: list, set_attr=setattr, on_score=lambda: None) -> None:
    """Wrap ``Derive.<where>`` (``epoch`` or ``final``) and ``Scoring.score``:
    every candidate that derive scores is appended to ``scored`` (then ``on_score()``),
    and while the first is scored a SIGTERM reaches this process if ``signal_here()``
    (asked then: a rank is known once the run has started; the handler's flag is set,
    as the handler would). ``set_attr``: a test's
    monkeypatch.setattr, to undo it."""
    import signal

    from enas.nas import derive, scoring

    inside = []
    real_score, real_step = scoring.Scoring.score, getattr(derive.Derive, where)

    def step(self, *a, **kw):  # the derive, with its loop in hand
        inside.append(self)
        try:
            return real_step(self, *a, **kw)
        finally:
            inside.pop()

    def score(self, supernet, arch, *a, **kw):
        if inside:
            if not scored and signal_here():
                inside[-1].loop.stop.signum = signal.SIGTERM
            scored.append(arch)
            on_score()
        return real_score(self, supernet, arch, *a, **kw)

    set_attr(derive.Derive, where, step)
    set_attr(scoring.Scoring, "score", score)


if __name__ == "__main__":
    mode, out = sys.argv[1], Path(sys.argv[2])
    if "ENAS_TEST_FAIL_RANK" in os.environ:
        _fail_on(int(os.environ["ENAS_TEST_FAIL_RANK"]))
    if "ENAS_TEST_STOP_RANK" in os.environ:
        scored: list = []
        stop_rank = int(os.environ["ENAS_TEST_STOP_RANK"])
        stop_in_derive(os.environ["ENAS_TEST_STOP_IN"], lambda: dist.rank() == stop_rank, scored,
                       on_score=lambda: (out / f"scored{dist.rank()}.txt").write_text(str(len(scored))))
    if mode == "step":
        result = step(sys.argv[3], sys.argv[4], out)
        torch.save(result, out / f"rank{dist.rank()}.pt")
        dist.teardown()
    else:
        from enas.cli import main

        _dump_after_run(out)
        sys.exit(main(sys.argv[3:]))
