"""enas.report: one self-contained HTML page per run folder (search or retrain)."""
import base64
import json
import re
import shutil
import struct

import pytest
import yaml

from conftest import make_corpus, random_arch, TINY_PTB, write_config
from enas.cli import main
from enas.report import write_report
from enas.storage.runlog import RunDirError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY_RETRAIN = {"model": {"hidden": 8, "init_range": 0.1}, "train": {"lr": 5.0, "grad_clip": 0.25},
                "data": {"dataset": "ptb", "batch_size": 4, "eval_batch_size": 4, "bptt": 6},
                "retrain": {"epochs": 2, "log_every": 5}}


def run(*argv):
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny search, a tiny search without a controller, and a retrain of the first's
    best architecture (about 8 s together on one core)."""
    root = tmp_path_factory.mktemp("report")
    data = make_corpus(root / "ptb")
    cfg = write_config(root, TINY_PTB, "tiny.yaml")
    out = {"search": root / "search", "random": root / "random", "retrain": root / "retrain"}
    assert run("search", cfg, "--data-dir", data, "--run-dir", out["search"], "--device", "cpu") == 0
    assert run("search", cfg, "--data-dir", data, "--run-dir", out["random"], "--device", "cpu",
               "--set", "controller.kind=random") == 0
    (root / "retrain.yaml").write_text(yaml.safe_dump(TINY_RETRAIN))
    assert run("retrain", out["search"] / "best_arch.yaml", "--config", root / "retrain.yaml", "--data-dir", data,
               "--run-dir", out["retrain"], "--device", "cpu") == 0
    return out


@pytest.fixture(scope="module")
def search_page(runs):
    path = write_report(runs["search"])
    return path, path.read_text()


def images(page):
    """The decoded data-URI images of a page."""
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def assert_self_contained(page):
    refs = re.findall(r'\b(?:src|href)\s*=\s*["\']([^"\']*)', page, flags=re.I)
    assert refs, "the page has no images or links at all"
    for ref in refs:
        assert not re.match(r"\s*(https?:|//|file:|ftp:)", ref, flags=re.I), ref
        assert ref.startswith(("data:image/png;base64,", "#")), ref[:60]
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page
    assert not re.search(r"url\(\s*['\"]?\s*(https?:|//)", page, flags=re.I)


def assert_pngs(page, at_least):
    pngs = images(page)
    assert len(pngs) >= at_least, len(pngs)
    for png in pngs:
        assert png[:8] == PNG_MAGIC
        w, h = struct.unpack(">II", png[16:24])
        assert 50 < w < 5000 and 50 < h < 12000, (w, h)


def candidate_rows(html_table):
    """(rank, first score, its standard error) of each row of the candidates table."""
    rows = re.findall(r"<tr><td>(\d+)</td><td>([-0-9.e]+) &plusmn; ([-0-9.e]+)</td>", html_table)
    return [(int(a), float(b), float(c)) for a, b, c in rows]


def section(page, sid):
    m = re.search(rf'<section id="{sid}">(.*?)</section>', page, flags=re.S)
    assert m, f"no section {sid}"
    return m.group(1)


@pytest.mark.slow
def test_search_report_has_every_section(runs, search_page):
    path, page = search_page
    assert path == runs["search"] / "report.html"
    for sid in ("identity", "warnings", "curves", "policy", "arch", "candidates", "figures", "config"):
        assert f'href="#{sid}"' in page, sid  # in the table of contents, and present:
        section(page, sid)
    ident = section(page, "identity")
    assert "enas_rnn" in ident and "ptb" in ident and "2 of 2" in ident and "finished" in ident
    assert "No collapse warning" in section(page, "warnings")
    # the headline charts and one heat map per decision group (TINY_PTB: activation, index)
    curves = section(page, "curves")
    for alt in ("reward and baseline", "entropy", "shared loss", "derived score"):
        assert f'alt="{alt}"' in curves, alt
    policy = section(page, "policy")
    assert len(images(policy)) == 2 and "activation" in policy and "index" in policy
    # the best cell, drawn by the space, and its description
    arch = section(page, "arch")
    assert len(images(arch)) == 1 and "best_arch.yaml" in arch and "s_t = average of" in arch
    # the final derive's candidates, the winner first, with the score it was picked by beside it
    rows = candidate_rows(section(page, "candidates"))
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1)) and len(rows) >= 2
    scores = [r[1] for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert "(winner: best_arch.yaml)" in section(page, "candidates").split("</tr>")[1]  # the first row
    best = yaml.safe_load((runs["search"] / "best_arch.yaml").read_text())["provenance"]
    assert rows[0][1] == pytest.approx(best["score"], abs=rows[0][2])
    # every figure in metrics.jsonl appears, whatever its name
    names = {k for line in (runs["search"] / "metrics.jsonl").read_text().splitlines() for k in json.loads(line)}
    figures = section(page, "figures")
    headline = {"controller/reward", "controller/baseline", "controller/advantage", "controller/entropy",
                "policy/entropy", "shared/loss", "derive/score", "derive/score_se"}  # drawn in "curves"
    for name in names - {"step", "epoch"} - headline:
        if not name.startswith("policy/"):
            assert name.split("/")[0] in figures, name
    # the config, escaped
    assert "num_nodes: 4" in section(page, "config")
    assert_pngs(page, at_least=8)
    assert_self_contained(page)


@pytest.mark.slow
def test_a_report_replaces_its_own_page_and_nothing_else_without_force(runs, search_page, tmp_path):
    """A report is derived from its run: re-running replaces the page enas wrote, at the
    default path or elsewhere; any other file needs --force, a run's own files never."""
    path, page = search_page
    path.write_bytes(path.read_bytes().replace(b"</footer>", b"(an older copy)</footer>"))
    assert write_report(runs["search"]) == path and b"(an older copy)" not in path.read_bytes()
    other = tmp_path / "mine.html"
    other.write_text("precious")
    with pytest.raises(RunDirError, match="already exists"):
        write_report(runs["search"], other)
    assert other.read_text() == "precious"
    link = tmp_path / "link.html"
    link.symlink_to(path)  # a link to a report is not a report enas wrote there
    with pytest.raises(RunDirError, match="already exists"):
        write_report(runs["retrain"], link)
    fresh = write_report(runs["retrain"], tmp_path / "sub" / "copy.html")  # a new folder is made
    assert fresh.is_file() and fresh.read_text().startswith("<!DOCTYPE html>")
    assert not list((tmp_path / "sub").glob(".*.tmp"))  # no temporary file left behind
    assert write_report(runs["search"], fresh) == fresh  # its own page, elsewhere: replaced
    # --force replaces any other file, never a file of the run
    assert write_report(runs["search"], other, force=True) == other and other.read_text().startswith("<!DOCTYPE")
    config = runs["search"] / "config.yaml"
    kept = config.read_bytes()
    with pytest.raises(RunDirError, match="is a file of the run"):
        write_report(runs["search"], config, force=True)
    assert config.read_bytes() == kept


@pytest.mark.slow
def test_enas_report_command(runs, tmp_path, capsys):
    from enas.cli import main

    out = tmp_path / "cli.html"
    assert main(["report", str(runs["search"]), "--out", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>") and str(out) in capsys.readouterr().out
    assert main(["report", str(runs["search"]), "--out", str(out)]) == 0  # its own page: replaced
    out.write_text("not a report")
    assert main(["report", str(runs["search"]), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and out.read_text() == "not a report"
    assert main(["report", str(runs["search"]), "--out", str(out), "--force"]) == 0


@pytest.mark.slow
def test_retrain_report(runs, tmp_path):
    page = write_report(runs["retrain"], tmp_path / "retrain.html").read_text()
    assert "enas retrain report" in page
    result = json.loads((runs["retrain"] / "result.json").read_text())
    res = section(page, "result")
    assert "test_perplexity" in res and f"{result['test_perplexity']:.4g}" in res
    assert 'alt="loss"' in section(page, "curves") and 'alt="accuracy or perplexity"' in section(page, "curves")
    assert len(images(section(page, "arch"))) == 1 and "arch.yaml" in section(page, "arch")
    assert "enas_rnn" in section(page, "identity")  # from arch.yaml: a retrain config has no space
    assert "candidates" not in page and 'id="policy"' not in page
    assert_pngs(page, at_least=4)
    assert_self_contained(page)


@pytest.mark.slow
def test_run_without_controller(runs, tmp_path):
    page = write_report(runs["random"], tmp_path / "random.html").read_text()
    curves = section(page, "curves")
    assert "No reward or baseline" in curves and "random" in curves
    assert 'alt="entropy"' in curves and 'alt="shared loss"' in curves
    assert len(images(section(page, "policy"))) == 2
    assert_self_contained(page)


@pytest.mark.slow
def test_unfinished_run_with_nan_and_collapse_warnings(runs, tmp_path):
    """A run cut short: no final derive, no best_arch.yaml, no checkpoint, a NaN loss,
    collapse warnings (one with its text, one flag only) and a half-written last line."""
    d = tmp_path / "cut"
    shutil.copytree(runs["search"], d, ignore=shutil.ignore_patterns("report.html", "checkpoint*", "best_arch.*"))
    rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if not any(k.startswith("derive/final") for k in r)]
    rows.append({"step": 9999, "epoch": 1, "shared/loss": "nan", "shared/extra_loss": "inf"})
    rows.append({"step": 2, "epoch": 2, "warning/collapse": 1,
                 "warning/message": "the policy puts 90% <b>of</b> its op probability on parameter-free ops"})
    rows.append({"step": 1, "epoch": 1, "warning/collapse": 1})
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 10000, "shar')
    page = write_report(d).read_text()
    ident = section(page, "identity")
    assert "unfinished" in ident and f"enas search --resume {d}" in ident and "1 skipped" in ident
    warn = section(page, "warnings")
    assert "90% &lt;b&gt;of&lt;/b&gt; its op probability" in warn  # the text, escaped
    assert "epoch 1" in warn and "collapse flag set" in warn  # the flag without text
    assert "derived at epoch 2" in section(page, "arch")  # falls back to archs/epoch_002.yaml
    assert "No checkpoint.pt" in section(page, "candidates")
    assert "Non-finite" in section(page, "figures") and "shared/loss" in section(page, "figures")
    assert_pngs(page, at_least=6)
    assert_self_contained(page)


def test_not_a_run_folder(tmp_path):
    with pytest.raises(RunDirError, match="not a run folder"):
        write_report(tmp_path)
    with pytest.raises(RunDirError, match="not a folder"):
        write_report(tmp_path / "missing")


def test_retrain_without_validation_split_shows_its_test_figure_once():
    """An image retrain's final split has no validation images: result.json repeats the
    test accuracy as valid_accuracy beside valid_is_test; the page shows one figure,
    named for what it is."""
    from types import SimpleNamespace

    from enas.report.page import _result

    rec = {"metric": "accuracy", "valid_accuracy": 0.6125, "valid_is_test": True, "test_accuracy": 0.6125,
           "test_loss": 1.1, "params": 1000}
    table = _result(SimpleNamespace(result=rec))
    assert "valid_accuracy" not in table and "valid_is_test" not in table
    assert table.count("0.6125") == 1
    assert "test_accuracy (the retrain has no separate validation split)" in table
    lm = {"metric": "ppl", "valid_perplexity": 120.0, "test_perplexity": 110.0, "test_loss": 4.7}
    table = _result(SimpleNamespace(result=lm))  # an LM has its own validation text: both figures
    assert "valid_perplexity" in table and "<th>test_perplexity</th>" in table


def fake_search(folder, state):
    """A search run folder holding only a config, one metrics line and ``state`` as its
    checkpoint: the report's candidate table without training anything."""
    import torch

    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump({**TINY_PTB, "search": {**TINY_PTB["search"],
                                                                              "final_train_epochs": 3}}))
    (folder / "metrics.jsonl").write_text('{"step": 1, "epoch": 1, "derive/score": 0.5}\n')
    torch.save(state, folder / "checkpoint.pt")
    return folder


def archs(n):
    import random

    from enas.nas.space import build_space

    space, rng, out = build_space("enas_rnn", {"num_nodes": 4}), random.Random(0), []
    while len(out) < n:
        a = random_arch(space, rng)
        if a not in out:
            out.append(a)
    return out


def test_candidate_table_puts_the_winner_first(tmp_path):
    """The final derive re-scores the last derive's candidates and may pick one that scored
    lower there: the table follows the final derive, the winner first, and shows both
    scores; with a final stage, the trained ones lead, by their trained score."""
    a, b, c, d = archs(4)
    last = [{"arch": a, "score": 0.9, "se": 0.01}, {"arch": b, "score": 0.8, "se": 0.01},
            {"arch": c, "score": 0.7, "se": 0.01}, {"arch": d, "score": 0.6, "se": 0.01}]
    finals = [{"arch": c, "score": 0.62, "se": 0.02, "derive_score": 0.7},
              {"arch": a, "score": 0.55, "se": 0.02, "derive_score": 0.9},
              {"arch": b, "score": 0.41, "se": 0.02, "derive_score": 0.8}]
    state = {"candidates": last, "final": {"arch": c, "score": 0.62, "se": 0.02, "epoch": 2, "candidates": finals}}
    table = section(write_report(fake_search(tmp_path / "derive", state)).read_text(), "candidates")
    assert [r[1:] for r in candidate_rows(table)] == [(0.62, 0.02), (0.55, 0.02), (0.41, 0.02)]
    first = table.split("</tr>")[1]
    assert "(winner: best_arch.yaml)" in first and "<td>0.7</td>" in first  # its last-derive score beside
    assert table.count("winner:") == 1 and "final derive" in table and "last epoch&#x27;s derive" in table

    trained = [{"arch": c, "score": 0.3, "se": 0.05, "derive_score": 0.62},
               {"arch": a, "score": 0.4, "se": 0.05, "derive_score": 0.55}]
    state = {"candidates": last, "trained": trained,
             "final": {"arch": a, "score": 0.4, "se": 0.05, "epoch": 2, "trained": True, "candidates": finals}}
    table = section(write_report(fake_search(tmp_path / "stage", state)).read_text(), "candidates")
    rows = candidate_rows(table)
    assert [r[1] for r in rows] == [0.4, 0.3]  # trained score first; the untrained candidate after
    assert "(winner: best_arch.yaml)" in table.split("</tr>")[1] and "trained 3 epochs" in table
    assert "<td>not scored</td>" in table.split("</tr>")[3]  # b was not trained


@pytest.mark.slow
def test_no_curve_drawn_twice_and_single_choice_decisions_left_out(runs, monkeypatch, tmp_path):
    from enas.report import page as report_page

    drawn, heat = [], []
    real_chart, real_small, real_heat = report_page.chart, report_page.small_multiples, report_page.heatmaps

    def chart(panels, **kw):
        drawn.extend(s.name for p in panels for s, _, _ in p["curves"])
        return real_chart(panels, **kw)

    def small(series):
        drawn.extend(s.name for s in series)
        return real_small(series)

    def heatmaps(panels, epochs):
        heat.extend(name for name, _, _ in panels)
        return real_heat(panels, epochs)

    monkeypatch.setattr(report_page, "chart", chart)
    monkeypatch.setattr(report_page, "small_multiples", small)
    monkeypatch.setattr(report_page, "heatmaps", heatmaps)
    for kind in ("search", "retrain"):
        drawn.clear()
        page = write_report(runs[kind], tmp_path / f"{kind}.html").read_text()
        assert len(drawn) == len(set(drawn)), sorted(n for n in drawn if drawn.count(n) > 1)
        if kind == "search":  # logged under another name: drawn once, named beside it
            assert "overview/entropy_of_uniform" in drawn and "policy/entropy" not in drawn
            assert "derive/score" in drawn and not any(n.startswith("overview/derived_") for n in drawn)
        assert_self_contained(page)
    # TINY_PTB's node1 has one possible input (node 0): nothing to show
    assert heat and "node1/input" not in heat and "node2/input" in heat


def test_charts_do_not_exaggerate_noise_and_numbers_are_rounded():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from enas.report.charts import honest_ylim
    from enas.report.page import _fmt, _pm
    from enas.report.runfolder import Series

    def axis(values):
        fig = Figure()
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.plot(range(len(values)), values)
        honest_ylim(ax, [Series("x", values=values)])
        lo, hi = ax.get_ylim()
        return hi - lo, " ".join(t.get_text() for t in ax.texts)

    span, text = axis([57.165, 57.17, 57.19])  # the entropy a smoke run logs
    assert span == pytest.approx(0.1 * 57.19) and "flat" in text
    span, text = axis([7.81, 7.0, 6.84])  # a loss that falls: drawn as matplotlib fits it
    assert span < 1.2 and "flat" not in text
    span, text = axis([0.30, 0.31, 0.32])  # 6% of its size: widened, not flat
    assert span >= 0.032 and "flat" not in text
    assert _pm(0.3124, 0.0159687) == "0.312 &plusmn; 0.016"
    assert _fmt(0.0159687) == "0.01597" and _fmt(True) == "yes" and _fmt(False) == "no" and _fmt(None) == "none"
