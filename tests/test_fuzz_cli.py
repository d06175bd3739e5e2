"""The command line against generated hostile input, one strategy per class of attack:
links planted in a run, FIFOs where files belong, deep nesting, huge numbers, bombs
(aliases, compressed checkpoints, long lines, huge space arguments) and a second writer.

Whatever is generated, a command ends within a deadline, with exit code 0 or 2 (or 1 where
`enas evaluate` finds that result.json does not match its recomputed figure), at most
one error line, no traceback and no control character on the terminal, and nothing
outside the run folder changes."""
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from enas.cli import main

from conftest import TINY_PTB, study

pytestmark = pytest.mark.slow
# each example runs a command (seconds): no shrinking, the generated case is reported as is.
# The test suite draws the same cases every run (derandomized: CI passes or fails for the
# code, not the draw); ENAS_FUZZ_EXAMPLES=200 draws that many new ones for a longer hunt
EXAMPLES = int(os.environ.get("ENAS_FUZZ_EXAMPLES", "8"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                derandomize="ENAS_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
# a FIFO waits forever; a command on a busy machine may take minutes
DEADLINE_S = 600

# commands that open a run: RUN, RETRAIN, OUT and TMP are filled in per example
COMMANDS = {
    "derive": ["derive", "RUN", "--samples", "2", "--device", "cpu"],
    "rank": ["rank", "RUN", "--samples", "2", "--out", "TMP/ranks.csv", "--device", "cpu"],
    "report": ["report", "RUN"],
    "resume": ["search", "--resume", "RUN", "--set", "search.epochs=2", "--allow-config-change", "--device", "cpu"],
    "show": ["show", "RUN/best_arch.yaml", "--out", "RUN/drawing.png"],
    "evaluate": ["evaluate", "RETRAIN", "--device", "cpu"],
    "report-retrain": ["report", "RETRAIN"],
    "resume-retrain": ["retrain", "--resume", "RETRAIN", "--device", "cpu"],
}
RUN_FILES = ["config.yaml", "checkpoint.pt", "checkpoint.prev.pt", "metrics.jsonl", "data.json", "best_arch.yaml",
             "best_arch.png", "archs", "archs/epoch_001.yaml", "enas.lock", "report.html"]
RETRAIN_FILES = ["config.yaml", "arch.yaml", "checkpoint.pt", "metrics.jsonl", "data.json", "result.json", "best.pt",
                 "enas.lock"]


@contextlib.contextmanager
def fresh(finished_runs):
    """A copy of the runs in a new folder, beside an ``outside`` folder that must not change."""
    run, _, retrain = finished_runs
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        outside = tmp / "outside"
        outside.mkdir()
        (outside / "precious.txt").write_text("precious\n")
        yield tmp, shutil.copytree(run, tmp / "run"), shutil.copytree(retrain, tmp / "retrain"), outside


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


class Deadline(BaseException):
    """Not an ``OSError`` (``TimeoutError`` is one, and enas reports a read that fails with
    it as one clean error line): nothing in enas catches it, so a wait fails the test."""


def deadline_handler(signum, frame):
    raise Deadline("the command is still running after its deadline (waiting on a FIFO?)")


def argv_of(command, tmp, run, retrain) -> list[str]:
    argv = [a.replace("RETRAIN", str(retrain)).replace("RUN", str(run)).replace("TMP", str(tmp))
            for a in COMMANDS[command]]
    return argv + (["--out", str(tmp / "report.html"), "--force"] if command.startswith("report") else [])


def cli(capsys, argv, entry=main) -> tuple[int, str]:
    """Run one command (``entry``: enas's, or a study's) in this process within a deadline:
    (exit code, stderr)."""
    capsys.readouterr()
    old = signal.signal(signal.SIGALRM, deadline_handler)
    signal.alarm(DEADLINE_S)
    try:
        code = entry([str(a) for a in argv])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return code, capsys.readouterr().err


def assert_clean(code: int, err: str) -> None:
    errors = [line for line in err.splitlines() if line.startswith("error")]
    mismatch = code == 1 and "MISMATCH" in err  # enas evaluate: the recomputed figure differs from result.json
    assert (code in (0, 2) or mismatch) and "Traceback" not in err and "\x1b" not in err, err
    assert len(errors) == (code == 2), err


def target_for(run: Path, name: str, command: str) -> Path:
    return run.parent / ("retrain" if "retrain" in command or command == "evaluate" else "run") / name


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)


commands = st.sampled_from(sorted(COMMANDS))


# ---- links ---------------------------------------------------------------------------


@FUZZ
@given(command=commands, name=st.sampled_from(sorted(set(RUN_FILES + RETRAIN_FILES))),
       kind=st.sampled_from(["file", "folder", "dangling"]))
@example(command="resume", name="best_arch.png", kind="file")  # the drawing written through the link
def test_fuzz_planted_links_never_lead_outside_the_run(finished_runs, capsys, command, name, kind):
    with fresh(finished_runs) as (tmp, run, retrain, outside):
        path = target_for(run, name, command)
        remove(path)
        os.symlink({"file": outside / "precious.txt", "folder": outside, "dangling": outside / "new"}[kind], path)
        before = snapshot(outside)
        assert_clean(*cli(capsys, argv_of(command, tmp, run, retrain)))
        assert snapshot(outside) == before


# ---- FIFOs -----------------------------------------------------------------------------

NAMED = ["named config", "named arch file", "named arch list", "data file"]


@FUZZ
@given(command=commands, name=st.sampled_from(sorted(set(RUN_FILES + RETRAIN_FILES) - {"archs"}) + NAMED))
@example(command="show", name="best_arch.yaml")  # opened for reading: waits for a writer forever
def test_fuzz_fifos_are_refused_never_waited_on(finished_runs, capsys, command, name):
    with fresh(finished_runs) as (tmp, run, retrain, outside):
        fifo = {"data file": Path(finished_runs[1]) / "ptb.valid.txt"}.get(name, tmp / "named.yaml")
        argv = {"named config": ["search", fifo, "--run-dir", tmp / "new", "--device", "cpu"],
                "named arch file": ["show", fifo],
                "named arch list": ["rank", run, "--archs", fifo, "--device", "cpu"],
                "data file": ["derive", run, "--data-dir", tmp / "data", "--device", "cpu"]}.get(name)
        if name == "data file":  # the run's data, copied, with one file a FIFO
            fifo = Path(shutil.copytree(finished_runs[1], tmp / "data")) / "ptb.valid.txt"
            fifo.unlink()
        elif argv is None:
            fifo = target_for(run, name, command)
            remove(fifo)
            argv = argv_of(command, tmp, run, retrain)
        os.mkfifo(fifo)
        assert_clean(*cli(capsys, argv))


# ---- deep nesting ---------------------------------------------------------------------

NESTABLE = ["config", "arch file", "--set value", "--set key", "run config", "data.json", "metrics.jsonl",
            "result.json"]


def nested(depth: int, style: str) -> str:
    if style == "block":  # indentation grows with depth: quadratic size, so only when asked for
        return "".join(f"\n{'  ' * (i + 1)}k{i}:" for i in range(depth)) + " 1"
    return "[" * depth + "]" * depth  # flow YAML and JSON alike


@FUZZ
@given(where=st.sampled_from(NESTABLE), depth=st.one_of(st.integers(33, 2000), st.sampled_from([10**4, 10**5])))
@example(where="--set value", depth=10**5)  # past Python's recursion
def test_fuzz_deep_nesting_is_one_line(finished_runs, capsys, where, depth):
    with fresh(finished_runs) as (tmp, run, retrain, outside):
        cfg, data = tmp / "c.yaml", finished_runs[1]
        cfg.write_text(yaml.safe_dump(TINY_PTB) + ("deep: " + nested(depth, "flow") + "\n"))
        arch = tmp / "a.yaml"
        arch.write_text((run / "best_arch.yaml").read_text() + "deep: " + nested(depth, "flow") + "\n")
        new = ["--data-dir", data, "--run-dir", tmp / "new", "--device", "cpu"]
        if where == "config":
            argv = ["search", cfg] + new
        elif where == "arch file":
            argv = ["show", arch]
        elif where == "--set value":
            argv = ["search", tmp / "ok.yaml", "--set", "model.hidden=" + nested(depth, "flow")] + new
            (tmp / "ok.yaml").write_text(yaml.safe_dump(TINY_PTB))
        elif where == "--set key":
            argv = ["search", tmp / "ok.yaml", "--set", ".".join(["model"] * depth) + "=1"] + new
            (tmp / "ok.yaml").write_text(yaml.safe_dump(TINY_PTB))
        elif where == "run config":
            with open(run / "config.yaml", "a") as f:
                f.write("deep:" + nested(min(depth, 2000), "block") + "\n")
            argv = argv_of("derive", tmp, run, retrain)
        elif where == "data.json":
            (run / "data.json").write_text(nested(depth, "json"))
            argv = argv_of("derive", tmp, run, retrain)
        elif where == "metrics.jsonl":
            with open(run / "metrics.jsonl", "a") as f:
                f.write('{"step": 1, "x": ' + nested(depth, "json") + "}\n")
            argv = argv_of("report", tmp, run, retrain)
        else:
            (retrain / "result.json").write_text('{"test_perplexity": ' + nested(depth, "json") + "}")
            argv = argv_of("evaluate", tmp, run, retrain)
        assert_clean(*cli(capsys, argv))
        assert not (tmp / "new").exists()


# ---- huge numbers ---------------------------------------------------------------------

NUMBERED = ["config key", "--set", "arch space args", "metrics step", "metrics value", "data.json size",
            "checkpoint position", "result.json", "derive --seed"]
KEYS = ["search.seed", "search.epochs", "data.batch_size", "data.bptt", "model.hidden", "controller.hidden",
        "train.lr", "search.derive_samples", "controller.updates_per_epoch", "space.args.num_nodes"]


@FUZZ
@given(where=st.sampled_from(NUMBERED), key=st.sampled_from(KEYS), digits=st.integers(17, 6000),
       negative=st.booleans(), as_float=st.booleans())
@example(where="--set", key="search.seed", digits=23, negative=False, as_float=False)  # past any seed
def test_fuzz_huge_numbers_are_one_line(finished_runs, capsys, where, key, digits, negative, as_float):
    number = ("-" if negative else "") + "9" * digits + (".5e3" if as_float else "")
    with fresh(finished_runs) as (tmp, run, retrain, outside):
        data = finished_runs[1]
        new = ["--data-dir", data, "--run-dir", tmp / "new", "--device", "cpu"]
        cfg = yaml.safe_load(yaml.safe_dump(TINY_PTB))
        (tmp / "ok.yaml").write_text(yaml.safe_dump(cfg))
        if where == "config key":
            node, parts = cfg, key.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = "NUMBER_HERE"
            (tmp / "c.yaml").write_text(yaml.safe_dump(cfg).replace("NUMBER_HERE", number))
            argv = ["search", tmp / "c.yaml"] + new
        elif where == "--set":
            argv = ["search", tmp / "ok.yaml", "--set", f"{key}={number}"] + new
        elif where == "arch space args":
            doc = yaml.safe_load((run / "best_arch.yaml").read_text())
            text = yaml.safe_dump(doc).replace("num_nodes: 4", f"num_nodes: {number}")
            (tmp / "a.yaml").write_text(text)
            argv = ["show", tmp / "a.yaml"]
        elif where.startswith("metrics"):
            row = f'{{"step": {number}, "x/y": 1}}' if where == "metrics step" else f'{{"step": 3, "x/y": {number}}}'
            with open(run / "metrics.jsonl", "a") as f:
                f.write(row + "\n")
            argv = argv_of("report", tmp, run, retrain)
        elif where == "data.json size":
            text = (run / "data.json").read_text()
            (run / "data.json").write_text(text.replace('"size": ', f'"size": {number}0', 1))
            argv = argv_of("derive", tmp, run, retrain)
        elif where == "checkpoint position":
            (run / "checkpoint.prev.pt").unlink()
            state = torch.load(run / "checkpoint.pt", weights_only=True)
            state["position"]["global_step"] = int("9" * min(digits, 4000))
            torch.save(state, run / "checkpoint.pt")
            argv = argv_of("derive", tmp, run, retrain)
        elif where == "result.json":
            (retrain / "result.json").write_text(f'{{"test_perplexity": {number}}}')
            argv = argv_of("evaluate", tmp, run, retrain)
        else:
            argv = argv_of("derive", tmp, run, retrain) + ["--seed", "9" * min(digits, 4000)]
        assert_clean(*cli(capsys, argv))
        assert not (tmp / "new").exists()


# ---- bombs ----------------------------------------------------------------------------

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


@FUZZ
@given(kind=st.sampled_from(["aliases in a config", "aliases in an arch file", "aliases in a run config",
                             "compressed checkpoint", "long metrics line", "space arguments", "oversized config"]),
       size=st.integers(1, 10**7))
@example(kind="space arguments", size=10**6 - 65)  # num_nodes 1,000,000: gigabytes before the first step
def test_fuzz_bombs_are_refused_before_they_go_off(finished_runs, capsys, kind, size):
    with fresh(finished_runs) as (tmp, run, retrain, outside):
        new = ["--data-dir", finished_runs[1], "--run-dir", tmp / "new", "--device", "cpu"]
        if kind == "aliases in a config":
            (tmp / "c.yaml").write_text(yaml.safe_dump(TINY_PTB) + BOMB)
            argv = ["search", tmp / "c.yaml"] + new
        elif kind == "aliases in an arch file":
            (tmp / "a.yaml").write_text((run / "best_arch.yaml").read_text() + "bomb:\n" +
                                        "".join("  " + line + "\n" for line in BOMB.splitlines()))
            argv = ["show", tmp / "a.yaml"]
        elif kind == "aliases in a run config":
            with open(run / "config.yaml", "a") as f:
                f.write(BOMB)
            argv = argv_of("derive", tmp, run, retrain)
        elif kind == "compressed checkpoint":
            path = run / "checkpoint.pt"
            with zipfile.ZipFile(path) as src:
                entries = {i.filename: src.read(i.filename) for i in src.infolist()}
            with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
                for name, data in entries.items():
                    z.writestr(name, data)
                z.writestr("archive/data/planted", b"\0" * size)  # unpacks to size bytes
            (run / "checkpoint.prev.pt").unlink()
            argv = argv_of("derive", tmp, run, retrain)
        elif kind == "long metrics line":
            with open(run / "metrics.jsonl", "a") as f:
                f.write('{"step": 3, "x/text": "' + "a" * (2**20 + size % 2**21) + '"}\n')
            argv = argv_of("report", tmp, run, retrain)
        elif kind == "space arguments":
            argv = ["search", tmp / "ok.yaml", "--set", f"space.args.num_nodes={65 + size}"] + new
            (tmp / "ok.yaml").write_text(yaml.safe_dump(TINY_PTB))
        else:
            with open(tmp / "c.yaml", "wb") as f:
                f.truncate(4 * 2**20 + size)  # sparse
            argv = ["search", tmp / "c.yaml"] + new
        assert_clean(*cli(capsys, argv))
        assert not (tmp / "new").exists()


# ---- a second writer ------------------------------------------------------------------

HOLD = ("import fcntl, os, sys, time\nfd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(600)\n")


@settings(FUZZ, max_examples=max(2, EXAMPLES // 2))
@given(command=st.sampled_from(["resume", "resume-retrain", "new run"]), alive=st.booleans())
@example(command="resume", alive=True)  # both would write the run
def test_fuzz_a_second_writer_stops_at_once(finished_runs, capsys, command, alive):
    with fresh(finished_runs) as (tmp, run, retrain, outside):
        folder = {"resume": run, "resume-retrain": retrain, "new run": tmp / "new"}[command]
        folder.mkdir(exist_ok=True)
        holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder / "enas.lock")], stdout=subprocess.PIPE)
        try:
            assert holder.stdout.readline().strip() == b"held"
            if not alive:  # killed: its lock is gone with it
                holder.kill()
                holder.wait()
            if command == "new run":
                (tmp / "ok.yaml").write_text(yaml.safe_dump(TINY_PTB))
                argv = ["search", tmp / "ok.yaml", "--data-dir", finished_runs[1], "--run-dir", folder, "--device", "cpu"]
            else:
                argv = argv_of(command, tmp, run, retrain)
            before = snapshot(folder)
            code, err = cli(capsys, argv)
            assert_clean(code, err)
            assert code == (2 if alive else 0), err
            if alive:
                assert "another enas process" in err and snapshot(folder) == before
        finally:
            holder.kill()
            holder.wait()


# ---- the evaluation tools -------------------------------------------------------------

GT_HEADER = "arch,seed,test_accuracy,params,seconds,process_seconds,test_loss,epochs,space,recipe,run_dir\n"
CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def hostile(kind: str, path: Path, outside: Path, size: int) -> Path:
    """A file of ``kind`` at ``path`` (or the device itself), made to hang, exhaust or break a reader."""
    if kind == "device":
        return Path("/dev/zero")
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "link outside":
        os.symlink(outside / "precious.txt", path)
    elif kind == "folder":
        path.mkdir()
    else:
        path.write_bytes({
            "empty": b"",
            "header only": GT_HEADER.encode(),
            "deep nesting": b"arch,test_accuracy\n" + b"{a: " + b"[" * size + b"]" * size + b"},0.5\n",
            "aliases": b"arch,test_accuracy,score\n\"{" + BOMB.replace("\n", ", ").encode() + b"}\",0.5,0.5\n",
            "huge numbers": f"arch,test_accuracy,seed,score\n{CELL},{'9' * size},{'9' * size},1e{size}\n".encode(),
            "NUL bytes": f"arch,test_accuracy,score\n{CELL}\0,0.5,0.5\n".encode(),
            "long field": b"arch,test_accuracy,score\n\"" + b"a" * (2**17 + size) + b"\",0.5,0.5\n",
            "binary": bytes(range(256)) * (1 + size % 64),
        }[kind])
    return path


TOOLS = {  # each tool with the hostile file H in the place it reads a file a user names
    "compare": ["compare", "H"],
    "compare --rank": ["compare", "GT", "--rank", "H"],
    "table": ["table", "RUN", "--table", "H", "--device", "cpu"],
    "ground-truth --archs": ["ground-truth", "--archs", "H", "--config", "CFG", "--out", "TMP/gt.csv", "--list-only"],
    "ground-truth --config": ["ground-truth", "--uniform", "2", "--config", "H", "--out", "TMP/gt.csv",
                              "--list-only"],
    "ground-truth --out": ["ground-truth", "--uniform", "2", "--config", "CFG", "--out", "H", "--list-only"],
    # the study scripts (benchmarks/studies/NAME.py)
    "beat_chance.py": ["--data-dir", "TMP", "--ground-truth", "H", "--work", "TMP/work"],
    "reward_noise.py": ["H", "--data-dir", "TMP"],
    "proxy_ceiling.py": ["RUN", "--ground-truth", "H", "--cells", "GT"],
    "proxy_ceiling.py --cells": ["RUN", "--ground-truth", "GT", "--cells", "H"],
}
KINDS = ["device", "fifo", "link outside", "folder", "empty", "header only", "deep nesting", "aliases",
         "huge numbers", "NUL bytes", "long field", "binary"]


@FUZZ
@given(tool=st.sampled_from(sorted(TOOLS)), kind=st.sampled_from(KINDS), size=st.integers(33, 5000))
@example(tool="compare", kind="device", size=33)  # read with a plain open: gigabytes of zeros
@example(tool="compare", kind="fifo", size=33)  # waited for a writer forever
def test_fuzz_evaluation_tools_answer_hostile_files_in_one_line(finished_runs, capsys, tool, kind, size):
    with fresh(finished_runs) as (tmp, run, retrain, outside):
        (tmp / "gt.csv").unlink(missing_ok=True)
        gt = tmp / "ok.csv"
        gt.write_text(GT_HEADER + f"{CELL},0,0.5,1,1,1,1,1,nb201,r,x\n")
        cfg = tmp / "r.yaml"
        cfg.write_text(yaml.safe_dump({"model": {"channels": 4, "cells_per_stage": 1}, "data": {"dataset": "cifar10"},
                                       "retrain": {"epochs": 1}}))
        h = hostile(kind, tmp / "hostile.csv", outside, size)
        if tool == "reward_noise.py" and kind not in ("device", "fifo", "link outside"):
            h = run  # a run folder with its config replaced
            remove(run / "config.yaml")
            hostile(kind, run / "config.yaml", outside, size)
        fill = {"H": str(h), "GT": str(gt), "RUN": str(run), "CFG": str(cfg)}
        argv = [fill.get(a, a.replace("TMP", str(tmp))) for a in TOOLS[tool]]
        before = snapshot(outside)
        script = tool.split()[0]
        code, err = cli(capsys, argv, study(script[:-3]).main if script.endswith(".py") else main)
        assert_clean(code, err)
        assert snapshot(outside) == before
