"""What a person reads on the console and sees first in TensorBoard: every figure of the
epoch lines and of the overview groups is named in docs/glossary.md, a smoke run says it
is one, a PTB search prints perplexity, the final derive says what to do."""
from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pytest
import yaml

from conftest import TINY_NB201, TINY_PTB, make_corpus, write_config
from enas.cli import main
from conftest import write_cifar

GLOSSARY = Path(__file__).resolve().parents[1] / "docs" / "glossary.md"
RETRAIN = {
    "enas_rnn": {"model": {"hidden": 8}, "train": {"lr": 5.0, "grad_clip": 0.25},
                 "data": {"dataset": "ptb", "batch_size": 4, "eval_batch_size": 4, "bptt": 6},
                 "retrain": {"epochs": 1, "smoke": True}},
    "nb201": {"model": {"channels": 4, "cells_per_stage": 1},
              "data": {"dataset": "cifar10", "batch_size": 8, "eval_batch_size": 10},
              "train": {"lr": 0.05, "momentum": 0.9, "grad_clip": 5.0}, "retrain": {"epochs": 1, "smoke": True}},
}


def run(*argv):
    return main([str(a) for a in argv])


def epoch_keys(text: str) -> list[str]:
    """The name of every figure on the epoch lines: the words before its number."""
    keys = []
    for line in text.splitlines():
        if not line.startswith("epoch "):
            continue
        for field in re.split(r"\s{2,}", line.strip()):
            m = re.match(r"([A-Za-z][A-Za-z ]*?)\s+[-+]?(\d|inf|nan)", field)
            assert m, f"a figure without a name: {field!r} in {line!r}"
            keys.append(m.group(1))
    return keys


def overview_tags(run_dir: Path) -> dict[str, set[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run_dir))
    ea.Reload()
    groups: dict[str, set[str]] = {}
    for tag in ea.Tags()["scalars"]:
        group, _, name = tag.partition("/")
        groups.setdefault(group, set()).add(name)
    return groups


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A smoke PTB search and an NB201 one, each with a retrain, and an NB201 search
    scored with a training-free term (search.score), on generated data, and what they
    printed (a few seconds on one core)."""
    root = tmp_path_factory.mktemp("console")
    out = {}
    scored = {"score": {"supernet": 1.0, "naswot": 1.0, "reference": 4}}
    for name, space, base, extra in (("ptb", "enas_rnn", TINY_PTB, {}), ("nb201", "nb201", TINY_NB201, {}),
                                     ("scored", "nb201", TINY_NB201, scored)):
        data = make_corpus(root / "ptb") if name == "ptb" else write_cifar(root / name).parent
        cfg = write_config(root, base, f"{name}.yaml", search={"smoke": True, **extra})
        (root / f"{name}_retrain.yaml").write_text(yaml.safe_dump(RETRAIN[space]))
        search, retrain = root / f"{name}-search", root / f"{name}-retrain"
        capture = pytest.MonkeyPatch()  # the console goes to stderr (tqdm.write)
        err = io.StringIO()
        capture.setattr(sys, "stderr", err)
        try:
            assert run("search", cfg, "--data-dir", data, "--run-dir", search, "--device", "cpu") == 0
            searched = err.getvalue()
            if extra:
                out[name] = {"search": search, "search_err": searched}
                continue
            assert run("retrain", search / "best_arch.yaml", "--config", root / f"{name}_retrain.yaml",
                       "--data-dir", data, "--run-dir", retrain, "--device", "cpu") == 0
        finally:
            capture.undo()
        out[name] = {"search": search, "retrain": retrain, "search_err": searched,
                     "retrain_err": err.getvalue()[len(searched):]}
    return out


@pytest.mark.slow
def test_every_printed_figure_is_in_the_glossary(runs):
    glossary = GLOSSARY.read_text()
    for name, r in runs.items():
        for what in ("search_err", "retrain_err") if "retrain" in r else ("search_err",):
            keys = epoch_keys(r[what])
            assert keys, f"{name} {what}: no epoch line"
            for k in keys:
                assert f"`{k}`" in glossary, f"{name} {what}: '{k}' is printed but not in docs/glossary.md"
    # the headline charts of TensorBoard are named there too
    for name, r in runs.items():
        for kind in ("search", "retrain") if "retrain" in r else ("search",):
            groups = overview_tags(r[kind])
            for tag in groups[f"1_{kind}_overview_by_epoch"]:
                assert f"`{tag}`" in glossary, f"TensorBoard {kind} overview: '{tag}' not in docs/glossary.md"


@pytest.mark.slow
def test_epoch_lines_name_perplexity_entropy_share_and_smoke(runs):
    ptb, nb201 = runs["ptb"]["search_err"], runs["nb201"]["search_err"]
    assert "derived valid ppl" in epoch_keys(ptb) and "derived valid accuracy" in epoch_keys(nb201)
    assert "derived score" in epoch_keys(runs["scored"]["search_err"])  # a weighted sum has no unit
    for text in (ptb, nb201):
        shares = [float(x) for x in re.findall(r"entropy (\d+\.\d)% of uniform", text)]
        assert shares and all(0 < s <= 100 for s in shares)
    for r in runs.values():
        for what in ("search_err", "retrain_err") if "retrain" in r else ("search_err",):
            assert "smoke run" in r[what] and "expected" in r[what]
    assert "valid ppl" in epoch_keys(runs["ptb"]["retrain_err"])


@pytest.mark.slow
def test_final_derive_says_what_to_do(runs):
    for r in runs.values():
        text = r["search_err"]
        assert "final derive:" in text and "runner-up" in text and "(paired" in text
        assert "clearly ahead" in text or ("not a clear winner" in text and "retrain both" in text
                                          and "final_1.yaml" in text and "final_2.yaml" in text)
        finals = sorted(p.name for p in (r["search"] / "archs").glob("final_*.yaml"))
        assert finals[:2] == ["final_1.yaml", "final_2.yaml"]
        assert (r["search"] / "archs" / "final_1.yaml").read_text().split("provenance")[0] == \
            (r["search"] / "best_arch.yaml").read_text().split("provenance")[0]


@pytest.mark.slow
def test_tensorboard_overview_groups_apart_and_only_moving_figures(runs):
    search, retrain = overview_tags(runs["nb201"]["search"]), overview_tags(runs["nb201"]["retrain"])
    assert sorted(search)[0] == "1_search_overview_by_epoch" and sorted(retrain)[0] == "1_retrain_overview_by_epoch"
    assert search["1_search_overview_by_epoch"] == {"train_loss", "train_accuracy", "reward", "entropy_of_uniform",
                                                    "derived_valid_accuracy"}
    assert retrain["1_retrain_overview_by_epoch"] == {"train_loss", "train_accuracy", "test_accuracy", "test_loss"}
    assert {"lr", "averaging"} <= retrain["8_schedule_by_epoch"] and "test_accuracy" in retrain["7_result"]
    ptb = overview_tags(runs["ptb"]["search"])["1_search_overview_by_epoch"]
    assert ptb == {"train_loss", "train_extra_loss", "reward", "entropy_of_uniform", "derived_valid_ppl"}


def test_paired_standard_error_by_hand(tmp_path):
    """The final derive's margin divides by the standard error of the per-image
    differences of two architectures scored on the same images."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from enas.config import DataSection
    from enas.tasks.image import ImageTask

    task = ImageTask(DataSection(dataset="cifar10", batch_size=8, eval_batch_size=7, train_size=30, valid_size=30),
                     write_cifar(tmp_path / "c").parent, "cpu", seed=0)

    class Oracle(nn.Module):
        """Right on the images whose label the arch's rule accepts (the label is in the
        pixels, tests/test_cifar10.py make_images), wrong on the others."""

        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x, arch):
            label = ((x[:, 0, 16, 16] * task.std[0] + task.mean[0]) * 255 / 20).round().long()
            right = label % 2 == 0 if arch["rule"] == "even" else label < 5
            return F.one_hot(torch.where(right, label, (label + 1) % 10), 10).float(), None

    y = task.valid_y
    d = (y % 2 == 0).double() - (y < 5).double()
    want = float(d.std() / len(d) ** 0.5)
    got = task.paired_se(Oracle(), {"rule": "even"}, {"rule": "low"})
    assert got == pytest.approx(want) and want > 0
    assert task.paired_se(Oracle(), {"rule": "even"}, {"rule": "even"}) == 0.0
    assert task.score(Oracle(), {"rule": "even"})[0] == pytest.approx(float((y % 2 == 0).double().mean()))


def test_a_smoke_run_says_how_long_the_rest_takes(capsys):
    """The banner promises no fixed time (a smoke retrain's length depends on the cell and
    the machine's load); after the first epoch the run says how long the rest takes, once."""
    from enas.train.loop import Loop

    loop = Loop(None, True, 1.0, 10, 10)
    loop.smoke_note(True)
    loop.pace_note(True, 40.0, 19)
    loop.pace_note(True, 40.0, 18)
    err = capsys.readouterr().err
    assert "smoke run" in err and "in minutes" not in err
    assert err.count("at this pace") == 1 and "the 19 epochs left take about 13 min" in err
    quiet = Loop(None, True, 1.0, 10, 10)
    quiet.pace_note(False, 40.0, 19)  # a real run: its epoch lines show the time
    quiet.pace_note(True, 40.0, 0)  # nothing left
    assert "at this pace" not in capsys.readouterr().err


@pytest.mark.slow
def test_a_reader_that_goes_away_ends_a_command_without_a_traceback():
    """`enas show ARCH | head`: the pipe closes before enas has written; enas ends as a
    shell expects (128 + SIGPIPE), with nothing on stderr."""
    import os
    import subprocess

    arch = Path(__file__).parent.parent / "configs" / "archs" / "enas_ptb.yaml"
    r, w = os.pipe()
    os.close(r)  # no reader: the first write fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "enas", "show", str(arch)], stdout=w, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    finally:
        os.close(w)
    assert proc.returncode == 141, proc.stderr
    assert proc.stderr == ""
