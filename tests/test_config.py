"""Strict config loading: unknown keys, wrong types, overrides, cross-field checks."""
import pytest
import yaml

from enas.config import ConfigError, OptimSection, SearchConfig, apply_overrides, from_dict, load

BASE = {
    "space": {"name": "enas_rnn"},
    "data": {"dataset": "ptb"},
    "train": {"lr": 20.0},
    "controller": {"lr": 1e-3},
}


def write(tmp_path, data):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_valid_config_loads_and_is_frozen(tmp_path):
    cfg = load(SearchConfig, write(tmp_path, BASE))
    assert cfg.train.lr == 20.0 and cfg.controller.lr == 1e-3
    with pytest.raises(Exception):
        cfg.train.lr = 1.0  # frozen


def test_unknown_key_names_dotted_path_and_suggests(tmp_path):
    bad = {**BASE, "controller": {"lrr": 1e-3}}
    with pytest.raises(ConfigError, match=r"controller\.lrr.*did you mean 'controller\.lr'"):
        load(SearchConfig, write(tmp_path, bad))


def test_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'serch'.*'search'"):
        load(SearchConfig, write(tmp_path, {**BASE, "serch": {}}))


@pytest.mark.parametrize(
    "override, msg",
    [
        ("train.lr=fast", "train.lr': expected a number"),
        ("search.epochs=2.5", "search.epochs': expected an integer"),
        ("train.nesterov=3", "expected true or false"),
        ("data.dataset=imagenet", "is not one of"),
        ("data.image_size=4", "data.image_size must be between 8 and 512"),
        ("data.image_size=1024", "data.image_size must be between 8 and 512"),
        ("search.epochs=0", "search.epochs must be >= 1"),
        ("controller.no_such_key=1", "controller.no_such_key"),
        ("train.lr", "expected KEY=VALUE"),
        ("train.lr=.nan", "expected a finite number"),
        ("train.grad_clip=.inf", "expected a finite number"),
        ("train.momentum=-0.5", "train.momentum must be in"),
        ("train.weight_decay=-1", "train.weight_decay must be >= 0"),
        ("controller.lr=-1e-3", "controller.lr must be > 0"),
        ("controller.adam_beta1=2", "controller.adam_beta1 must be in"),
        ("controller.adam_eps=-1", "controller.adam_eps must be > 0"),
        ("controller.hidden=0", "controller.hidden must be >= 1"),
        ("controller.tanh_constant.index=-2", "must be >= 0"),
        ("search.log_every=0", "search.log_every must be >= 1"),
        ("search.checkpoint_minutes=0", "search.checkpoint_minutes must be > 0"),
    ],
)
def test_bad_values_rejected(tmp_path, override, msg):
    with pytest.raises(ConfigError, match=msg):
        load(SearchConfig, write(tmp_path, BASE), [override])


def test_overrides_parse_yaml_values(tmp_path):
    cfg = load(SearchConfig, write(tmp_path, BASE), ["train.lr=1e-3", "search.epochs=7", "train.nesterov=true",
                                                     "controller.tanh_constant.index=1.1"])
    assert cfg.train.lr == 1e-3 and cfg.search.epochs == 7 and cfg.train.nesterov is True
    assert cfg.controller.tanh_constant.index == 1.1


def test_bare_on_off_mean_the_words(tmp_path):
    """YAML 1.1 reads a bare on/off as a boolean; an on/off choice takes it as the word."""
    from enas.config import RetrainConfig

    path = tmp_path / "r.yaml"
    path.write_text("data: {dataset: cifar10}\ntrain: {lr: 0.1}\nretrain: {compile: off}\n")
    assert load(RetrainConfig, path).retrain.compile == "off"
    assert load(RetrainConfig, path, ["retrain.compile=on"]).retrain.compile == "on"
    assert load(SearchConfig, write(tmp_path, BASE), ["search.amp=off"]).search.amp == "off"
    with pytest.raises(ConfigError, match="is not one of"):  # amp has no "on": a boolean stays a mistake
        load(SearchConfig, write(tmp_path, BASE), ["search.amp=on"])


def test_base_config_then_own_keys(tmp_path):
    """`base: OTHER.yaml` starts from OTHER (relative to the file) and replaces key by key."""
    write(tmp_path, {**BASE, "search": {"epochs": 9, "seed": 3}})  # c.yaml
    sub = tmp_path / "variants"
    sub.mkdir()
    (sub / "v.yaml").write_text("base: ../c.yaml\nsearch: {epochs: 2}\n")
    cfg = load(SearchConfig, sub / "v.yaml")
    assert cfg.search.epochs == 2 and cfg.search.seed == 3 and cfg.train.lr == 20.0
    (sub / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="its own base"):
        load(SearchConfig, sub / "loop.yaml")
    (sub / "gone.yaml").write_text("base: nothere.yaml\n")
    with pytest.raises(ConfigError, match="there is no file"):
        load(SearchConfig, sub / "gone.yaml")


def test_missing_required_key():
    with pytest.raises(ConfigError, match="missing required key 'train.lr'"):
        from_dict(SearchConfig, {**BASE, "train": {}})


def test_override_into_value_rejected():
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"train": {"lr": 1.0}}, ["train.lr.x=2"])


def test_bool_is_not_a_number():
    with pytest.raises(ConfigError, match="expected a number"):
        from_dict(OptimSection, {"lr": True})


def test_shipped_configs_load():
    from pathlib import Path

    from enas.config import from_dict, load_search
    from enas.nas.space import build_space

    root = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(root.glob("*search*.yaml")) + sorted((root / "smoke").glob("*search*.yaml"))
    assert len(files) >= 9
    for f in files:  # each shipped search config passes every check, the space's own sections included
        cfg = load_search(f)
        space = build_space(cfg.space.name, cfg.space.args)
        from_dict(type(space).ModelArgs, cfg.model, "model")


def test_ptb_search_is_enas_lms_run():
    """configs/ptb_search.yaml is enas_lm's search as its src/search.py runs it with the
    defaults of child.py and controller.py; the melodyguan schedule is a config of its own."""
    from pathlib import Path

    from enas.config import load_search

    root = Path(__file__).resolve().parents[1] / "configs"
    cfg = load_search(root / "ptb_search.yaml")
    assert cfg == load_search(root / "ptb_search_enas_lm.yaml")
    assert cfg.space.args == {"num_nodes": 10, "fixed_node0": "tanh", "activations": ["tanh", "relu", "sigmoid", "identity"],
                              "weights": "pair_activation", "output": "all"}
    d, t, c, s = cfg.data, cfg.train, cfg.controller, cfg.search
    assert (d.batch_size, d.eval_batch_size, d.bptt, d.variable_bptt, d.bptt_max) == (128, 128, 35, True, 55)
    assert (t.lr, t.schedule, t.grad_clip, s.epochs, s.lm.reward_warmup) == (20.0, "constant", 0.1, 600, 0)
    assert (c.hidden, c.init_range, c.lr, c.entropy_weight, c.baseline_decay) == (64, 0.01, 5e-5, 1e-5, 0.999)
    assert (c.updates_per_epoch, c.num_aggregate, c.tanh_constant.index, c.temperature.categorical) == (25, 10, 2.25, 5.0)
    assert (c.adam_beta1, c.adam_eps, c.tie_heads) == (0.9, 1e-8, True)
    paper = load_search(root / "ptb_search_melodyguan.yaml")
    assert paper.space.args["num_nodes"] == 12 and (paper.data.batch_size, paper.search.epochs) == (64, 150)
    assert (paper.controller.updates_per_epoch, paper.controller.num_aggregate, paper.controller.lr) == (100, 10, 1e-3)


def test_a_config_of_the_other_command_names_the_right_one(capsys):
    from pathlib import Path

    from enas.cli import main

    root = Path(__file__).resolve().parents[1] / "configs"
    assert main(["search", str(root / "ptb_retrain.yaml")]) == 2
    err = capsys.readouterr().err
    assert "is a retrain config" in err and "enas retrain ARCH.yaml --config" in err and "did you mean" not in err
    assert main(["retrain", str(root / "archs/enas_ptb.yaml"), "--config", str(root / "ptb_search.yaml")]) == 2
    err = capsys.readouterr().err
    assert "is a search config" in err and "enas search" in err and "did you mean" not in err


def test_version(capsys):
    import pytest

    from enas import __version__
    from enas.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith(f"enas {__version__} (torch ")
    assert __version__ != "unknown"  # the installed package knows its version
