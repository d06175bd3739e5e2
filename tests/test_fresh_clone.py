"""A new user's first hour, from a fresh clone and the README alone, offline: the quick
start's search, the walk-through and the Python API example run exactly as README.md
prints them (read from its code blocks, so the test breaks when the README drifts), on
the data that ships with enas, with no ./data folder, no HOME, no proxies and no path
of this machine's."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROXIES = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy", "no_proxy", "NO_PROXY")


def _block(readme: str, heading: str, lang: str = "bash") -> str:
    """The first ``lang`` code block after ``heading``."""
    return re.search(rf"^{re.escape(heading)}\n.*?```{lang}\n(.*?)```", readme, re.S | re.M).group(1)


def readme_commands(readme: str) -> tuple[list[str], list[list[str]], str]:
    """(the quick start's ``enas`` command, the walk-through's ``enas`` commands, the API
    example) as the README prints them. The quick start installs first: its ``enas`` part
    runs here with the interpreter of the tests, which has the package already.
    ``tensorboard`` in the walk-through is a server that runs until stopped: not run."""
    quick = _block(readme, "## Quick start").strip().split(" && ")[-1]
    walk = []
    for line in _block(readme, "## Search, look, retrain, evaluate, report").splitlines():
        argv = shlex.split(line, comments=True)
        if not argv or argv[0] == "tensorboard":
            continue
        assert argv[0] == "enas", f"a walk-through line this test cannot run: {line}"
        walk.append(argv)
    api = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", readme, re.S).group(1)
    return shlex.split(quick), walk, api


@pytest.mark.slow
def test_a_fresh_clone_runs_the_readme_offline_on_the_shipped_data(tmp_path):
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    clone, home = tmp_path / "clone", tmp_path / "home"
    home.mkdir()
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(ROOT), str(clone)], check=True, capture_output=True)
    subprocess.run(["git", "checkout", "-q", head.strip()], cwd=clone, check=True, capture_output=True)
    quick, walk, api = readme_commands((clone / "README.md").read_text())
    assert quick[0] == "enas" and quick[1] == "search" and "--data-dir" not in quick
    assert [a[1] for a in walk][:2] == ["search", "show"] and api.count("api.") >= 2

    env = {k: v for k, v in os.environ.items() if k not in PROXIES and not k.startswith("PYTHON")}
    env |= {"HOME": str(home), "OMP_NUM_THREADS": "1"}  # one thread: a shared 2-core box stays usable
    assert not any("/work/shared" in v or "../shared" in v for v in env.values())

    def run(argv):  # `enas ...` as `python -m enas ...`: the clone's own package (the working directory first)
        done = subprocess.run(argv, cwd=clone, env=env, capture_output=True, text=True, timeout=1800)
        assert done.returncode == 0, f"{shlex.join(argv)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout + done.stderr

    out = run([sys.executable, "-m", "enas", *quick[1:]])
    assert "best architecture" in out
    for argv in walk:
        run([sys.executable, "-m", "enas", *argv[1:]])
    out = run([sys.executable, "-c", api])
    assert "best_arch.yaml" in out and "test_accuracy" in out

    assert (clone / "runs" / "nb201" / "report.html").is_file() and (clone / "cell.png").is_file()
    assert json.loads((clone / "runs" / "nb201-retrain" / "result.json").read_text())["test_accuracy"] > 0
    records = [json.loads(p.read_text()) for p in (clone / "runs").glob("*/data.json")]
    assert len(records) == 5  # quick start, walk-through search and retrain, the API's search and retrain
    samples = clone.resolve() / "enas" / "data" / "samples"
    assert all(Path(r["path"]).is_relative_to(samples) for r in records), [r["path"] for r in records]
    assert not (clone / "data").exists()  # nothing was downloaded
