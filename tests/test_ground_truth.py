"""`enas ground-truth` and `enas compare` (enas/evaluate/): rank
statistics against hand-computed values, the resumable CSV, uniform sampling, and
one tiny end-to-end build + comparison on generated CIFAR data (never ../shared)."""
from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from enas.nas.archfile import save_arch
from enas.cli import main as enas_main
from enas.evaluate import compare as cr
from enas.evaluate import ground_truth as gt
from enas.evaluate import stats
from enas.evaluate.against_table import policy_expectation
from enas.nas.space import Decision, build_space, validate
from search_spaces.nb201 import BEST_CIFAR10_CELL, RESNET_CELL
from conftest import write_cifar

ROOT = Path(__file__).resolve().parents[1]

ZERO_CELL = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


# ---------------------------------------------------------------------- statistics


def test_uniform_cells_are_canonical_known_and_listed_once(tmp_path):
    canon = cr.Canon("nb201")
    hi_reordered = "+".join("|" + "|".join(reversed(p.strip("|").split("|"))) + "|" for p in RESNET_CELL.split("+"))
    listed = tmp_path / "cells.txt"
    listed.write_text(f"{BEST_CIFAR10_CELL}\n\n{hi_reordered}\n{ZERO_CELL}\n{RESNET_CELL}\n")
    gt = {canon(RESNET_CELL): 0.6, canon(BEST_CIFAR10_CELL): 0.8}
    assert cr.uniform_cells(listed, canon, gt) == [canon(BEST_CIFAR10_CELL), canon(RESNET_CELL)]


def test_policy_expectation_weights_cells_by_their_policy_probability():
    import torch

    from enas.nas.controller import RandomPolicy, Sample

    space = build_space("nb201")
    archs = [space.parse_text(t) for t in (RESNET_CELL, BEST_CIFAR10_CELL, ZERO_CELL)]
    acc = [0.6, 0.8, 0.1]
    uniform = policy_expectation(RandomPolicy(space.decisions()), archs, acc)
    assert uniform["policy_mean"] == pytest.approx(0.5) == uniform["uniform_mean"]
    assert uniform["policy_ess"] == pytest.approx(3.0)

    class Fixed:  # a policy with probabilities 1/2, 1/4, 1/4 on the three cells
        def evaluate(self, got):
            assert got == archs
            lp = torch.log(torch.tensor([0.5, 0.25, 0.25]))
            return Sample(got, lp, torch.zeros(3), torch.zeros(3))

    sharp = policy_expectation(Fixed(), archs, acc)
    assert sharp["policy_mean"] == pytest.approx(0.5 * 0.6 + 0.25 * 0.8 + 0.25 * 0.1)
    assert sharp["uniform_mean"] == pytest.approx(0.5)
    assert sharp["policy_ess"] == pytest.approx(1.0 / (0.25 + 0.0625 + 0.0625))


def test_kendall_tau_b_hand_computed():
    # no ties: pairs of [1,2,3,4] vs [1,3,2,4]: 5 concordant, 1 discordant -> 4/6
    assert stats.kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # ties: x=[1,2,2,3], y=[1,2,3,3]: S = 4, 5 untied pairs on each side -> 4/sqrt(5*5)
    assert stats.kendall_tau_b([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(0.8)
    # tau-a would give 4/6 here; tau-b's denominator must drop the tied pairs
    assert stats.kendall_tau_b([1, 2, 2, 3], [1, 2, 3, 3]) != pytest.approx(4 / 6)
    # ties on one side only: x=[1,1,2], y=[1,2,3]: S = 2, untied 2 and 3 -> 2/sqrt(6)
    assert stats.kendall_tau_b([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))
    assert stats.kendall_tau_b([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert stats.kendall_tau_b([0.5, 0.1, 0.9], [50, 10, 90]) == pytest.approx(1.0)  # scale-free
    assert math.isnan(stats.kendall_tau_b([1, 1, 1], [1, 2, 3]))  # a constant side: undefined
    assert math.isnan(stats.kendall_tau_b([1], [2]))


def test_spearman_rho_hand_computed():
    # no ties: d = [0,1,1,0], rho = 1 - 6*2 / (4*15) = 0.8
    assert stats.spearman_rho([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # ties: ranks [1,2.5,2.5,4] and [1,2,3.5,3.5]: centred products 3.75 / sqrt(4.5*4.5)
    assert stats.spearman_rho([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(3.75 / 4.5)
    assert stats.spearman_rho([10, 20, 30], [3, 2, 1]) == pytest.approx(-1.0)
    assert stats.spearman_rho([1, 2, 3], [1, 4, 9]) == pytest.approx(1.0)  # monotone, not linear
    assert math.isnan(stats.spearman_rho([2, 2, 2], [1, 2, 3]))


def test_rankdata_averages_ties():
    assert stats.rankdata([30, 10, 20, 10]).tolist() == [4.0, 1.5, 3.0, 1.5]
    assert stats.rankdata([5, 5, 5]).tolist() == [2.0, 2.0, 2.0]


def test_topk_overlap_and_percentile():
    score = {"a": 4, "b": 3, "c": 2, "d": 1, "e": 0}
    truth = {"a": 0.1, "b": 0.9, "c": 0.8, "d": 0.7, "e": 0.6, "f": 1.0}  # f: not ranked, ignored
    assert stats.topk_overlap(score, truth, 2) == (1, 2)  # {a, b} vs {b, c}
    assert stats.topk_overlap(score, truth, 3) == (2, 3)  # {a, b, c} vs {b, c, d}
    assert stats.topk_overlap(score, truth, 10) == (5, 5)  # k clipped to the 5 shared archs
    # ties broken by the arch text, the same way on both sides
    assert stats.top({"x": 1, "w": 1, "v": 0}, 1) == ["w"]
    assert stats.percentile(0.5, [0.4, 0.5, 0.6, 0.3]) == pytest.approx(62.5)  # beats 2, ties 1
    assert stats.percentile(0.9, [0.1, 0.2]) == 100.0 and stats.percentile(0.0, [0.1]) == 0.0
    assert math.isnan(stats.percentile(0.5, []))


def test_canonical_arch_text_matches_reordered_forms():
    canon = cr.Canon("nb201")
    shuffled = "|nor_conv_3x3~0|+|nor_conv_3x3~1|nor_conv_3x3~0|+|nor_conv_3x3~2|skip_connect~0|nor_conv_3x3~1|"
    assert canon(shuffled) == BEST_CIFAR10_CELL
    assert canon('{"b": 1, "a": "x"}') == canon("{a: x, b: 1}") == '{"a":"x","b":1}'


# ---------------------------------------------------------------------- sampling


def test_uniform_sampling_is_deterministic_distinct_and_valid():
    space = build_space("nb201")
    a = gt.sample_uniform(space, 20, seed=0)
    assert a == gt.sample_uniform(space, 20, seed=0)
    assert a != gt.sample_uniform(space, 20, seed=1)
    assert gt.sample_uniform(space, 8, seed=0) == a[:8]  # a larger table extends a smaller one
    texts = [gt.canonical(space, x) for x in a]
    assert len(set(texts)) == 20
    for x, t in zip(a, texts):
        assert validate(space.decisions(), x) == x
        assert space.parse_text(t) == x
    # spaces with skip-set and input-index decisions: every sample validates too
    macro = build_space("enas_macro", {"num_layers": 4})
    assert any(d.kind == "skip" for d in macro.decisions())
    for x in gt.sample_uniform(macro, 10, seed=3):
        assert validate(macro.decisions(), x) == x
        assert macro.parse_text(gt.canonical(macro, x)) == x  # the space's own text form
    micro = build_space("enas_micro")
    assert any(d.kind == "index" for d in micro.decisions()) and not hasattr(micro, "to_text")
    for x in gt.sample_uniform(micro, 10, seed=3):
        assert validate(micro.decisions(), x) == x
        assert json.loads(gt.canonical(micro, x)) == x  # no text form: compact JSON, as `enas rank`


def test_uniform_sampling_refuses_more_than_the_space_holds():
    class Tiny:
        name = "tiny"

        def decisions(self):
            return [Decision("op", "categorical", choices=("a", "b", "c"))]

    got = gt.sample_uniform(Tiny(), 3, seed=0)
    assert sorted(x["op"] for x in got) == ["a", "b", "c"]
    with pytest.raises(gt.GroundTruthError, match="only 3 distinct"):
        gt.sample_uniform(Tiny(), 4, seed=0)


# ---------------------------------------------------------------------- the CSV


def _row(arch, seed, acc):
    return {"arch": arch, "seed": seed, "test_accuracy": acc, "params": 10, "seconds": 1.0, "recipe": "r"}


def test_csv_resume_logic(tmp_path):
    out = tmp_path / "gt.csv"
    gt.prepare_csv(out)
    gt.append_row(out, _row(RESNET_CELL, 0, 0.5))
    gt.append_row(out, _row(RESNET_CELL, 1, 0.6))
    # a crash in the middle of a row: the fragment is not a row, and is cut before appending
    with open(out, "a") as f:
        f.write(f"{BEST_CIFAR10_CELL},0,0.7")
    rows = gt.read_rows(out)
    assert [(r["arch"], r["seed"]) for r in rows] == [(RESNET_CELL, "0"), (RESNET_CELL, "1")]
    pairs = [(RESNET_CELL, 0), (RESNET_CELL, 1), (BEST_CIFAR10_CELL, 0), (BEST_CIFAR10_CELL, 0)]
    assert gt.todo(pairs, rows) == [(BEST_CIFAR10_CELL, 0)]  # done pairs and repeats skipped
    gt.prepare_csv(out)
    gt.append_row(out, _row(BEST_CIFAR10_CELL, 0, 0.7))
    assert [r["test_accuracy"] for r in gt.read_rows(out)] == ["0.5", "0.6", "0.7"]
    assert out.read_text().count("\n") == 4  # header + 3 whole lines
    bad = tmp_path / "other.csv"
    bad.write_text("arch,score,params\n")
    with pytest.raises(gt.GroundTruthError, match="not a ground-truth CSV"):
        gt.prepare_csv(bad)


def test_recipe_hash_ignores_seed_and_logging(tmp_path):
    space = build_space("nb201")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(TINY_RETRAIN))
    h, _ = gt.recipe_hash(cfg, [], space)
    assert gt.recipe_hash(cfg, ["retrain.seed=7", "retrain.log_every=3"], space)[0] == h
    assert gt.recipe_hash(cfg, ["train.lr=0.2"], space)[0] != h
    # a key added later is out of the hash at its neutral default only
    assert gt.recipe_hash(cfg, ["data.image_size=32", "data.skip_bad_images=false"], space)[0] == h
    assert gt.recipe_hash(cfg, ["retrain.space_module=x.py"], space)[0] != h


def test_shipped_recipe_is_the_committed_tables():
    """configs/smoke/nb201_retrain.yaml still hashes to the recipe of the committed NB201
    ground truth, so `enas ground-truth` extends that table instead of refusing it."""
    rows = list(csv.DictReader((ROOT / "benchmarks/results/nb201_ground_truth.csv").open()))
    recipes = {r["recipe"] for r in rows}
    assert len(rows) >= 50 and len(recipes) == 1
    assert gt.recipe_hash(ROOT / "configs/smoke/nb201_retrain.yaml", [], build_space("nb201"))[0] in recipes


# ---------------------------------------------------------------------- end to end

TINY_RETRAIN = {
    "model": {"channels": 4, "cells_per_stage": 1, "dropout": 0.0},
    "data": {"dataset": "cifar10", "batch_size": 20, "eval_batch_size": 12, "augment": True},
    "train": {"lr": 0.05, "momentum": 0.9, "schedule": "cosine", "t0": 1, "t_mul": 1},
    "retrain": {"epochs": 1, "seed": 0, "log_every": 100},
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Two cells, one seed, trained by `enas ground-truth` (two `enas retrain` processes)."""
    root = tmp_path_factory.mktemp("gt")
    data = root / "cifar"
    write_cifar(data)
    cfg = root / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY_RETRAIN))
    archs = root / "archs.txt"
    archs.write_text(f"# two cells\n{RESNET_CELL}\n{BEST_CIFAR10_CELL}\n{RESNET_CELL}\n")
    out = root / "gt.csv"
    engine = root / "engine"  # a frozen copy of the engine, as for a long build
    for pkg in ("enas", "search_spaces"):
        shutil.copytree(ROOT / pkg, engine / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    argv = ["--archs", archs, "--config", cfg, "--data-dir", data, "--out", out, "--work-dir", root / "work",
            "--jobs", 2, "--write-archs", root / "list.txt", "--engine", engine]
    argv = [str(a) for a in argv]
    return root, argv, out


@pytest.mark.slow
def test_end_to_end_build_resume_and_compare(built, capsys):
    root, argv, out = built
    assert enas_main(["ground-truth"] + argv) == 0
    printed = capsys.readouterr().out
    assert "2 architectures x 1 seeds = 2 cells; 0 already in" in printed
    assert "[2/2] acc" in printed and "ETA" in printed and "cells=2" in printed and "trained=2" in printed
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == gt.COLUMNS
    assert sorted(r["arch"] for r in rows) == sorted([RESNET_CELL, BEST_CIFAR10_CELL])
    for r in rows:
        assert 0.0 <= float(r["test_accuracy"]) <= 1.0 and int(r["params"]) > 0
        assert r["seed"] == "0" and r["epochs"] == "1" and r["space"] == "nb201"
        assert (Path(r["run_dir"]) / "result.json").is_file()
    params = {r["arch"]: int(r["params"]) for r in rows}
    assert params[BEST_CIFAR10_CELL] > params[RESNET_CELL]  # five convs vs two
    assert (root / "list.txt").read_text().splitlines() == [RESNET_CELL, BEST_CIFAR10_CELL]

    # rerun: everything is in the CSV, nothing trains, nothing is appended
    before = out.read_text()
    assert enas_main(["ground-truth"] + argv) == 0
    printed = capsys.readouterr().out
    assert "2 already in" in printed and "0 to train" in printed and "cells=0" in printed
    assert out.read_text() == before
    # another recipe into the same CSV is refused before anything runs
    assert enas_main(["ground-truth"] + argv + ["--set", "train.lr=0.2"]) == 2
    assert "another recipe" in capsys.readouterr().err

    # a finished run folder whose row never reached the CSV (killed in between): the
    # row is recovered from its result.json without training again
    lines = before.splitlines()
    out.write_text("\n".join(lines[:2]) + "\n")  # drop the second row
    assert enas_main(["ground-truth"] + argv) == 0
    printed = capsys.readouterr().out
    assert "1 to train" in printed and "cells=1" in printed
    assert "trained=0" in printed and "recovered=1" in printed
    recovered = {(r["arch"], r["test_accuracy"], r["run_dir"]) for r in gt.read_rows(out)}
    assert recovered == {(r["arch"], r["test_accuracy"], r["run_dir"]) for r in rows}

    # compare with a hand-made ranking: scores ordered like the accuracies, one arch
    # written with its edges in another order, one arch not in the ground truth
    acc = {r["arch"]: float(r["test_accuracy"]) for r in gt.read_rows(out)}
    lo, hi = sorted(acc, key=acc.get)
    hi_reordered = "+".join("|" + "|".join(reversed(p.strip("|").split("|"))) + "|" for p in hi.split("+"))
    rank = root / "rank.csv"
    rank.write_text(f"arch,score,params\n{lo},0.1,1\n{hi_reordered},0.3,1\n{ZERO_CELL},0.2,1\n")
    run_dir = root / "search"
    run_dir.mkdir()
    space = build_space("nb201")
    save_arch(run_dir / "best_arch.yaml", space, space.parse_text(hi), {"score": 0.3})
    other_run = root / "search2"
    other_run.mkdir()
    save_arch(other_run / "best_arch.yaml", space, space.parse_text(ZERO_CELL))
    js = root / "cmp.json"
    assert enas_main(["compare", str(out), "--rank", str(rank), "--runs", str(run_dir), str(other_run),
                      "--json", str(js)]) == 0
    lines = capsys.readouterr().out.splitlines()
    got = dict(line.split("=", 1) for line in lines)
    assert got["gt_archs"] == "2" and got["rank_archs"] == "3" and got["common_archs"] == "2"
    tied = acc[lo] == acc[hi]
    assert got["kendall_tau_b"] == ("nan" if tied else "1.0000")
    assert got["spearman_rho"] == ("nan" if tied else "1.0000")
    assert got["top5_k_used"] == "2" and got["top5_overlap"] == "2" and got["top5_overlap_fraction"] == "1.0000"
    assert got["run1_arch"] == hi and float(got["run1_gt_accuracy"]) == pytest.approx(acc[hi], abs=1e-4)
    assert float(got["run1_gt_percentile"]) == (50.0 if tied else 100.0)
    assert got["run1_search_score"] == "0.3000"
    assert got["run2_gt_accuracy"] == "None" and "not in the ground truth" in got["run2_note"]
    data = json.loads(js.read_text())
    assert data["common_archs"] == 2 and data["run2_gt_accuracy"] is None


def test_compare_reports_seed_reliability(tmp_path, capsys):
    out = tmp_path / "gt.csv"
    gt.prepare_csv(out)
    cells = [RESNET_CELL, BEST_CIFAR10_CELL, ZERO_CELL, "|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|"]
    for c, a0, a1 in zip(cells, [0.5, 0.7, 0.1, 0.3], [0.55, 0.65, 0.1, 0.35]):
        gt.append_row(out, {**_row(c, 0, a0), "space": "nb201"})
        gt.append_row(out, {**_row(c, 1, a1), "space": "nb201"})
    assert enas_main(["compare", str(out)]) == 0
    got = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert got["gt_archs"] == "4" and got["gt_rows"] == "8" and got["gt_seeds"] == "2"
    assert got["seed0_vs_seed1_kendall_tau_b"] == "1.0000"  # same order under both seeds
    assert float(got["seed0_vs_seed1_mean_abs_diff"]) == pytest.approx(0.0375, abs=1e-4)
    assert float(got["gt_accuracy_median"]) == pytest.approx((0.325 + 0.525) / 2, abs=1e-4)  # seed means
    assert enas_main(["compare", str(tmp_path / "missing.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_user_errors_are_one_line(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(TINY_RETRAIN))
    assert enas_main(["ground-truth", "--config", str(cfg), "--out", str(tmp_path / "o.csv")]) == 2
    assert "no architectures" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_text("|none~0|+|none~0|none~1|\n")
    assert enas_main(["ground-truth", "--archs", str(bad), "--config", str(cfg),
                      "--out", str(tmp_path / "o.csv")]) == 2
    assert "line 1" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()
    good = tmp_path / "good.txt"
    good.write_text(RESNET_CELL + "\n")
    assert enas_main(["ground-truth", "--archs", str(good), "--config", str(cfg), "--out", str(tmp_path / "o.csv"),
                    "--engine", str(tmp_path)]) == 2
    assert "expected a folder holding enas/" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()  # refused before anything is written
