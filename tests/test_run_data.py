"""A run remembers its data (data.json): resume, derive, rank and evaluate find it without
--data-dir, refuse changed files, and the command printed on a stop works as printed."""
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from enas.cli import main
from enas.data import record

from conftest import FAST_CKPT, make_corpus, wait_for, write_arch, write_retrain_config


def run(*argv):
    return main([str(a) for a in argv])


@pytest.fixture
def search_run(tmp_path, ptb_dir, tiny_ptb_config):
    run_dir = tmp_path / "r"
    cfg = tiny_ptb_config({"search": {"epochs": 1}})
    assert run("search", cfg, "--data-dir", ptb_dir, "--run-dir", run_dir, "--device", "cpu") == 0
    return run_dir


def test_search_records_its_data(search_run, ptb_dir):
    rec = json.loads((search_run / "data.json").read_text())
    assert rec["path"] == str(ptb_dir.resolve()) and rec["dataset"] == "ptb"
    assert sorted(rec["files"]) == ["ptb.test.txt", "ptb.train.txt", "ptb.valid.txt"]
    f = rec["files"]["ptb.train.txt"]
    assert f["size"] == (ptb_dir / "ptb.train.txt").stat().st_size and len(f["sha256"]) == 64


def test_derive_rank_and_resume_without_data_dir(search_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./data here: the recorded folder must be used
    assert run("derive", search_run, "--samples", "2", "--device", "cpu") == 0
    assert run("rank", search_run, "--samples", "2", "--out", tmp_path / "ranks.csv", "--device", "cpu") == 0
    assert run("search", "--resume", search_run, "--set", "search.epochs=2", "--allow-config-change",
               "--device", "cpu") == 0
    assert not (tmp_path / "data").exists()


def test_changed_data_refused_then_accepted(tmp_path, ptb_dir, tiny_ptb_config, capsys):
    run_dir = tmp_path / "r"
    cfg = tiny_ptb_config({"search": {"epochs": 1}})
    assert run("search", cfg, "--data-dir", ptb_dir, "--run-dir", run_dir, "--device", "cpu") == 0
    valid = ptb_dir / "ptb.valid.txt"
    valid.write_text(valid.read_text() + valid.read_text().splitlines()[0] + "\n")  # one line more
    capsys.readouterr()
    for argv in (("search", "--resume", run_dir), ("derive", run_dir), ("rank", run_dir)):
        assert run(*argv, "--device", "cpu") == 2
        err = capsys.readouterr().err
        assert "ptb.valid.txt:" in err and "differs from the data this run started with" in err, argv
        assert "ptb.train.txt" not in err and "Traceback" not in err
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert run("derive", run_dir, "--data-dir", other, "--device", "cpu") == 2
    assert "not in" in capsys.readouterr().err
    assert run("search", "--resume", run_dir, "--set", "search.epochs=2", "--allow-config-change",
               "--device", "cpu") == 0
    assert "continuing on data that differs" in capsys.readouterr().err
    assert record.read(run_dir)["files"]["ptb.valid.txt"]["size"] == (ptb_dir / "ptb.valid.txt").stat().st_size


def test_retrain_records_its_data_and_evaluates_without_data_dir(tmp_path, monkeypatch):
    data = make_corpus(tmp_path / "ptb")
    arch, cfg = write_arch(tmp_path, "enas_rnn"), write_retrain_config(tmp_path, "enas_rnn", retrain={"epochs": 1})
    run_dir = tmp_path / "rt"
    assert run("retrain", arch, "--config", cfg, "--data-dir", data, "--run-dir", run_dir, "--device", "cpu") == 0
    assert record.read(run_dir)["path"] == str(data.resolve())
    monkeypatch.chdir(tmp_path)
    assert run("evaluate", run_dir, "--device", "cpu") == 0


@pytest.mark.slow
def test_the_printed_resume_command_works_as_printed(tmp_path, ptb_dir, tiny_ptb_config):
    cfg = tiny_ptb_config(FAST_CKPT)
    run_dir = tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, "-m", "enas", "search", str(cfg), "--data-dir", str(ptb_dir),
                             "--run-dir", str(run_dir), "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(run_dir / "checkpoint.pt", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    printed = err.split("Resume with:")[1].strip().splitlines()[0]
    argv = shlex.split(printed)
    assert argv[0] == "enas"
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    cwd = tmp_path / "somewhere_else"
    cwd.mkdir()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (run_dir / "best_arch.yaml").is_file() and not (cwd / "data").exists()
