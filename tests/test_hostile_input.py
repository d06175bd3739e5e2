"""Files from anyone: YAML bombs, repeated keys and values that would hang are refused
with one line naming the file or key, exit code 2, and nothing written."""
import random
import sys

import pytest
import yaml

from enas.nas.archfile import arch_to_yaml
from enas.cli import main
from enas.nas.space import build_space

from conftest import finished_retrain, finished_search, make_corpus, random_arch, TINY_PTB

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi"))


def arch_file(tmp_path, extra: str) -> str:
    import random

    space = build_space("nb201", {})
    text = arch_to_yaml(space, random_arch(space, random.Random(0)))
    path = tmp_path / "cell.yaml"
    path.write_text(text + extra)
    return path


@pytest.mark.parametrize("extra, says", [
    ("bomb:\n" + "".join("  " + line + "\n" for line in BOMB.splitlines()), "alias"),
    ("loop: &l [*l]\n", "alias"),
    ("space: {name: nb201}\n", "appears twice"),
    ("deep: " + "[" * 100_000 + "]" * 100_000 + "\n", "nesting deeper"),
    ("big: " + "9" * 5000 + "\n", "4300 digits"),
])
def test_arch_files_that_expand_recurse_or_repeat_keys(tmp_path, capsys, extra, says):
    path = arch_file(tmp_path, extra)
    out = tmp_path / "cell.png"
    assert main(["show", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and says in err and "Traceback" not in err
    assert not out.exists()


def write_cfg(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(TINY_PTB) + text)
    return path


@pytest.mark.parametrize("text, sets, says", [
    ("seed_again: &s 1\n", [], "unknown key"),  # an anchor alone is harmless: the key is the mistake
    ("x: &x {a: 1}\ny: *x\n", [], "alias"),
    ("space: {name: enas_rnn}\n", [], "appears twice"),
    ("", ["data.variable_bptt=true", "data.bptt_max=0"], "data.bptt_max must be >= 1"),
    # sizes that cannot fit: named before anything is allocated
    ("", ["model.hidden=1000000000"], "model.hidden=1000000000"),
    ("", ["controller.hidden=1000000000"], "controller.hidden=1000000000"),
    ("", ["data.bptt=1000000000000"], "data.bptt=1000000000000"),
    ("", ["search.derive_samples=1000000000"], "search.derive_samples must be <="),
    # nesting past Python's recursion, integers past its 4,300 digits, files that are no files
    ("deep: " + "[" * 100_000 + "]" * 100_000 + "\n", [], "nesting deeper"),
    ("big: " + "9" * 5000 + "\n", [], "4300 digits"),
    ("", ["model.hidden=" + "[" * 100_000 + "]" * 100_000], "nesting deeper"),
    ("", ["x" + ".x" * 100_000 + "=1"], "levels of keys"),
    ("", ["search.seed=99999999999999999999999"], "search.seed"),
    ("", ["search.seed=" + "9" * 5000], "4300 digits"),
    ("base: /proc/self/mem\n", [], "base: '/proc/self/mem'"),
])
def test_configs_refused_before_any_run_folder(tmp_path, capsys, ptb_dir, text, sets, says):
    cfg = write_cfg(tmp_path, text)
    run = tmp_path / "run"
    argv = ["search", str(cfg), "--data-dir", str(ptb_dir), "--run-dir", str(run), "--device", "cpu"]
    assert main(argv + [x for s in sets for x in ("--set", s)]) == 2
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if not line.startswith("note:")]  # the data's provenance note
    assert says in err and "Traceback" not in err and len(lines) == 1
    assert not run.exists()


def test_files_enas_writes_never_hold_aliases(tmp_path):
    from enas.storage import safeyaml

    shared = [1, 2]
    assert safeyaml.load(safeyaml.dump({"a": shared, "b": shared})) == {"a": [1, 2], "b": [1, 2]}


@pytest.mark.parametrize("target, out, says", [
    ("folder", None, "is a folder"),
    ("/dev/zero", None, "not a regular file"),
    ("file", "drawing.yaml", "a drawing is written as"),
])
def test_show_refuses_what_it_cannot_read_or_write(tmp_path, capsys, target, out, says):
    path = {"folder": str(tmp_path), "file": str(arch_file(tmp_path, ""))}.get(target, target)
    argv = ["show", path] + (["--out", str(tmp_path / out)] if out else [])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (out and (tmp_path / out).exists())


def _crafted(state):
    import copy

    return copy.deepcopy(state)


CRAFTED = [
    ("offset beyond the file", lambda s: s.__setitem__("metrics_offset", 5_000_000_000), "beyond the end"),
    ("negative step", lambda s: s["position"].__setitem__("step", -3), "position.step"),
    ("step of the wrong type", lambda s: s["position"].__setitem__("epoch", "one"), "position.epoch"),
    ("no position", lambda s: s.pop("position"), "no valid 'position'"),
    ("a missing key", lambda s: s.pop("policy"), "does not fit this run"),
    ("a wrong type", lambda s: s.__setitem__("valid_cursor", [1, 2]), "does not fit this run"),
    ("an oversized random state", lambda s: s["rng"].__setitem__("python", "(" * 200_000), "random state"),
    ("an unknown key", lambda s: s.__setitem__("planted", [0] * 10), "unknown key 'planted'"),
    ("an unknown position key", lambda s: s["position"].__setitem__("planted", 1), "unknown position key 'planted'"),
    ("a crafted trained candidate", lambda s: s.__setitem__("trained", [{"arch": "x" * 10**5, "score": 1.0}]),
     "a trained candidate is {'arch': 'xxx"),
    ("a crafted final candidate", lambda s: s["final"]["candidates"].append({"arch": "|x|", "score": 1.0, "se": 0.1,
                                                                             "derive_score": 1.0}),
     "a final derive candidate's architecture"),
    ("a crafted final result", lambda s: s.__setitem__("final", {"arch": [1], "candidates": 5}),
     "the final derive's result is"),
    ("a crafted derive candidate", lambda s: s.__setitem__("candidates", [{"arch": {}, "score": "x", "se": 0}]),
     "a derive candidate's architecture"),
    ("a config nested deeply", lambda s: s["config"].__setitem__("deep", _nested(5_000)), "config"),
    ("a config of the wrong type", lambda s: s.__setitem__("config", [1, 2]), "config"),
]


def test_the_final_derive_of_a_checkpoint_is_validated_once_at_load():
    from enas.nas.derive import checked_final

    space = build_space("nb201")
    decisions = space.decisions()
    arch = random_arch(space, random.Random(0))
    cand = {"arch": arch, "score": 1.5, "se": 0.1, "derive_score": 1.2}
    final = {"arch": arch, "score": 1.5, "se": 0.1, "epoch": 3, "candidates": [cand], "trained": True,
             "verdict": {"text": "ok"}}
    assert checked_final(final, decisions) == final and checked_final({}, decisions) == {}
    for bad in ([], {"candidates": []}, {**final, "planted": 1}, {**final, "candidates": [{**cand, "x": 1}]},
                {**final, "candidates": [{**cand, "arch": {"node1/from0": "rm -rf"}}]}, {**final, "epoch": 3.0},
                {**final, "trained": "yes"}, {**final, "verdict": "fine"}, {**final, "candidates": {"a": 1}}):
        with pytest.raises(ValueError):
            checked_final(bad, decisions)


def _nested(depth):
    out = []
    for _ in range(depth):
        out = [out]
    return out


@pytest.fixture(scope="module")
def stopped_search(tmp_path_factory):
    """A tiny finished PTB search whose checkpoint the tests below tamper with."""

    return finished_search(tmp_path_factory.mktemp("crafted"))


@pytest.mark.parametrize("name, tamper, says", CRAFTED, ids=[c[0] for c in CRAFTED])
def test_crafted_checkpoints_are_refused_in_one_line(tmp_path, capsys, stopped_search, name, tamper, says):
    import shutil

    import torch

    src, data = stopped_search
    run = tmp_path / "run"
    shutil.copytree(src, run)
    (run / "checkpoint.prev.pt").unlink(missing_ok=True)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    tamper(state)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(50_000)  # torch.save recurses into a nested value
    try:
        torch.save(state, run / "checkpoint.pt")
    finally:
        sys.setrecursionlimit(limit)
    before = {p.name: p.stat().st_size for p in run.iterdir() if p.is_file()}
    for argv in (["search", "--resume", str(run), "--set", "search.epochs=2"], ["derive", str(run)]):
        code = main(argv + ["--device", "cpu"] + (["--allow-config-change"] if "--resume" in argv else []))
        err = capsys.readouterr().err.strip()
        assert code == 2 and says in err and "Traceback" not in err, err
        assert len([line for line in err.splitlines() if line.startswith("error")]) == 1, err
    after = {p.name: p.stat().st_size for p in run.iterdir() if p.is_file()}
    assert after == before  # nothing written, truncated or grown


@pytest.mark.parametrize("argv", [["derive", "RUN", "--samples", "1000000000"],
                                  ["rank", "RUN", "--samples", "1000000000"]])
def test_sample_counts_that_cannot_fit_are_named(capsys, stopped_search, argv):
    run, _ = stopped_search
    before = sorted(p.name for p in run.rglob("*"))
    assert main([str(run) if a == "RUN" else a for a in argv] + ["--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if not line.startswith("note:")]
    assert "1,000,000,000" in err and "samples" in err and "Traceback" not in err and len(errors) == 1
    assert sorted(p.name for p in run.rglob("*")) == before


def test_resume_in_a_read_only_folder_is_refused_before_any_work(capsys, stopped_search, monkeypatch):
    import os

    run, _ = stopped_search
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    real = os.access
    # as root (CI) a chmod does not stop writes; a read-only mount is what os.access reports
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if str(p) == str(run) else real(p, mode, **k))
    assert main(["search", "--resume", str(run), "--set", "search.epochs=2", "--allow-config-change",
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "read-only" in err and f"cp -r {run}" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before


@pytest.fixture(scope="module")
def retrained(tmp_path_factory):
    """A tiny finished PTB retrain whose result.json the tests below damage."""

    root = tmp_path_factory.mktemp("retrained")
    return finished_retrain(root, make_corpus(root / "ptb"))


@pytest.mark.parametrize("content", ['{"test_perplexity": 12.5, "par', "[1, 2]", '{"test_perplexity": "high"}',
                                     '{"test_perplexity": -' + "9" * 400 + "}"],
                         ids=["truncated", "list", "text-figure", "past-float"])
def test_damaged_result_json_is_named(capsys, retrained, content):
    path = retrained / "result.json"
    good = path.read_text()
    path.write_text(content)
    try:
        assert main(["evaluate", str(retrained), "--device", "cpu"]) == 2
        err = capsys.readouterr().err.strip()
        errors = [line for line in err.splitlines() if not line.startswith("note:")]
        assert str(path) in err and "move it away" in err and "Traceback" not in err and len(errors) == 1
        assert path.read_text() == content  # nothing rewritten
    finally:
        path.write_text(good)


@pytest.mark.parametrize("weights", [[1, 2, 3], {"weight": "x"}, "text"], ids=["list", "wrong-values", "text"])
def test_weights_that_are_not_a_network_are_named(capsys, retrained, weights):
    import torch

    path = retrained / "best.pt"
    good = path.read_bytes()
    torch.save(weights, path)
    try:
        assert main(["evaluate", str(retrained), "--device", "cpu"]) == 2
        err = capsys.readouterr().err.strip()
        errors = [line for line in err.splitlines() if not line.startswith("note:")]
        assert "best.pt" in err and "Traceback" not in err and len(errors) == 1, err
    finally:
        path.write_bytes(good)


@pytest.mark.parametrize("content", ['{"params": 904}', '{"test_perplexity": "x"}'], ids=["no-metric", "text-figure"])
def test_export_of_a_result_without_its_test_metric_is_one_line(capsys, retrained, tmp_path, content):
    path = retrained / "result.json"
    good = path.read_text()
    path.write_text(content)
    try:
        assert main(["export", str(retrained), "--out", str(tmp_path / "m.pt2")]) == 2
        err = capsys.readouterr().err.strip()
        errors = [line for line in err.splitlines() if not line.startswith("note:")]
        assert "result.json" in err and "Traceback" not in err and len(errors) == 1, err
        assert not (tmp_path / "m.pt2").exists()
    finally:
        path.write_text(good)
