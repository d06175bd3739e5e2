"""Measuring on a published table (enas/evaluate): statistics, the table reader, and
`enas table` on a tiny NB201 run with a table made up for the test."""
import json
import math

import numpy as np
import pytest

from enas.cli import main
from enas.errors import DataError
from enas.evaluate.stats import kendall_tau_b, kendall_tau_b_se, percentile
from enas.rank import arch_text
from enas.space import build_space
from conftest import NB201_CELLS as CELLS, read_nb201_table as read, TINY_NB201, write_cifar, write_config, write_nb201_table as write_table


def test_kendall_tau_b_se_is_the_jackknife():
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    y = np.round(x + rng.normal(size=30), 1)  # ties on one side
    leave_one_out = np.array([kendall_tau_b(np.delete(x, k), np.delete(y, k)) for k in range(30)])
    by_hand = math.sqrt(29 / 30 * np.sum((leave_one_out - leave_one_out.mean()) ** 2))
    assert kendall_tau_b_se(x, y) == pytest.approx(by_hand, rel=1e-12)
    assert kendall_tau_b([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    # -inf is the lowest score, two of them a tie (not NaN)
    assert kendall_tau_b([-math.inf, -math.inf, 1.0, 2.0], [0, 1, 2, 3]) == pytest.approx(5 / math.sqrt(5 * 6))


def test_percentile_counts_ties_half():
    assert percentile(2.0, [1.0, 2.0, 3.0, 4.0]) == pytest.approx(37.5)


def test_table_reads_cells_and_ranks_among_all_rows(tmp_path):
    t = read(write_table(tmp_path / "t.csv"))
    assert t.metric == "cifar10_valid" and len(t.accuracy) == 4
    assert t.accuracy[CELLS[1]] == 90.0
    assert t.percentile(90.0) == pytest.approx(87.5)  # beats 3 of 4, ties with itself (half)
    assert t.percentile(60.0) == pytest.approx(50.0)
    assert sorted(t.sample(4, seed=1)) == sorted(CELLS)


@pytest.mark.parametrize("rows, kw, message", [
    ([(0, CELLS[0], "x")], {}, "line 2: cifar10_valid 'x' is not a number"),
    ([(0, "|bogus~0|", 1.0)], {}, "line 2: cell string"),
    ([(0, CELLS[0], 1.0), (1, CELLS[1], 2.0)], {"metric_column": "acc"}, "no column 'acc'"),
    ([(0, CELLS[0], 1.0)], {}, "fewer than two"),
])
def test_table_errors_name_the_file_and_line(tmp_path, rows, kw, message):
    with pytest.raises(DataError, match=message):
        read(write_table(tmp_path / "t.csv", rows), **kw)


def test_table_must_be_a_file(tmp_path):
    with pytest.raises(DataError, match="is not a file"):
        read(tmp_path)


@pytest.mark.slow
def test_enas_table_measures_a_run(tmp_path, capsys):
    """A tiny NB201 search with a training-free term and a final stage, measured on a
    made-up table of 40 cells: every scorer's tau, the found cell, random search's picks."""

    write_cifar(tmp_path / "data", noise=60)
    cfg = write_config(tmp_path, TINY_NB201, "c.yaml", search={"score": {"supernet": 1.0, "params": 1.0,
                                                                         "reference": 4}, "final_train": 1})
    run = tmp_path / "run"
    assert main(["search", str(cfg), "--data-dir", str(tmp_path / "data"), "--run-dir", str(run), "--device", "cpu"]) == 0
    space = build_space("nb201")
    from enas.controller import RandomPolicy
    import torch

    archs = RandomPolicy(space.decisions())(60, generator=torch.Generator().manual_seed(0)).archs
    texts = list(dict.fromkeys(arch_text(space, a) for a in archs))[:40]
    from enas.archfile import load_arch

    found = arch_text(space, load_arch(run / "best_arch.yaml")[1])
    texts = [found] + [t for t in texts if t != found][:39]
    write_table(tmp_path / "t.csv", [(i, t, float(i)) for i, t in enumerate(texts)])
    out = tmp_path / "m.json"
    assert main(["table", str(run), "--table", str(tmp_path / "t.csv"), "--cells", "20", "--draws", "2",
                 "--candidates", "3", "--out", str(out), "--device", "cpu"]) == 0
    m = json.loads(out.read_text())
    for name in ("run", "supernet", "params", "synflow", "naswot"):
        assert -1.0 <= m[f"tau_{name}"] <= 1.0 and m[f"tau_{name}_se"] >= 0, name
    assert m["found"] == found and m["found_accuracy"] == 0.0 and m["found_percentile"] == pytest.approx(1.25)
    assert len(m["random_percentiles"]) == 2 and m["random_candidates"] == 3
    assert 0 < m["policy_ess"] <= 20
    assert "tau_params=" in capsys.readouterr().out
