"""`enas export RETRAIN_RUN --out FILE`: a file that a fresh process without enas loads
and that reproduces the run's test figure; the output rules of every enas command."""
from __future__ import annotations

import json
import os
import pickle
import re
import shlex
import subprocess
import sys
import warnings

import pytest

from conftest import finished_search, retrain, run, write_retrain_config

CLASSES = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# Runs in a fresh interpreter where importing enas or its spaces fails: only PyTorch,
# NumPy and the file's own description may be used to reproduce the test figure.
FRESH = r"""
import json, math, pickle, sys
import numpy as np, torch
import torch.nn.functional as F

class NoEnas:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("enas", "search_spaces"):
            raise ImportError("the exported file must not need " + name)

sys.meta_path.insert(0, NoEnas())
path, data = sys.argv[1], sys.argv[2]
extra = {"enas.json": ""}
net = torch.export.load(path, extra_files=extra).module()
meta = json.loads(extra["enas.json"])
with torch.no_grad():
    if meta["kind"] == "image_classifier":
        with open(data + "/cifar-10-batches-py/test_batch", "rb") as f:
            d = pickle.load(f, encoding="latin1")
        x = torch.from_numpy(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)).float() / 255
        y = torch.tensor(d["labels"])
        value = (net(x).argmax(1) == y).float().mean().item()
        first = meta["classes"][int(net(x[:1]).argmax())]
    else:
        stoi = {w: i for i, w in enumerate(meta["vocabulary"])}
        words = []
        for line in open(data + "/ptb.test.txt", encoding="utf-8"):
            words += line.split() + ["<eos>"]
        ids = torch.tensor([stoi.get(w, stoi.get("<unk>")) for w in words])
        cols = meta["test"]["columns"]
        rows = len(ids) // cols
        text = ids[:rows * cols].view(cols, rows).t()
        hidden, total = torch.zeros(cols, meta["hidden_size"]), 0.0
        for t in range(rows - 1):
            logits, hidden = net(text[t], hidden)
            total += F.cross_entropy(logits, text[t + 1], reduction="sum").item()
        value = math.exp(total / ((rows - 1) * cols))
        first = meta["vocabulary"][int(logits[0].argmax())]
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"enas", "search_spaces"})
print(json.dumps({"metric": meta["test"]["metric"], "value": value, "first": first, "loaded": loaded,
                  "meta": meta}))
"""


def fresh(path, data_dir) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", FRESH, str(path), str(data_dir)], capture_output=True, text=True,
                         env=env, cwd=path.parent, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["enas_rnn", "enas_micro"])
def test_exported_file_reproduces_the_test_figure_without_enas(tmp_path, data, name, capsys):  # noqa: F811
    if name == "enas_micro":  # class names, as the official archive has them
        meta = data[name] / "cifar-10-batches-py" / "batches.meta"
        meta.write_bytes(pickle.dumps({"label_names": CLASSES, "num_vis": 3072}, protocol=2))
    run_dir = retrain(tmp_path, data, name, tmp_path / "run")
    result = json.loads((run_dir / "result.json").read_text())
    out = tmp_path / "model.pt2"
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run("export", run_dir, "--out", out) == 0
    # torch.export.save warns so for a weight stored in another layout than the standard one
    assert not [w for w in caught if "No complete tensor" in str(w.message)]
    printed = capsys.readouterr().out
    assert str(out) in printed and "differ from the run's network by at most" in printed
    got = fresh(out, data[name])
    assert got["loaded"] == []
    key = "test_perplexity" if name == "enas_rnn" else "test_accuracy"
    assert got["metric"] == key and got["meta"]["test"]["value"] == result[key]
    assert got["value"] == pytest.approx(result[key], rel=1e-4)
    meta = got["meta"]
    if name == "enas_rnn":
        assert "<eos>" in meta["vocabulary"] and got["first"] in meta["vocabulary"]
    else:
        assert meta["classes"] == CLASSES and got["first"] in CLASSES
        assert len(meta["normalisation"]["mean"]) == 3 and "[0, 1]" in meta["input"]


@pytest.mark.slow
def test_export_output_rules(tmp_path, data, capsys):  # noqa: F811
    """An existing file needs --force; a file of the run is never replaced; a symlink is
    replaced, not written through."""
    run_dir = retrain(tmp_path, data, "enas_rnn", tmp_path / "run")
    out = tmp_path / "model.pt2"
    assert run("export", run_dir, "--out", out) == 0
    before = out.read_bytes()
    assert run("export", run_dir, "--out", out) == 2
    assert "--force" in capsys.readouterr().err and out.read_bytes() == before
    assert run("export", run_dir, "--out", out, "--force") == 0
    ckpt = (run_dir / "checkpoint.pt").read_bytes()
    for own in ("checkpoint.pt", "result.json"):
        assert run("export", run_dir, "--out", run_dir / own, "--force") == 2
        assert "file of the run" in capsys.readouterr().err
    assert (run_dir / "checkpoint.pt").read_bytes() == ckpt
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "link.pt2"
    link.symlink_to(victim)
    assert run("export", run_dir, "--out", link, "--force") == 0
    assert victim.read_text() == "keep me" and not link.is_symlink() and link.stat().st_size > 1000
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    for name in ("config.yaml", "arch.yaml"):  # a retrain that has not written result.json yet
        (unfinished / name).write_text((run_dir / name).read_text())
    assert run("export", unfinished, "--out", tmp_path / "x.pt2") == 2
    assert "result.json" in capsys.readouterr().err


def test_export_of_a_search_folder_says_to_retrain_first(tmp_path, capsys):
    """A search folder (best_arch.yaml, no arch.yaml) is refused with the retrain that
    turns it into something to export, not with `enas retrain --resume`, which fails
    on a search folder."""
    search = tmp_path / "search"
    search.mkdir()
    (search / "config.yaml").write_text("space: {name: enas_rnn}\n")
    (search / "best_arch.yaml").write_text("arch: {}\n")
    assert run("export", search, "--out", tmp_path / "m.pt2") == 2
    err = capsys.readouterr().err
    assert "search run folder" in err and "--resume" not in err and len(err.strip().splitlines()) == 1
    assert f"enas retrain {search / 'best_arch.yaml'} --config" in err and "enas export RETRAIN_RUN" in err


@pytest.mark.slow
def test_the_advice_for_a_search_folder_works_as_printed(tmp_path, capsys):
    """Following the message, placeholders filled in, ends in an exported file."""
    search, data = finished_search(tmp_path)
    out = tmp_path / "model.pt2"
    capsys.readouterr()
    assert run("export", search, "--out", out) == 2
    steps = re.findall(r"`(enas [^`]*)`", capsys.readouterr().err)
    assert [s.split()[1] for s in steps] == ["retrain", "export"]
    fill = {"RETRAIN_CONFIG.yaml": str(write_retrain_config(tmp_path, "enas_rnn")),
            "RETRAIN_RUN": str(tmp_path / "retrain")}
    retrain_argv = [fill.get(a, a) for a in shlex.split(steps[0])[1:]]
    assert run(*retrain_argv, "--data-dir", data, "--device", "cpu") == 0
    assert run(*[fill.get(a, a) for a in shlex.split(steps[1])[1:]]) == 0
    assert out.stat().st_size > 1000
