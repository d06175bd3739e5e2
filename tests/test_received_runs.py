"""A run folder from someone else is safe to open: no code runs unless the command line
names it, nothing outside the run is written through a planted link, `enas show --out`
keeps the --out rule, and one process writes a run at a time."""
import fcntl
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from enas.cli import main
from enas.data.imagefolder import image_files, load_imagefolder
from enas.errors import DataError

from conftest import CLASSES, CPU, EVIL, RESUME, argv_for, make_folder, one_error, plant_module, study


# ---- no code runs that a run's own files name -------------------------------------------

# (the run, the config's key naming a module, the command)
OPENERS = [("search", "space", "module", argv) for argv in (
    ["derive", "RUN", "--samples", "2"], ["rank", "RUN", "--samples", "2"], ["report", "RUN", "--out", "OUT"], RESUME,
    ["table", "RUN", "--table", "OUT"])]
OPENERS += [("retrain", "retrain", "space_module", argv) for argv in (
    ["evaluate", "RUN"], ["retrain", "--resume", "RUN"], ["report", "RUN", "--out", "OUT"])]


@pytest.mark.parametrize("kind, section, key, argv", OPENERS, ids=lambda a: a[0] if isinstance(a, list) else a)
def test_opening_a_run_imports_no_code_its_config_names(received, tmp_path, capsys, kind, section, key, argv):
    run = received[0] if kind == "search" else received[2]
    code, marker = plant_module(tmp_path, run, section, key)
    cpu = [] if argv[0] == "report" else CPU
    assert main(argv_for(argv, run, tmp_path) + cpu) == 2
    one_error(capsys, str(code), "--space-module")
    assert not marker.exists()


def test_a_study_opening_a_run_imports_no_code_its_config_names(received, tmp_path, capsys):
    run = received[0]
    code, marker = plant_module(tmp_path, run, "space", "module")
    assert study("reward_noise").main([str(run), "--data-dir", str(tmp_path)]) == 2
    one_error(capsys, str(code), "--space-module")
    assert not marker.exists()


def test_the_command_line_names_the_code_to_import(received, tmp_path, capsys):
    run = received[0]
    _, planted = plant_module(tmp_path, run, "space", "module")
    mine = tmp_path / "mine.py"
    mine.write_text(EVIL.format(marker=str(tmp_path / "mine-ran")))
    assert main(["derive", str(run), "--samples", "2", "--space-module", str(mine)] + CPU) == 0
    assert (tmp_path / "mine-ran").exists() and not planted.exists()


# ---- nothing outside the run is written through a planted link ----------------------------


def precious(tmp_path):
    path = tmp_path / "elsewhere" / "precious.txt"
    path.parent.mkdir()
    path.write_text("precious")
    return path


@pytest.mark.parametrize("name", ["checkpoint.pt.tmp", "best_arch.yaml.tmp", "best_arch.png", "config.yaml.tmp"])
def test_a_planted_link_never_leads_a_write_outside_the_run(received, tmp_path, name):
    run = received[0]
    target = precious(tmp_path)
    (run / name).unlink(missing_ok=True)
    os.symlink(target, run / name)
    assert main(argv_for(RESUME, run, tmp_path) + CPU) == 0
    assert target.read_text() == "precious" and sorted(target.parent.iterdir()) == [target]
    if not name.endswith(".tmp"):  # a file of the run: the link is replaced by the file
        assert not (run / name).is_symlink() and (run / name).stat().st_size > 1000


@pytest.mark.parametrize("name, argv, says", [
    ("metrics.jsonl", RESUME, "symbolic link"),
    ("config.yaml", ["derive", "RUN"], "symbolic link"),
    ("data.json", ["derive", "RUN"], "symbolic link"),
    ("archs", RESUME, "not a folder"),
])
def test_run_files_that_are_links_are_refused(received, tmp_path, capsys, name, argv, says):
    run = received[0]
    outside = tmp_path / "elsewhere"
    shutil.move(run / name, outside)  # the run's own content, moved out and linked back
    os.symlink(outside, run / name)
    before = sorted(outside.rglob("*")) if outside.is_dir() else outside.read_bytes()
    assert main(argv_for(argv, run, tmp_path) + CPU) == 2
    one_error(capsys, str(run / name), says)
    assert (sorted(outside.rglob("*")) if outside.is_dir() else outside.read_bytes()) == before


def test_image_folder_links_leading_outside_the_data_folder_are_refused(tmp_path):

    data = make_folder(tmp_path / "imgs", train=2, val=1)
    other = make_folder(tmp_path / "other", train=2, val=1)
    inside = data / "train" / CLASSES[0] / "again.png"
    os.symlink(data / "train" / CLASSES[0] / "0.png", inside)  # a link within the folder is fine
    assert inside in image_files(data)
    for link, target in [(data / "train" / "zebra", other / "train" / CLASSES[0]),
                         (data / "val" / CLASSES[0] / "stolen.png", other / "val" / CLASSES[0] / "0.png")]:
        os.symlink(target, link)
        with pytest.raises(DataError, match="outside the data folder") as e:
            load_imagefolder(data, 16)
        assert str(link) in str(e.value)
        link.unlink()
    os.symlink(tmp_path / "elsewhere", data / ".enas-cache")  # a cache folder that is a link is not written
    (tmp_path / "elsewhere").mkdir()
    assert load_imagefolder(data, 16)["num_classes"] == len(CLASSES)
    assert not list((tmp_path / "elsewhere").iterdir())


def test_a_data_record_pointing_elsewhere_is_refused_not_downloaded_into(received, tmp_path, capsys, monkeypatch):
    run = received[0]
    fetched = []

    def offline(url, dest, timeout):
        fetched.append(dest)
        raise OSError("offline")

    monkeypatch.setattr("enas.data.text._download", offline)
    elsewhere = tmp_path / "elsewhere" / "deeper"
    rec = json.loads((run / "data.json").read_text())
    (run / "data.json").write_text(json.dumps(dict(rec, path=str(elsewhere))))
    assert main(argv_for(RESUME, run, tmp_path) + CPU) == 2
    one_error(capsys, str(elsewhere), "--data-dir")
    (run / "data.json").write_text(json.dumps(dict(rec, path=str(elsewhere), files={})))
    assert main(["derive", str(run)] + CPU) == 2
    one_error(capsys, "records no data files", "--data-dir")
    assert not elsewhere.parent.exists() and not fetched


# ---- enas show --out -------------------------------------------------------------------


def test_show_out_needs_force_never_replaces_a_run_file_and_replaces_a_link(received, tmp_path, capsys):
    run = received[0]
    arch = str(run / "best_arch.yaml")
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"mine")
    assert main(["show", arch, "--out", str(mine)]) == 2
    one_error(capsys, "already exists", "--force")
    assert mine.read_bytes() == b"mine"
    assert main(["show", arch, "--out", str(mine), "--force"]) == 0
    assert mine.read_bytes().startswith(b"\x89PNG")
    own = run / "best_arch.png"
    kept = own.read_bytes()
    assert main(["show", arch, "--out", str(own), "--force"]) == 2
    one_error(capsys, "is a file of the run")
    assert own.read_bytes() == kept
    link, target = tmp_path / "link.png", tmp_path / "elsewhere" / "target.png"
    target.parent.mkdir()
    os.symlink(target, link)  # dangling: savefig would create the file it names
    assert main(["show", arch, "--out", str(link)]) == 2
    one_error(capsys, "already exists")
    assert main(["show", arch, "--out", str(link), "--force"]) == 0
    assert not link.is_symlink() and link.read_bytes().startswith(b"\x89PNG") and not target.exists()


@pytest.mark.parametrize("own, force, says", [(True, True, "is a file of the run"), (False, False, "already exists")])
def test_table_out_follows_the_out_rule_before_opening_the_run(received, tmp_path, capsys, own, force, says):
    run = received[0]
    out = run / "config.yaml" if own else tmp_path / "mine.json"
    if not own:
        out.write_text("mine")
    kept = out.read_bytes()
    argv = ["table", str(run), "--table", str(tmp_path / "t.csv"), "--out", str(out)] + ["--force"] * force
    assert main(argv + CPU) == 2
    one_error(capsys, str(out), says)
    assert out.read_bytes() == kept


# ---- one writer per run ---------------------------------------------------------------

HOLD = ("import fcntl, os, sys, time\nfd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nos.write(fd, str(os.getpid()).encode())\nprint('held', flush=True)\n"
        "time.sleep(600)\n")


@pytest.mark.slow
def test_a_second_writer_stops_at_once_and_the_lock_dies_with_its_process(received, tmp_path, capsys):
    run = received[0]
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run / "enas.lock")], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        before = (run / "metrics.jsonl").read_bytes()
        assert main(argv_for(RESUME, run, tmp_path) + CPU) == 2
        one_error(capsys, str(run), "another enas process", f"process {holder.pid}")
        assert (run / "metrics.jsonl").read_bytes() == before
    finally:
        holder.kill()  # SIGKILL: nothing cleans up, and nothing needs to
        holder.wait()
    assert main(argv_for(RESUME, run, tmp_path) + CPU) == 0


@pytest.mark.slow
def test_two_resumes_started_together_one_runs_one_stops(received, tmp_path):
    run = received[0]
    cmd = [sys.executable, "-m", "enas"] + argv_for(RESUME, run, tmp_path) + CPU
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [(p.wait(timeout=300), p.stderr.read().decode()) for p in procs]
    assert sorted(code for code, _ in outs) == [0, 2], outs
    assert "another enas process" in next(err for code, err in outs if code == 2)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    keys = [json.dumps(r, sort_keys=True) for r in rows]
    assert len(keys) == len(set(keys))  # no line written twice
    assert max(r.get("epoch", 0) for r in rows) == 2


def test_a_new_run_in_a_folder_another_process_just_made_is_refused(tmp_path, capsys, ptb_dir, tiny_ptb_config):
    folder = tmp_path / "run"
    folder.mkdir()
    fd = os.open(folder / "enas.lock", os.O_RDWR | os.O_CREAT)  # made and locked, nothing written yet
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert main(["search", str(tiny_ptb_config()), "--data-dir", str(ptb_dir), "--run-dir", str(folder)] + CPU) == 2
        one_error(capsys, str(folder), "another enas process")
    finally:
        os.close(fd)
    assert [p.name for p in folder.iterdir()] == ["enas.lock"]


# ---- what a user can name reaches the terminal escaped, on one line -----------------------

FORGED = "r\x1b]0;pwned\x07\x1b[2J\nerror: forged"


@pytest.mark.parametrize("argv", [["derive", "RUN", "--samples", "2"], ["rank", "RUN", "--samples", "2"],
                                  ["report", "RUN"]], ids=lambda a: a[0])
def test_a_run_folder_named_with_escapes_and_newlines_is_printed_escaped(received, tmp_path, capsys, argv):
    run = received[0].rename(tmp_path / FORGED)
    with open(run / "metrics.jsonl", "a") as f:  # a line the report skips and names in a note
        f.write("not json\n")
    assert main([str(run) if a == "RUN" else a for a in argv] + ([] if argv[0] == "report" else CPU)) == 0
    printed = capsys.readouterr()
    for text in (printed.out, printed.err):
        assert "\x1b" not in text and "\x07" not in text, text
        assert not any(line.startswith("error: forged") for line in text.splitlines()), text
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\nerror: forged" in printed.out


def test_newlines_in_provenance_cannot_forge_a_line(received, capsys):
    arch = received[0] / "best_arch.yaml"
    doc = yaml.safe_load(arch.read_text())
    doc["provenance"]["run"] = "x\nerror: forged\r\x1b[2J"
    doc["provenance"]["x\nerror: key"] = 1
    arch.write_text(yaml.safe_dump(doc))
    assert main(["show", str(arch)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out
    assert not any(line.startswith("error:") for line in out.splitlines()), out
    assert "x\\nerror: forged\\r\\x1b[2J" in out
