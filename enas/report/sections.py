"""The report's sections that read the run's files beside metrics.jsonl: who the run
is, its architecture, the derive candidates of its checkpoint, the verdict, the
warnings, the result. Each returns escaped HTML, or "" when it has nothing to say."""
from __future__ import annotations

import dataclasses
import datetime
import html
import json
import math
import os
import re

from enas.nas.archfile import load_arch
from enas.storage.checkpoint import read
from enas.config import ConfigError, LMSearchSection, ScoreSection, from_dict, to_dict
from enas.errors import one_line
from enas.storage.files import produced, read_regular
from enas.storage import runfolder as rf
from enas.report.charts import img
from enas.report.runfolder import Run, arch_files, epochs_done
from enas.report.text import _fmt, _note, _pm, _table


def _identity(run: Run) -> str:
    done, planned = epochs_done(run)
    cfg = run.config
    space = cfg.get("space") or {}
    if not space and run.space is not None:
        space = {"name": run.space.name, "args": to_dict(run.space.args)}
    space_txt = html.escape(str(space.get("name", "?")))
    if space.get("args"):
        space_txt += f' <span class="dim">{html.escape(json.dumps(space["args"], default=str))}</span>'
    data = cfg.get("data") or {}
    dataset = html.escape(str(data.get("dataset", "?")))
    if run.data and run.data.get("path"):
        dataset += f' <span class="dim">({html.escape(str(run.data["path"]))})</span>'
    if run.kind == "search":
        finished = run.metrics.get("derive/final_score") is not None
    else:
        finished = run.result is not None
    status = ('<span class="ok">finished</span>' if finished else
              f'<span class="warn">unfinished</span> (continue it with <code>enas {run.kind} --resume '
              f'{html.escape(str(run.dir))}</code>)')
    headline = _headline(run)
    rows = ([("best architecture" if run.kind == "search" else "result", headline)] if headline else [])
    rows += [("folder", f"<code>{html.escape(one_line(run.dir.resolve()))}</code>"),
            ("kind", run.kind), ("space", space_txt), ("dataset", dataset),
            ("epochs done", f"{done if done is not None else '?'} of {planned if planned is not None else '?'}"),
            ("status", status)]
    if run.kind == "search":
        ctrl = (cfg.get("controller") or {}).get("kind", "?")
        rows.append(("controller", html.escape(str(ctrl))))
    if run.result and run.result.get("device"):
        rows.append(("device", html.escape(str(run.result["device"]))))
    mj = run.dir / rf.METRICS
    if mj.is_file():
        ts = datetime.datetime.fromtimestamp(mj.stat().st_mtime).isoformat(sep=" ", timespec="seconds")
        rows.append(("metrics last written", ts))
    if run.metrics.bad_lines:
        rows.append(("unreadable metric lines", f'<span class="warn">{run.metrics.bad_lines} skipped</span>'))
    if run.space_error:
        rows.append(("space", f'<span class="warn">could not be built: {html.escape(run.space_error)}</span>'))
    return _table(rows)


def _headline(run: Run) -> str | None:
    """The run's outcome in one line: the winner and its margin, or the test figure."""
    if run.kind != "search":
        if not run.result:
            return None
        figs = [(k, v) for k, v in run.result.items() if k.startswith("test_") and k != "test_loss"]
        return "; ".join(f"{html.escape(k.replace('_', ' '))} {_fmt(v)}" for k, v in figs) + " (result.json)"

    try:
        prov = load_arch(run.dir / rf.BEST_ARCH, follow=False)[2].get("provenance") or {}
    except Exception:  # not finished, or unreadable: the sections below say which
        return None
    score, se = rf.as_float(prov.get("score")), rf.as_float(prov.get("score_se"))
    text = f"score {_pm(score, se)}"
    c = _reward_c(run)
    if c is not None and score > 0:
        text += f" (valid perplexity {c / score:.4g})"
    margin = rf.margin_in_se(prov)
    if margin is not None:
        verdict = "clearly ahead" if margin >= 2 else "not a clear winner"
        text += f"; {margin:.1f} standard errors ahead of the runner-up: {verdict}"
    if prov.get("final_stage"):
        text += "; picked by the final stage's brief training"
    return text + ' (<a href="#candidates">candidates</a>)'


def _reward_c(run: Run) -> float | None:
    """c of a language model's score c / ppl (the paper's reward), when the score is that."""
    data = run.config.get("data") if isinstance(run.config.get("data"), dict) else {}
    search = run.config.get("search") if isinstance(run.config.get("search"), dict) else {}
    if data.get("dataset") not in ("ptb", "text") or not _paper_score(search.get("score")):
        return None
    lm = search.get("lm") if isinstance(search.get("lm"), dict) else search  # before search.lm: search.reward_c
    c = lm.get("reward_c", _LM_DEFAULTS["reward_c"])  # a key an older config.yaml may lack
    return float(c) if isinstance(c, (int, float)) and not isinstance(c, bool) else None


# The defaults of search.lm.*, as the run's config.yaml leaves them out
_LM_DEFAULTS = {f.name: f.default for f in dataclasses.fields(LMSearchSection)}


def _paper_score(score) -> bool:
    """search.score is the paper's reward, the supernet's score alone (config.py's
    ScoreSection); False for a section that is not a valid one (a run's file is not
    trusted)."""
    try:
        return from_dict(ScoreSection, score if isinstance(score, dict) else {}, "search.score").paper
    except (ConfigError, ValueError, TypeError):
        return False


def _score_unit(run: Run) -> str:
    c = _reward_c(run)
    if c is None:
        return ""
    return _note(f"A score is c / validation perplexity with c = {_fmt(c)} (the paper's reward): perplexity = "
                 f"{_fmt(c)} / score.")


def _verdict(run: Run) -> str:
    """The search's verdict in plain words, as the search wrote it when it finished
    (metrics.jsonl ``verdict/text``; enas/nas/verdict.py)."""
    said = run.metrics.texts.get("verdict/text")
    if not said:
        return _note("No verdict yet: a search writes it when it finishes (did the controller learn, does the "
                     "chosen architecture beat random ones on the supernet).")
    return f'<p class="verdict">{html.escape(said[-1][2])}</p>'


def _draw_arch(space, arch) -> bytes | None:
    draw = getattr(space, "draw", None)
    if draw is None:
        return None
    return produced(lambda png: draw(arch, png), "arch.png")


def _architecture(run: Run) -> str:
    if run.kind == "search":
        path, what = run.dir / rf.BEST_ARCH, "the final derive's winner (best_arch.yaml)"
        if not path.is_file():
            files = arch_files(run)
            if not files:
                return _note("No architecture derived yet (no best_arch.yaml, no archs/epoch_*.yaml).")
            path, what = files[-1][1], f"the architecture derived at epoch {files[-1][0]} (the run did not finish)"
    else:
        path, what = run.dir / rf.ARCH, "the retrained architecture (arch.yaml)"
        if not path.is_file():
            return _note("No arch.yaml in this folder.")
    try:
        space, arch, doc = load_arch(path, follow=False)
    except Exception as e:
        return _note(f'<span class="warn">{html.escape(str(e))}</span>')
    out = [f"<p>{html.escape(what)}</p>"]
    try:
        png = _draw_arch(space, arch)
    except Exception as e:  # a drawing is a nicety: say why it is missing and go on
        png = None
        out.append(_note(f"The space's drawing failed: {html.escape(f'{type(e).__name__}: {e}')}"))
        old = path.with_suffix(".png")
        try:
            png = read_regular(old, 64 * 2**20, follow=False)
        except OSError:
            png = None
    if png:
        out.append(img(png, f"{space.name} architecture"))
    elif getattr(space, "draw", None) is None:
        out.append(_note(f"The {html.escape(space.name)} space has no drawing."))
    prov = doc.get("provenance") or {}
    rows = [("epoch", _fmt(prov["epoch"]))] if "epoch" in prov else []
    if "score" in prov:
        rows.append(("score", _pm(rf.as_float(prov["score"]), rf.as_float(prov.get("score_se")))))
    if "score_is" in prov:
        rows.append(("score is", _fmt(prov["score_is"])))
    if "max_params" in prov:  # search.max_params, counted on the network to retrain
        rows.append(("parameters (budget)", f"{_fmt(prov.get('params'))} of at most {_fmt(prov['max_params'])}"))
    fd = prov.get("final_derive")
    if isinstance(fd, dict):
        for k, v in fd.items():
            text = f"{v:.1f}" if k == "margin_in_se" and isinstance(v, float) and math.isfinite(v) else _fmt(v)
            rows.append((f"final derive: {k.replace('_', ' ')}", text))
    if rows:
        out.append(_table(rows))
    text = doc.get("description") or space.describe(arch)
    out.append(f"<pre>{html.escape(str(text))}</pre>")
    return "\n".join(out)


def _candidates(run: Run) -> str:
    """The candidates in the order the search ranked them last: the winner first, beside
    it the scores it was picked by (final stage, final derive, last epoch's derive)."""
    ckpt = run.dir / rf.CHECKPOINT
    if not os.path.lexists(ckpt):
        return _note("No checkpoint.pt: the derive candidates are not available.")
    try:
        state = read(ckpt)
    except Exception as e:
        return _note(f'<span class="warn">checkpoint.pt could not be read: {html.escape(str(e))}</span>')
    if not isinstance(state, dict):
        return _note('<span class="warn">checkpoint.pt holds no mapping of values.</span>')
    final = state.get("final") if isinstance(state.get("final"), dict) else {}
    rows = candidate_rows(state)
    if not rows:
        return _note("The checkpoint holds no derive candidates yet.")
    trained = any("trained" in r for r in rows)
    finals = any("final" in r for r in rows)
    search = run.config.get("search") if isinstance(run.config.get("search"), dict) else {}
    cols = ["#"]
    if trained:
        cols.append(f"trained {_fmt(search.get('final_train_epochs', '?'))} epochs")
    if finals:
        cols.append("final derive")
    cols += ["last epoch's derive", "architecture"]
    body = []
    for i, r in enumerate(rows[:10], start=1):
        summary, desc = _arch_summary(run.space, r["arch"])
        mark = ' <span class="ok">(winner: best_arch.yaml)</span>' if final.get("arch") == r["arch"] else ""
        cells = [str(i)]
        for key in (["trained"] if trained else []) + (["final"] if finals else []) + ["derive"]:
            v = r.get(key)
            cells.append("not scored" if v is None else _pm(*v) if v[1] is not None else _fmt(v[0]))
        cells.append(f"<details><summary>{html.escape(summary)}{mark}</summary><pre>{html.escape(desc)}</pre>"
                     "</details>")
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    if trained:
        how = ("The final stage trained the best candidates of the final derive from scratch and picked the best "
               "on the validation split (first column); the rest were not trained.")
    elif finals:
        how = ("The final derive re-scored the best distinct candidates of the last epoch's derive, all on the same "
               "validation data, and picked the best (first score column).")
    else:
        how = ("The search has not finished: the last epoch's derive, each candidate sampled from the policy and "
               "scored on the same validation minibatches.")
    head = (f"<p>{how} Higher is better; &plusmn; one standard error. Click a row for the architecture.</p>"
            + _score_unit(run))
    return (head + '<table class="grid"><tr>' + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>"
            + "".join(body) + "</table>")


def candidate_rows(state: dict) -> list[dict]:
    """The checkpoint's candidates, best first by what picked the winner: trained
    candidates by their trained score, then the final derive's by its score, or (an
    unfinished search) the last derive's. Each row: arch and (value, se) pairs under
    "trained", "final", "derive" where the candidate has that score."""
    def pair(v, se=None):
        return (rf.as_float(v), None if se is None else rf.as_float(se))

    def key(arch) -> str:
        return json.dumps(arch, sort_keys=True, default=str)

    def best_first(rows, k):
        return sorted(rows, key=lambda r: -r[k][0] if math.isfinite(r[k][0]) else math.inf)

    last = [c for c in state.get("candidates") or [] if isinstance(c, dict) and isinstance(c.get("arch"), dict)]
    final = state.get("final") if isinstance(state.get("final"), dict) else {}
    finals = [c for c in final.get("candidates") or [] if isinstance(c, dict) and isinstance(c.get("arch"), dict)]
    trained = {key(c["arch"]): c for c in state.get("trained") or []
               if isinstance(c, dict) and isinstance(c.get("arch"), dict)}
    if not finals:
        return best_first([{"arch": c["arch"], "derive": pair(c.get("score"), c.get("se"))} for c in last], "derive")
    rows = []
    for c in finals:
        r = {"arch": c["arch"], "final": pair(c.get("score"), c.get("se")), "derive": pair(c.get("derive_score"))}
        t = trained.get(key(c["arch"]))
        if t is not None:
            r["trained"] = pair(t.get("score"), t.get("se"))
        rows.append(r)
    done = best_first([r for r in rows if "trained" in r], "trained")
    return done + best_first([r for r in rows if "trained" not in r], "final")


def _arch_summary(space, arch: dict) -> tuple[str, str]:
    """A one-line summary and the full description of an architecture."""
    if space is None:
        text = json.dumps(arch)
        return text[:120], text
    try:
        desc = space.describe(arch)
    except Exception:
        desc = json.dumps(arch)
    to_text = getattr(space, "to_text", None)
    if to_text is not None:
        try:
            text = to_text(arch)
            return (text[:240] + " ...") if len(text) > 240 else text, f"{desc}\n\n{text}"
        except Exception:
            pass
    lines = desc.splitlines()
    lines = lines if lines and lines[0].rstrip().endswith(":") else lines[1:]  # drop a one-line header
    lines = [re.sub(r"\s+", " ", ln.strip()) for ln in lines if ln.strip()]
    lines = [re.sub(r"\bnode (\d+)", r"\1", ln).replace(" <- ", "\u2190").replace(" = ", "=") for ln in lines]
    summary = " ".join(ln if ln.endswith(":") else ln + ";" for ln in lines).rstrip(";")
    return (summary[:240] + " ...") if len(summary) > 240 else summary, desc


def _warnings(run: Run) -> str:
    m = run.metrics
    flag = m.series.get("warning/collapse")
    msgs = {(s, e): t for s, e, t in m.texts.get("warning/message", [])}
    items = []
    if flag:
        for s, e, v in zip(flag.steps, flag.epochs, flag.values):
            if v:
                text = msgs.get((s, e))
                where = f"epoch {e}" if e is not None else f"step {s}"
                items.append(f"<li><b>{where}</b>: {html.escape(text) if text else 'collapse flag set'}</li>")
    others = sorted(k for k in list(m.series) + list(m.texts)
                    if k.startswith("warning/") and k not in ("warning/collapse", "warning/message"))
    for k in others:
        for s, e, t in m.texts.get(k, []):
            items.append(f"<li><b>{html.escape(k)}</b> (epoch {e if e is not None else '?'}): {html.escape(t)}</li>")
        if k in m.series:
            hits = [e if e is not None else s for s, e, v in zip(m.series[k].steps, m.series[k].epochs,
                                                                 m.series[k].values) if v]
            if hits:
                items.append(f"<li><b>{html.escape(k)}</b> set at {', '.join(map(str, hits))}</li>")
    if not items:
        if run.kind == "search":
            return '<p class="ok">No collapse warning was raised.</p>'
        return ""
    text_missing = flag and not msgs
    note = _note("metrics.jsonl holds only the flag, not the warning's text; the console and TensorBoard "
                 "(<code>warning/collapse</code>) have it.") if text_missing else ""
    return f'<div class="alert"><ul>{"".join(items)}</ul></div>{note}'


def _result(run: Run) -> str:
    if run.result is None:
        return _note("No result.json: the retrain has not finished.")
    rows = list(run.result.items())
    if run.result.get("valid_is_test") is True:
        # result.json repeats the test figure as valid_<metric> where the retrain's data
        # has no validation split of its own: one figure, named for what it is
        rows = [(f"{k} (the retrain has no separate validation split)" if k.startswith("test_") and k != "test_loss"
                 else k, v) for k, v in rows if not k.startswith("valid_")]
    return _table([(k, _fmt(v)) for k, v in rows])
