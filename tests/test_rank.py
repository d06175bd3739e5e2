"""`enas rank`: supernet scores of sampled or listed architectures, one CSV row each."""
from __future__ import annotations

import csv
import json
import math

import pytest

from enas.nas.archfile import ArchFileError
from enas.cli import main
from enas.evaluate.rank import read_archs
from enas.nas.space import build_space
from search_spaces.nb201 import BEST_CIFAR10_CELL, RESNET_CELL
from conftest import write_cifar
from conftest import tiny_nb201_config


def run(*argv):
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    """One tiny NB201 search (1 epoch), shared by the tests of this module."""
    root = tmp_path_factory.mktemp("rank")
    data = root / "cifar"
    write_cifar(data)
    run_dir = root / "run"
    cfg = tiny_nb201_config(root, {"search": {"epochs": 1}})
    assert run("search", cfg, "--data-dir", data, "--run-dir", run_dir, "--device", "cpu") == 0
    return run_dir, data


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_uniform_samples_one_row_each(search_run, tmp_path, capsys):
    run_dir, data = search_run
    before = (run_dir / "checkpoint.pt").read_bytes()
    out = tmp_path / "ranks.csv"
    assert run("rank", run_dir, "--samples", 5, "--out", out, "--data-dir", data, "--device", "cpu") == 0
    rows = read_csv(out)
    assert len(rows) == 5 and list(rows[0]) == ["arch", "score", "score_se", "params"]
    space = build_space("nb201")
    for r in rows:
        space.parse_text(r["arch"])
        assert math.isfinite(float(r["score"])) and 0.0 <= float(r["score"]) <= 1.0
        assert int(r["params"]) > 0
    assert "ranked 5 architectures (uniform samples, seed 0)" in capsys.readouterr().out
    assert (run_dir / "checkpoint.pt").read_bytes() == before  # ranking changes nothing in the run
    # the same seed samples the same archs; the default name never overwrites
    assert run("rank", run_dir, "--samples", 5, "--data-dir", data, "--device", "cpu") == 0
    assert run("rank", run_dir, "--samples", 5, "--data-dir", data, "--device", "cpu") == 0
    written = sorted(run_dir.glob("ranks-uniform-n5-*.csv"))
    assert len(written) == 2
    assert [r["arch"] for r in read_csv(written[0])] == [r["arch"] for r in rows]


def test_listed_archs_are_ranked_exactly_in_order(search_run, tmp_path):
    run_dir, data = search_run
    mapping = {"node1/from0": "avg_pool_3x3", "node2/from0": "none", "node2/from1": "nor_conv_1x1",
               "node3/from0": "skip_connect", "node3/from1": "none", "node3/from2": "nor_conv_3x3"}
    listed = tmp_path / "archs.txt"
    listed.write_text(f"# cells to rank\n{RESNET_CELL}\n\n  {BEST_CIFAR10_CELL}  \n{json.dumps(mapping)}\n"
                      f"{RESNET_CELL}\n")
    out = tmp_path / "listed.csv"
    assert run("rank", run_dir, "--archs", listed, "--out", out, "--data-dir", data, "--device", "cpu") == 0
    rows = read_csv(out)
    space = build_space("nb201")
    assert [r["arch"] for r in rows] == [RESNET_CELL, BEST_CIFAR10_CELL, space.to_text(mapping), RESNET_CELL]
    assert rows[0]["score"] == rows[3]["score"]  # deterministic scoring
    assert int(rows[1]["params"]) > int(rows[0]["params"])  # five convs vs two
    # the CSV's arch column reads back as an architecture list
    again = tmp_path / "again.txt"
    again.write_text("\n".join(r["arch"] for r in rows) + "\n")
    assert [space.to_text(a) for a in read_archs(space, again)] == [r["arch"] for r in rows]


def test_policy_and_recalibrated_bn(search_run, tmp_path, capsys):
    run_dir, data = search_run
    out = tmp_path / "p.csv"
    assert run("rank", run_dir, "--policy", "--samples", 3, "--recalibrate-bn", "--out", out,
               "--data-dir", data, "--device", "cpu") == 0
    rows = read_csv(out)
    assert len(rows) == 3 and all(math.isfinite(float(r["score"])) for r in rows)
    printed = capsys.readouterr().out
    assert "trained policy" in printed and "BN: recalibrated per arch" in printed


def test_user_errors_are_one_line(search_run, tmp_path, capsys):
    run_dir, data = search_run
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{RESNET_CELL}\n# fine so far\n|none~0|+|none~0|none~1|\n")
    assert run("rank", run_dir, "--archs", bad, "--data-dir", data, "--device", "cpu") == 2
    err = capsys.readouterr().err
    assert "line 3" in err and "expected 3 nodes" in err and "Traceback" not in err
    assert run("rank", run_dir, "--archs", bad, "--samples", 2, "--data-dir", data) == 2
    assert "--archs" in capsys.readouterr().err
    assert run("rank", tmp_path, "--data-dir", data, "--device", "cpu") == 2
    assert "not a search run folder" in capsys.readouterr().err
    assert run("rank", run_dir, "--archs", tmp_path / "missing.txt", "--data-dir", data) == 2
    assert "does not exist" in capsys.readouterr().err


def test_out_never_overwrites_without_force_nor_a_run_file(search_run, tmp_path, capsys):
    run_dir, data = search_run
    ckpt = (run_dir / "checkpoint.pt").read_bytes()
    for out, says in [(run_dir / "checkpoint.pt", "is a file of the run"), (tmp_path, "is a folder")]:
        assert run("rank", run_dir, "--samples", 2, "--out", out, "--data-dir", data, "--force") == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (run_dir / "checkpoint.pt").read_bytes() == ckpt and not list(tmp_path.glob("*.tmp"))
    out = tmp_path / "r.csv"
    out.write_text("mine\n")
    assert run("rank", run_dir, "--samples", 2, "--out", out, "--data-dir", data, "--device", "cpu") == 2
    assert "--force" in capsys.readouterr().err and out.read_text() == "mine\n"
    assert run("rank", run_dir, "--samples", 2, "--out", out, "--data-dir", data, "--device", "cpu", "--force") == 0
    assert len(read_csv(out)) == 2


def test_arch_lines_for_a_space_without_text_form(tmp_path):
    space = build_space("enas_rnn", {"num_nodes": 2})
    names = [d.name for d in space.decisions()]
    arch = {d.name: (d.choices[0] if d.kind == "categorical" else 0) for d in space.decisions()}
    f = tmp_path / "rnn.txt"
    f.write_text(json.dumps(arch) + "\n" + "{" + ", ".join(f"{k}: {v}" for k, v in arch.items()) + "}\n")
    assert read_archs(space, f) == [arch, arch]
    f.write_text(json.dumps(arch) + "\n" + RESNET_CELL + "\n")
    with pytest.raises(ArchFileError, match="line 2: .*no text form"):
        read_archs(space, f)
    bad = dict(arch, **{names[0]: "no_such_op"})
    f.write_text(json.dumps(bad) + "\n")
    with pytest.raises(ArchFileError, match=f"line 1: decision '{names[0]}'"):
        read_archs(space, f)
