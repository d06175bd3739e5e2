"""Settings of one task live in its section (search.lm, search.image) and the other task's
are refused; options that were removed are named as removed; a run folder written before
the change still opens (its config.yaml and its checkpoint's config in the old layout)."""
import pytest
import torch
import yaml

from conftest import TINY_NB201, TINY_PTB, finished_search, one_error, write_config
from enas.cli import main
from enas.config import ConfigError, SearchConfig, dump, from_dict, load_search, to_dict, upgrade_run_config
from enas.runs import _changes


def old_layout(cfg: dict, **removed) -> dict:
    """``cfg`` (today's layout) as the enas before search.lm / search.image wrote a run's
    config.yaml: every task setting in search, both tasks' alike, and the removed options."""
    old = yaml.safe_load(yaml.safe_dump(cfg))
    s = old["search"]
    s.update({"reward_c": 80.0, "reward_warmup": 10, "aux_weight": 0.0, "eval_bn": "batch", "channels_last": True})
    s.update(s.pop("lm", None) or {}, **(s.pop("image", None) or {}))
    s.update({"fair_sampling": False, "recalibrate_batches": 4})
    s["score"] = {"supernet": 1.0, "params": 0.0, "synflow": 0.0, "naswot": 0.0, "reference": 50, **s.get("score", {})}
    old["controller"].update({"entropy_target": 0.0, "entropy_gain": 0.05})
    for dotted, value in removed.items():
        section, key = dotted.rsplit(".", 1)
        node = old
        for part in section.split("."):
            node = node[part]
        node[key] = value
    return old


def test_a_key_of_the_other_task_is_one_line_naming_where_it_belongs(tmp_path, capsys):
    cifar = write_config(tmp_path, TINY_NB201, "cifar.yaml")
    with pytest.raises(ConfigError, match=r"'search.reward_c' applies only to a language-model search .*"
                                          r"search.lm.reward_c.*data.dataset is cifar10: remove it"):
        load_search(cifar, ["search.reward_c=5"])
    assert main(["search", str(cifar), "--set", "search.reward_c=5", "--run-dir", str(tmp_path / "r")]) == 2
    one_error(capsys, "search.reward_c", "search.lm.reward_c", "cifar10")
    assert not (tmp_path / "r").exists()
    for given in (["search.lm.reward_c=5"], ["search.lm={}"]):
        with pytest.raises(ConfigError, match=r"search.lm holds the settings of a language-model search.*"
                                              r"data.dataset is cifar10: remove search.lm"):
            load_search(cifar, given)
    ptb = write_config(tmp_path, TINY_PTB, "ptb.yaml", search={"image": {"eval_bn": "running"}})
    with pytest.raises(ConfigError, match="search.image holds the settings of an image search"):
        load_search(ptb)


def test_a_moved_key_in_a_config_names_its_new_place(tmp_path):
    ptb = write_config(tmp_path, TINY_PTB, "ptb.yaml", search={"reward_c": 60.0})
    with pytest.raises(ConfigError, match=r"ptb.yaml: 'search.reward_c' is now 'search.lm.reward_c'"):
        load_search(ptb)
    cfg = load_search(write_config(tmp_path, TINY_PTB, "ok.yaml"), ["search.lm.reward_c=60"])
    assert cfg.search.lm.reward_c == 60.0 and cfg.search.image is None and cfg.search.task is cfg.search.lm
    with pytest.raises(ConfigError, match="'search.eval_bn' is now 'search.image.eval_bn'"):
        load_search(write_config(tmp_path, TINY_NB201, "c.yaml"), ["search.eval_bn=running"])


@pytest.mark.parametrize("key, value", [("search.fair_sampling", True), ("controller.entropy_target", 9.0),
                                        ("search.score.params", 0.0), ("search.recalibrate_batches", 4)])
def test_a_removed_option_in_a_config_says_it_was_removed(tmp_path, key, value):
    path = write_config(tmp_path, TINY_NB201, "c.yaml")
    with pytest.raises(ConfigError, match=rf"--set: '{key}' was removed from enas \(measured and not kept: docs/"):
        load_search(path, [f"{key}={value}"])


def test_a_dumped_config_holds_only_its_tasks_section(tmp_path):
    for base, task, other in ((TINY_PTB, "lm", "image"), (TINY_NB201, "image", "lm")):
        cfg = load_search(write_config(tmp_path, base, "c.yaml"))
        dump(cfg, tmp_path / "config.yaml")
        written = yaml.safe_load((tmp_path / "config.yaml").read_text())
        assert task in written["search"] and other not in written["search"]
        assert load_search(tmp_path / "config.yaml", in_run=True) == cfg


@pytest.mark.parametrize("base", [TINY_PTB, {**TINY_NB201, "search": {**TINY_NB201["search"], "image": {
    "aux_weight": 0.4, "eval_bn": "train"}}}], ids=["ptb", "cifar"])
def test_an_old_runs_config_opens_in_the_new_layout(tmp_path, base):
    today = load_search(write_config(tmp_path, base, "today.yaml"), ["search.lm.reward_c=70"] if base is TINY_PTB
                        else [])
    old = old_layout(to_dict(today))
    assert "lm" not in old["search"] and "image" not in old["search"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert load_search(tmp_path / "config.yaml", in_run=True) == today
    # the checkpoint's config, as old: no change to refuse on resume
    assert _changes({"config": old}, today, SearchConfig, allow=False) == []
    assert to_dict(from_dict(SearchConfig, upgrade_run_config(old, "x"))) == to_dict(today)


@pytest.mark.parametrize("key, value", [("search.fair_sampling", True), ("controller.entropy_target", 7.0),
                                        ("controller.entropy_gain", 0.1), ("search.score.synflow", 1.0),
                                        ("search.recalibrate_batches", 16)])
def test_an_old_run_that_used_a_removed_option_is_refused_in_one_line(tmp_path, key, value):
    today = load_search(write_config(tmp_path, TINY_NB201, "today.yaml"))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old_layout(to_dict(today), **{key: value})))
    with pytest.raises(ConfigError, match=rf"config.yaml: this run used '{key}' was removed from enas .*it was "
                                          rf"{value}"):
        load_search(tmp_path / "config.yaml", in_run=True)


@pytest.mark.slow
def test_an_old_run_folder_still_shows_reports_derives_and_resumes(tmp_path, capsys):
    """A finished tiny PTB search whose config.yaml and checkpoint are rewritten in the old
    layout: report, derive and resume all open it."""
    run, data = finished_search(tmp_path, epochs=1)
    today = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump(old_layout(today)))
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["config"] = old_layout(state["config"])
    torch.save(state, run / "checkpoint.pt")
    assert main(["show", str(run / "best_arch.yaml")]) == 0
    assert main(["report", str(run)]) == 0 and (run / "report.html").is_file()
    assert main(["derive", str(run), "--samples", "2", "--data-dir", str(data), "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["search", "--resume", str(run), "--set", "search.epochs=2", "--allow-config-change",
                 "--data-dir", str(data), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "search.epochs: 1 -> 2" in err and not any(k in err for k in ("reward_c", "search.lm", "fair_sampling", "params"))
