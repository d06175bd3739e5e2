"""Image datasets beyond CIFAR-10: an image folder of the user's own (layout checks,
decoding, the cache, bad images), CIFAR-100's official archive, their fingerprints, the
networks at other sizes and class counts, and search -> retrain on an image folder,
all on tiny generated files."""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from enas.cli import main
from enas.config import DataSection, from_dict
from enas.data import cifar, imagefolder, record
from enas.data.imagefolder import load_imagefolder
from enas.errors import ConfigError, DataError
from enas.nas.space import build_space
from enas.data.images import load_images
from enas.tasks.image import ImageTask
from conftest import CLASSES, colour, make_folder, py2_pickle, random_arch, write_png

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "imgs")


def caches(root: Path) -> list[Path]:
    return sorted((root / imagefolder.CACHE_DIR).glob("*.pt"))


# ---------------------------------------------------------------------- loading


def test_folder_loads_with_shapes_labels_and_classes(folder):
    d = load_imagefolder(folder, image_size=16)
    assert d["classes"] == list(CLASSES) and d["num_classes"] == 3
    assert d["train_x"].shape == (10, 3, 16, 16) and d["train_x"].dtype == torch.uint8
    assert d["test_x"].shape == (6, 3, 16, 16) and d["test_y"].tolist() == [0, 0, 1, 1, 2, 2]
    # shuffled once, the same way every time: the search split's last images are not one class
    assert sorted(d["train_y"].tolist()) == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2] != d["train_y"].tolist()
    assert torch.equal(load_imagefolder(folder, image_size=8)["train_y"], d["train_y"])
    for x, y in ((d["train_x"], d["train_y"]), (d["test_x"], d["test_y"])):
        want = torch.tensor([colour(int(v)) for v in y])[:, :, None, None].expand(-1, -1, 16, 16)
        assert (x.int() - want).abs().max() <= 1  # RGB order, every pixel, both source sizes


def test_cache_is_written_reused_and_rebuilt_when_an_image_changes(folder, monkeypatch):
    first = load_imagefolder(folder, image_size=16)
    [cache] = caches(folder)
    assert cache.name.startswith("imagefolder-16-")
    real, calls = imagefolder.decode, []
    monkeypatch.setattr(imagefolder, "decode", lambda path, size: calls.append(path) or real(path, size))
    again = load_imagefolder(folder, image_size=16)
    assert calls == [] and all(torch.equal(first[k], again[k]) for k in ("train_x", "train_y", "test_x"))
    changed = write_png(folder / "train" / "cow" / "0.png", 0)  # a cow now coloured like an ant
    os.utime(changed, ns=(1, 1))  # another modification time even on a coarse clock
    new = load_imagefolder(folder, image_size=16)
    assert len(calls) == 16  # every image decoded again
    [cache2] = caches(folder)  # the stale cache of that size is gone
    assert cache2 != cache and not torch.equal(new["train_x"], first["train_x"])
    load_imagefolder(folder, image_size=8)  # another size: a cache of its own beside it
    assert len(caches(folder)) == 2


def test_corrupt_cache_is_rebuilt(folder, capsys):
    load_imagefolder(folder, image_size=16)
    [cache] = caches(folder)
    cache.write_bytes(cache.read_bytes()[:200])
    d = load_imagefolder(folder, image_size=16)
    assert "not a readable image cache" in capsys.readouterr().err and d["train_x"].shape[0] == 10
    assert torch.load(cache, weights_only=True)["train_x"].shape[0] == 10  # written again, whole


def test_unwritable_folder_means_no_cache(folder, capsys):
    # a file where the cache folder would go: unwritable even for root (CI), as a
    # read-only mount is
    (folder / imagefolder.CACHE_DIR).write_text("")
    for _ in range(2):
        assert load_imagefolder(folder, image_size=16)["train_x"].shape[0] == 10
    out = capsys.readouterr().err
    assert out.count("cannot write an image cache") == 2 and "decoded again on every run" in out  # once a load


def test_bad_image_is_named_or_skipped_and_counted(folder, capsys, monkeypatch):
    bad = folder / "train" / "bee" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a PNG header, then nothing readable
    with pytest.raises(DataError, match=r"train/bee/broken\.png.*delete.*data\.skip_bad_images: true"):
        load_imagefolder(folder, image_size=16)
    calls = []
    monkeypatch.setattr(imagefolder, "decode", lambda path, size: calls.append(path))
    d = load_imagefolder(folder, image_size=16, skip_bad=True)
    assert calls == []  # the cache remembers the bad file: no second decode
    assert d["train_x"].shape[0] == 10 and "skipped 1 unreadable image" in capsys.readouterr().err


@pytest.mark.parametrize("breakage, match", [
    (lambda r: __import__("shutil").rmtree(r / "val"), r"imgs/val is not a folder.*DIR/train/<class>"),
    (lambda r: __import__("shutil").rmtree(r / "train"), r"imgs/train is not a folder.*DIR/val/<class>"),
    (lambda r: write_png(r / "val" / "dog" / "0.png", 0), r"class 'dog' has no folder in .*imgs/train"),
    (lambda r: (r / "train" / "emu").mkdir(), r"train/emu holds no image.*at least one training image"),
    (lambda r: [p.unlink() for p in r.glob("val/*/*.png")], r"imgs/val holds no image"),
])
def test_layout_mistakes_are_data_errors_naming_the_path(folder, breakage, match):
    breakage(folder)
    with pytest.raises(DataError, match=match):
        load_imagefolder(folder)


def test_empty_train_folder(tmp_path):
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
    with pytest.raises(DataError, match=r"train has no class folders"):
        load_imagefolder(tmp_path)


# ---------------------------------------------------------------------- CIFAR-100


def write_cifar100_archive(dest: Path) -> str:
    """cifar-100-python.tar.gz in the official layout (train, test, meta), tiny; its md5."""
    rng = np.random.default_rng(0)

    def batch(n, name):  # the official Python 2 pickle, with CIFAR-100's label key
        fine = [0, 99] + [int(v) for v in rng.integers(0, 100, n - 2)]
        return py2_pickle(rng.integers(0, 256, (n, 3072), dtype=np.uint8), fine, name, "fine_labels")

    files = {"train": batch(10, "train"), "test": batch(4, "test"),
             "meta": pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)]}, protocol=2)}
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / cifar.CIFAR100.archive
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(f"{cifar.CIFAR100.folder}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_cifar100_archive_loads_with_fine_labels(tmp_path):
    digest = write_cifar100_archive(tmp_path)
    with pytest.raises(DataError, match=f"md5.*{cifar.CIFAR100.md5}"):  # not the real archive's checksum
        cifar.ensure(cifar.CIFAR100, tmp_path, download=False)
    cifar.ensure(cifar.CIFAR100, tmp_path, download=False, md5=digest)
    d = load_images(DataSection(dataset="cifar100"), tmp_path)
    assert d["num_classes"] == 100 and d["train_x"].shape == (10, 3, 32, 32) and d["test_x"].shape[0] == 4
    assert d["train_y"][:2].tolist() == [0, 99] and d["train_y"].max() <= 99
    task = ImageTask(DataSection(dataset="cifar100", train_size=6, valid_size=4, batch_size=2), tmp_path, "cpu", 0)
    assert task.model_kwargs() == {"num_classes": 100, "image_size": 32}
    train = tmp_path / cifar.CIFAR100.folder / "train"
    train.write_bytes(py2_pickle(np.zeros((1, 3072), np.uint8), [100], "train", "fine_labels"))
    with pytest.raises(DataError, match=r"train: labels .* outside 0\.\.99"):
        load_images(DataSection(dataset="cifar100"), tmp_path)


def test_missing_cifar100_names_its_files_and_url(tmp_path):
    with pytest.raises(DataError) as e:
        cifar.ensure(cifar.CIFAR100, tmp_path, download=False)
    for part in ("cifar-100-python/train", "cifar-100-python/test", cifar.CIFAR100.url, "CIFAR-100"):
        assert part in str(e.value)


def test_data_files_and_fingerprint_cover_both(tmp_path, folder):
    c100 = tmp_path / "c100"
    cifar.ensure(cifar.CIFAR100, c100, download=False, md5=write_cifar100_archive(c100))
    assert record.data_files("cifar100", c100) == [c100 / "cifar-100-python" / n for n in ("train", "test")]
    assert sorted(record.fingerprint("cifar100", c100)["files"]) == ["cifar-100-python/test", "cifar-100-python/train"]
    files = record.data_files("imagefolder", folder)
    names = [p.relative_to(folder).as_posix() for p in files]
    assert names == sorted(names) and len(names) == 16 and "train/bee/UPPER.PNG" in names
    assert not any(n.endswith((".txt", "._0.png")) for n in names)
    fp = record.fingerprint("imagefolder", folder)
    assert sorted(fp["files"]) == names
    write_png(folder / "val" / "ant" / "new.png", 0)
    assert record.differences(fp, record.fingerprint("imagefolder", folder)) == ["val/ant/new.png: new"]


# ---------------------------------------------------------------------- task and networks


def test_image_task_on_a_folder(folder):
    cfg = DataSection(dataset="imagefolder", image_size=16, train_size=0, valid_size=3, batch_size=4,
                      eval_batch_size=4)
    task = ImageTask(cfg, folder, "cpu", seed=0)
    assert task.model_kwargs() == {"num_classes": 3, "image_size": 16}
    assert task.train_x.shape[0] == 7 and task.valid_x.shape[0] == 3 and task.test_x.shape[0] == 6
    assert len(set(task.valid_y.tolist())) > 1  # not the last class only (the folder's order)
    assert [tuple(b["x"].shape) for b in task.train_batches(0)] == [(4, 3, 16, 16)]
    final = ImageTask(cfg, folder, "cpu", seed=0, split="final")
    assert final.train_x.shape[0] == 10 and final.valid_is_test
    with pytest.raises(DataError, match=r"data\.train_size 45000 \+ data\.valid_size 5000 do not fit the 10 "):
        ImageTask(DataSection(dataset="imagefolder", image_size=16), folder, "cpu", seed=0)


def test_image_size_other_than_32_is_refused_for_cifar():
    with pytest.raises(ValueError, match="cifar100 images are 32 x 32"):
        DataSection(dataset="cifar100", image_size=64)


@pytest.mark.parametrize("name, args, model", [
    ("enas_micro", {"num_nodes": 2}, {"channels": 4, "num_cells": 1, "aux_head": True}),
    ("enas_macro", {"num_layers": 3}, {"channels": 4}),
    ("nb201", {}, {"channels": 4, "cells_per_stage": 1}),
])
def test_networks_adapt_to_classes_and_image_size(name, args, model):
    import random

    space = build_space(name, args)
    margs = from_dict(type(space).ModelArgs, model)
    arch = random_arch(space, random.Random(0))
    for net in (space.supernet(margs, num_classes=7, image_size=64), space.child(arch, margs, num_classes=7,
                                                                                image_size=64)):
        logits, aux = net.train()(torch.randn(2, 3, 64, 64), arch)
        assert logits.shape == (2, 7) and (aux is None or aux.shape == (2, 7))
        assert net.stem[0].stride == (2, 2)  # 64 px: one stride-2 step, the cells see 32 px
    assert len(space.supernet(margs, image_size=32).stem) == 2  # 32 px: the CIFAR stem, unchanged


def test_micro_aux_head_on_too_small_images_is_a_config_error():
    space = build_space("enas_micro")
    with pytest.raises(ConfigError, match=r"model\.aux_head.*16 px images leave 4 x 4.*aux_head: false"):
        space.supernet(from_dict(space.ModelArgs, {"channels": 4, "num_cells": 1}), image_size=16)
    small = space.supernet(from_dict(space.ModelArgs, {"channels": 4, "num_cells": 1, "aux_head": False}),
                           num_classes=3, image_size=16)
    import random

    assert small(torch.randn(2, 3, 16, 16), random_arch(space, random.Random(0)))[0].shape == (2, 3)


# ---------------------------------------------------------------------- end to end


def test_search_then_retrain_on_an_image_folder(tmp_path, capsys):
    data = make_folder(tmp_path / "imgs", train=6, val=2)
    data_set = ["data.dataset=imagefolder", "data.image_size=16", "data.batch_size=8", "data.eval_batch_size=8",
                "model.channels=4"]
    search = tmp_path / "search"
    assert main(["search", str(ROOT / "configs/smoke/nb201_search.yaml"), *sum([["--set", s] for s in data_set + [
        "data.train_size=0", "data.valid_size=6", "search.epochs=1", "search.derive_samples=2",
        "search.final_candidates=2", "controller.updates_per_epoch=2", "controller.num_aggregate=2"]], []),
        "--data-dir", str(data), "--run-dir", str(search), "--device", "cpu"]) == 0
    assert (search / "best_arch.yaml").is_file() and (data / imagefolder.CACHE_DIR).is_dir()
    assert "train/ant/0.png" in json.loads((search / "data.json").read_text())["files"]
    retrain = tmp_path / "retrain"
    assert main(["retrain", str(search / "best_arch.yaml"), "--config", str(ROOT / "configs/smoke/nb201_retrain.yaml"),
                 *sum([["--set", s] for s in data_set + ["retrain.epochs=1"]], []),
                 "--data-dir", str(data), "--run-dir", str(retrain), "--device", "cpu"]) == 0
    result = json.loads((retrain / "result.json").read_text())
    assert 0.0 <= result["test_accuracy"] <= 1.0
    assert "Traceback" not in capsys.readouterr().err
