"""Search options beyond the paper: plain BN in the supernet, training-free terms in the
score, the final stage of brief training; each on every space."""
import csv
import math

import numpy as np
import pytest
import torch
import yaml

from conftest import make_corpus, random_arch, TINY_NB201, TINY_PTB, write_cifar, write_config
from enas.nas.archfile import load_arch
from enas.train.bn import make_plain
from enas.cli import main
from enas.config import ScoreSection
from enas.nas.scoring import Scoring
from enas.nas.space import build_space

TINY_MICRO = {**TINY_NB201, "space": {"name": "enas_micro", "args": {"num_nodes": 3}},
              "model": {"channels": 4, "num_cells": 1, "aux_head": False}}
TINY_MACRO = {**TINY_NB201, "space": {"name": "enas_macro", "args": {"num_layers": 3}},
              "model": {"channels": 4}}
OPTIONS = {"derive_samples": 3, "supernet_bn": "plain", "final_train": 2, "final_train_epochs": 1,
           "score": {"supernet": 1.0, "naswot": 0.5, "reference": 4}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):

    root = tmp_path_factory.mktemp("data")
    write_cifar(root / "cifar")
    make_corpus(root / "ptb")
    return root


def test_plain_bn_has_no_affine_parameters_or_running_statistics():
    space = build_space("enas_micro")
    net = space.supernet(space.ModelArgs(channels=4, num_cells=1, dropout=0.0))
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert make_plain(net) == n_bn > 0
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(not m.affine and not m.track_running_stats for m in bns)
    assert not any(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in net.state_dict())
    x = torch.randn(4, 3, 32, 32)
    arch = random_arch(space, __import__("random").Random(0))
    with torch.no_grad():
        train_out = net(x, arch)[0]
        net.eval()
        assert torch.allclose(net(x, arch)[0], train_out, atol=1e-5)  # eval normalises with the batch too


class _ScoreTask:
    device = torch.device("cpu")

    def score(self, supernet, arch, num_batches=0, first=0, sync=True):
        return (float(len(arch["node1/from0"])), 0.5)  # a score the test can predict

    def reward(self, supernet, arch, num_batches, first):
        return torch.tensor(float(len(arch["node1/from0"])) + first)  # the reward stream's batch shows

    def model_kwargs(self):
        return {"num_classes": 10, "image_size": 8}


class _WithParams:
    """Weights Scoring reads (ScoreSection's interface) with the parameter count as the
    training-free term: the same code as naswot's, with values the test can compute."""

    reference, paper = 8, False

    def terms(self):
        return {"supernet": 2.0, "params": 1.0}


def test_scoring_standardises_each_term_and_the_paper_is_unscaled():
    space = build_space("nb201")
    ma = space.ModelArgs(channels=2, cells_per_stage=1)
    arch = random_arch(space, __import__("random").Random(0))
    paper = Scoring(ScoreSection(), space, ma, _ScoreTask(), 0)
    paper.refresh(None, 0, 1)
    assert paper.score(None, arch) == (float(len(arch["node1/from0"])), 0.5)
    both = Scoring(_WithParams(), space, ma, _ScoreTask(), 0)
    both.refresh(None, 0, 1)
    ref = both.reference_archs()
    vals = np.array([float(len(a["node1/from0"])) for a in ref])
    params = np.array([both.free_value("params", a) for a in ref])

    def z(v, r):  # robust: median and IQR / 1.349, clipped at 5
        q1, q3 = np.percentile(r, [25, 75])
        return float(np.clip((v - np.median(r)) / ((q3 - q1) / 1.349), -5, 5))

    value, se = both.score(None, arch)
    expected = 2 * z(float(len(arch["node1/from0"])), vals) + z(both.free_value("params", arch), params)
    assert value == pytest.approx(expected, rel=1e-9)
    q1, q3 = np.percentile(vals, [25, 75])
    assert se == pytest.approx(2 * 0.5 / ((q3 - q1) / 1.349), rel=1e-9)
    again = Scoring(_WithParams(), space, ma, _ScoreTask(), 0)
    again.load_state_dict(both.state_dict())
    assert again.score(None, arch) == pytest.approx((value, se))
    # a controller reward reads the supernet term from task.reward (the official shuffled
    # minibatch), standardised with the same centre and scale
    assert float(paper.reward(None, arch, 1, 3)) == float(len(arch["node1/from0"])) + 3
    expected = 2 * z(float(len(arch["node1/from0"])) + 3, vals) + z(both.free_value("params", arch), params)
    assert float(both.reward(None, arch, 1, 3)) == pytest.approx(expected, rel=1e-6)


def test_search_rewards_read_the_task_reward_stream():
    """Controller rewards go through Scoring.reward (task.reward, the official shuffled
    minibatch), each sample on the next reward_batches of the stream; derive keeps score."""
    from types import SimpleNamespace

    from enas.nas.reinforce import ControllerUpdate

    space = build_space("nb201")
    arch = random_arch(space, __import__("random").Random(0))
    scoring = Scoring(ScoreSection(), space, space.ModelArgs(channels=2, cells_per_stage=1), _ScoreTask(), 0)
    update = ControllerUpdate(None, None, scoring, None, SimpleNamespace(), reward_batches=2)
    update.valid_cursor = 5
    n = float(len(arch["node1/from0"]))
    assert [float(update.reward(None, arch)) for _ in range(2)] == [n + 5, n + 7]
    assert update.valid_cursor == 9


def test_score_needs_a_weight():
    with pytest.raises(ValueError, match="search.score needs a term"):
        ScoreSection(supernet=0.0)


@pytest.mark.parametrize("mode", ["recalibrate", "running"])
def test_plain_bn_refuses_reward_modes_that_read_running_statistics(mode):
    from enas.config import SearchSection

    from enas.config import ImageSearchSection

    with pytest.raises(ValueError, match=f"search.image.eval_bn: {mode} reads BN running statistics"):
        SearchSection(supernet_bn="plain", image=ImageSearchSection(eval_bn=mode))


@pytest.mark.slow
@pytest.mark.parametrize("cfg, data_key", [(TINY_NB201, "cifar"), (TINY_MICRO, "cifar"), (TINY_MACRO, "cifar"),
                                          (TINY_PTB, "ptb")], ids=["nb201", "enas_micro", "enas_macro", "enas_rnn"])
def test_every_option_on_every_space(tmp_path, data, cfg, data_key):
    """One search per space with all options on: it finishes, the final stage's winner is
    best_arch.yaml with the best trained score, and `enas rank` scores by the run's own
    scoring and by each training-free score."""
    # naswot reads the codes of nn.ReLU modules, which the RNN cell has none of
    opts = OPTIONS if data_key == "cifar" else {**OPTIONS, "score": {"supernet": 1.0}}
    path = write_config(tmp_path, cfg, "c.yaml", search=opts)
    run = tmp_path / "run"
    assert main(["search", str(path), "--data-dir", str(data / data_key), "--run-dir", str(run),
                 "--device", "cpu"]) == 0
    _, arch, doc = load_arch(run / "best_arch.yaml")
    stage = doc["provenance"]["final_stage"]
    assert len(stage) == 2 and doc["provenance"]["score"] == max(c["score"] for c in stage)
    assert "training from scratch" in doc["provenance"]["score_is"]
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert not any("running_mean" in k for k in state["supernet"])  # plain BN (none in the RNN space)
    for score in ("run", "params", "synflow"):
        out = tmp_path / f"ranks-{score}.csv"
        assert main(["rank", str(run), "--samples", "3", "--score", score, "--out", str(out), "--device", "cpu"]) == 0
        rows = list(csv.DictReader(out.open()))
        assert len(rows) == 3 and all(math.isfinite(float(r["score"])) for r in rows), score


@pytest.mark.slow
def test_an_interrupted_final_stage_resumes_with_the_next_candidate(tmp_path, data):
    """A stop after the first trained candidate: the resumed run trains only the second,
    and ends with the same best_arch.yaml as an uninterrupted run."""
    opts = {**OPTIONS, "supernet_bn": "standard", "score": {"supernet": 1.0}}
    path = write_config(tmp_path, TINY_NB201, "c.yaml", search=opts)
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["search", str(path), "--data-dir", str(data / "cifar"), "--run-dir", str(full), "--device", "cpu"]) == 0

    from enas.nas import final_stage

    calls = []
    original = final_stage.BriefTraining.run

    def stop_on_second(self):
        calls.append(1)
        if len(calls) == 2:
            from enas.train.interrupt import StopRequested

            raise StopRequested(2, "resume")
        return original(self)

    final_stage.BriefTraining.run = stop_on_second
    try:
        code = main(["search", str(path), "--data-dir", str(data / "cifar"), "--run-dir", str(part), "--device", "cpu"])
    finally:
        final_stage.BriefTraining.run = original
    assert code == 130
    assert len(torch.load(part / "checkpoint.pt", weights_only=True)["trained"]) == 1
    calls.clear()
    final_stage.BriefTraining.run = lambda self: (calls.append(1), original(self))[1]
    try:
        assert main(["search", "--resume", str(part), "--device", "cpu"]) == 0
    finally:
        final_stage.BriefTraining.run = original
    assert len(calls) == 1
    assert yaml.safe_load((part / "best_arch.yaml").read_text())["arch"] == \
        yaml.safe_load((full / "best_arch.yaml").read_text())["arch"]
