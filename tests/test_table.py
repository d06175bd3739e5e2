"""Measuring on a published table (enas/evaluate): statistics, the table reader, and
`enas table` on a tiny NB201 run with a table made up for the test."""
import gzip
import hashlib
import itertools
import json
import math
import os
from types import SimpleNamespace

import numpy as np
import pytest

from enas.nas.budget import Budget, budget_model_args
from enas.cli import main
from enas.errors import ConfigError, DataError, UserError
from enas.evaluate import against_table, table_text
from enas.evaluate.against_table import load_tables
from enas.evaluate.stats import kendall_tau_b, kendall_tau_b_se, percentile, within_pairs
from enas.evaluate.table import SHIPPED, TABLES, read_csv_bytes
from enas.evaluate.rank import arch_text, parse_arch_line
from enas.nas.space import build_space
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


def test_kendall_tau_within_groups_pools_the_pairs_of_each_group():
    x = [1, 2, 3, 10, 20, 30, 5]
    y = [1, 3, 2, 1, 2, 3, 9]
    g = [0, 0, 0, 1, 1, 1, 2]  # the last item has no partner: no pair
    # group 0: pairs (1,2)+ (1,3)+ (2,3)-; group 1: three concordant -> (5 - 1) / 6
    assert within_pairs(g) == 6
    assert kendall_tau_b(x, y, g) == pytest.approx(4 / 6)
    leave_one_out = [kendall_tau_b(np.delete(x, k), np.delete(y, k), np.delete(g, k)) for k in range(7)]
    loo = np.array(leave_one_out)
    assert kendall_tau_b_se(x, y, g) == pytest.approx(math.sqrt(6 / 7 * np.sum((loo - loo.mean()) ** 2)))


@pytest.mark.parametrize("shipped, metric", list(zip(SHIPPED["nb201"], ["cifar10_test", "cifar10_valid"])))
def test_the_shipped_nb201_tables_load_whole_and_match_their_checksums(shipped, metric):
    data = read_csv_bytes(shipped.path)
    assert data.decode().splitlines()[0] == f"index,cell,{metric}"
    assert hashlib.sha256(data).hexdigest() == shipped.sha256
    readme = (TABLES / "README.md").read_text()
    assert shipped.sha256 in readme and hashlib.sha256(shipped.path.read_bytes()).hexdigest() in readme
    space = build_space("nb201")
    tables = load_tables(SimpleNamespace(space=space))  # what `enas table RUN` measures on, no --table
    t = tables[[s.file for s in SHIPPED["nb201"]].index(shipped.file)][0]
    assert t.metric == metric and len(t.accuracy) == 15_625
    assert "200 epochs" in tables[0][1] and "12 epochs" in tables[1][1]  # the headline first


def test_a_space_without_a_shipped_table_needs_table(tmp_path):
    with pytest.raises(ConfigError, match="no table of stand-alone accuracies ships for space enas_rnn.*--table"):
        load_tables(SimpleNamespace(space=build_space("enas_rnn")))
    with pytest.raises(ConfigError, match="give --table"):
        load_tables(SimpleNamespace(space=build_space("nb201")), None, "cell")


def test_a_gzip_table_is_read_within_the_cap_and_never_through_a_link(tmp_path):
    plain = write_table(tmp_path / "t.csv")
    packed = tmp_path / "t.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert read(packed).accuracy == read(plain).accuracy
    cap = packed.stat().st_size + 1
    assert plain.stat().st_size > cap
    with pytest.raises(DataError, match=f"decompresses to more than the {cap:,} bytes"):
        read_csv_bytes(packed, limit=cap)  # a small file that inflates past the cap stops there
    os.symlink(packed, tmp_path / "link.csv.gz")
    with pytest.raises(UserError, match="link"):
        read(tmp_path / "link.csv.gz")
    (tmp_path / "cut.csv.gz").write_bytes(packed.read_bytes()[:-12])
    with pytest.raises(DataError, match="truncated"):
        read(tmp_path / "cut.csv.gz")
    (tmp_path / "bad.csv.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="not a readable gzip"):
        read(tmp_path / "bad.csv.gz")


def _figures(**kw):
    """One table's figures as measure() returns them, with chosen values."""
    t = {"table": "/x/nb201_cifar10_test_200ep.csv.gz", "title": "NAS-Bench-201, 200 epochs (headline)",
         "metric": "cifar10_test", "table_rows": 15625, "cells": 200, "within_pairs": 1500,
         "tau_run": 0.61, "tau_run_se": 0.03, "tau_run_within": 0.2, "tau_run_within_se": 0.05,
         "tau_supernet": 0.27, "tau_supernet_se": 0.05, "tau_supernet_within": 0.1, "tau_supernet_within_se": 0.06,
         "tau_params": 0.59, "tau_params_se": 0.03, "tau_naswot": 0.655, "tau_naswot_se": 0.03,
         "tau_naswot_within": math.nan, "tau_naswot_within_se": math.nan,
         "found_accuracy": 93.76, "found_percentile": 98.9, "largest_percentile": 97.0,
         "policy_mean_percentile": 70.0, "uniform_mean_percentile": 50.0, "policy_ess": 12.0,
         "random_percentiles": [78.0, 92.0], "random_mean_percentile": 85.0}
    t.update(kw)
    return t


def test_the_table_verdict_in_plain_words():
    v = table_text.verdict(_figures())
    assert "the found cell beats random search (98.9 vs 85.0) and beats the largest ranked cell (98.9 vs 97.0)" in v
    assert "the supernet ranks below the parameter-count floor by 5.5 standard errors" in v
    assert "the run's score does not rank above every training-free floor (tau 0.610, the best floor 0.655)" in v
    v = table_text.verdict(_figures(found_percentile=60.0, tau_supernet=0.62, tau_run=0.7))
    assert "does not beat random search (60.0 vs 85.0) and does not beat the largest ranked cell" in v
    assert "level with the parameter-count floor (under 2 standard errors apart" in v
    assert "the run's score ranks above every training-free floor" in v


def test_enas_table_says_where_the_best_final_candidate_stood_in_the_runs_order():
    out = {"run": "runs/r", "cells": 200, "seed": 0, "found": "|x|", "random_candidates": 8, "random_picks": [],
           "tables": [_figures(candidates_percentiles=[88.5, 99.5, 96.3], candidates_best_percentile=99.5)]}
    [row] = [ln for ln in table_text.render(out).splitlines() if "best final candidate" in ln]
    assert row.split("candidate", 1)[1].split() == ["99.5", "(number", "2", "of", "3", "in", "the", "run's", "order)"]


def test_enas_table_prints_an_aligned_table_and_strict_json():
    out = {"run": "runs/r", "cells": 200, "seed": 0, "found": "|x|", "random_candidates": 8,
           "random_picks": ["|a|", "|b|"], "tables": [_figures(), _figures(title="12 epochs (early training)")]}
    text = table_text.render(out)
    rows = [ln for ln in text.splitlines() if ln[:30].strip() and ln[30:31] == " " and ln[31:].strip()]
    taus = [ln for ln in rows if "+-" in ln]
    pcts = [ln for ln in rows if "+-" not in ln and "Kendall" not in ln]
    assert len(taus) == 8 and len(pcts) == 8, text
    for block in (taus, pcts):  # every figure's decimal point in one column
        assert len({ln.index(".", 30) for ln in block}) == 1, text
    assert {ln.index("+-") for ln in taus} == {37}
    assert text.count("verdict: ") == 2 and text.index("(headline)") < text.index("(early training)")
    assert "naswot (floor)               0.655 +- 0.030        n/a" in text
    parsed = json.loads(json.dumps(table_text.plain_json(out), allow_nan=False))
    assert parsed["tables"][0]["tau_naswot_within"] is None and parsed["tables"][0]["tau_run"] == 0.61


def _tiny_run(root, **search):
    """A tiny finished NB201 search in root/run with a training-free term and a final stage."""
    write_cifar(root / "data", noise=60)
    cfg = write_config(root, TINY_NB201, "c.yaml", search={"score": {"supernet": 1.0, "naswot": 1.0,
                                                                     "reference": 4}, "final_train": 1, **search})
    run = root / "run"
    assert main(["search", str(cfg), "--data-dir", str(root / "data"), "--run-dir", str(run), "--device", "cpu"]) == 0
    return root, run


@pytest.fixture(scope="module")
def tiny_nb201_run(tmp_path_factory):
    return _tiny_run(tmp_path_factory.mktemp("nb201run"))


@pytest.fixture(scope="module")
def tiny_nb201_budget_run(tmp_path_factory):
    """The same under search.max_params (counted on NB201's own network, C=16, 5 cells per stage)."""
    return _tiny_run(tmp_path_factory.mktemp("nb201budget"), max_params=BUDGET)


@pytest.mark.slow
def test_enas_table_measures_a_run(tiny_nb201_run, capsys):
    """The run measured on a made-up table of 40 cells: every scorer's tau, the found cell,
    random search's picks."""
    root, run = tiny_nb201_run
    space = build_space("nb201")
    from enas.nas.controller import RandomPolicy
    import torch

    archs = RandomPolicy(space.decisions())(60, generator=torch.Generator().manual_seed(0)).archs
    texts = list(dict.fromkeys(arch_text(space, a) for a in archs))[:40]
    from enas.nas.archfile import load_arch

    found = arch_text(space, load_arch(run / "best_arch.yaml")[1])
    texts = [found] + [t for t in texts if t != found][:39]
    write_table(root / "t.csv", [(i, t, float(i)) for i, t in enumerate(texts)])
    out = root / "m.json"
    assert main(["table", str(run), "--table", str(root / "t.csv"), "--cells", "20", "--draws", "2",
                 "--candidates", "3", "--out", str(out), "--device", "cpu"]) == 0
    m = json.loads(out.read_text())
    assert m["found"] == found and len(m["random_picks"]) == 2 and m["random_candidates"] == 3
    [t] = m["tables"]
    for name in ("run", "supernet", "params", "synflow", "naswot"):
        assert -1.0 <= t[f"tau_{name}"] <= 1.0 and t[f"tau_{name}_se"] >= 0, name
    assert t["found_accuracy"] == 0.0 and t["found_percentile"] == pytest.approx(1.25)
    assert len(t["random_percentiles"]) == 2
    assert 0 < t["policy_ess"] <= 20
    printed = capsys.readouterr().out
    assert "parameter count (floor)" in printed and "verdict: the found cell" in printed
    # no budget: nothing about one, in the JSON or the text
    assert "max_params" not in m and not any("fit" in k for k in t) and " fit" not in printed


@pytest.mark.slow
def test_enas_table_without_table_measures_on_both_shipped_tables(tiny_nb201_run, capsys):
    _, run = tiny_nb201_run
    assert main(["table", str(run), "--cells", "12", "--draws", "1", "--candidates", "2", "--json",
                 "--device", "cpu"]) == 0
    m = json.loads(capsys.readouterr().out)  # stdout is the JSON object alone
    assert [t["metric"] for t in m["tables"]] == ["cifar10_test", "cifar10_valid"]
    for t in m["tables"]:
        assert t["table_rows"] == 15_625 and t["cells"] == 12 and 0 <= t["found_percentile"] <= 100
        assert "tau_supernet_within" in t and t["within_pairs"] >= 0
        # where the final stage chose from: the final derive's candidates, its own pick among them
        each = t["candidates_percentiles"]
        assert each and t["candidates_best_percentile"] == max(each)
        assert t["found_before_final_stage_percentile"] in each


# ---- a run under search.max_params: measured among the cells that fit

BUDGET = 400_000


def _nb201_budget(max_params=BUDGET):
    """NB201's cells counted as a search with default search.budget_model counts them (on
    CIFAR-10's 10 classes)."""
    space = build_space("nb201")
    return space, Budget(space, budget_model_args(space, {}), {"num_classes": 10}, max_params)


def _every_nb201_cell(space) -> list[dict]:
    names = [d.name for d in space.decisions()]
    return [dict(zip(names, ops)) for ops in itertools.product(*(d.choices for d in space.decisions()))]


def test_9604_of_nb201s_15625_cells_fit_400000_parameters_on_its_own_network():
    """A fact of the space, from the counting code alone (no table read): NB201's network
    (C=16, 5 cells per stage) has at most 400,000 parameters for 9,604 of its cells."""
    space, budget = _nb201_budget()
    cells = _every_nb201_cell(space)
    assert len(cells) == 15_625
    assert sum(budget.fits(c) for c in cells) == 9_604


def test_a_table_cut_to_the_cells_that_fit_ranks_among_them_alone(tmp_path):
    t = read(write_table(tmp_path / "t.csv"))  # accuracies 10, 90, 50, 70; CELLS[1] (six convs) is too large
    space, budget = _nb201_budget()
    assert [budget.fits(parse_arch_line(space, c)) for c in CELLS] == [True, False, True, True]
    fit = t.only(budget.fits)
    assert sorted(fit.accuracy) == sorted(CELLS[k] for k in (0, 2, 3)) and fit.archs.keys() == fit.accuracy.keys()
    assert t.percentile(70.0) == pytest.approx(62.5)  # among all rows: beats 2 of 4
    assert fit.percentile(70.0) == pytest.approx(250 / 3)  # among those that fit: beats 2 of 3
    assert sorted(fit.sample(3, seed=0)) == sorted(fit.accuracy)  # the sample is drawn among them
    assert math.isnan(t.only(lambda a: False).percentile(70.0))  # none fits: no percentile


def _budget_figures(**kw):
    """_figures() as measure() returns them under a budget."""
    fit = {"fit_rows": 9604, "found_fit_percentile": 97.5, "largest_fit_percentile": 78.0,
           "policy_mean_fit_percentile": 80.0, "uniform_mean_fit_percentile": 50.0,
           "random_fit_percentiles": [70.0, 90.0], "random_mean_fit_percentile": 80.0}
    return _figures(**{**fit, **kw})


def test_enas_table_under_a_budget_adds_the_percentiles_among_the_cells_that_fit():
    out = {"run": "runs/r", "cells": 200, "seed": 0, "found": "|x|", "random_candidates": 8, "max_params": BUDGET,
           "random_picks": ["|a|", "|b|"], "tables": [_budget_figures()]}
    text = table_text.render(out)
    assert "200 cells drawn from the table's cells that fit search.max_params = 400,000" in text
    assert "9,604 rows fit search.max_params = 400,000" in text
    assert "percentile among the 9,604 rows that fit" in text
    rows = [ln for ln in text.splitlines() if ln[:30].strip() and ln[30:31] == " " and ln[31:].strip()]
    pcts = [ln for ln in rows if "+-" not in ln and "Kendall" not in ln]
    assert len(pcts) == 8, text  # found, largest, random, policy: among all rows, then among those that fit
    assert len({ln.index(".", 30) for ln in pcts}) == 1, text
    assert [ln.split()[-1] for ln in pcts if ln.lstrip().startswith("found cell")] == ["93.76)", "97.5"]
    # the verdict compares among the cells that fit (the found cell 97.5 vs random 80.0 and the largest 78.0)
    assert "among the cells that fit, the found cell beats random search (97.5 vs 80.0) and beats the largest " \
           "ranked cell (97.5 vs 78.0)" in table_text.verdict(out["tables"][0])
    without = {k: v for k, v in out.items() if k != "max_params"}
    without["tables"] = [_figures()]
    assert "fit" not in table_text.render(without)


@pytest.mark.slow
def test_enas_table_measures_a_budgeted_run_among_the_cells_that_fit(tiny_nb201_budget_run, monkeypatch, capsys):
    """A run under search.max_params on a made-up table of every NB201 cell (random
    accuracies): every cell scored (ranked, or a random search candidate) fits, random
    search's picks fit, and the percentiles among the cells that fit are those among the
    table's rows that the counting code says fit."""
    root, run = tiny_nb201_budget_run
    space, budget = _nb201_budget()
    texts = [arch_text(space, c) for c in _every_nb201_cell(space)]
    acc = [float(v) for v in np.random.default_rng(0).permutation(len(texts))]
    write_table(root / "t.csv", list(zip(range(len(texts)), texts, acc)))
    accuracy = dict(zip(texts, acc))
    fitting = [accuracy[t] for t in texts if budget.fits(parse_arch_line(space, t))]
    assert len(fitting) == 9_604
    scored = []
    real = against_table.scorer

    def recording(search, name):
        of = real(search, name)
        return lambda arch: (scored.append(arch), of(arch))[1]

    monkeypatch.setattr(against_table, "scorer", recording)
    argv = ["table", str(run), "--table", str(root / "t.csv"), "--draws", "2", "--candidates", "3", "--device", "cpu"]
    assert main(argv + ["--cells", "9605"]) == 2  # the sample is drawn among the cells that fit
    assert "--cells must be in 2..9604 (the table's rows that fit search.max_params = 400,000)" in \
        capsys.readouterr().err
    out = root / "b.json"
    assert main(argv + ["--cells", "8", "--out", str(out)]) == 0
    m = json.loads(out.read_text())
    assert m["max_params"] == BUDGET and len(scored) >= 8 * 5 + 2 * 3
    assert all(budget.fits(a) for a in scored)
    assert all(budget.fits(parse_arch_line(space, p)) for p in m["random_picks"])
    [t] = m["tables"]
    assert t["fit_rows"] == 9_604 and t["table_rows"] == 15_625 and t["cells"] == 8
    found = accuracy[m["found"]]
    assert t["found_fit_percentile"] == pytest.approx(percentile(found, fitting))
    assert t["found_percentile"] == pytest.approx(percentile(found, acc))
    assert t["random_fit_percentiles"] == pytest.approx([percentile(accuracy[p], fitting) for p in m["random_picks"]])
    assert len(t["random_before_final_stage_fit_percentiles"]) == 2
    for key in ("largest_fit_percentile", "policy_mean_fit_percentile", "uniform_mean_fit_percentile",
                "random_mean_fit_percentile", "found_before_final_stage_fit_percentile"):
        assert 0 <= t[key] <= 100, key
    assert t["tau_run"] is not None and 0 < t["policy_ess"] <= 8
