"""Every write stays in the run and is whole: a link at any folder of the run (even one
swapped in between a check and the write), a hard link, a second writer that deleted the
lock, an --out-like option of the evaluation tools, a full disk while a run is created;
and what a reopened run reads (its data, its image cache, its architecture files)."""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from enas.nas import archfile
from enas.cli import main
from enas.data.imagefolder import load_imagefolder
from enas.storage.files import WriteError
from enas.evaluate import ground_truth as gt
from enas.evaluate.rank import read_archs
from enas.nas.space import build_space
from search_spaces.nb201 import BEST_CIFAR10_CELL, RESNET_CELL

from conftest import CPU, RESUME, argv_for, make_folder, one_error, plant_module


def outside_folder(tmp_path, run, name="archs"):
    """``run/name`` moved out of the run and linked back: (the folder outside, its content)."""
    outside = tmp_path / "elsewhere"
    shutil.move(run / name, outside)
    os.symlink(outside, run / name)
    return outside, sorted(outside.rglob("*"))


def test_a_pending_final_derive_writes_nothing_through_an_archs_link(received, tmp_path, capsys):
    run = received[0]
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):  # as a kill -9 during the final derive leaves it
        state = torch.load(run / name, weights_only=True)
        state["final"] = {}
        torch.save(state, run / name)
    outside, before = outside_folder(tmp_path, run)
    assert main(["search", "--resume", str(run)] + CPU) == 2
    one_error(capsys, str(run / "archs"))
    assert sorted(outside.rglob("*")) == before


def test_an_archs_folder_swapped_for_a_link_during_derive_is_refused(received, tmp_path, capsys, monkeypatch):
    run = received[0]
    outside = tmp_path / "elsewhere"
    to_yaml = archfile.arch_to_yaml

    def swap_then_write(*a, **k):  # between derive's check of archs/ and its write
        if not (run / "archs").is_symlink():
            os.rename(run / "archs", outside)
            os.symlink(outside, run / "archs")
        return to_yaml(*a, **k)

    monkeypatch.setattr(archfile, "arch_to_yaml", swap_then_write)
    assert main(["derive", str(run), "--samples", "2"] + CPU) == 2
    one_error(capsys, str(run / "archs"), "symbolic link")
    assert not list(outside.glob("derive-*"))


@pytest.mark.parametrize("name", ["metrics.jsonl", "enas.lock"])
def test_a_hard_link_in_the_run_is_never_written_in_place(received, tmp_path, capsys, name):
    run = received[0]
    target = tmp_path / "elsewhere" / name  # another file: the run's holds another name of it
    target.parent.mkdir()
    shutil.move(run / name, target)
    os.link(target, run / name)
    kept = target.read_bytes()
    assert main(argv_for(RESUME, run, tmp_path) + CPU) == 2
    one_error(capsys, str(run / name), "hard link", "cp -r")
    assert target.read_bytes() == kept


def test_a_run_copied_with_hard_links_leaves_the_original_alone(received, tmp_path, capsys):
    run = received[0]
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-al", str(run), str(copy)], check=True)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert main(argv_for(RESUME, copy, tmp_path) + CPU) == 2
    one_error(capsys, "hard link", "cp -r")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_a_reopened_run_never_downloads_data_its_record_leaves_out(received, tmp_path, capsys, monkeypatch):
    run, data, _ = received
    fetched = []
    monkeypatch.setattr("enas.data.text._download", lambda url, dest, timeout: fetched.append(dest))
    partial = tmp_path / "partial"
    shutil.copytree(data, partial)
    (partial / "ptb.test.txt").unlink()
    rec = json.loads((run / "data.json").read_text())
    files = {k: v for k, v in rec["files"].items() if k != "ptb.test.txt"}
    (run / "data.json").write_text(json.dumps(dict(rec, path=str(partial), files=files)))
    before = sorted(partial.rglob("*"))
    assert main(["derive", str(run), "--samples", "2"] + CPU) == 2
    one_error(capsys, "ptb.test.txt", "--data-dir")
    assert sorted(partial.rglob("*")) == before and not fetched


def test_derive_names_its_own_flag_for_changed_data(received, tmp_path, capsys):
    run, data, _ = received
    other = tmp_path / "other"
    shutil.copytree(data, other)
    with open(other / "ptb.valid.txt", "a") as f:
        f.write("one more line\n")
    assert main(["derive", str(run), "--samples", "2", "--data-dir", str(other)] + CPU) == 2
    line = one_error(capsys, "--allow-data-change")
    assert "--allow-config-change" not in line


# ---- --out-like options ---------------------------------------------------------------


def ground_truth_csv(tmp_path):
    out = tmp_path / "gt.csv"
    gt.prepare_csv(out)
    for i, cell in enumerate([RESNET_CELL, BEST_CIFAR10_CELL]):
        gt.append_row(out, {"arch": cell, "seed": 0, "test_accuracy": 0.5 + i / 10, "params": 10, "seconds": 1.0,
                            "recipe": "r", "space": "nb201"})
    return out


def test_compare_json_follows_the_out_rule(received, tmp_path, capsys):
    run = received[0]
    table = ground_truth_csv(tmp_path)
    own = run / "config.yaml"
    kept = own.read_bytes()
    assert main(["compare", str(table), "--json", str(own)]) == 2
    one_error(capsys, str(own), "is a file of the run")
    assert own.read_bytes() == kept
    mine = tmp_path / "mine.json"
    mine.write_text("mine")
    assert main(["compare", str(table), "--json", str(mine)]) == 2
    one_error(capsys, "already exists", "--force")
    assert mine.read_text() == "mine"
    assert main(["compare", str(table), "--json", str(mine), "--force"]) == 0
    assert json.loads(mine.read_text())["gt_archs"] == 2


def test_ground_truth_write_archs_follows_the_out_rule(received, tmp_path, capsys):
    run = received[0]
    cfg = tmp_path / "r.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"channels": 4, "cells_per_stage": 1}, "data": {"dataset": "cifar10"},
                                   "train": {"lr": 0.05}, "retrain": {"epochs": 1}}))
    archs = tmp_path / "archs.txt"
    archs.write_text(f"{RESNET_CELL}\n")
    argv = ["ground-truth", "--archs", str(archs), "--config", str(cfg), "--out", str(tmp_path / "gt.csv"),
            "--list-only", "--write-archs"]
    own = run / "metrics.jsonl"
    kept = own.read_bytes()
    assert main(argv + [str(own)]) == 2
    one_error(capsys, str(own), "is a file of the run")
    assert own.read_bytes() == kept
    mine = tmp_path / "list.txt"
    mine.write_text("mine\n")
    assert main(argv + [str(mine)]) == 2
    one_error(capsys, "already exists", "--force")
    assert main(argv + [str(mine), "--force"]) == 0
    assert main(argv + [str(mine)]) == 0  # the same list again: nothing to replace
    assert mine.read_text() == RESNET_CELL + "\n"


def test_an_out_name_of_nearly_255_characters_is_written(received, tmp_path):
    out = tmp_path / ("d" * 250 + ".png")
    assert main(["show", str(received[0] / "best_arch.yaml"), "--out", str(out)]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")


# ---- reading a run -----------------------------------------------------------------------


def test_report_reads_no_architecture_through_an_archs_link(received, tmp_path):
    run = received[0]
    (run / "best_arch.yaml").unlink()  # the page falls back to the last epoch's file in archs/
    outside, _ = outside_folder(tmp_path, run)
    [epoch] = outside.glob("epoch_*.yaml")
    doc = yaml.safe_load(epoch.read_text())
    doc["provenance"]["score_is"] = "FROM-OUTSIDE"
    epoch.write_text(yaml.safe_dump(doc))
    out = tmp_path / "r.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    page = out.read_text()
    assert "FROM-OUTSIDE" not in page and "symbolic link" in page


def test_a_sent_image_cache_is_not_used_over_the_images(tmp_path):
    data = make_folder(tmp_path / "imgs", train=2, val=1)
    first = load_imagefolder(data, 16)
    sent = tmp_path / "sent"
    shutil.copytree(data, sent)  # images and cache arrive together, modification times kept
    [cache] = (sent / ".enas-cache").glob("*.pt")
    crafted = torch.load(cache, weights_only=True)
    crafted["train_x"] = torch.zeros_like(crafted["train_x"])
    torch.save(crafted, cache)
    assert torch.equal(load_imagefolder(sent, 16)["train_x"], first["train_x"])


def test_export_imports_the_space_module_it_asks_for(received, tmp_path, capsys):
    run = received[2]
    _, planted = plant_module(tmp_path, run, "retrain", "space_module")
    mine = tmp_path / "mine.py"
    mine.write_text(f"import pathlib\npathlib.Path({str(tmp_path / 'mine-ran')!r}).write_text('ran')\n")
    out = tmp_path / "m.pt2"
    assert main(["export", str(run), "--out", str(out), "--space-module", str(mine)]) == 0, capsys.readouterr().err
    assert out.is_file() and (tmp_path / "mine-ran").exists() and not planted.exists()


def test_an_archs_list_holds_no_more_than_samples_allows(tmp_path):
    path = tmp_path / "many.txt"
    path.write_text(f"{RESNET_CELL}\n" * 100_001)
    with pytest.raises(Exception, match="100,001 architectures, more than 100,000"):
        read_archs(build_space("nb201"), path)


# ---- creating and locking a run ----------------------------------------------------------


def test_a_full_disk_while_a_run_is_created_leaves_nothing(tmp_path, capsys, ptb_dir, tiny_ptb_config, monkeypatch):
    def full(path, *a, **k):
        raise WriteError(f"could not write {path}: No space left on device")

    monkeypatch.setattr("enas.data.record.write_atomic", full)
    folder = tmp_path / "run"
    assert main(["search", str(tiny_ptb_config()), "--data-dir", str(ptb_dir), "--run-dir", str(folder)] + CPU) == 2
    one_error(capsys, "No space left")
    assert not folder.exists()  # the same command can simply run again


HOLD = ("import sys, time\nfrom enas.storage import runlock\nrunlock.hold(sys.argv[1])\nprint('held', flush=True)\n"
        "time.sleep(600)\n")


@pytest.mark.slow
def test_deleting_the_lock_file_lets_no_second_writer_in(received, tmp_path, capsys):
    run = received[0]
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        (run / "enas.lock").unlink()
        before = (run / "metrics.jsonl").read_bytes()
        assert main(argv_for(RESUME, run, tmp_path) + CPU) == 2
        one_error(capsys, str(run), "another enas process")
        assert (run / "metrics.jsonl").read_bytes() == before
    finally:
        holder.kill()
        holder.wait()


# ---- writes in folders a user names: downloads, a new run's folder, the image cache ----


class _Response:
    """What urlopen returns, holding ``data`` (or failing as a dropped connection)."""

    def __init__(self, data: bytes, fail: bool = False):
        self.data, self.fail = data, fail

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def read(self, n):
        if self.fail:
            raise ConnectionResetError("connection reset by peer")
        data, self.data = self.data[:n], self.data[n:]
        return data


def test_a_download_replaces_a_link_at_its_name_and_a_dropped_one_leaves_nothing(tmp_path, monkeypatch):
    from enas.data import download

    folder, outside = tmp_path / "data", tmp_path / "outside.txt"
    folder.mkdir()
    outside.write_text("not yours")
    os.symlink(outside, folder / "archive.tar.gz")
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda url, timeout: _Response(b"payload" * 1000))
    download.fetch("https://example.org/a", folder / "archive.tar.gz", 5)
    assert outside.read_text() == "not yours"
    assert not (folder / "archive.tar.gz").is_symlink() and (folder / "archive.tar.gz").read_bytes() == b"payload" * 1000
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda url, timeout: _Response(b"", fail=True))
    with pytest.raises(ConnectionResetError):  # the network's error, as before: callers name the URL
        download.fetch("https://example.org/b", folder / "other.tar.gz", 5)
    assert sorted(p.name for p in folder.iterdir()) == ["archive.tar.gz"]  # no temporary left behind


def test_a_ptb_download_replaces_a_link_planted_at_its_name(tmp_path, monkeypatch):
    from enas.data import text

    data, outside = tmp_path / "ptb", tmp_path / "outside.txt"
    data.mkdir()
    outside.write_text("not yours")
    names = {n: f"{n} words\n".encode() for n in text.PTB_FILES}
    monkeypatch.setattr(text, "PTB_MD5", {n: hashlib.md5(b).hexdigest() for n, b in names.items()})
    monkeypatch.setattr(text, "_download", lambda url, dest, timeout: dest.write_bytes(names[dest.name]))
    os.symlink(tmp_path / "missing", data / "ptb.valid.txt")  # a dangling link: the file is missing
    text.ensure_ptb(data)
    assert outside.read_text() == "not yours"
    assert not (data / "ptb.valid.txt").is_symlink() and (data / "ptb.valid.txt").read_bytes() == names["ptb.valid.txt"]
    assert sorted(p.name for p in data.iterdir()) == sorted(text.PTB_FILES)  # no temporary folder left behind


def test_a_new_run_folder_that_is_a_link_is_refused_and_nothing_written_through_it(tmp_path, capsys, ptb_dir):
    from conftest import TINY_PTB, write_config

    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, tmp_path / "run")
    cfg = write_config(tmp_path, TINY_PTB, "search.yaml")
    assert main(["search", str(cfg), "--data-dir", str(ptb_dir), "--run-dir", str(tmp_path / "run")] + CPU) == 2
    one_error(capsys, str(tmp_path / "run"), "link")
    assert list(outside.iterdir()) == [] and (tmp_path / "run").is_symlink()


def test_an_image_cache_folder_swapped_for_a_link_loses_nothing_outside(tmp_path, monkeypatch):
    from enas.data import imagefolder

    data = make_folder(tmp_path / "images")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "imagefolder-8-old.pt").write_bytes(b"someone's file")
    real = imagefolder.write_atomic

    def then_swapped(path, content, *a, **kw):  # the cache written, then its folder swapped for a link
        real(path, content, *a, **kw)
        os.rename(path.parent, tmp_path / "moved-cache")
        os.symlink(outside, path.parent)

    monkeypatch.setattr(imagefolder, "write_atomic", then_swapped)
    load_imagefolder(data, image_size=8)
    assert (outside / "imagefolder-8-old.pt").read_bytes() == b"someone's file"
