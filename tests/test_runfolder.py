"""enas/storage/runfolder.py: one schema for every file of a run folder; and the one
bounded text reader of enas/storage/files.py that compare, ground truth and the table share."""
import gzip
import importlib
import json
import math

import pytest
import yaml

from enas.errors import UserError
from enas.storage.text import NotText, read_bounded, read_text
from enas.report import write_report
from enas.report.page import candidate_rows
from enas.report.runfolder import load_run
from enas.nas.space import Decision
from enas.storage import runfolder as rf


def _resolve(dotted: str):
    """The object a ``module.attr[.attr]`` path names."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for p in parts[i:]:
            obj = getattr(obj, p)
        return obj
    raise ModuleNotFoundError(dotted)


@pytest.mark.parametrize("f", rf.FILES, ids=lambda f: f.name)
def test_every_run_file_names_code_that_writes_and_reads_it(f):
    assert set(f.kinds) <= set(rf.KINDS) and f.kinds
    assert f.version and f.holds
    for code in (f.writer, f.reader):
        if code.startswith("enas."):
            assert callable(_resolve(code)), code


def test_the_file_names_are_the_ones_old_runs_hold():
    """Renaming a file would strand every run written before: the names are pinned."""
    assert (rf.CONFIG, rf.METRICS, rf.CHECKPOINT, rf.BEST_ARCH, rf.ARCH, rf.RESULT, rf.DATA, rf.LOCK) == (
        "config.yaml", "metrics.jsonl", "checkpoint.pt", "best_arch.yaml", "arch.yaml", "result.json", "data.json",
        "enas.lock")
    assert rf.epoch_arch("R", 7).as_posix() == "R/archs/epoch_007.yaml"
    assert rf.epoch_arch("R", 7, ".png").as_posix() == "R/archs/epoch_007.png"
    assert rf.final_arch("R", 2).as_posix() == "R/archs/final_2.yaml"
    assert rf.derived_arch("R", "20260101-000000", 5).as_posix() == "R/archs/derive-20260101-000000-n5.yaml"


def test_the_low_level_modules_take_their_names_and_versions_from_the_schema():
    from enas.nas import archfile
    from enas.storage import checkpoint, files, runlock, runlog
    from enas.child import retrain
    from enas.data import record
    assert (checkpoint.NAME, checkpoint.PREV, checkpoint.FORMAT) == (rf.CHECKPOINT, rf.CHECKPOINT_PREV,
                                                                   rf.CHECKPOINT_FORMAT)
    assert archfile.FORMAT_VERSION == rf.ARCH_FORMAT
    assert (runlock.NAME, record.RECORD, retrain.RESULT, retrain.BEST) == (rf.LOCK, rf.DATA, rf.RESULT, rf.BEST)
    assert runlog.CREATED == rf.CREATED
    assert not hasattr(files, "RUN_FILES")


def test_provenance_keeps_the_key_order_derive_wrote():
    prov = rf.provenance("runs/x", 3, 0.5, 0.01, "accuracy on 1 batch", final_derive_rank=2, params=10)
    assert list(prov) == ["run", "epoch", "score", "score_se", "score_is", "final_derive_rank", "params"]
    assert prov["run"] == "runs/x"


@pytest.mark.parametrize("fd, margin", [
    ({"margin_in_se": 2.5}, 2.5), ({"margin_in_se": 3}, 3.0), ({"margin_in_se": "2"}, None),
    ({"margin_in_se": True}, None), ({"margin_in_se": math.inf}, None), ({}, None), ("junk", None), (None, None)])
def test_the_margin_is_read_only_from_a_finite_number(fd, margin):
    assert rf.margin_in_se({"final_derive": fd}) == margin


def test_figures_of_a_run_file_become_floats_or_nan():
    assert rf.as_float("inf") == math.inf and rf.as_float(" -inf ") == -math.inf and rf.as_float(3) == 3.0
    assert all(math.isnan(rf.as_float(v)) for v in ("nan", "x", None, True, [1], {"a": 1}))


def test_policy_groups_leave_out_single_choice_decisions_and_keep_the_order():
    ds = [Decision("n1/op", "categorical", ("a", "b"), group="op"),
          Decision("n1/in", "index", num_inputs=3, group="input"),
          Decision("n2/op", "categorical", ("a",), group="op"),  # one choice: nothing to show
          Decision("n2/skip", "skip", num_inputs=1, group="skip"),  # a skip set is always shown
          Decision("n3/op", "categorical", ("a", "b", "c"), group="op")]
    groups = rf.policy_groups(ds)
    assert list(groups) == ["op", "input", "skip"]
    assert [(d.name, labels) for d, labels in groups["op"]] == [("n1/op", ["a", "b"]), ("n3/op", ["a", "b", "c"])]
    assert groups["input"][0][1] == ["0", "1", "2"]
    assert rf.policy_key("n1/op", "a") == "policy/n1/op/a"


def test_the_kind_of_a_folder(tmp_path):
    assert rf.kind_of(tmp_path, {}) == "search"
    assert rf.kind_of(tmp_path, {"retrain": {}}) == "retrain"
    (tmp_path / "result.json").write_text("{}")
    assert rf.kind_of(tmp_path, {}) == "retrain"
    assert rf.is_run(tmp_path) is False
    (tmp_path / "metrics.jsonl").write_text("")
    assert rf.is_run(tmp_path) is True


def _old_search(folder, space_args=None):
    """A search folder as the code before the run-folder schema wrote it: every name and
    every provenance key spelled out, nothing taken from enas."""
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump({
        "space": {"name": "nb201", "args": space_args or {}}, "data": {"dataset": "cifar10"},
        "search": {"epochs": 2}, "controller": {"kind": "reinforce"}}))
    rows = [{"step": 1, "epoch": 1, "derive/score": 0.4, "derive/score_se": 0.02,
             "policy/node1/from0/none": 0.2, "policy/node1/from0/skip_connect": 0.8, "policy/entropy": 1.1},
            {"step": 2, "epoch": 2, "derive/score": 0.5, "derive/score_se": 0.02, "derive/final_score": 0.55}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    arch = {"node1/from0": "skip_connect", "node2/from0": "none", "node2/from1": "nor_conv_3x3",
            "node3/from0": "none", "node3/from1": "avg_pool_3x3", "node3/from2": "nor_conv_1x1"}
    doc = {"format_version": 1, "space": {"name": "nb201", "args": {}}, "arch": arch,
           "provenance": {"run": str(folder), "epoch": 2, "score": 0.55, "score_se": 0.01,
                          "score_is": "accuracy on all batches of the validation split",
                          "final_derive": {"candidates": 2, "margin_in_se": 3.2, "paired": True,
                                           "runner_up_score": 0.5}}}
    (folder / "archs").mkdir()
    for name in ("best_arch.yaml", "archs/epoch_001.yaml", "archs/epoch_002.yaml", "archs/final_1.yaml"):
        (folder / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    return folder


def test_a_search_folder_written_before_the_schema_opens_and_reports(tmp_path):
    run = load_run(_old_search(tmp_path / "old"))
    assert run.kind == "search" and run.space is not None and run.metrics.get("derive/score").values == [0.4, 0.5]
    assert [e for e, _ in rf.arch_files(run.dir)] == [1, 2]
    page = write_report(run.dir).read_text()
    assert "3.2 standard errors ahead of the runner-up: clearly ahead" in page
    assert "group <code>op</code>" in page  # the policy's heat map, grouped as the space declares


def test_candidate_rows_of_an_old_checkpoint_state():
    """The checkpoint's candidates as the search wrote them: the final derive's, best
    first, a non-finite score last."""
    a, b, c = {"x": "1"}, {"x": "2"}, {"x": "3"}
    state = {"candidates": [{"arch": a, "score": 0.1, "se": 0.0}],
             "final": {"arch": b, "candidates": [{"arch": a, "score": 0.2, "se": 0.01, "derive_score": 0.1},
                                                 {"arch": c, "score": "inf", "se": 0.01, "derive_score": 0.3},
                                                 {"arch": b, "score": 0.3, "se": 0.02, "derive_score": 0.2}]}}
    rows = candidate_rows(state)
    assert [r["arch"] for r in rows] == [b, a, c] and rows[0]["final"] == (0.3, 0.02)
    assert rows[2]["final"] == (math.inf, 0.01) and "trained" not in rows[0]


# ---- the bounded text reader ---------------------------------------------------------------


def test_read_text_names_the_file_and_the_line_of_a_nul(tmp_path):
    p = tmp_path / "t.csv"
    p.write_bytes(b"a,b\n1,2\n3,\x004\n")
    with pytest.raises(NotText, match=r"t\.csv has a NUL byte on line 3"):
        read_text(p, 1000)
    p.write_bytes(b"\xff\xfe")
    with pytest.raises(NotText, match=r"t\.csv is not a text file"):
        read_text(p, 1000)
    p.write_bytes(b"x" * 11)
    with pytest.raises(UserError, match=r"t\.csv: is 11 bytes, more than the 10"):
        read_text(p, 10)
    p.write_text("a,b\n")
    assert read_text(p, 10) == "a,b\n"


def test_read_bounded_inflates_only_when_asked_and_within_the_cap(tmp_path):
    p = tmp_path / "t.csv.gz"
    p.write_bytes(gzip.compress(b"a" * 5000))
    assert read_bounded(p, 10_000) == p.read_bytes()  # not asked: the bytes as they are
    assert read_bounded(p, 10_000, inflate=True) == b"a" * 5000
    with pytest.raises(NotText, match=r"t\.csv\.gz decompresses to more than the 4,999 bytes"):
        read_bounded(p, 4999, inflate=True)
    p.write_bytes(gzip.compress(b"a" * 5000)[:-12])
    with pytest.raises(NotText, match="truncated"):
        read_bounded(p, 10_000, inflate=True)


def test_the_readers_of_compare_and_ground_truth_name_the_file(tmp_path):
    from enas.evaluate import compare, ground_truth
    p = tmp_path / "truth.csv"
    p.write_bytes(b"arch,test_accuracy\n\x00\n")
    with pytest.raises(UserError, match=r"truth\.csv has a NUL byte on line 2 .*; give the ground truth"):
        compare._read_text(p, "ground truth")
    with pytest.raises(UserError, match=r"truth\.csv has a NUL byte on line 2 .*; use another --out"):
        ground_truth.read_text(p)
    with pytest.raises(UserError, match=r"missing\.csv does not exist"):
        compare._read_text(tmp_path / "missing.csv", "ground truth")
    assert ground_truth.read_text(tmp_path / "missing.csv") == ""
