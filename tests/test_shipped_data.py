"""The data that ships with enas (enas/data/samples, --data-dir sample): the files are
what their README says, the real loaders read them, the named folder ``sample`` finds
them for a new run and a reopened one, a failed download says how to use them, and no
file of the product names the ../shared folder users do not have."""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from enas.cli import main
from enas.config import load_search
from enas.data import cifar, record, shipped, text
from enas.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "enas" / "data" / "samples"


def _documented() -> dict[str, tuple[int, str, str]]:
    """{path under samples/: (bytes, md5, sha256)} from the rows of samples/README.md."""
    out, folder = {}, None
    for line in (SAMPLES / "README.md").read_text().splitlines():
        if line.startswith("## "):
            folder = line[3:].strip().strip("/")
        m = re.fullmatch(r"\| (\S+) \| ([\d,]+) \| ([0-9a-f]{32}) \| ([0-9a-f]{64}) \|", line)
        if m:
            out[f"{folder}/{m[1]}"] = (int(m[2].replace(",", "")), m[3], m[4])
    return out


def test_shipped_files_are_those_the_readme_describes_and_small():
    files = {p.relative_to(SAMPLES).as_posix(): p for p in SAMPLES.rglob("*") if p.is_file() and p.name != "README.md"}
    documented = _documented()
    assert sorted(files) == sorted(documented)
    for name, (size, md5, sha) in documented.items():
        data = files[name].read_bytes()
        assert (len(data), hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()) == (size, md5, sha), name
    assert sum(p.stat().st_size for p in files.values()) <= 20 * 10**6
    # the training file of the PTB sample is the official validation file, unchanged
    assert documented["ptb/ptb.train.txt"][1] == text.PTB_MD5["ptb.valid.txt"]


def test_the_real_loaders_read_the_samples():
    data = cifar.load(cifar.CIFAR10, shipped.locate("cifar10", "sample"), download=False)
    assert len(data["train_y"]) == 4660 and len(data["test_y"]) == 846
    assert data["train_x"].shape[1:] == (3, 32, 32) and sorted(set(data["test_y"].tolist())) == list(range(10))
    corpus = text.load_corpus("ptb", shipped.locate("ptb", "sample"))
    assert len(corpus.vocab) <= 10_000 and len(corpus.train) == 73_760
    assert len(corpus.valid) + len(corpus.test) == 82_430  # the official test file, split in two


def test_the_name_sample_and_other_folders():
    assert Path(shipped.locate("cifar10", "sample")) == SAMPLES / "cifar10"
    assert Path(shipped.locate("ptb", "sample")) == SAMPLES / "ptb"
    assert shipped.locate("ptb", "./sample") == "./sample"  # a folder of the user's own
    assert shipped.locate("ptb", "data/ptb") == "data/ptb"
    with pytest.raises(ConfigError, match="ships samples of cifar10 and ptb only"):
        shipped.locate("imagefolder", "sample")


def test_smoke_configs_name_the_sample_and_paper_configs_download():
    for path in sorted((ROOT / "configs" / "smoke").glob("*_search.yaml")):
        assert load_search(path).data.dir == "sample", path
    for path in sorted((ROOT / "configs").glob("*_search*.yaml")):
        assert load_search(path).data.dir == "data", path
    for text_ in (p.read_text() for p in (ROOT / "configs" / "smoke").glob("*.yaml")):
        assert re.search(r"^  dir: sample\b", text_, re.M)
    with pytest.raises(ConfigError, match="data.dir is empty"):
        load_search(ROOT / "configs" / "smoke" / "ptb_search.yaml", ["data.dir=''"])
    for outside in ("/tmp/x", "../x", "data/../../x"):  # a config cannot pick where downloads go
        with pytest.raises(ConfigError, match="outside the working directory.*--data-dir"):
            load_search(ROOT / "configs" / "smoke" / "ptb_search.yaml", [f"data.dir={outside}"])
    assert load_search(ROOT / "configs" / "ptb_search.yaml", ["data.dir=data/ptb"]).data.dir == "data/ptb"


def test_a_run_on_the_sample_reopens_without_and_with_the_name(tmp_path):
    """data.json records the sample's absolute path and checksums like any folder's, so
    --resume and the commands that reopen a run find it with no --data-dir or with
    --data-dir sample."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rec = record.write(run_dir, "ptb", shipped.locate("ptb", "sample"))
    assert rec["path"] == str(SAMPLES / "ptb") and len(rec["files"]) == 3
    assert Path(record.resolve(run_dir, "ptb", None)) == SAMPLES / "ptb"
    assert Path(record.resolve(run_dir, "ptb", "sample")) == SAMPLES / "ptb"


@pytest.mark.parametrize("config, module, attr", [("configs/ptb_search.yaml", text, "_download"),
                                                  ("configs/cifar10_micro_search.yaml", cifar, "fetch")])
def test_a_failed_download_says_how_to_run_on_the_sample(config, module, attr, tmp_path, monkeypatch, capsys):
    """A paper config downloads into ./data; with no network the one-line error says how
    to run on the shipped sample instead, and nothing is left behind."""
    def offline(url, dest, timeout=None):
        raise OSError("network is unreachable")

    monkeypatch.setattr(module, attr, offline)
    monkeypatch.chdir(tmp_path)
    assert main(["search", str(ROOT / config), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert "not be downloaded" in err or "download failed" in err
    assert "--data-dir sample" in err
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()


def test_no_tracked_file_outside_tests_and_ci_names_the_shared_folder():
    """Users have no ../shared: the product (code, configs, docs, benchmarks, README)
    names only paths inside the project or a user's own folders."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    files = [n for n in names.decode().split("\0") if n and not n.startswith(("tests/", ".ci/"))]
    assert "README.md" in files and "enas/cli.py" in files  # the listing is the project's
    bad = [n for n in files if (ROOT / n).is_file()
           and re.search(rb"\.\./shared|/work/shared", (ROOT / n).read_bytes())]
    assert bad == []


@pytest.mark.slow
def test_a_non_editable_install_carries_the_samples(tmp_path):
    """``pip install .`` (a wheel) holds every shipped file: package data, not just files
    of the checkout."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    wheel, = tmp_path.glob("enas-*.whl")
    inside = set(zipfile.ZipFile(wheel).namelist())
    for p in SAMPLES.rglob("*"):
        if p.is_file():
            assert p.relative_to(ROOT).as_posix() in inside, p
