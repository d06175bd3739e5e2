"""Architecture files: round trip, strict loading, readable content, `enas show`."""
import pytest
import yaml

from enas.nas.archfile import ArchFileError, arch_to_yaml, load_arch, save_arch
from enas.cli import main
from enas.nas.space import build_space
from search_spaces.enas_rnn import ENAS_PTB_CELL


@pytest.fixture
def space():
    return build_space("enas_rnn", {})


def test_round_trip(tmp_path, space):
    p = save_arch(tmp_path / "a.yaml", space, ENAS_PTB_CELL, {"epoch": 3})
    sp2, arch, doc = load_arch(p)
    assert arch == ENAS_PTB_CELL and sp2.args == space.args and doc["provenance"]["epoch"] == 3
    text = p.read_text()
    assert "node1/activation: tanh" in text  # op names, never integer codes
    assert "format_version: 1" in text


def write(tmp_path, doc):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return p


def good_doc(space):
    return yaml.safe_load(arch_to_yaml(space, ENAS_PTB_CELL))


@pytest.mark.parametrize(
    "mutate, msg",
    [
        (lambda d: d["arch"].__setitem__("node3/activation", "swish"), "not one of"),
        (lambda d: d["arch"].__setitem__("node3/input", 7), "out of range"),
        (lambda d: d["arch"].pop("node5/input"), "missing"),
        (lambda d: d["arch"].__setitem__("node99/input", 0), "unknown decision"),
        (lambda d: d.__setitem__("format_version", 99), "newer than this enas"),
        (lambda d: d.__setitem__("format_version", 0), "must be >= 1"),
        (lambda d: d.__setitem__("provenance", [1, 2]), "'provenance' must be a mapping"),
        (lambda d: d["space"].__setitem__("args", [1]), "'space.args' must be a mapping"),
        (lambda d: d["space"].__setitem__("name", "enas_rnnn"), "did you mean 'enas_rnn'"),
        (lambda d: d.__setitem__("surprise", 1), "unknown key 'surprise'"),
        (lambda d: d["space"]["args"].__setitem__("num_nodes", "twelve"), "expected an integer"),
    ],
)
def test_bad_files_rejected_with_file_name(tmp_path, space, mutate, msg):
    doc = good_doc(space)
    mutate(doc)
    p = write(tmp_path, doc)
    with pytest.raises(ArchFileError, match=msg) as e:
        load_arch(p)
    assert str(p) in str(e.value)


def test_wrong_space_rejected(tmp_path, space):
    p = save_arch(tmp_path / "a.yaml", space, ENAS_PTB_CELL)
    with pytest.raises(ArchFileError, match="is for space 'enas_rnn'"):
        load_arch(p, expected_space="enas_micro")


def test_not_yaml_and_missing(tmp_path):
    with pytest.raises(ArchFileError, match="does not exist"):
        load_arch(tmp_path / "nope.yaml")
    with pytest.raises(ArchFileError, match="not a readable YAML"):
        load_arch(write(tmp_path, "a: [unclosed"))
    with pytest.raises(ArchFileError, match="python/object"):
        load_arch(write(tmp_path, "!!python/object/apply:os.system ['echo pwned']"))


def test_show_prints_the_cell(tmp_path, space, capsys):
    p = save_arch(tmp_path / "a.yaml", space, ENAS_PTB_CELL)
    assert main(["show", str(p)]) == 0
    out = capsys.readouterr().out
    assert "node 7 <- node 1" in out and "{3, 4, 7, 9, 10, 11}" in out


def test_show_prints_the_cell_once_and_rounds_the_figures(tmp_path, capsys):
    """A search's best_arch.yaml: the NB201 cell string once, the score to 4 significant
    digits and its standard error to 2, as the console prints them elsewhere."""
    nb201 = build_space("nb201")
    cell = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|"
    prov = {"run": "runs/x", "epoch": 3, "score": 0.41234567891, "score_se": 0.0123456789,
            "final_derive": {"candidates": 4, "margin_in_se": 1.987654321, "paired": True,
                             "runner_up_score": 0.39876543}}
    p = save_arch(tmp_path / "best_arch.yaml", nb201, nb201.parse_text(cell), prov)
    assert main(["show", str(p)]) == 0
    out = capsys.readouterr().out
    assert out.count(cell) == 1
    assert "score=0.4123," in out and "score_se=0.012," in out and "margin_in_se=2," in out
    assert "runner_up_score=0.3988" in out and "0.0123456789" not in out


def test_show_bad_file_exits_2(tmp_path, capsys):
    assert main(["show", str(tmp_path / "none.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
