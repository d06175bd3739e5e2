"""The study scripts of benchmarks/studies/: a user's mistake ends in one line, their
default files are this checkout's wherever they run from, the reward study measures a
real run, and the engine never imports a study."""
from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

import pytest

from enas.cli import main

from conftest import one_error, study, tiny_nb201_config, write_cifar

ROOT = Path(__file__).resolve().parents[1]


def nb201_run(tmp_path):
    """A finished one-epoch NB201 search on tiny images: (run, data)."""
    data = tmp_path / "cifar"
    write_cifar(data)
    run = tmp_path / "run"
    cfg = tiny_nb201_config(tmp_path, {"search": {"epochs": 1}})
    assert main(["search", str(cfg), "--data-dir", str(data), "--run-dir", str(run), "--device", "cpu"]) == 0
    return run, data


def test_beat_chance_refuses_bad_input_in_one_line(tmp_path, capsys):
    beat_chance = study("beat_chance")
    missing = tmp_path / "missing.csv"
    assert beat_chance.main(["--data-dir", str(tmp_path), "--ground-truth", str(missing)]) == 2
    one_error(capsys, f"--ground-truth {missing}: no such file")
    assert beat_chance.main(["--data-dir", str(tmp_path), "--paired", "--methods", "paper", "random"]) == 2
    one_error(capsys, "--paired needs random and recipe")
    assert beat_chance.main(["--data-dir", str(tmp_path), "--jobs", "0"]) == 2
    one_error(capsys, "--jobs 0")
    assert not (tmp_path / "runs").exists()  # nothing started


def test_beat_chance_defaults_are_this_checkouts_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the project's folder
    beat_chance = study("beat_chance")
    for path in (beat_chance.CONFIG, beat_chance.GT_CSV, beat_chance.GT_LIST, beat_chance.GT_CONFIG):
        assert path.is_absolute() and path.is_file(), path


def test_reward_noise_refuses_bad_input_in_one_line(tmp_path, capsys):
    assert study("reward_noise").main([str(tmp_path), "--data-dir", str(tmp_path), "--archs", "1"]) == 2
    one_error(capsys, "give 2 or more")


@pytest.mark.slow
def test_reward_noise_measures_each_bn_mode_of_an_image_search(tmp_path, capsys):
    run, data = nb201_run(tmp_path)
    capsys.readouterr()
    assert study("reward_noise").main([str(run), "--data-dir", str(data), "--archs", "3", "--batches", "2"]) == 0
    out = capsys.readouterr().out
    modes = dict(re.findall(r"^mode=(\w+) .*? reward_mean=([\d.]+)", out, re.M))
    assert set(modes) == {"batch", "running", "train"}, out
    assert all(0.0 <= float(v) <= 1.0 for v in modes.values()), out  # accuracies
    assert "space=nb201" in out and "archs=3 batches=2" in out
    assert all(math.isfinite(float(v)) for v in re.findall(r"noise_std=([\d.]+)", out))


def test_the_engine_imports_no_study():
    studies = {p.stem for p in (ROOT / "benchmarks" / "studies").glob("*.py")}
    assert {"beat_chance", "reward_noise", "_study"} <= studies
    for path in (ROOT / "enas").rglob("*.py"):
        imports = re.findall(r"^\s*(?:from|import)\s+([\w.]+)", path.read_text(), re.M)
        assert not [m for m in imports if m.split(".")[-1] in studies or "benchmarks" in m], path


def test_proxy_ceiling_refuses_bad_input_in_one_line(tmp_path, capsys):
    proxy_ceiling = study("proxy_ceiling")
    missing = tmp_path / "missing.csv"
    assert proxy_ceiling.main([str(tmp_path), "--ground-truth", str(missing), "--cells", str(missing)]) == 2
    one_error(capsys, f"{missing} does not exist")
    gt = tmp_path / "gt.csv"
    gt.write_text("arch,seed,test_accuracy\n" + "".join(f"{c},0,{i / 100}\n" for i, c in enumerate(CELLS)))
    listed = tmp_path / "cells.txt"
    listed.write_text(CELLS[0] + "\n")
    assert proxy_ceiling.main([str(tmp_path), "--ground-truth", str(gt), "--cells", str(listed)]) == 2
    one_error(capsys, "1 cells of", "give at least 3")


OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
CELLS = [f"|{a}~0|+|{b}~0|{c}~1|+|nor_conv_3x3~0|skip_connect~1|{d}~2|"  # 21 distinct NB201 cells
         for a, b, c, d in itertools.islice(itertools.product(OPS, repeat=4), 0, 210, 10)]


@pytest.mark.slow
def test_proxy_ceiling_measures_a_run_against_the_shipped_tables(tmp_path, capsys):
    run, data = nb201_run(tmp_path)
    gt = tmp_path / "gt.csv"
    gt.write_text("arch,seed,test_accuracy\n" + "".join(f"{c},0,{i / 100}\n" for i, c in enumerate(CELLS)))
    listed = tmp_path / "cells.txt"
    listed.write_text("\n".join(CELLS) + "\n")
    capsys.readouterr()
    assert study("proxy_ceiling").main([str(run), "--data-dir", str(data), "--ground-truth", str(gt),
                                        "--cells", str(listed), "--depths", "1", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("200 epochs") == 1 and out.count("12 epochs") == 1, out
    # each table: the 21 cells' stand-alone tau, six training-free lines
    assert len(re.findall(r"21 cells: stand-alone -?\d\.\d{3} \(SE", out)) == 2, out
    assert len(re.findall(r"at cells_per_stage [12]: (?:-?\d\.\d{3}|nan)", out)) == 12, out
    assert len(re.findall(r"(?:params|synflow) at cells_per_stage [12]: -?\d\.\d{3}", out)) == 8, out
    assert len(re.findall(r"best of 20: by stand-alone mean percentile \d+\.\d", out)) == 2, out
