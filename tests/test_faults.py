"""Nothing lost: kill -9, SIGTERM, mid-epoch resume, NaN, failed checkpoint writes."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from enas.storage import checkpoint as ckpt
from enas.cli import main

from conftest import FAST_CKPT, TINY_PTB, TINY_RETRAIN, wait_for, write_arch

def search_cmd(cfg, data, run_dir, *extra):
    return [sys.executable, "-m", "enas", "search", str(cfg), "--data-dir", str(data), "--run-dir", str(run_dir),
            "--device", "cpu", *extra]


def resume_cmd(run_dir, data):
    return [sys.executable, "-m", "enas", "search", "--resume", str(run_dir), "--data-dir", str(data),
            "--device", "cpu"]


def final_state(run_dir):
    st = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    arch = yaml.safe_load((run_dir / "best_arch.yaml").read_text())["arch"]
    return st, arch


def assert_same_run(a_dir, b_dir):
    a, arch_a = final_state(a_dir)
    b, arch_b = final_state(b_dir)
    assert arch_a == arch_b
    assert a["position"] == b["position"]
    for key in ("supernet", "policy"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    assert a["reinforce"]["baseline"] == b["reinforce"]["baseline"]
    rows = lambda d: [r for r in (d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert rows(a_dir) == rows(b_dir)


@pytest.fixture
def reference(tmp_path, ptb_dir, tiny_ptb_config):
    cfg = tiny_ptb_config(FAST_CKPT)
    ref = tmp_path / "ref"
    assert subprocess.run(search_cmd(cfg, ptb_dir, ref), capture_output=True).returncode == 0
    return cfg, ref


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kill_9_twice_then_resume_matches_uninterrupted(tmp_path, ptb_dir, reference, seed):
    cfg, ref = reference
    run_dir = tmp_path / f"killed{seed}"
    rng = random.Random(seed)
    proc = subprocess.Popen(search_cmd(cfg, ptb_dir, run_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for attempt in range(2):
        wait_for(run_dir / "checkpoint.pt", proc)
        time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is None:
            proc.kill()  # SIGKILL: no handler runs
        proc.wait()
        if attempt == 0:
            proc = subprocess.Popen(resume_cmd(run_dir, ptb_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done = subprocess.run(resume_cmd(run_dir, ptb_dir), capture_output=True, text=True)
    if done.returncode != 0:  # the second kill may have landed after the run finished
        assert "resuming" not in done.stderr, done.stderr
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    if state["position"]["epoch"] < 3:
        pytest.fail(f"resume did not finish: {done.stderr[-2000:]}")
    assert_same_run(ref, run_dir)


@pytest.mark.slow
def test_sigterm_checkpoints_prints_resume_and_exits_nonzero(tmp_path, ptb_dir, reference):
    cfg, ref = reference
    run_dir = tmp_path / "term"
    proc = subprocess.Popen(search_cmd(cfg, ptb_dir, run_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(run_dir / "checkpoint.pt", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    err = err.decode()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert f"enas search --resume {run_dir}" in err and "Traceback" not in err
    assert subprocess.run(resume_cmd(run_dir, ptb_dir), capture_output=True).returncode == 0
    assert_same_run(ref, run_dir)


@pytest.mark.slow
def test_mid_epoch_resume_equals_uninterrupted(tmp_path, ptb_dir, tiny_ptb_config, monkeypatch):
    """In-process: stop inside the shared phase of epoch 2 (step 3), resume, compare."""
    from enas.train import loop

    cfg = tiny_ptb_config({"search": {"epochs": 2}})
    ref = tmp_path / "ref"
    assert main(["search", str(cfg), "--data-dir", str(ptb_dir), "--run-dir", str(ref), "--device", "cpu"]) == 0

    real = loop.Loop.maybe_checkpoint

    def stop_once(self):
        if self.epoch == 1 and self.phase == "shared" and self.step == 3 and not getattr(self, "_stopped", False):
            self._stopped = True
            self.stop.signum = signal.SIGTERM
        return real(self)

    monkeypatch.setattr(loop.Loop, "maybe_checkpoint", stop_once)
    part = tmp_path / "part"
    code = main(["search", str(cfg), "--data-dir", str(ptb_dir), "--run-dir", str(part), "--device", "cpu"])
    assert code == 128 + signal.SIGTERM
    st = torch.load(part / "checkpoint.pt", weights_only=True)
    assert st["position"]["epoch"] == 1 and st["position"]["phase"] == "shared" and st["position"]["step"] == 3
    assert main(["search", "--resume", str(part), "--data-dir", str(ptb_dir), "--device", "cpu"]) == 0
    assert_same_run(ref, part)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["epoch", "final"])
def test_a_stop_signal_during_a_derive_stops_it_and_the_resume_equals_uninterrupted(
        tmp_path, ptb_dir, tiny_ptb_config, monkeypatch, where):
    """SIGTERM while a derive scores its candidates (an epoch's, or the final one): the run
    stops after the candidate in hand, not after all of them, and a resume derives again
    as if nothing had happened."""
    from ddp_worker import stop_in_derive

    cfg = tiny_ptb_config({"search": {"epochs": 1, "derive_samples": 30, "final_candidates": 10}})
    ref = tmp_path / "ref"
    assert main(["search", str(cfg), "--data-dir", str(ptb_dir), "--run-dir", str(ref), "--device", "cpu"]) == 0

    scored = []
    stop_in_derive(where, lambda: True, scored, monkeypatch.setattr)
    part = tmp_path / "part"
    code = main(["search", str(cfg), "--data-dir", str(ptb_dir), "--run-dir", str(part), "--device", "cpu"])
    assert code == 128 + signal.SIGTERM
    assert len(scored) == 1  # not the other 29 (or 9) candidates
    monkeypatch.undo()
    assert main(["search", "--resume", str(part), "--data-dir", str(ptb_dir), "--device", "cpu"]) == 0
    assert_same_run(ref, part)


def test_nan_steps_are_skipped_counted_and_stop_the_run(tmp_path, ptb_dir, tiny_ptb_config, monkeypatch, capsys):
    from enas.tasks import lm

    real = lm.LanguageModelTask.train_loss
    calls = {"n": 0}

    def poisoned(self, model, batch, arch):
        loss, stats = real(self, model, batch, arch)
        calls["n"] += 1
        if calls["n"] in (2, 3):  # two isolated bad steps: skipped, counted
            loss = loss * float("nan")
        return loss, stats

    monkeypatch.setattr(lm.LanguageModelTask, "train_loss", poisoned)
    run_dir = tmp_path / "nan"
    cfg = tiny_ptb_config({"search": {"epochs": 1, "log_every": 1}})
    assert main(["search", str(cfg), "--data-dir", str(ptb_dir), "--run-dir", str(run_dir), "--device", "cpu"]) == 0
    st = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert st["position"]["skipped_steps"] == 2
    assert all(torch.isfinite(v).all() for v in st["supernet"].values())

    # Every step bad: stops after max_bad_steps with a message; the last good checkpoint stays.
    good = tmp_path / "good"
    assert main(["search", str(cfg), "--data-dir", str(ptb_dir), "--run-dir", str(good), "--device", "cpu"]) == 0
    before = (good / "checkpoint.pt").read_bytes()
    monkeypatch.setattr(lm.LanguageModelTask, "train_loss",
                        lambda self, m, b, a: (real(self, m, b, a)[0] * float("nan"), {}))
    code = main(["search", "--resume", str(good), "--set", "search.epochs=2", "--set", "search.max_bad_steps=3",
                 "--allow-config-change", "--data-dir", str(ptb_dir), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 3 and "3 training steps in a row" in err and "Traceback" not in err
    assert (good / "checkpoint.pt").read_bytes() == before


def test_interrupted_checkpoint_write_keeps_previous(tmp_path, monkeypatch):
    ckpt.save(tmp_path, {"x": torch.ones(3)})

    def torn(obj, f):  # dies halfway through writing
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", torn)
    from enas.storage.files import WriteError

    with pytest.raises(WriteError, match="checkpoint.pt: No space left on device .the previous version is intact"):
        ckpt.save(tmp_path, {"x": torch.zeros(3)})
    monkeypatch.undo()
    assert torch.equal(ckpt.load(tmp_path)["x"], torch.ones(3))
    assert not (tmp_path / "checkpoint.pt.tmp").exists()


def test_disk_full_during_search_stops_with_message(tmp_path, ptb_dir, tiny_ptb_config, monkeypatch, capsys):
    run_dir = tmp_path / "full"
    cfg = tiny_ptb_config({"search": {"epochs": 2}})
    real_save = torch.save
    state = {"n": 0}

    def save(obj, f, *a, **k):  # the first checkpoint is written, the disk is full at the second
        state["n"] += 1
        if state["n"] > 1:
            f.write(b"half a checkpoint")
            raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing "
                               "file data/0: file write failed")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    code = main(["search", str(cfg), "--data-dir", str(ptb_dir), "--run-dir", str(run_dir), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "could not write" in err and "checkpoint.pt: the write failed" in err and "Traceback" not in err
    assert "the previous version is intact" in err and "Free space" in err
    assert not (run_dir / "checkpoint.pt.tmp").exists()  # nothing half-written left behind
    monkeypatch.undo()
    assert ckpt.load(run_dir)["position"]["epoch"] == 1


@pytest.mark.slow
def test_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path, ptb_dir, tiny_ptb_config, capsys):
    """A truncated checkpoint.pt does not stop a resume: the previous checkpoint is used,
    the console says so and how much is repeated, and the run ends as an uninterrupted one."""
    ref, run_dir = tmp_path / "ref", tmp_path / "r"
    cfg3 = tiny_ptb_config({"search": {"epochs": 3}}, name="three.yaml")
    assert main(["search", str(cfg3), "--data-dir", str(ptb_dir), "--run-dir", str(ref), "--device", "cpu"]) == 0
    cfg1 = tiny_ptb_config({"search": {"epochs": 1}}, name="one.yaml")
    assert main(["search", str(cfg1), "--data-dir", str(ptb_dir), "--run-dir", str(run_dir), "--device", "cpu"]) == 0
    assert main(["search", "--resume", str(run_dir), "--set", "search.epochs=2", "--allow-config-change",
                 "--device", "cpu"]) == 0
    data = (run_dir / "checkpoint.pt").read_bytes()
    (run_dir / "checkpoint.pt").write_bytes(data[: len(data) // 2])  # a torn copy
    capsys.readouterr()
    assert main(["search", "--resume", str(run_dir), "--set", "search.epochs=3", "--allow-config-change",
                 "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "checkpoint.pt is corrupt" in err and "using the previous checkpoint checkpoint.prev.pt" in err
    assert "continues at epoch 3, shared step 0: the work done after it is repeated" in err
    assert "resuming" in err and "Traceback" not in err
    a = torch.load(ref / "checkpoint.pt", weights_only=True)
    b = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert a["position"] == b["position"]
    for k in a["supernet"]:
        assert torch.equal(a["supernet"][k], b["supernet"][k]), k


def test_fallback_says_how_many_steps_are_repeated(tmp_path):
    pos = {"epoch": 1, "phase": "shared", "step": 4, "global_step": 10}
    ckpt.save(tmp_path, {"position": pos})
    ckpt.save(tmp_path, {"position": dict(pos, step=9, global_step=15)})
    (tmp_path / "metrics.jsonl").write_text('{"step": 5}\n{"step": 25, "x": 1}\n{"step": 2')  # torn last line
    (tmp_path / "checkpoint.pt").write_bytes(b"torn")
    said = []
    state = ckpt.load(tmp_path, say=said.append)
    assert state["position"]["global_step"] == 10
    assert len(said) == 1 and "continues at epoch 2, shared step 4" in said[0] and "about 15 training steps" in said[0]


def test_both_checkpoints_unreadable_is_a_clean_error(tmp_path, capsys):
    ckpt.save(tmp_path, {"x": torch.ones(1)})
    ckpt.save(tmp_path, {"x": torch.ones(1)})
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    (tmp_path / "checkpoint.prev.pt").unlink()
    (tmp_path / "checkpoint.prev.pt").write_bytes(b"garbage too")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY_PTB))
    code = main(["search", "--resume", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "checkpoint.pt is corrupt" in err and "previous checkpoint is unreadable too" in err
    assert "Traceback" not in err


def test_checkpoint_never_runs_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    import pickle

    (tmp_path / "checkpoint.pt").write_bytes(pickle.dumps({"format": 1, "x": Evil()}))
    with pytest.raises(ckpt.CheckpointError):
        ckpt.load(tmp_path)
    assert not (tmp_path / "pwned").exists()


def _retrain_cmd(arch, cfg, data, run_dir):
    return [sys.executable, "-m", "enas", "retrain", str(arch), "--config", str(cfg), "--data-dir", str(data),
            "--run-dir", str(run_dir), "--device", "cpu"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_kill_9_retrain_then_resume_matches_uninterrupted(tmp_path, ptb_dir, seed):
    """A PTB retrain (variable BPTT, averaged SGD) killed at a random point resumes exactly."""

    cfg = yaml.safe_load(yaml.safe_dump(TINY_RETRAIN["enas_rnn"]))
    cfg["retrain"].update(epochs=3, checkpoint_minutes=0.0005)
    cfg_path = tmp_path / "rt.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    arch = write_arch(tmp_path, "enas_rnn")
    ref, run_dir = tmp_path / "ref", tmp_path / "killed"
    assert subprocess.run(_retrain_cmd(arch, cfg_path, ptb_dir, ref), capture_output=True).returncode == 0
    proc = subprocess.Popen(_retrain_cmd(arch, cfg_path, ptb_dir, run_dir), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    wait_for(run_dir / "checkpoint.pt", proc)
    time.sleep(random.Random(seed).uniform(0.0, 1.0))
    proc.kill()
    proc.wait()
    done = subprocess.run([sys.executable, "-m", "enas", "retrain", "--resume", str(run_dir), "--device", "cpu"],
                          capture_output=True, text=True)
    if not (run_dir / "result.json").exists():
        pytest.fail(done.stderr[-2000:])
    a = torch.load(ref / "checkpoint.pt", weights_only=True)
    b = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert a["position"] == b["position"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    import json

    ra, rb = (json.loads((d / "result.json").read_text()) for d in (ref, run_dir))
    assert ra["test_perplexity"] == rb["test_perplexity"]
    assert (ref / "metrics.jsonl").read_text() == (run_dir / "metrics.jsonl").read_text()


def test_torch_zip_writer_on_a_full_disk_is_a_write_error(tmp_path, monkeypatch):
    """On a really full disk torch.save fails in its zip writer with "unexpected pos" (seen
    on a 400 KB tmpfs), not with "write failed": still a clean WriteError, no .tmp left."""
    from enas.storage.files import WriteError

    ckpt.save(tmp_path, {"x": torch.ones(3)})

    def full(obj, f):
        f.write(b"PK\x03\x04 part")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 25408 vs 25302")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(WriteError, match="checkpoint.pt: the write failed .* .the previous version is intact"):
        ckpt.save(tmp_path, {"x": torch.zeros(3)})
    monkeypatch.undo()
    assert torch.equal(ckpt.load(tmp_path)["x"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


class _FullFile:
    """A log file on a disk that fills up after ``room`` lines."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, text):
        if self.room <= 0:
            raise OSError(28, "No space left on device")
        self.room -= 1
        return self.f.write(text)

    def __getattr__(self, name):
        return getattr(self.f, name)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["metrics", "tensorboard"])
def test_full_disk_while_logging_stops_cleanly_and_resumes(tmp_path, ptb_dir, tiny_ptb_config, monkeypatch,
                                                           capsys, where):
    """metrics.jsonl or TensorBoard cannot write: exit 2 naming the file and how to resume;
    the resumed run's log equals an uninterrupted run's (the torn tail is truncated)."""
    from enas.storage import runlog

    from torch.utils.tensorboard import SummaryWriter

    cfg = tiny_ptb_config({"search": {"epochs": 2, "log_every": 1}})
    ref, run = tmp_path / "ref", tmp_path / "run"
    real_add, calls = SummaryWriter.add_scalar, {"n": 0}

    def add_scalar(self, *a, **k):  # counts the charted figures; later, fails near the end
        calls["n"] += 1
        if calls.get("room", calls["n"]) < calls["n"]:
            raise OSError(28, "No space left on device")
        return real_add(self, *a, **k)

    monkeypatch.setattr(SummaryWriter, "add_scalar", add_scalar)
    assert main(["search", str(cfg), "--data-dir", str(ptb_dir), "--run-dir", str(ref), "--device", "cpu"]) == 0
    monkeypatch.undo()
    rows = len((ref / "metrics.jsonl").read_text().splitlines())
    if where == "metrics":
        real_init = runlog.RunLog.__init__

        def init(self, *a, **k):
            real_init(self, *a, **k)
            if self.file is not None:
                self.file = _FullFile(self.file, rows - 3)  # full in the second epoch

        monkeypatch.setattr(runlog.RunLog, "__init__", init)
        says = "metrics.jsonl: No space left on device"
    else:
        calls.update(room=calls["n"] - 5, n=0)  # full in the second epoch
        monkeypatch.setattr(SummaryWriter, "add_scalar", add_scalar)
        says = "events.out.tfevents.*: No space left on device"
    capsys.readouterr()
    code = main(["search", str(cfg), "--data-dir", str(ptb_dir), "--run-dir", str(run), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and says in err and "--resume" in err and "Traceback" not in err
    assert ckpt.load(run)["position"]["epoch"] == 1  # the first epoch's checkpoint is intact
    monkeypatch.undo()
    assert main(["search", "--resume", str(run), "--device", "cpu"]) == 0
    steps = lambda d: [json.loads(line)["step"] for line in (d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert steps(run) == steps(ref)
