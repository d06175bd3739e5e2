"""A search space of the user's own (examples/convnet_space.py, named by ``space.module``)
through every command and the Python API, on tiny generated image folders (the README's API
example runs in tests/test_fresh_clone.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from enas import api
from enas.cli import main
from enas.errors import UserError

from conftest import make_folder

ROOT = Path(__file__).resolve().parents[1]
MODULE = ["--space-module", str(ROOT / "examples" / "convnet_space.py")]  # reopening a run names its code
SEARCH, RETRAIN = ROOT / "examples" / "convnet_search.yaml", ROOT / "examples" / "convnet_retrain.yaml"
# the example configs, shrunk to seconds on a few dozen 16 px images
SMALL = ["space.args.max_depth=2", "model.channels=4", "data.image_size=16", "data.batch_size=8",
         "data.eval_batch_size=8", "data.valid_size=8", "search.epochs=1", "search.derive_samples=3",
         "search.log_every=2", "controller.updates_per_epoch=2", "controller.num_aggregate=2"]
SMALL_RETRAIN = ["model.channels=4", "data.image_size=16", "data.batch_size=8", "data.eval_batch_size=8",
                 "retrain.epochs=1", "retrain.log_every=2"]


def sets(values):
    return [x for v in values for x in ("--set", v)]


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    root = tmp_path_factory.mktemp("user_space")
    data = make_folder(root / "imgs", train=8, val=2)
    run = root / "search"
    assert main(["search", str(SEARCH), "--data-dir", str(data), "--run-dir", str(run), "--device", "cpu"]
                + sets(SMALL)) == 0
    return root, data, run


def test_search_exports_an_architecture_of_the_example_space(searched, capsys):
    _, _, run = searched
    doc = yaml.safe_load((run / "best_arch.yaml").read_text())
    assert doc["space"]["name"] == "convnet" and "module" not in doc["space"]  # arch files name no code
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["space"]["module"] == str(ROOT / "examples" / "convnet_space.py")  # resolved beside the config
    assert list(run.glob("events.out.tfevents*"))  # TensorBoard, unchanged
    assert main(["show", str(run / "best_arch.yaml"), "--space-module", str(ROOT / "examples" / "convnet_space.py")]) == 0
    assert "stage 1 (" in capsys.readouterr().out


def test_derive_rank_report_and_resume_work_with_the_space_module_named(searched, capsys):
    root, _, run = searched
    assert main(["derive", str(run), "--samples", "2", "--device", "cpu"] + MODULE) == 0
    csv = root / "ranks.csv"
    assert main(["rank", str(run), "--samples", "3", "--out", str(csv), "--device", "cpu"] + MODULE) == 0
    assert len(csv.read_text().splitlines()) == 4  # header + 3 architectures
    report = root / "report.html"
    assert main(["report", str(run), "--out", str(report)] + MODULE) == 0
    assert "convnet" in report.read_text()
    assert main(["search", "--resume", str(run), "--set", "search.epochs=2", "--allow-config-change",
                 "--device", "cpu"] + MODULE) == 0
    assert (run / "archs" / "epoch_002.yaml").is_file()


def test_retrain_and_evaluate_the_found_architecture(searched, capsys):
    root, data, run = searched
    out = root / "retrain"
    assert main(["retrain", str(run / "best_arch.yaml"), "--config", str(RETRAIN), "--data-dir", str(data),
                 "--run-dir", str(out), "--device", "cpu"] + sets(SMALL_RETRAIN)) == 0
    assert (out / "result.json").is_file()
    capsys.readouterr()
    assert main(["evaluate", str(out), "--device", "cpu"] + MODULE) == 0
    assert "match" in capsys.readouterr().out


def test_a_missing_space_file_is_named(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(SEARCH.read_text().replace("module: convnet_space.py", "module: no_such_space.py"))
    run = tmp_path / "run"
    assert main(["search", str(cfg), "--data-dir", str(tmp_path), "--run-dir", str(run), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "space.module" in err and str(tmp_path / "no_such_space.py") in err and "Traceback" not in err
    assert not run.exists()


def test_an_unknown_space_says_how_to_name_its_file(tmp_path, capsys):
    arch = tmp_path / "a.yaml"
    arch.write_text("format_version: 1\nspace: {name: my_own}\narch: {}\n")
    assert main(["show", str(arch)]) == 2
    assert "space.module" in capsys.readouterr().err


def test_api_search_and_retrain_from_a_config_mapping(tmp_path, monkeypatch):
    data = make_folder(tmp_path / "imgs", train=8, val=2)
    monkeypatch.chdir(tmp_path)  # a mapping's module path is relative to the working directory
    (tmp_path / "spaces").mkdir()
    # a copy of the example under another name (a name registers once per process)
    (tmp_path / "spaces" / "mine.py").write_text((ROOT / "examples" / "convnet_space.py").read_text()
                                                 .replace('"convnet"', '"mine"'))
    cfg = yaml.safe_load(SEARCH.read_text())
    cfg["space"].update(name="mine", module="spaces/mine.py")
    found = api.search(cfg, data_dir=data, overrides=SMALL, device="cpu")
    assert found.run_dir.parent == tmp_path / "runs" and found.run_dir.name.startswith("search-")
    assert found.best_arch_file.is_file() and set(found.best_arch) >= {"stage0/depth", "stage1/depth"}
    assert [h["epoch"] for h in found.history] == [1] and "reward" in found.history[0]
    with pytest.raises(UserError, match="data.image_size"):
        api.search(cfg, data_dir=data, overrides={"data.image_size": 4}, device="cpu")
    rcfg = yaml.safe_load(RETRAIN.read_text())
    rcfg["retrain"]["space_module"] = "spaces/mine.py"
    final = api.retrain(found.best_arch_file, rcfg, data_dir=data, overrides=SMALL_RETRAIN, device="cpu")
    assert final.test_metric == "test_accuracy" and 0.0 <= final.value <= 1.0 and final.params > 0
    assert final.result["test_accuracy"] == final.value and final.history[-1]["epoch"] == 1
