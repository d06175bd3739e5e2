"""Files from anyone: YAML bombs, repeated keys and values that would hang are refused
with one line naming the file or key, exit code 2, and nothing written."""
import pytest
import yaml

from enas.archfile import arch_to_yaml
from enas.cli import main
from enas.space import build_space

from conftest import TINY_PTB, random_arch

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
])
def test_configs_refused_before_any_run_folder(tmp_path, capsys, ptb_dir, text, sets, says):
    cfg = write_cfg(tmp_path, text)
    run = tmp_path / "run"
    argv = ["search", str(cfg), "--data-dir", str(ptb_dir), "--run-dir", str(run), "--device", "cpu"]
    assert main(argv + [x for s in sets for x in ("--set", s)]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not run.exists()


def test_files_enas_writes_never_hold_aliases(tmp_path):
    from enas import safeyaml

    shared = [1, 2]
    assert safeyaml.load(safeyaml.dump({"a": shared, "b": shared})) == {"a": [1, 2], "b": [1, 2]}


@pytest.mark.parametrize("target, out, says", [
    ("folder", None, "is a folder"),
    ("/dev/zero", None, "more than"),
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
]


@pytest.fixture(scope="module")
def stopped_search(tmp_path_factory):
    """A tiny finished PTB search whose checkpoint the tests below tamper with."""
    from conftest import make_corpus, write_config

    root = tmp_path_factory.mktemp("crafted")
    data = make_corpus(root / "ptb")
    cfg = write_config(root, TINY_PTB, "c.yaml", search={"epochs": 1})
    run = root / "run"
    assert main(["search", str(cfg), "--data-dir", str(data), "--run-dir", str(run), "--device", "cpu"]) == 0
    return run, data


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
    torch.save(state, run / "checkpoint.pt")
    before = {p.name: p.stat().st_size for p in run.iterdir() if p.is_file()}
    for argv in (["search", "--resume", str(run), "--set", "search.epochs=2"], ["derive", str(run)]):
        code = main(argv + ["--device", "cpu"] + (["--allow-config-change"] if "--resume" in argv else []))
        err = capsys.readouterr().err.strip()
        assert code == 2 and says in err and "Traceback" not in err, err
        assert len([line for line in err.splitlines() if line.startswith("error")]) == 1, err
    after = {p.name: p.stat().st_size for p in run.iterdir() if p.is_file()}
    assert after == before  # nothing written, truncated or grown
