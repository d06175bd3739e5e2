"""NAS-Bench-201 space: cell strings, supernet == child, `none` edges, arch files,
the random baseline and the collapse warning. CPU, tiny generated data."""
from __future__ import annotations

import itertools
import json
import random

import pytest
import torch
import yaml

from enas.nas.archfile import ArchFileError, load_arch, save_arch
from enas.cli import main
from enas.nas.controller import RandomPolicy
from enas.nas.space import ArchError, build_space
from conftest import randomize_bn, tiny_nb201_config
from search_spaces.nb201 import (
    BEST_CIFAR10_CELL,
    EDGES,
    NB201_OPS,
    RESNET_CELL,
    NB201Cell,
    NB201ModelArgs,
    decision_name,
    to_genotype,
)
from search_spaces.ops import Zero
from conftest import write_cifar  # official-format pickles

SMALL = NB201ModelArgs(channels=4, cells_per_stage=1)


@pytest.fixture(scope="module")
def space():
    return build_space("nb201")


def arch_of(space, text):
    return space.parse_text(text)


# ---------------------------------------------------------------------- cell strings


def test_every_cell_string_round_trips(space):
    names = [d.name for d in space.decisions()]
    assert names == ["node1/from0", "node2/from0", "node2/from1", "node3/from0", "node3/from1", "node3/from2"]
    seen = set()
    for ops in itertools.product(NB201_OPS, repeat=len(names)):
        arch = dict(zip(names, ops))
        text = space.to_text(arch)
        assert space.parse_text(text) == arch
        seen.add(text)
    assert len(seen) == 15625


def test_cell_string_format(space):
    arch = {decision_name(i, j): NB201_OPS[(i + j) % 5] for i, j in EDGES}
    assert space.to_text(arch) == ("|skip_connect~0|+|nor_conv_1x1~0|nor_conv_3x3~1|"
                                   "+|nor_conv_3x3~0|avg_pool_3x3~1|none~2|")
    assert space.extras(arch) == {"cell_string": space.to_text(arch)}
    # edges of a node may be listed in any order; surrounding whitespace is ignored
    shuffled = "  |nor_conv_3x3~0|+|nor_conv_3x3~1|nor_conv_3x3~0|+|nor_conv_3x3~2|skip_connect~0|nor_conv_3x3~1|\n"
    assert space.parse_text(shuffled) == space.parse_text(BEST_CIFAR10_CELL)


@pytest.mark.parametrize("bad,why", [
    ("", "expected 3 nodes"),
    ("|none~0|+|none~0|none~1|", "expected 3 nodes"),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|", "needs 3 edges"),
    ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "must look like"),
    ("|none~0|+|none~0|none~0|+|none~0|none~1|none~2|", "twice"),
    ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "cannot read node 1"),
    ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'conv'"),
    ("|none0|+|none~0|none~1|+|none~0|none~1|none~2|", "must be op~j"),
    ("|none~x|+|none~0|none~1|+|none~0|none~1|none~2|", "must be op~j"),
])
def test_malformed_cell_strings_are_rejected_clearly(space, bad, why):
    with pytest.raises(ArchError, match=why):
        space.parse_text(bad)


def test_arch_file_round_trip_and_cell_string_check(space, tmp_path):
    arch = arch_of(space, BEST_CIFAR10_CELL)
    path = save_arch(tmp_path / "a.yaml", space, arch, {"run": "x"})
    doc = yaml.safe_load(path.read_text())
    assert doc["cell_string"] == BEST_CIFAR10_CELL and "node3 = skip_connect(node0)" in doc["description"]
    sp2, arch2, _ = load_arch(path)
    assert sp2.name == "nb201" and arch2 == arch
    doc["cell_string"] = RESNET_CELL  # disagrees with the arch
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ArchFileError, match="disagrees"):
        load_arch(path)
    doc["cell_string"] = "|nope|"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ArchFileError, match="cell string"):
        load_arch(path)
    del doc["cell_string"]  # optional: the arch alone is enough
    path.write_text(yaml.safe_dump(doc))
    assert load_arch(path)[1] == arch


def test_describe_and_draw(space, tmp_path):
    text = space.describe(arch_of(space, RESNET_CELL))
    assert RESNET_CELL in text
    assert "node2 = nor_conv_3x3(node1)" in text and "node3 = skip_connect(node0) + skip_connect(node2)" in text
    assert "node1 = zeros" in space.describe(arch_of(space, "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"))
    space.draw(arch_of(space, BEST_CIFAR10_CELL), tmp_path / "cell.png")
    assert (tmp_path / "cell.png").read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------- networks


def test_published_parameter_counts(space):
    # NB201 (C=16, N=5, CIFAR-10) reports 0.0733M .. 1.5316M parameters
    full = NB201ModelArgs()
    all_conv = arch_of(space, "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
                              "+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    all_none = arch_of(space, "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    count = lambda a: sum(p.numel() for p in space.child(a, full).parameters())  # noqa: E731
    assert count(all_conv) == 1_531_546
    assert count(all_none) == 73_306


def test_child_equals_supernet(space):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    sup = space.supernet(SMALL)
    randomize_bn(sup, gen)
    sd = sup.state_dict()
    x = torch.randn(4, 3, 32, 32, generator=gen)
    rng = random.Random(0)
    cells = [BEST_CIFAR10_CELL, RESNET_CELL, "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"]
    cells += [space.to_text({d.name: rng.choice(NB201_OPS) for d in space.decisions()}) for _ in range(4)]
    for text in cells:
        arch = arch_of(space, text)
        child = space.child(arch, SMALL)
        assert set(child.state_dict()) <= set(sd)
        child.load_state_dict({k: sd[k] for k in child.state_dict()})
        for train in (False, True):  # running statistics, then batch statistics
            sup.train(train)
            child.train(train)
            with torch.no_grad():
                ls, aux_s = sup(x, arch)
                lc, aux_c = child(x)
            assert aux_s is None and aux_c is None
            assert torch.allclose(ls, lc, atol=1e-5, rtol=1e-4), text


def test_only_sampled_path_gets_gradients(space):
    torch.manual_seed(0)
    sup = space.supernet(SMALL)
    sup.train()
    x = torch.randn(2, 3, 32, 32)
    arch = arch_of(space, "|nor_conv_1x1~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|")
    sup(x, arch)[0].sum().backward()
    with_grad = {n for n, p in sup.named_parameters() if p.grad is not None}
    assert with_grad == {n for n, _ in space.child(arch, SMALL).named_parameters()}
    assert any(".edges.1<-0.nor_conv_1x1." in n for n in with_grad)
    assert not any(".edges.2<-0." in n or ".edges.3<-1." in n for n in with_grad)
    # node 2 is dead here (node 3 does not read it): its edge is in the child, gets no gradient
    sup.zero_grad(set_to_none=True)
    dead = arch_of(space, "|nor_conv_1x1~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|avg_pool_3x3~1|none~2|")
    sup(x, dead)[0].sum().backward()
    with_grad = {n for n, p in sup.named_parameters() if p.grad is not None}
    child = {n for n, _ in space.child(dead, SMALL).named_parameters()}
    assert with_grad == {n for n in child if ".edges.2<-1." not in n} and with_grad < child


def test_none_edges_contribute_zeros_and_are_not_run(space, monkeypatch):
    def boom(self, x):
        raise AssertionError("a `none` edge was computed")

    monkeypatch.setattr(Zero, "forward", boom)
    torch.manual_seed(0)
    cell = NB201Cell(4, {e: NB201_OPS for e in EDGES}).eval()
    x = torch.randn(2, 4, 8, 8)
    g = lambda text: to_genotype(arch_of(space, text))  # noqa: E731
    # node 3 reads nothing: the cell outputs exact zeros
    out = cell(x, g("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|none~0|none~1|none~2|"))
    assert torch.equal(out, torch.zeros_like(x))
    # a none edge adds nothing: node3 = skip(node0) + avg(node2) with or without none edges beside
    with torch.no_grad():
        a = cell(x, g("|nor_conv_3x3~0|+|skip_connect~0|none~1|+|skip_connect~0|none~1|avg_pool_3x3~2|"))
        expect = x + cell.edges["3<-2"]["avg_pool_3x3"](x)
    assert torch.allclose(a, expect)
    # the ResNet cell computes x + conv(conv(x))
    with torch.no_grad():
        r = cell(x, g(RESNET_CELL))
        conv = lambda i, j, h: cell.edges[f"{i}<-{j}"]["nor_conv_3x3"](h)  # noqa: E731
        expect = x + conv(2, 1, conv(1, 0, x))
    assert torch.allclose(r, expect)
    # no parameters on parameter-free edges of a child
    child = space.child(arch_of(space, "|none~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|none~1|none~2|"), SMALL)
    assert not any(".edges." in n for n, _ in child.named_parameters())


def test_random_policy_samples_every_op(space):
    gen = torch.Generator().manual_seed(0)
    archs = RandomPolicy(space.decisions())(500, generator=gen).archs
    for d in space.decisions():
        assert {a[d.name] for a in archs} == set(NB201_OPS), d.name


# ---------------------------------------------------------------------- searches



@pytest.fixture
def cifar_dir(tmp_path):
    write_cifar(tmp_path / "cifar")
    return tmp_path / "cifar"


def run(*argv):
    return main([str(a) for a in argv])


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_search_writes_a_valid_cell(tmp_path, cifar_dir, space):
    run_dir = tmp_path / "run"
    assert run("search", tiny_nb201_config(tmp_path), "--data-dir", cifar_dir, "--run-dir", run_dir,
               "--device", "cpu") == 0
    sp, arch, doc = load_arch(run_dir / "best_arch.yaml")
    assert sp.name == "nb201" and space.parse_text(doc["cell_string"]) == arch
    assert (run_dir / "archs" / "epoch_002.png").is_file()
    st = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert st["reinforce"]["updates"] == 4


def test_random_baseline_never_updates_and_is_uniform(tmp_path, cifar_dir, capsys):
    run_dir = tmp_path / "r"
    cfg = tiny_nb201_config(tmp_path, {"controller": {"kind": "random"}})
    assert run("search", cfg, "--data-dir", cifar_dir, "--run-dir", run_dir, "--device", "cpu") == 0
    st = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert st["policy"] == {} and st["reinforce"]["updates"] == 0
    rows = metrics(run_dir)
    assert not any(k.startswith("controller/") for r in rows for k in r)
    policy = {k: v for r in rows for k, v in r.items() if k.startswith("policy/node")}
    assert len(policy) == 6 * 5 and all(v == pytest.approx(0.2) for v in policy.values())
    # uniform mass on the parameter-free ops is 3/5 < 80 %: no collapse warning
    assert "collapsing" not in capsys.readouterr().err
    assert not any("warning/collapse" in r for r in rows)
    load_arch(run_dir / "best_arch.yaml")


def test_collapse_warning_fires_on_a_policy_forced_to_skips(tmp_path, cifar_dir, capsys, monkeypatch):
    import enas.nas.search

    real = enas.nas.search.build_policy
    push = torch.tensor([-100.0, 100.0, -100.0, -100.0, -100.0])  # op order: NB201_OPS, skip_connect second

    def forced(kind, space, cfg):
        policy = real(kind, space, cfg)
        policy.heads["op"].register_forward_hook(lambda mod, inp, out: out + push)
        return policy

    monkeypatch.setattr(enas.nas.search, "build_policy", forced)
    run_dir = tmp_path / "c"
    cfg = tiny_nb201_config(tmp_path, {"controller": {"updates_per_epoch": 1}})
    assert run("search", cfg, "--data-dir", cifar_dir, "--run-dir", run_dir, "--device", "cpu") == 0
    err = capsys.readouterr().err
    assert "parameter-free ops" in err and "collapsing" in err
    rows = metrics(run_dir)
    assert sum(1 for r in rows if r.get("warning/collapse") == 1) == 2  # one per epoch
    # tanh 2.5 / T 5 shaping caps it at e^2.5 / (e^2.5 + 4 e^-2.5) = 97 %
    assert all(r["policy/node3/from2/skip_connect"] > 0.95 for r in rows if "policy/node3/from2/skip_connect" in r)


def test_entropy_floor_warning_before_the_midpoint(tmp_path, cifar_dir, capsys):
    # uniform policy entropy is 6 ln 5 = 9.66; a floor above it fires in epoch 1 only (midpoint 2 of 4)
    run_dir = tmp_path / "e"
    cfg = tiny_nb201_config(tmp_path, {"controller": {"kind": "random"},
                                       "search": {"epochs": 4, "entropy_floor": 10.0}})
    assert run("search", cfg, "--data-dir", cifar_dir, "--run-dir", run_dir, "--device", "cpu") == 0
    err = capsys.readouterr().err
    assert "warning (epoch 1)" in err and "warning (epoch 2)" in err and "warning (epoch 3)" not in err
    assert "entropy_floor" in err
