"""Small files cannot exhaust memory or hang: space arguments are bounded, every file read
is a regular file (never a FIFO), checkpoints are checked before torch.load, metrics.jsonl
is streamed a capped line at a time, CIFAR batches and images have size caps; and what
they hold reaches the terminal cut short and with its control characters escaped."""
import contextlib
import json
import os
import shutil
import signal
import zipfile

import pytest
import yaml
from PIL import Image

from enas.nas.archfile import arch_to_yaml
from enas.cli import main
from enas.nas.space import build_space
from enas.errors import DataError

from conftest import (finished_search, make_folder, random_arch, read_nb201_table as read, tiny_nb201_config, TINY_PTB,
                      write_arch, write_nb201_table as write_table, write_retrain_config)

CPU = ["--device", "cpu"]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return finished_search(tmp_path_factory.mktemp("bounded"))


@pytest.fixture
def run(made, tmp_path):
    return shutil.copytree(made[0], tmp_path / "run")


@contextlib.contextmanager
def deadline(seconds=60):
    """A command that would wait forever (a FIFO opened for reading) fails instead."""
    def expired(signum, frame):
        raise TimeoutError(f"still waiting after {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def one_error(capsys, *says) -> str:
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert "Traceback" not in err and len(errors) == 1 and err.endswith(errors[0]), err
    for s in says:
        assert s in errors[0], err
    return errors[0]


# ---- space arguments -------------------------------------------------------------------


@pytest.mark.parametrize("where, key, value, limit", [
    ("config", "num_nodes", 1_000_000, "64"),
    ("arch file", "num_nodes", 1_000_000, "64"),
    ("arch file", "activations", ["tanh"] * 100_000, "16"),
])
def test_space_arguments_are_bounded_before_anything_is_built(tmp_path, capsys, ptb_dir, where, key, value, limit):
    if where == "config":
        cfg = yaml.safe_load(yaml.safe_dump(TINY_PTB))
        cfg["space"]["args"][key] = value
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(cfg))
        argv = ["search", str(path), "--data-dir", str(ptb_dir), "--run-dir", str(tmp_path / "r")] + CPU
    else:
        doc = yaml.safe_load(arch_to_yaml(build_space("enas_rnn", {}), random_arch(build_space("enas_rnn", {}),
                                                                                     __import__("random").Random(0))))
        doc["space"]["args"] = {key: value}
        path = tmp_path / "a.yaml"
        path.write_text(yaml.safe_dump(doc))
        argv = ["show", str(path)]
    assert main(argv) == 2
    line = one_error(capsys, f"space.args.{key}", f"at most {limit}")
    assert len(line) < 600 and not (tmp_path / "r").exists()


@pytest.mark.parametrize("space, key", [("nb201", "cells_per_stage"), ("enas_micro", "num_cells")])
def test_repeat_counts_of_the_network_are_bounded_before_it_is_built(tmp_path, capsys, cifar_dir, monkeypatch,
                                                                     space, key):
    from enas.child import retrain
    from enas.nas import search

    def built(*a, **kw):
        raise AssertionError("the network was built (on the meta device) before its size was checked")

    monkeypatch.setattr(search, "check_fits", built)
    monkeypatch.setattr(retrain, "check_fits", built)
    new = ["--data-dir", str(cifar_dir), "--run-dir", str(tmp_path / "r")] + CPU
    if space == "nb201":
        argv = ["search", str(tiny_nb201_config(tmp_path)), "--set", f"model.{key}=100000"] + new
    else:
        cfg = write_retrain_config(tmp_path, "enas_micro", model={key: 100000})
        argv = ["retrain", str(write_arch(tmp_path, "enas_micro")), "--config", str(cfg)] + new
    assert main(argv) == 2
    one_error(capsys, f"model.{key} = 100000", "at most")
    assert not (tmp_path / "r").exists()


def test_a_network_of_too_many_modules_is_refused_while_it_is_counted(monkeypatch):
    import torch

    from enas.train import memory
    from enas.errors import ConfigError

    space = build_space("nb201")
    monkeypatch.setattr(memory, "MAX_MODULES", 1000)
    with pytest.raises(ConfigError, match="more than 1,000 modules"):
        memory.check_fits(lambda: space.supernet(space.ModelArgs(cells_per_stage=20)), "supernet",
                          "model.cells_per_stage=20", torch.device("cpu"))


@pytest.mark.parametrize("space, sets", [
    ("nb201", ["data.batch_size=10000000"]),
    ("nb201", ["model.channels=100000", "model.cells_per_stage=1"]),
    ("enas_micro", {"channels": 100000, "num_cells": 1}),
])
def test_a_training_step_too_large_for_memory_is_refused_before_anything_is_built(tmp_path, capsys, cifar_dir,
                                                                                   monkeypatch, space, sets):
    from enas.train import memory
    from enas.child import retrain
    from enas.nas import search

    def built(*a, **kw):
        raise AssertionError("a network was built before the training step's size was checked")

    for module in (search, retrain):
        monkeypatch.setattr(module, "check_fits", built)  # the meta build comes after
    monkeypatch.setattr(type(build_space(space)), "supernet", built)
    monkeypatch.setattr(type(build_space(space)), "child", built)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 8 * 2**30)  # the same on every machine
    new = ["--data-dir", str(cifar_dir), "--run-dir", str(tmp_path / "r")] + CPU
    if space == "nb201":
        argv = ["search", str(tiny_nb201_config(tmp_path))] + [x for s in sets for x in ("--set", s)] + new
        named = sets
    else:
        cfg = write_retrain_config(tmp_path, space, model=sets)
        argv = ["retrain", str(write_arch(tmp_path, space)), "--config", str(cfg)] + new
        named = [f"model.{k}={v}" for k, v in sets.items()]
    assert main(argv) == 2
    one_error(capsys, "one training step", *named, "reduce these sizes", "8.0 GiB available")
    assert not (tmp_path / "r").exists()


def test_a_run_reopened_to_read_is_not_held_to_a_training_step(run, capsys, monkeypatch):
    from enas.train import memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: 1024)  # no training step fits
    assert main(["derive", str(run), "--samples", "2"] + CPU) == 0  # scoring trains nothing


def _kept_for_backward(model, step) -> int:
    """Bytes of the tensors autograd keeps from a forward pass for its backward, the
    parameters left out (they are counted by check_fits)."""
    import torch

    seen = {(p.untyped_storage().data_ptr(), p.untyped_storage().nbytes()) for p in model.parameters()}
    total = 0

    def pack(t):
        nonlocal total
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key not in seen:
            seen.add(key)
            total += key[1]
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return total


@pytest.mark.parametrize("space, args, model, image_size", [
    ("enas_micro", {"num_nodes": 5}, {"channels": 8, "num_cells": 2}, 32),
    ("enas_micro", {"num_nodes": 3}, {"channels": 8, "num_cells": 1}, 64),
    ("enas_macro", {"num_layers": 12}, {"channels": 8}, 32),
    ("nb201", {}, {"channels": 8, "cells_per_stage": 2}, 32),
    ("nb201", {}, {"channels": 8, "cells_per_stage": 1}, 128),
    ("enas_rnn", {"num_nodes": 6}, {"hidden": 16}, 0),
])
def test_activation_estimates_cover_a_measured_training_step(space, args, model, image_size):
    import random

    import torch

    from enas.config import from_dict

    sp = build_space(space, args)
    m = from_dict(type(sp).ModelArgs, model, "model")
    arch = random_arch(sp, random.Random(0))
    torch.manual_seed(0)
    batch = 2
    if space == "enas_rnn":
        vocab, seq = 50, 6
        net = sp.supernet(m, vocab_size=vocab).train()
        x = torch.randint(0, vocab, (seq, batch))
        kept = _kept_for_backward(net, lambda: net(x, net.init_hidden(batch), arch, target=x))
        estimate = sp.activation_elements(m, batch_size=batch, vocab_size=vocab, seq_len=seq) * 4
    else:
        net = sp.supernet(m, num_classes=10, image_size=image_size).train()
        x = torch.randn(batch, 3, image_size, image_size)
        kept = _kept_for_backward(net, lambda: net(x, arch))
        estimate = sp.activation_elements(m, batch_size=batch, num_classes=10, image_size=image_size) * 4
    assert kept <= estimate <= 3 * kept, (kept, estimate)


def test_a_space_without_an_estimate_is_held_to_its_input_batch(monkeypatch):
    import torch

    from enas.train import memory
    from enas.config import DataSection
    from enas.errors import ConfigError

    assert memory.available_bytes(torch.device("cpu")) > 0  # this machine's figure, before it is replaced
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2**30)
    data = DataSection(dataset="imagefolder", batch_size=100_000, image_size=64)
    with pytest.raises(ConfigError, match=r"data.batch_size=100000, data.image_size=64, .*GiB of input batch"):
        memory.check_step(object(), None, {"num_classes": 3, "image_size": 64}, data, 100_000, {"width": 8},
                          torch.device("cpu"))
    memory.check_step(object(), None, {"num_classes": 3, "image_size": 64}, data, 100, {}, torch.device("cpu"))


# ---- regular files only ----------------------------------------------------------------


@pytest.mark.parametrize("what", ["arch file", "config", "run config", "data record", "arch list", "checkpoint",
                                  "result"])
def test_a_fifo_is_refused_never_waited_on(made, tmp_path, capsys, what):
    run = shutil.copytree(made[0], tmp_path / "run")
    fifo = {"arch file": tmp_path / "a.yaml", "config": tmp_path / "c.yaml", "run config": run / "config.yaml",
            "data record": run / "data.json", "arch list": tmp_path / "archs.txt", "checkpoint": run / "checkpoint.pt",
            "result": run / "result.json"}[what]
    fifo.unlink(missing_ok=True)
    if what == "checkpoint":
        (run / "checkpoint.prev.pt").unlink()
    os.mkfifo(fifo)
    argv = {"arch file": ["show", str(fifo)], "config": ["search", str(fifo)],
            "arch list": ["rank", str(run), "--archs", str(fifo)] + CPU,
            "result": ["report", str(run), "--out", str(tmp_path / "r.html")]}.get(what, ["derive", str(run)] + CPU)
    with deadline():
        code = main(argv)
    if what == "result":  # the report leaves out what it cannot read, and says so
        assert code == 0 and "result.json" in capsys.readouterr().err
    else:
        assert code == 2
        one_error(capsys, str(fifo), "not a regular file (a FIFO)")


# ---- checkpoints ----------------------------------------------------------------------


def test_a_checkpoint_with_compressed_entries_is_refused_unread(run, capsys):
    """torch.save stores entries; a deflated entry could unpack to gigabytes (a 4 MB file
    to 3.5 GB), so none is unpacked, however harmless this one would be."""
    path = run / "checkpoint.pt"
    src = zipfile.ZipFile(path)
    entries = {i.filename: src.read(i.filename) for i in src.infolist()}
    src.close()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    (run / "checkpoint.prev.pt").unlink()
    assert main(["derive", str(run)] + CPU) == 2
    one_error(capsys, str(path), "is compressed")


# ---- metrics.jsonl ----------------------------------------------------------------------


@pytest.mark.parametrize("line, why", [
    ('{"step": 7, "epoch": 1, "x/text": "' + "a" * 3_000_000 + '"}', "longer than"),
    ('{"step": Infinity, "shared/loss": 1.0}', "not a whole number"),
    ('{"step": 7, "epoch": NaN, "shared/loss": 1.0}', "not a whole number"),
    ('{"step": 7, "shared/loss": 1' + "0" * 400 + "}", "too large"),
    ('{"step": 7, "shared/loss": 1' + "0" * 5000 + "}", "4300 digits"),
    ('{"step": 7, "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
])
def test_metrics_lines_that_are_not_figures_are_skipped_with_one_note(run, tmp_path, capsys, line, why):
    with open(run / "metrics.jsonl", "a") as f:
        f.write(line + "\n")
    rows = len((run / "metrics.jsonl").read_text().splitlines())
    out = tmp_path / "r.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"{run / 'metrics.jsonl'}: 1 unreadable line(s) skipped (first: line {rows:,}: " in err and why in err
    assert "a" * 1000 not in out.read_text()


def test_infinity_and_nan_figures_are_drawn_as_nonfinite(run, tmp_path, capsys):
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "shared/loss": Infinity, "shared/ppl": NaN, "shared/x": -1e308}\n')
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    assert capsys.readouterr().err == ""


# ---- data files -------------------------------------------------------------------------


def test_a_cifar_batch_larger_than_any_official_one_is_refused_unread(tmp_path):
    from enas.data import cifar

    path = tmp_path / "data_batch_1"
    with open(path, "wb") as f:
        f.truncate(6 * 2**30)  # 6 GB, sparse: no disk used, and none read
    with pytest.raises(DataError, match="more than the") as e:
        cifar.load_batch(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("labels", ["lists", "floats", "too many"])
def test_cifar_labels_are_checked_before_they_are_converted(tmp_path, monkeypatch, labels):
    """Labels that are 600 references to one list of 60,000 numbers (a 300 KB pickle)
    would make numpy allocate 288 MB before the shape check; they are refused first."""
    import pickle
    import tracemalloc

    import numpy as np

    from enas.data import cifar

    inner = [0] * 60_000
    value = {"lists": [inner] * 600, "floats": [0.5], "too many": inner}[labels]
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": value}, protocol=4))
    raw = path.read_bytes()
    monkeypatch.setattr(cifar, "read_regular", lambda p, limit: raw)  # measure what the pickle's content costs
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="one per image"):
            cifar.load_batch(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, peak


@pytest.mark.parametrize("what, says", [
    ("fifo", "not a regular file (a FIFO)"),
    ("oversized", "more than the"),
    ("long field", "field larger than field limit"),
    ("many columns", "no column 'acc' (--metric-column)"),
])
def test_a_published_table_is_a_bounded_regular_file_and_its_errors_are_short(tmp_path, what, says):
    path = write_table(tmp_path / "t.csv")
    if what == "fifo":
        path.unlink()
        os.mkfifo(path)
    elif what == "oversized":
        with open(path, "wb") as f:
            f.truncate(2**30)  # sparse
    elif what == "long field":
        path.write_text("cell,acc\n" + "x" * 200_000 + ",1\n")
    else:
        path.write_text("cell," + ",".join(f"column{i}" for i in range(10_000)) + "\n")
    with deadline(), pytest.raises(DataError) as e:
        read(path, metric_column="acc" if what == "many columns" else None)
    assert str(path) in str(e.value) and says in str(e.value) and len(str(e.value)) < 600, str(e.value)[:600]


def test_an_image_of_more_pixels_than_a_nas_dataset_needs_is_not_decoded(tmp_path):
    from enas.data.imagefolder import MAX_PIXELS, load_imagefolder

    data = make_folder(tmp_path / "imgs", train=2, val=1)
    big = data / "train" / "ant" / "huge.png"
    Image.new("1", (8000, 8000)).save(big)  # 64 megapixels in 8 KB
    assert 8000 * 8000 > MAX_PIXELS
    with pytest.raises(DataError, match="pixels, more than") as e:
        load_imagefolder(data, 16)
    assert str(big) in str(e.value)
    assert len(load_imagefolder(data, 16, skip_bad=True)["train_y"]) == 3 * 2 + 1  # the others, UPPER.PNG too


# ---- what reaches the terminal ----------------------------------------------------------


def test_error_messages_quote_a_few_hundred_characters_of_a_value(tmp_path, capsys, ptb_dir):
    cfg = yaml.safe_load(yaml.safe_dump(TINY_PTB))
    cfg["train"]["lr"] = "x" * 1_000_000
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["search", str(path), "--data-dir", str(ptb_dir), "--run-dir", str(tmp_path / "r")] + CPU) == 2
    line = one_error(capsys, "train.lr", "1,000,002 characters")
    assert len(line) < 600


def test_control_characters_from_files_are_escaped(tmp_path, capsys):
    space = build_space("nb201", {})
    doc = yaml.safe_load(arch_to_yaml(space, random_arch(space, __import__("random").Random(0))))
    doc["provenance"]["run"] = "\x1b]0;pwned\x07\x1b[2J"
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\\x1b]0;pwned\\x07\\x1b[2J" in out
    doc["\x1b[2Jplanted"] = 1
    path.write_text(yaml.safe_dump(doc))
    assert main(["show", str(path)]) == 2
    assert "\x1b" not in one_error(capsys, "\\x1b[2Jplanted")


def _metrics_only_run(folder, names, steps=3):
    """A folder holding only metrics.jsonl, each of ``names`` logged ``steps`` times."""
    folder.mkdir()
    rows = [json.dumps({"step": i, **{n: float(i * (k + 1)) for k, n in enumerate(names)}}) for i in range(steps)]
    (folder / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    return folder


def test_figure_names_matplotlib_would_parse_or_cannot_draw_are_drawn_literally(tmp_path, capsys):
    names = ["shared/$\\frac{$", "shared/\udcff", "shared/\x1b[2J\nerror: forged", "$x$"]
    run = _metrics_only_run(tmp_path / "r\x1b[2J", names)
    assert main(["report", str(run), "--out", str(tmp_path / "page.html")]) == 0
    page = (tmp_path / "page.html").read_text()
    assert "\x1b" not in page and "\\x1b[2J" in page
    printed = capsys.readouterr()
    assert "\x1b" not in printed.out + printed.err and "Traceback" not in printed.err


def test_a_report_draws_a_bounded_number_of_figures_and_says_so(tmp_path, monkeypatch):
    from enas.report import page as report_page
    drawn = []
    real = report_page.small_multiples
    monkeypatch.setattr(report_page, "small_multiples", lambda series: (drawn.append(len(series)), real(series))[1])
    run = _metrics_only_run(tmp_path / "r", [f"shared/f{i}" for i in range(3000)] + [f"g{i}/x" for i in range(40)])
    assert main(["report", str(run), "--out", str(tmp_path / "page.html")]) == 0
    assert sum(drawn) <= 16 * 32 and max(drawn) <= 32
    page = (tmp_path / "page.html").read_text()
    assert "2,968 more figures of this group are not drawn" in page and "more figures are not drawn" in page
