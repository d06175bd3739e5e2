"""End-to-end search on a tiny generated corpus: artifacts, resume, derive, CLI errors."""
import json

import pytest
import torch
import yaml

from enas.nas.archfile import load_arch
from enas.cli import main
from enas.nas.verdict import RANDOM_DRAWS


def run(*argv):
    return main([str(a) for a in argv])


def test_smoke_search_writes_every_artifact(tmp_path, ptb_dir, tiny_ptb_config):
    run_dir = tmp_path / "run"
    assert run("search", tiny_ptb_config(), "--data-dir", ptb_dir, "--run-dir", run_dir, "--device", "cpu") == 0
    for name in ("config.yaml", "metrics.jsonl", "checkpoint.pt", "best_arch.yaml"):
        assert (run_dir / name).is_file(), name
    assert sorted(p.name for p in (run_dir / "archs").iterdir()) == ["epoch_001.png", "epoch_001.yaml",
                                                                      "epoch_002.png", "epoch_002.yaml",
                                                                      "final_1.yaml", "final_2.yaml", "final_3.yaml"]
    assert list(run_dir.glob("events.out.tfevents.*"))
    space, arch, doc = load_arch(run_dir / "best_arch.yaml")
    assert space.name == "enas_rnn" and doc["provenance"]["epoch"] == 2
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    keys = set().union(*rows)
    for k in ("shared/loss", "controller/reward", "controller/baseline", "controller/advantage",
              "controller/entropy", "controller/controller_loss", "derive/score", "policy/entropy", "shared/lr",
              "overview/reward", "overview/entropy_of_uniform", "overview/derived_valid_ppl", "overview/train_loss"):
        assert k in keys, k
    assert any(k.startswith("policy/node1/input/") for k in keys)
    # TensorBoard holds the same scalars
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run_dir))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    # the first group (TensorBoard sorts by name) is what a user looks at first, per epoch
    first = sorted(tags)[0].split("/")[0]
    assert first == "1_search_overview_by_epoch"
    assert {f"{first}/{k}" for k in ("reward", "entropy_of_uniform", "derived_valid_ppl", "train_loss")} <= tags
    assert {"3_controller_by_update/reward", "2_shared_by_step/loss", "5_policy_by_epoch/entropy"} <= tags
    # no per-choice cards (heat maps instead) and no counter that stayed 0
    assert not any(t.count("/") > 1 for t in tags) and not any("skipped_steps" in t for t in tags)
    assert {"5_policy_by_epoch/activation", "5_policy_by_epoch/index"} <= set(ea.Tags()["images"])
    assert [e.step for e in ea.Scalars(f"{first}/derived_valid_ppl")] == [1, 2]
    assert "4_derive_by_epoch/arch/text_summary" in ea.Tags()["tensors"]


@pytest.mark.slow
@pytest.mark.parametrize("check", ["host", "device"])  # train.nonfinite_check: sync per step, or none
def test_resumed_search_equals_uninterrupted(tmp_path, ptb_dir, tiny_ptb_config, check):
    full, part = tmp_path / "full", tmp_path / "part"
    cfg2 = tiny_ptb_config({"train": {"nonfinite_check": check}})
    cfg1 = tiny_ptb_config({"search": {"epochs": 1}, "train": {"nonfinite_check": check}}, name="one.yaml")
    assert run("search", cfg2, "--data-dir", ptb_dir, "--run-dir", full, "--device", "cpu") == 0
    assert run("search", cfg1, "--data-dir", ptb_dir, "--run-dir", part, "--device", "cpu") == 0
    assert run("search", "--resume", part, "--set", "search.epochs=2", "--allow-config-change",
               "--data-dir", ptb_dir, "--device", "cpu") == 0
    a = torch.load(full / "checkpoint.pt", weights_only=True)
    b = torch.load(part / "checkpoint.pt", weights_only=True)
    for key in ("supernet", "policy"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    assert a["reinforce"]["baseline"] == b["reinforce"]["baseline"]
    assert yaml.safe_load((full / "best_arch.yaml").read_text())["arch"] == \
        yaml.safe_load((part / "best_arch.yaml").read_text())["arch"]


def test_resume_with_changed_config_is_refused(tmp_path, ptb_dir, tiny_ptb_config, capsys):
    run_dir = tmp_path / "r"
    cfg = tiny_ptb_config({"search": {"epochs": 1}})
    assert run("search", cfg, "--data-dir", ptb_dir, "--run-dir", run_dir, "--device", "cpu") == 0
    assert run("search", "--resume", run_dir, "--set", "train.lr=1.0", "--data-dir", ptb_dir) == 2
    err = capsys.readouterr().err
    assert "train.lr: 5.0 -> 1.0" in err and "--allow-config-change" in err


def test_existing_run_dir_is_never_overwritten(tmp_path, ptb_dir, tiny_ptb_config, capsys):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "keep.txt").write_text("precious")
    assert run("search", tiny_ptb_config(), "--data-dir", ptb_dir, "--run-dir", run_dir) == 2
    assert "already exists" in capsys.readouterr().err
    assert (run_dir / "keep.txt").read_text() == "precious" and len(list(run_dir.iterdir())) == 1


def test_unknown_config_key_fails_naming_it(tmp_path, ptb_dir, tiny_ptb_config, capsys):
    code = run("search", tiny_ptb_config(), "--set", "controller.no_such_key=1", "--data-dir", ptb_dir,
               "--run-dir", tmp_path / "x")
    err = capsys.readouterr().err
    assert code == 2 and "controller.no_such_key" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_derive_from_checkpoint(tmp_path, ptb_dir, tiny_ptb_config, capsys):
    run_dir = tmp_path / "r"
    assert run("search", tiny_ptb_config({"search": {"epochs": 1}}), "--data-dir", ptb_dir,
               "--run-dir", run_dir, "--device", "cpu") == 0
    assert run("derive", run_dir, "--samples", "4", "--data-dir", ptb_dir, "--device", "cpu") == 0
    out = [p for p in (run_dir / "archs").iterdir() if p.name.startswith("derive-")]
    assert len(out) == 1
    space, arch, doc = load_arch(out[0])
    assert doc["provenance"]["samples"] == 4


def test_random_policy_never_updates(tmp_path, ptb_dir, tiny_ptb_config):
    run_dir = tmp_path / "r"
    assert run("search", tiny_ptb_config({"controller": {"kind": "random"}}), "--data-dir", ptb_dir,
               "--run-dir", run_dir, "--device", "cpu") == 0
    st = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert st["policy"] == {} and st["reinforce"]["updates"] == 0
    load_arch(run_dir / "best_arch.yaml")


def test_derive_shares_batches_rotates_them_and_ends_with_a_final_derive(tmp_path, ptb_dir, tiny_ptb_config,
                                                                          monkeypatch):
    """All candidates of one derive are scored on the same batches, another block each
    epoch; best_arch.yaml comes from re-scoring the top candidates on the whole split,
    with the standard error in its provenance and in the metrics."""
    from enas.tasks.lm import LanguageModelTask

    calls = []
    real = LanguageModelTask.score

    def recording(self, model, arch, num_batches=0, first=0, sync=True):
        out = real(self, model, arch, num_batches, first, sync)
        if sync:  # rewards (sync=False, one batch) are not derive calls
            calls.append((num_batches, first, repr(sorted(arch.items())), out))
        return out

    monkeypatch.setattr(LanguageModelTask, "score", recording)
    run_dir = tmp_path / "r"
    cfg = tiny_ptb_config({"search": {"epochs": 2, "derive_samples": 4, "derive_batches": 2,
                                      "final_candidates": 2}})
    assert run("search", cfg, "--data-dir", ptb_dir, "--run-dir", run_dir, "--device", "cpu") == 0
    derive = [c for c in calls if c[0] == 2]
    assert len(derive) == 8
    firsts = [{c[1] for c in derive[:4]}, {c[1] for c in derive[4:]}]
    assert firsts == [{0}, {2}]  # shared within a derive, a new block each epoch
    on_all = [c for c in calls if c[0] == 0]  # the final derive's, then the verdict's random architectures
    assert len(on_all) == 2 + RANDOM_DRAWS
    final = on_all[:2]
    last = sorted(derive[4:], key=lambda c: -c[3][0])
    top = list(dict.fromkeys(c[2] for c in last))[:2]
    assert [c[2] for c in final] == top or [c[2] for c in final] == top[::-1]
    best = max(final, key=lambda c: c[3][0])
    _, arch, doc = load_arch(run_dir / "best_arch.yaml")
    prov = doc["provenance"]
    assert repr(sorted(arch.items())) == best[2]
    assert prov["score"] == best[3][0] and prov["score_se"] == best[3][1] > 0
    assert prov["final_derive"]["candidates"] == len(final)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("derive/final_score_se") == best[3][1] for r in rows)


@pytest.mark.slow
def test_uniform_shared_trains_the_supernet_as_random_search_does(tmp_path, ptb_dir, tiny_ptb_config):
    """search.uniform_shared = 1: every shared step trains the architecture that random
    search with weight sharing draws, so the supernets are the same, whatever the
    controller learns; 0.5 mixes the two draws (and is reproducible)."""
    runs = {}
    for name, over in (("random", {"controller": {"kind": "random"}}),
                       ("uniform", {"search": {"epochs": 2, "uniform_shared": 1.0, "reward_batches": 2}}),
                       ("mix", {"search": {"epochs": 2, "uniform_shared": 0.5}}),
                       ("mix2", {"search": {"epochs": 2, "uniform_shared": 0.5}}),
                       ("paper", {})):
        run_dir = tmp_path / name
        assert run("search", tiny_ptb_config(over, name=f"{name}.yaml"), "--data-dir", ptb_dir, "--run-dir",
                   run_dir, "--device", "cpu") == 0
        runs[name] = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    same = lambda a, b: all(torch.equal(runs[a]["supernet"][k], runs[b]["supernet"][k])  # noqa: E731
                            for k in runs[a]["supernet"])
    assert same("random", "uniform") and same("mix", "mix2")
    assert not same("mix", "random") and not same("mix", "paper") and not same("paper", "random")
    assert runs["uniform"]["reinforce"]["updates"] > 0  # the controller still learned
    # two validation batches per reward: the cursor moved twice as far as one per reward
    assert runs["uniform"]["valid_cursor"] != runs["paper"]["valid_cursor"]
