"""Several processes (torchrun, Gloo on CPU): equal weights on every rank, the two-process
step equals the one-process step on the whole minibatch, identical controllers, resume
in one process, and a failing rank stops the launch (generated data only)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ddp_worker
from conftest import TINY_PTB, write_config
from enas.cli import main
from conftest import write_cifar
from conftest import TINY_RETRAIN, write_arch

HERE = Path(__file__).resolve().parent
NO_DROPOUT = {"hidden": 8, "dropout_e": 0.0, "dropout_i": 0.0, "dropout_x": 0.0, "dropout_l": 0.0,
              "dropout_o": 0.0}


def torchrun(mode, out, *args, env=None, timeout=120):
    """Two Gloo processes of tests/ddp_worker.py; returns the CompletedProcess."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(HERE / "ddp_worker.py"), mode, str(out), *map(str, args)]
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
             **(env or {}))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e)


def ranks(out):
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def assert_equal_states(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], dict):
            assert_equal_states(a[k], b[k])
        elif isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


@pytest.mark.slow
def test_two_process_step_equals_one_process_step(tmp_path, ptb_dir):
    """Shares of 2 + 2 columns averaged == the step on all 4; the controller phase that
    follows gets the same rewards and ends with identical weights on both ranks."""
    cfg = write_config(tmp_path, TINY_PTB, "step.yaml", model=NO_DROPOUT)
    proc = torchrun("step", tmp_path / "ddp", cfg, ptb_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = ranks(tmp_path / "ddp")
    assert_equal_states(r0, r1)  # both ranks: same weights, rewards, baseline, Adam state
    one = ddp_worker.step(cfg, ptb_dir, tmp_path)  # this process: world 1, the whole minibatch
    for k, v in one["after_step"].items():
        assert torch.allclose(r0["after_step"][k], v, rtol=1e-5, atol=1e-6), k
    assert any(not torch.equal(one["before"][k], v) for k, v in one["after_step"].items())  # it did step
    assert len(r0["rewards"]) == 3 and torch.allclose(torch.tensor(r0["rewards"]), torch.tensor(one["rewards"]),
                                                      rtol=1e-5)
    for k, v in one["policy"].items():
        assert torch.allclose(r0["policy"][k], v, rtol=1e-4, atol=1e-6), k
    assert r0["baseline"] == pytest.approx(one["baseline"], rel=1e-5)


@pytest.mark.slow
def test_two_process_search_then_resume_in_one(tmp_path, ptb_dir, capsys):
    cfg = write_config(tmp_path, TINY_PTB, "search.yaml", search={"epochs": 1})
    run_dir = tmp_path / "run"
    proc = torchrun("cli", tmp_path / "dumps", "search", cfg, "--data-dir", ptb_dir, "--run-dir", run_dir,
                    "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 processes (gloo)" in proc.stderr
    r0, r1 = ranks(tmp_path / "dumps")
    assert_equal_states(r0, r1)  # supernet, controller and baseline equal on both ranks
    # rank 0 alone wrote the folder, and what it wrote is that state
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    st = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert st["world"] == 2 and all(torch.equal(st["supernet"][k], r0["supernet"][k]) for k in r0["supernet"])
    assert st["task"]["train_hidden"].shape[0] == 4  # the carried state of all columns, gathered
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in rows if "derive/score" in r]) == 1  # written once, not per rank
    # the checkpoint of two processes continues in one
    assert main(["search", "--resume", str(run_dir), "--set", "search.epochs=2", "--allow-config-change",
                 "--data-dir", str(ptb_dir), "--device", "cpu"]) == 0
    st = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert st["position"]["epoch"] == 2 and st["world"] == 1
    assert sorted(p.name for p in (run_dir / "archs").glob("epoch_*.yaml")) == ["epoch_001.yaml", "epoch_002.yaml"]


@pytest.mark.slow
def test_two_process_retrain_with_linear_lr_scaling(tmp_path):
    write_cifar(tmp_path / "cifar")
    arch = write_arch(tmp_path, "enas_micro")
    cfg = write_config(tmp_path, TINY_RETRAIN["enas_micro"], "retrain.yaml", train={"lr_scaling": "linear"})
    run_dir = tmp_path / "run"
    proc = torchrun("cli", tmp_path / "dumps", "retrain", arch, "--config", cfg, "--data-dir", tmp_path / "cifar",
                    "--run-dir", run_dir, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sync_bn has no effect on CPU" in proc.stderr
    r0, r1 = ranks(tmp_path / "dumps")
    assert_equal_states(r0, r1)  # parameters and (broadcast) BN statistics
    result = json.loads((run_dir / "result.json").read_text())
    assert result["epochs"] == 2 and 0 <= result["test_accuracy"] <= 1
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["schedule/lr"] for r in rows if "overview/test_accuracy" in r][0] == pytest.approx(2 * 0.05)  # 2 x train.lr
    # 60 images, global batch 2 x 16: one step per epoch (one process: three)
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["position"]["global_step"] == 2
    assert main(["evaluate", str(run_dir), "--device", "cpu"]) == 0  # one process recomputes the same


@pytest.mark.slow
def test_failure_on_one_rank_stops_every_rank(tmp_path, ptb_dir):
    cfg = write_config(tmp_path, TINY_PTB, "search.yaml", search={"epochs": 1})
    proc = torchrun("cli", tmp_path / "dumps", "search", cfg, "--data-dir", ptb_dir, "--run-dir", tmp_path / "r",
                    "--device", "cpu", env={"ENAS_TEST_FAIL_RANK": "1"}, timeout=90)
    assert proc.returncode != 0
    assert "injected failure on rank 1" in proc.stderr and "[rank 1/2]" in proc.stderr
    assert not (tmp_path / "dumps" / "rank0.pt").exists()


@pytest.mark.slow
@pytest.mark.parametrize("where", ["epoch", "final"])
def test_a_stop_signal_on_one_rank_stops_every_rank_between_derive_candidates(tmp_path, ptb_dir, where):
    """A signal that reaches one process while the derive scores its candidates stops every
    process after the candidate in hand (not after all of them), with a checkpoint that
    resumes."""
    cfg = write_config(tmp_path, TINY_PTB, "search.yaml",
                       search={"epochs": 1, "derive_samples": 30, "final_candidates": 10})
    run_dir, out = tmp_path / "run", tmp_path / "dumps"
    proc = torchrun("cli", out, "search", cfg, "--data-dir", ptb_dir, "--run-dir", run_dir, "--device", "cpu",
                    env={"ENAS_TEST_STOP_RANK": "1", "ENAS_TEST_STOP_IN": where})
    assert proc.returncode != 0 and "stopped by signal 15; checkpoint written" in proc.stderr, proc.stderr[-3000:]
    assert [(out / f"scored{r}.txt").read_text() for r in (0, 1)] == ["1", "1"]  # not the other 29 (or 9)
    assert not (out / "rank0.pt").exists()  # the search did not finish
    assert main(["search", "--resume", str(run_dir), "--data-dir", str(ptb_dir), "--device", "cpu"]) == 0
    assert len(list((run_dir / "archs").glob("final_*.yaml"))) == 10


def test_batch_size_must_split_evenly(tmp_path, ptb_dir, monkeypatch):
    from enas.train import distributed as dist
    from enas.config import ConfigError, load_search
    from enas.nas.search import Search

    monkeypatch.setattr(dist, "world", lambda: 2)
    cfg = load_search(write_config(tmp_path, TINY_PTB, "odd.yaml", data={"batch_size": 3}))
    with pytest.raises(ConfigError, match=r"data.batch_size = 3 is not a multiple of the number of processes \(2\)"):
        Search(cfg, None, ptb_dir, torch.device("cpu"), log=False)


def test_shards_cover_the_batch_once():
    from enas.train.distributed import Shard

    x = torch.arange(24).reshape(4, 6)
    assert torch.equal(torch.cat([Shard(r, 2).take(x, 1) for r in (0, 1)], 1), x)  # LM: columns
    y = torch.arange(7)
    assert torch.equal(torch.cat([Shard(r, 3).chunk(y) for r in range(3)]), y)  # a short last batch
    assert Shard().take(x, 1) is x and Shard().sum(1.5, 2) == (1.5, 2)  # one process: untouched
