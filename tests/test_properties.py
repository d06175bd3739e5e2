"""Property-based: malformed YAML, configs and architecture files end in a clean error.

Whatever bytes or structures a user feeds in, loading either succeeds or raises the
error type the CLI turns into one paragraph (ConfigError / ArchFileError), never
another exception with a traceback.
"""
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enas.nas.archfile import ArchFileError, arch_to_yaml, load_arch
from enas.config import ConfigError, SearchConfig, apply_overrides, from_dict, load_search
from enas.nas.space import build_space
from search_spaces.enas_rnn import ENAS_PTB_CELL

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 100), st.floats(allow_nan=True),
                    st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)
GOOD = {"space": {"name": "enas_rnn"}, "data": {"dataset": "ptb"}, "train": {"lr": 1.0}}
KEYS = ["space.name", "space.args.num_nodes", "data.dataset", "data.batch_size", "train.lr", "train.schedule",
        "controller.tanh_constant.index", "controller.kind", "search.epochs", "model.hidden", "model.dropout_x",
        "search.derive_batches", "nope", "train.lr.deeper"]


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes_as_config(tmp_path, data):
    p = tmp_path / "c.yaml"
    p.write_bytes(data)
    try:
        load_search(p)
    except ConfigError as e:
        assert str(e)


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(KEYS), values), max_size=4))
def test_random_overrides(tmp_path, changes):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(GOOD))
    overrides = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                 for k, v in changes]
    try:
        load_search(p, overrides)
    except ConfigError as e:
        assert str(e)


@SETTINGS
@given(values)
def test_random_structures_as_config(doc):
    try:
        from_dict(SearchConfig, apply_overrides(doc if isinstance(doc, dict) else {"x": doc}, []))
    except ConfigError as e:
        assert str(e)


def _mutations():
    return st.lists(st.tuples(st.sampled_from(["arch", "space", "format_version", "provenance", "extra", "root"]),
                              st.one_of(st.text(max_size=10), st.sampled_from(list(ENAS_PTB_CELL))), values),
                    min_size=1, max_size=3)


@SETTINGS
@given(_mutations())
def test_mutated_arch_files(tmp_path, muts):
    doc = yaml.safe_load(arch_to_yaml(build_space("enas_rnn", {}), ENAS_PTB_CELL))
    for where, key, value in muts:
        if where == "root":
            doc = value
            continue
        if where in ("arch", "space") and isinstance(doc, dict) and isinstance(doc.get(where), dict):
            doc[where][key] = value
        elif isinstance(doc, dict):
            doc[where] = value
    p = tmp_path / "a.yaml"
    p.write_text(yaml.safe_dump(doc))
    try:
        load_arch(p)
    except ArchFileError as e:
        assert str(p) in str(e)


@SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes_as_arch_file(tmp_path, data):
    p = tmp_path / "a.yaml"
    p.write_bytes(data)
    try:
        load_arch(p)
    except ArchFileError as e:
        assert str(p) in str(e)


# YAML fragments a hostile file is made of: anchors, aliases (also self-referencing),
# repeated keys, tags, deep nesting, and the keys of a real architecture file.
FRAGMENTS = ["a: &x [1, 2]\n", "b: *x\n", "c: &y [*y]\n", "arch: {}\n", "arch: &z {node0/activation: tanh}\n",
             "space: {name: enas_rnn}\n", "space: {name: nb201, args: [1]}\n", "format_version: 1\n",
             "format_version: -3\n", "provenance: *x\n", "provenance: [1]\n", "p: !!python/object/apply:os.system [ls]\n",
             "d: " + "[" * 60 + "]" * 60 + "\n", "e: 1e400\n", "space: {name: enas_rnn, args: {num_nodes: 1e9}}\n"]


@SETTINGS
@given(st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=6), st.integers(0, 2))
def test_hostile_arch_files_through_the_command_line(tmp_path, capsys, parts, prefix):
    """`enas show` on a file assembled from hostile fragments (after 0-2 valid keys) exits
    0 or 2 with at most one error line and never a traceback."""
    from enas.cli import main

    good = arch_to_yaml(build_space("enas_rnn", {}), ENAS_PTB_CELL).splitlines(keepends=True)
    p = tmp_path / "a.yaml"
    p.write_text("".join(good[:prefix]) + "".join(parts))
    capsys.readouterr()
    code = main(["show", str(p)])
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err
    assert code == 0 or (len(err.strip().splitlines()) == 1 and str(p) in err)
