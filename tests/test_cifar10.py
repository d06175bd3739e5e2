"""CIFAR-10 loading (official pickle layout, restricted unpickling, archive handling)
and the image task (augmentation, reward/score/evaluate), on tiny generated files."""
from __future__ import annotations

import copy
import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np

import pytest
import torch
import torch.nn as nn

from enas.config import DataSection
from enas.data import cifar
from enas.data.cifar import CIFAR10 as C10
from enas.errors import DataError
from enas.data.images import PAD, augment
from enas.tasks.image import ImageTask
from conftest import N_PER_BATCH, write_cifar

# ---------------------------------------------------------------------- loading


def test_loads_official_py2_format(cifar_dir):
    d = cifar.load(C10, cifar_dir, download=False)
    assert d["train_x"].shape == (5 * N_PER_BATCH, 3, 32, 32) and d["train_x"].dtype == torch.uint8
    assert d["test_x"].shape == (N_PER_BATCH, 3, 32, 32)
    assert d["train_y"].dtype == torch.int64 and d["train_y"].shape == (5 * N_PER_BATCH,)
    # pixel values carry the label (see make_images): the layout is [N, C, H, W]
    assert torch.equal(d["train_x"][:, 1, 5, 7].long(), 20 * d["train_y"] + 1)


def test_loads_numpy2_protocol3_and_numpy_core_name(tmp_path):
    data = np.arange(2 * 3072, dtype=np.uint64).astype(np.uint8).reshape(2, 3072)
    raw = pickle.dumps({b"data": data, b"labels": [3, 4]}, protocol=3)
    assert b"numpy._core.multiarray\n_reconstruct" in raw
    for i, blob in enumerate([raw, raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")]):
        p = tmp_path / f"b{i}"
        p.write_bytes(blob)
        x, y = cifar.load_batch(p)
        assert x.shape == (2, 3, 32, 32) and np.array_equal(x.reshape(2, -1), data) and y.tolist() == [3, 4]


@pytest.mark.parametrize("data", [np.full((2, 3072), np.nan), np.full((2, 3072), 300.0), np.full((2, 3072), 7, np.int64)])
def test_pixels_that_are_not_bytes_are_refused(tmp_path, data):
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps({b"data": data, b"labels": [1, 2]}, protocol=3))
    with pytest.raises(DataError, match="data_batch_1: pixel values must be uint8"):
        cifar.load_batch(p)


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps({b"data": _Evil(marker), b"labels": []}, protocol=3))
    assert b"system" in p.read_bytes() and b"_codecs" not in p.read_bytes()
    with pytest.raises(DataError, match="data_batch_1"):
        cifar.load_batch(p)
    assert not marker.exists()


def test_truncated_and_wrong_files_name_the_file(cifar_dir):
    f = cifar_dir / C10.folder / "data_batch_3"
    f.write_bytes(f.read_bytes()[:5000])
    with pytest.raises(DataError, match="data_batch_3"):
        cifar.load(C10, cifar_dir, download=False)
    f.write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, protocol=3))
    with pytest.raises(DataError, match="data_batch_3"):
        cifar.load_batch(f)


def _tar(path: Path, files: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_archive_is_extracted_and_checksum_checked(tmp_path):
    src = write_cifar(tmp_path / "src")
    dest = tmp_path / "data"
    dest.mkdir()
    digest = _tar(dest / C10.archive, {f"{C10.folder}/{n}": (src / n).read_bytes() for n in C10.files})
    with pytest.raises(DataError, match="md5"):  # not the real archive's checksum
        cifar.ensure(C10, dest, download=False)
    assert not (dest / C10.folder).exists()
    folder = cifar.ensure(C10, dest, download=False, md5=digest)
    assert sorted(p.name for p in folder.iterdir()) == sorted(C10.files)
    assert cifar.load(C10, dest, download=False)["train_x"].shape[0] == 5 * N_PER_BATCH


@pytest.mark.parametrize("bad", ["../escape", "/abs/escape"])
def test_unsafe_archive_members_are_refused(tmp_path, bad):
    digest = _tar(tmp_path / C10.archive, {bad: b"x", f"{C10.folder}/test_batch": b"y"})
    with pytest.raises(DataError, match="unsafe"):
        cifar.ensure(C10, tmp_path, download=False, md5=digest)
    assert not (tmp_path.parent / "escape").exists()


def test_missing_data_without_network_names_the_files(tmp_path):
    with pytest.raises(DataError) as e:
        cifar.ensure(C10, tmp_path / "none", download=False)
    for part in ("cifar-10-batches-py/data_batch_1", "data_batch_5", "test_batch", C10.url):
        assert part in str(e.value)
    partial = tmp_path / "partial" / C10.folder
    partial.mkdir(parents=True)
    for f in C10.train_files[:3]:
        (partial / f).write_bytes(b"x")
    with pytest.raises(DataError) as e:
        cifar.ensure(C10, tmp_path / "partial", download=False)
    msg = str(e.value)
    assert "data_batch_4, cifar-10-batches-py/data_batch_5, cifar-10-batches-py/test_batch." in msg
    assert "data_batch_1" not in msg and "data_batch_3" not in msg
    with pytest.raises(DataError, match="download failed"):  # refused connection, fast
        cifar.ensure(C10, tmp_path / "none", url="http://127.0.0.1:9/cifar-10-python.tar.gz", timeout=2)
    assert not (tmp_path / "none").exists()  # no partial file, no empty folder left behind


# ---------------------------------------------------------------------- augmentation


def test_augment_crop_flip_cutout():
    x = torch.randn(3, 3, 32, 32)
    centre = torch.full((3,), PAD)
    no = torch.zeros(3, dtype=torch.bool)
    zero = torch.zeros(3, dtype=torch.long)
    assert torch.equal(augment(x, centre, centre, no, zero, zero, 0), x)
    assert torch.equal(augment(x, centre, centre, ~no, zero, zero, 0), x.flip(3))
    shifted = augment(x, centre + 2, centre - 1, no, zero, zero, 0)  # right by 2, up by 1
    assert torch.equal(shifted[:, :, 1:, :30], x[:, :, :31, 2:]) and (shifted[:, :, 0] == 0).all()
    # cutout: the square's top-left corner is (cy, cx), clipped at the bottom/right border
    # (official models.py 91-100: the corner is uniform over the image)
    cy, cx = torch.tensor([0, 20, 31]), torch.tensor([5, 24, 0])
    cut = augment(x, centre, centre, no, cy, cx, 16)
    for b, (r, c, rows, cols) in enumerate([(0, 5, 16, 16), (20, 24, 12, 8), (31, 0, 1, 16)]):
        hole = torch.zeros(32, 32, dtype=torch.bool)
        hole[r:r + 16, c:c + 16] = True
        assert hole.sum() == rows * cols
        assert (cut[b][:, hole] == 0).all() and torch.equal(cut[b][:, ~hole], x[b][:, ~hole])


def _cfg(**kw):
    base = dict(dataset="cifar10", batch_size=8, eval_batch_size=10, train_size=40, valid_size=20)
    base.update(kw)
    return DataSection(**base)


def test_train_batches_deterministic_aligned_and_epoch_dependent(cifar_dir):
    task = ImageTask(_cfg(cutout=8), cifar_dir, "cpu", seed=3)
    assert task.num_train_batches() == 5
    b0 = list(task.train_batches(0))
    again = list(ImageTask(_cfg(cutout=8), cifar_dir, "cpu", seed=3).train_batches(0))
    b1 = list(task.train_batches(1))
    assert all(torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"]) for a, b in zip(b0, again))
    assert not all(torch.equal(a["y"], b["y"]) for a, b in zip(b0, b1))
    for b in b0:
        assert b["x"].shape == (8, 3, 32, 32) and b["y"].shape == (8,)
    # labels stay aligned: un-normalise the pixel that is never padded and read the label back
    no_cut = ImageTask(_cfg(), cifar_dir, "cpu", seed=3)
    for b in no_cut.train_batches(2):
        px = b["x"][:, 0, 14:18, 14:18] * no_cut.std[0] + no_cut.mean[0]
        assert torch.allclose(px * 255, (20 * b["y"]).float()[:, None, None].expand_as(px), atol=1e-3)
    # every training image appears once per epoch
    ys = torch.cat([b["y"] for b in no_cut.train_batches(0)])
    assert sorted(ys.tolist()) == sorted(no_cut.train_y.tolist())


# ---------------------------------------------------------------------- the task


class TinyNet(nn.Module):
    """The image model contract: model(x, arch) -> (logits, aux or None)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)
        self.aux = nn.Linear(8, 10)
        self.drop_path_prob = 0.0

    def forward(self, x, arch=None):
        h = torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))
        return self.fc(h), (self.aux(h) if self.training else None)


def test_task_reward_score_evaluate(cifar_dir):
    torch.manual_seed(0)
    task = ImageTask(_cfg(), cifar_dir, "cpu", seed=0, eval_bn="batch", aux_weight=0.4)
    assert task.valid_x.shape[0] == 20 and task.train_x.shape[0] == 40 and task.test_x.shape[0] == 12
    net = TinyNet()
    batch = next(task.train_batches(0))
    loss, stats = task.train_loss(net, batch, {"a": 1})
    loss.backward()
    assert set(stats) == {"loss", "accuracy"} and all(isinstance(v, torch.Tensor) for v in stats.values())
    assert not stats["loss"].requires_grad and loss.item() > stats["loss"].item()  # aux term added
    assert net.aux.weight.grad is not None
    net.bn.running_mean.fill_(0.5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    assert task.num_valid_batches() == 2
    r1, se1 = task.score(net, {"a": 1}, 1, 0)  # a controller reward: one batch
    assert 0.0 <= r1 <= 1.0 and se1 == pytest.approx((r1 * (1 - r1) / 10) ** 0.5)
    assert task.score(net, {"a": 1}, 1, 2) == (r1, se1)  # batches wrap around
    assert task.score(net, {"a": 1}, 2, 1) == task.score(net, {"a": 1}, 0)  # batches 1, 0 = all
    assert net.training  # mode restored
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k  # batch-stat scoring leaves running stats alone
    # "batch" = training-mode BN without dropout/aux: same predictions as a train-mode copy
    import copy

    twin = copy.deepcopy(net).train()
    with torch.no_grad():
        manual = (twin(task.valid_x[:10])[0].argmax(1) == task.valid_y[:10]).float().mean().item()
    net.bn.eval()  # per-module flags are restored as they were
    assert task.score(net, {"a": 1}, 1, 0)[0] == pytest.approx(manual)
    assert net.training and not net.bn.training
    net.bn.train()
    (s1, _), (s_all, _) = task.score(net, {"a": 1}, 1), task.score(net, {"a": 1}, 0)
    assert 0.0 <= s1 <= 1.0 and 0.0 <= s_all <= 1.0
    ev = task.evaluate(net, {"a": 1}, "valid")
    assert set(ev) == {"loss", "accuracy"} and ev["accuracy"] == pytest.approx(s_all)
    # a child (arch None) is scored with its running statistics
    ev_child = task.evaluate(net, None, "valid")
    net.eval()
    with torch.no_grad():
        logits, _ = net(task.valid_x)
    acc = (logits.argmax(1) == task.valid_y).float().mean().item()
    assert ev_child["accuracy"] == pytest.approx(acc)
    st = task.state_dict()
    task2 = ImageTask(_cfg(), cifar_dir, "cpu", seed=0)
    task2.load_state_dict(st)
    assert task2.state_dict() == st


def test_reward_is_a_shuffled_minibatch_of_the_training_batch_size(cifar_dir):
    """Official build_valid_rl (general_child.py 667-676, micro_child.py 781-790): a reward
    is scored on batch_size images of a shuffled stream over the validation images, not
    on the fixed eval batches; each pass over them is a fresh permutation."""
    task = ImageTask(_cfg(batch_size=8, eval_batch_size=10), cifar_dir, "cpu", seed=0)
    task.valid_x = torch.randn_like(task.valid_x)  # every image told apart
    seen = []

    class Recorder(TinyNet):
        def forward(self, x, arch=None):
            seen.append(x.clone())
            return super().forward(x, arch)

    net = Recorder()

    def images(batch):  # rows of valid_x that make up a scored batch
        return [int(torch.nonzero((task.valid_x == img).flatten(1).all(1))[0]) for img in batch]

    rewards = [task.reward(net, {"a": 1}, 1, i) for i in range(4)]
    batches = [images(b) for b in seen]
    assert [len(b) for b in batches] == [8] * 4  # data.batch_size, not eval_batch_size (10)
    assert len(set(batches[0] + batches[1])) == 16  # one pass: disjoint batches
    assert batches[0] != list(range(8)) and batches[:2] != batches[2:]  # shuffled, reshuffled per pass
    for r, b in zip(rewards, seen):  # the accuracy of the batch it read
        with torch.no_grad():
            logits = copy.deepcopy(net).train()(b)[0]
        assert float(r) == pytest.approx(float((logits.argmax(1) == task.valid_y[images(b)]).float().mean()))
    seen.clear()
    two = task.reward(net, {"a": 1}, 2, 1)  # search.reward_batches = 2: batches 1 and 2
    assert [images(b) for b in seen] == batches[1:3]
    assert float(two) == pytest.approx((float(rewards[1]) + float(rewards[2])) / 2)
    again = ImageTask(_cfg(batch_size=8, eval_batch_size=10), cifar_dir, "cpu", seed=0)
    again.valid_x = task.valid_x
    seen.clear()
    again.reward(net, {"a": 1}, 1, 3)
    assert images(seen[0]) == batches[3]  # deterministic in (seed, batch): exact resume


def test_official_reward_modes(cifar_dir):
    """eval_bn "running": the supernet's BN moving averages, dropout off (official macro,
    general_child.py 691); "train": the minibatch's statistics with dropout on (official
    micro, micro_child.py 804). Either way the network's state is left as it was."""
    torch.manual_seed(0)

    class DropNet(TinyNet):
        def __init__(self):
            super().__init__()
            self.drop = nn.Dropout(0.5)

        def forward(self, x, arch=None):
            seen.append((self.bn.training, self.bn.running_mean is None, self.drop.training))
            h = torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))
            return self.fc(self.drop(h)), None

    seen = []
    net = DropNet().train()
    net.bn.running_mean.fill_(0.3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    modes = {}
    for mode in ("batch", "running", "train"):
        task = ImageTask(_cfg(), cifar_dir, "cpu", seed=0, eval_bn=mode)
        seen.clear()
        modes[mode] = float(task.reward(net, {"a": 1}, 1, 0))
        # (BN in training mode, BN without running stats: batch statistics, dropout on)
        assert seen == [{"batch": (False, True, False), "running": (False, False, False),
                         "train": (False, True, True)}[mode]]
        assert net.training and all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    idx = task._reward_order(0)[:8]
    with torch.no_grad():
        by_running = (copy.deepcopy(net).eval()(task.valid_x[idx])[0].argmax(1) == task.valid_y[idx]).float().mean()
    assert modes["running"] == pytest.approx(float(by_running))
    with pytest.raises(ValueError, match="eval_bn"):
        ImageTask(_cfg(), cifar_dir, "cpu", seed=0, eval_bn="frozen")


def test_recalibrate_uses_fresh_stats_and_restores(cifar_dir):
    torch.manual_seed(0)
    net = TinyNet()
    net.bn.running_mean.fill_(100.0)  # garbage supernet statistics
    before = {k: v.clone() for k, v in net.state_dict().items()}
    plain = ImageTask(_cfg(), cifar_dir, "cpu", seed=0)
    recal = ImageTask(_cfg(), cifar_dir, "cpu", seed=0, eval_bn="recalibrate")
    out = recal.evaluate(net, {"a": 1}, "valid")
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert out["loss"] != pytest.approx(plain.evaluate(net, None, "valid")["loss"])


def test_final_split_uses_all_training_images_and_test(cifar_dir):
    task = ImageTask(_cfg(), cifar_dir, "cpu", seed=0, split="final")
    assert task.train_x.shape[0] == 60 and task.test_x.shape[0] == 12
    assert set(task.evaluate(TinyNet(), None, "test")) == {"loss", "accuracy"}
    with pytest.raises(DataError):
        ImageTask(_cfg(train_size=50, valid_size=20), cifar_dir, "cpu", seed=0)


def test_failed_download_leaves_no_empty_folders(tmp_path, monkeypatch):
    """A mistyped --data-dir on a machine without internet: the error names the folder and
    the folders created for the download are gone again; a folder that existed stays."""
    def offline(url, dest, timeout=None):
        raise OSError("network is unreachable")

    monkeypatch.setattr(cifar, "fetch", offline)
    with pytest.raises(DataError, match="download failed"):
        cifar.ensure(C10, tmp_path / "typo" / "cifar")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    with pytest.raises(DataError):
        cifar.ensure(C10, tmp_path / "kept" / "new")
    assert [p.name for p in tmp_path.iterdir()] == ["kept"] and list((tmp_path / "kept").iterdir()) == []
