"""The report page: one function per section, each returning escaped HTML, or "" when
it has nothing to say; ``render`` puts them together."""
from __future__ import annotations

import datetime
import html
import json
import math
import os
import re
from typing import Any

import numpy as np

from ..archfile import load_arch
from ..checkpoint import read
from ..config import to_dict
from ..errors import one_line, printable
from ..files import produced, read_regular
from .charts import chart, heatmaps, img, small_multiples, xlabel
from .runfolder import NONFINITE, Run, Series, arch_files, epochs_done


def _table(rows: list[tuple[str, Any]], cls: str = "kv") -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="{cls}">{body}</table>'


def _fmt(v: Any) -> str:
    """A value as a person reads it: 4 significant digits, yes / no, none."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "NaN" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else f"{v:.4g}"
    if v is None:
        return "none"
    return html.escape(str(v))


def _pm(v: float, se: float) -> str:
    """``v +- se`` rounded to what the standard error allows: two significant digits of
    it, the value to the same decimal place (0.312 &plusmn; 0.016)."""
    if not (math.isfinite(v) and math.isfinite(se) and se > 0):
        return _fmt(v) + ("" if not math.isfinite(se) else f" &plusmn; {_fmt(se)}")
    digits = max(0, 1 - math.floor(math.log10(se)))
    return f"{v:.{digits}f} &plusmn; {se:.{digits}f}"


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


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
    mj = run.dir / "metrics.jsonl"
    if mj.is_file():
        ts = datetime.datetime.fromtimestamp(mj.stat().st_mtime).isoformat(sep=" ", timespec="seconds")
        rows.append(("metrics last written", ts))
    if run.metrics.bad_lines:
        rows.append(("unreadable metric lines", f'<span class="warn">{run.metrics.bad_lines} skipped</span>'))
    if run.space_error:
        rows.append(("space", f'<span class="warn">could not be built: {html.escape(run.space_error)}</span>'))
    return _table(rows)


def _chart(panels: list[dict], drawn: set, **kw) -> bytes:
    """``chart``, noting every series it draws (the "All logged figures" section skips them)."""
    for p in panels:
        for s, _, err in p["curves"]:
            drawn.update(x.name for x in (s, err) if x is not None)
    return chart(panels, **kw)


def _search_curves(run: Run, drawn: set) -> str:
    m = run.metrics
    out = []
    reward, baseline = m.get("controller/reward"), m.get("controller/baseline")
    if reward or baseline:
        curves = [(s, s.name.split("/")[-1], None) for s in (reward, baseline) if s]
        adv = m.get("controller/advantage")
        panels = [{"title": "controller reward and baseline", "xlabel": xlabel([c[0] for c in curves]),
                   "curves": curves}]
        if adv:
            panels.append({"title": "advantage (reward - baseline)", "xlabel": xlabel([adv]),
                           "curves": [(adv, "advantage", None)]})
        out.append(img(_chart(panels, drawn), "reward and baseline"))
    else:
        kind = (run.config.get("controller") or {}).get("kind", "?")
        out.append(_note(f"No reward or baseline was logged (controller.kind: <code>{html.escape(str(kind))}</code>"
                         "; a random controller is never trained)."))
    panels = []
    if m.get("controller/entropy"):
        panels.append({"title": "entropy of the sampled architectures (nats, per update)",
                       "xlabel": xlabel([m.get("controller/entropy")]),
                       "curves": [(m.get("controller/entropy"), "controller/entropy", None)]})
    # the policy's entropy per epoch, once: as a fraction of the uniform policy's where logged
    policy = m.get("overview/entropy_of_uniform") or m.get("policy/entropy")
    if policy:
        panels.append({"title": ("policy entropy, fraction of the uniform policy's (per epoch)"
                                 if policy.name.startswith("overview/") else "policy entropy (nats, per epoch)"),
                       "xlabel": xlabel([policy]), "curves": [(policy, policy.name, None)]})
        drawn.add("policy/entropy")  # the same curve in nats
    if panels:
        out.append(img(_chart(panels, drawn), "entropy"))
    loss = [s for s in (m.get("shared/loss"), m.get("shared/accuracy")) if s]
    if loss:
        panels = [{"title": f"shared weights: {s.name.split('/')[-1]}", "xlabel": xlabel([s]),
                   "curves": [(s, s.name, None)]} for s in loss]
        out.append(img(_chart(panels, drawn), "shared loss"))
    score = m.get("derive/score")
    if score:
        panels = [{"title": "derived architecture score (+- 1 standard error)", "xlabel": xlabel([score]),
                   "curves": [(score, "derive/score", m.get("derive/score_se"))]}]
        out.append(img(_chart(panels, drawn, width=7.0), "derived score"))
        drawn.update(k for k in m.series if k.startswith("overview/derived_"))  # the same score, in the task's units
    if not out:
        out.append(_note("No curves: metrics.jsonl is empty or missing."))
    return "\n".join(out)


def _metric_word(name: str) -> str:
    """The measured quantity in a figure's name: train/loss, overview/valid_loss -> loss."""
    return re.split(r"[/_]", name)[-1]


def _retrain_curves(run: Run, drawn: set) -> str:
    m = run.metrics
    out = []
    live = [s for s in m.series.values() if s.values and "result" not in s.name and "extra" not in s.name]
    loss = [s for s in live if _metric_word(s.name) == "loss"]
    panels = []
    for by_epoch, title in ((False, "training loss (per logging window)"), (True, "loss per epoch")):
        ss = [s for s in loss if s.by_epoch == by_epoch]
        if ss:
            panels.append({"title": title, "xlabel": xlabel(ss), "curves": [(s, s.name, None) for s in ss]})
    if panels:
        out.append(img(_chart(panels, drawn), "loss"))
    panels = []
    for metric in ("accuracy", "ppl", "perplexity"):
        for by_epoch in (False, True):
            ss = [s for s in live if _metric_word(s.name) == metric and s.by_epoch == by_epoch]
            if ss:
                panels.append({"title": {"ppl": "perplexity"}.get(metric, metric) + (" per epoch" if by_epoch else ""),
                               "xlabel": xlabel(ss), "curves": [(s, s.name, None) for s in ss]})
    if panels:
        out.append(img(_chart(panels, drawn), "accuracy or perplexity"))
    lrs = [s for s in live if _metric_word(s.name) == "lr"]
    lr = next((s for s in lrs if not s.by_epoch), lrs[0] if lrs else None)
    if lr:
        out.append(img(_chart([{"title": f"learning rate ({lr.name})", "xlabel": xlabel([lr]),
                                  "curves": [(lr, lr.name, None)]}], drawn, width=6.0, height=2.6), "learning rate"))
        drawn.update(s.name for s in lrs)  # the same schedule, per step or per epoch
    if not out:
        out.append(_note("No curves: metrics.jsonl is empty or missing."))
    return "\n".join(out)


# A metrics.jsonl of a few hundred KB can name thousands of figures; drawn, they would take
# minutes and gigabytes. An enas run logs a few dozen, in a handful of groups: the page
# draws at most MAX_PANELS per group and MAX_GROUPS groups, and says what it left out.
MAX_PANELS = 32
MAX_GROUPS = 16


def _capped(groups: dict, out: list, what: str) -> dict:
    """The first MAX_GROUPS of ``groups``; a note in ``out`` names how many are left out."""
    if len(groups) <= MAX_GROUPS:
        return groups
    out.append(_note(f"{len(groups) - MAX_GROUPS:,} more {what} are not drawn (the page draws at most "
                     f"{MAX_GROUPS} groups)."))
    return dict(list(groups.items())[:MAX_GROUPS])


def _policy(run: Run) -> str:
    """Heat maps of the policy's choice probabilities over epochs, one figure per decision group."""
    rows = [r for r in run.metrics.rows if any(k.startswith("policy/") and k != "policy/entropy" for k in r)]
    if not rows:
        return _note("No policy probabilities in metrics.jsonl.")
    epochs = [r.get("epoch", i) for i, r in enumerate(rows)]
    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k.startswith("policy/") and k != "policy/entropy"]
    groups: dict[str, list[tuple[str, list[str], list[str]]]] = {}  # group -> [(decision, choices, keys)]
    used = set()
    if run.space is not None:
        for d in run.space.decisions():
            labels = list(d.choices) if d.kind == "categorical" else [str(j) for j in range(d.size)]
            ks = [f"policy/{d.name}/{lab}" for lab in labels]
            if any(k in keys for k in ks):
                used.update(ks)
                if d.size > 1 or d.kind == "skip":  # a decision with one choice has nothing to show
                    groups.setdefault(d.group, []).append((d.name, labels, ks))
    for k in keys:  # figures the space does not declare (or no space): group by the decision's last word
        if k in used:
            continue
        name, _, choice = k[len("policy/"):].rpartition("/")
        if not name:
            continue
        g = groups.setdefault(name.rsplit("/", 1)[-1], [])
        for entry in g:
            if entry[0] == name:
                entry[1].append(choice)
                entry[2].append(k)
                break
        else:
            g.append((name, [choice], [k]))
    out = []
    for g, decisions in _capped(groups, out, "decision groups").items():
        panels = []
        if len(decisions) > MAX_PANELS:
            out.append(_note(f"group <code>{html.escape(one_line(g))}</code>: {len(decisions) - MAX_PANELS:,} more "
                             f"decisions are not drawn (the page draws at most {MAX_PANELS} per group)."))
        for name, labels, ks in decisions[:MAX_PANELS]:
            grid = np.array([[_as_float(r.get(k)) for r in rows] for k in ks], dtype=float)
            if len(labels) == 1 and np.all(grid == 1.0):  # no space to ask: a choice taken every time
                continue
            panels.append((name, labels, grid))
        if not panels:
            continue
        decisions = panels
        what = f"{len(decisions)} decision{'s' * (len(decisions) > 1)}"
        out.append(f"<h3>group <code>{html.escape(g)}</code> <span class=\"dim\">({what}; rows: choices, "
                   f"columns: epochs)</span></h3>")
        out.append(img(heatmaps(panels, epochs), f"policy heat maps, group {g}"))
    return "\n".join(out)


def _as_float(v) -> float:
    if isinstance(v, str):
        return NONFINITE.get(v.strip(), math.nan)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    return math.nan


def _draw_arch(space, arch) -> bytes | None:
    draw = getattr(space, "draw", None)
    if draw is None:
        return None
    return produced(lambda png: draw(arch, png), "arch.png")


def _architecture(run: Run) -> str:
    if run.kind == "search":
        path, what = run.dir / "best_arch.yaml", "the final derive's winner (best_arch.yaml)"
        if not path.is_file():
            files = arch_files(run)
            if not files:
                return _note("No architecture derived yet (no best_arch.yaml, no archs/epoch_*.yaml).")
            path, what = files[-1][1], f"the architecture derived at epoch {files[-1][0]} (the run did not finish)"
    else:
        path, what = run.dir / "arch.yaml", "the retrained architecture (arch.yaml)"
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
        rows.append(("score", _pm(_as_float(prov["score"]), _as_float(prov.get("score_se")))))
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
    ckpt = run.dir / "checkpoint.pt"
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


def _reward_c(run: Run) -> float | None:
    """c of a language model's score c / ppl (the paper's reward), when the score is that."""
    data = run.config.get("data") if isinstance(run.config.get("data"), dict) else {}
    search = run.config.get("search") if isinstance(run.config.get("search"), dict) else {}
    score = search.get("score") if isinstance(search.get("score"), dict) else {}
    if data.get("dataset") not in ("ptb", "text") or any(v for k, v in score.items() if k not in ("supernet",
                                                                                                      "reference")):
        return None
    lm = search.get("lm") if isinstance(search.get("lm"), dict) else search  # before search.lm: search.reward_c
    c = lm.get("reward_c", 80.0)
    return float(c) if isinstance(c, (int, float)) and not isinstance(c, bool) else None


def _score_unit(run: Run) -> str:
    c = _reward_c(run)
    if c is None:
        return ""
    return _note(f"A score is c / validation perplexity with c = {_fmt(c)} (the paper's reward): perplexity = "
                 f"{_fmt(c)} / score.")


def _headline(run: Run) -> str | None:
    """The run's outcome in one line: the winner and its margin, or the test figure."""
    if run.kind != "search":
        if not run.result:
            return None
        figs = [(k, v) for k, v in run.result.items() if k.startswith("test_") and k != "test_loss"]
        return "; ".join(f"{html.escape(k.replace('_', ' '))} {_fmt(v)}" for k, v in figs) + " (result.json)"

    try:
        prov = load_arch(run.dir / "best_arch.yaml", follow=False)[2].get("provenance") or {}
    except Exception:  # not finished, or unreadable: the sections below say which
        return None
    score, se = _as_float(prov.get("score")), _as_float(prov.get("score_se"))
    text = f"score {_pm(score, se)}"
    c = _reward_c(run)
    if c is not None and score > 0:
        text += f" (valid perplexity {c / score:.4g})"
    fd = prov.get("final_derive") if isinstance(prov.get("final_derive"), dict) else {}
    margin = fd.get("margin_in_se")
    if isinstance(margin, (int, float)) and not isinstance(margin, bool) and math.isfinite(margin):
        verdict = "clearly ahead" if margin >= 2 else "not a clear winner"
        text += f"; {margin:.1f} standard errors ahead of the runner-up: {verdict}"
    if prov.get("final_stage"):
        text += "; picked by the final stage's brief training"
    return text + ' (<a href="#candidates">candidates</a>)'



def _verdict(run: Run) -> str:
    """The search's verdict in plain words, as the search wrote it when it finished
    (metrics.jsonl ``verdict/text``; enas/verdict.py)."""
    said = run.metrics.texts.get("verdict/text")
    if not said:
        return _note("No verdict yet: a search writes it when it finishes (did the controller learn, does the "
                     "chosen architecture beat random ones on the supernet).")
    return f'<p class="verdict">{html.escape(said[-1][2])}</p>'


def candidate_rows(state: dict) -> list[dict]:
    """The checkpoint's candidates, best first by what picked the winner: trained
    candidates by their trained score, then the final derive's by its score, or (an
    unfinished search) the last derive's. Each row: arch and (value, se) pairs under
    "trained", "final", "derive" where the candidate has that score."""
    def pair(v, se=None):
        return (_as_float(v), None if se is None else _as_float(se))

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


def _all_figures(run: Run, drawn: set) -> str:
    """Every numeric figure of metrics.jsonl not drawn above, each once: a figure logged
    under two names with the same values is drawn under the first and named beside it."""
    m = run.metrics
    numeric = [s for s in m.series.values() if s.values]
    numeric = [s for s in numeric if not (s.name.startswith("policy/") and s.name != "policy/entropy")]
    def constant(s: Series) -> bool:
        return all(v == s.values[0] for v in s.values)  # NaN != NaN: a NaN series is drawn

    seen: dict[tuple, Series] = {}
    same: list[tuple[str, str]] = []
    rest = []
    for s in numeric:
        sig = (tuple(s.x), tuple(repr(v) for v in s.values))
        if sig in seen and not constant(s):  # two counters that stayed 0 are not one figure
            same.append((s.name, seen[sig].name))
        else:
            seen[sig] = s
            rest.append(s)
    singles = [s for s in rest if constant(s) and s.name not in drawn]
    curves = [s for s in rest if not constant(s) and s.name not in drawn]
    groups: dict[str, list[Series]] = {}
    for s in curves:
        groups.setdefault(s.name.split("/")[0] + "/" if "/" in s.name else "no prefix", []).append(s)
    out = []
    if drawn & {s.name for s in rest}:
        out.append(_note("The figures drawn in the sections above are not drawn again here."))
    for g, ss in _capped(groups, out, "figures").items():
        out.append(f"<h3><code>{html.escape(one_line(g))}</code> <span class=\"dim\">({len(ss)} figure"
                   f"{'s' * (len(ss) > 1)})</span></h3>")
        out.append(img(small_multiples(ss[:MAX_PANELS]), f"figures {one_line(g)}"))
        if len(ss) > MAX_PANELS:
            out.append(_note(f"{len(ss) - MAX_PANELS:,} more figures of this group are not drawn (the page draws "
                             f"at most {MAX_PANELS} per group)."))
    if singles:
        out.append("<h3>constant figures</h3>")
        out.append(_table([(s.name, _fmt(s.values[0]) + (f' <span class="dim">(logged {len(s.values)} times)</span>'
                                                         if len(s.values) > 1 else "")) for s in singles]))
    if same:
        out.append(_note("Logged under two names with the same values (drawn once): " + ", ".join(
            f"<code>{html.escape(a)}</code> = <code>{html.escape(b)}</code>" for a, b in same)))
    bad = [s for s in numeric if s.nonfinite]
    if bad:
        out.append(_note("Non-finite values (NaN/inf, drawn as red x on the top edge): "
                         + ", ".join(f"<code>{html.escape(s.name)}</code> {s.nonfinite}" for s in bad)))
    texts = sorted(k for k in m.texts if not k.startswith("warning/"))
    if texts:
        out.append(_table([(k, "<br>".join(html.escape(t) for _, _, t in m.texts[k][-5:])) for k in texts]))
    return "\n".join(out) if out else _note("No numeric figures in metrics.jsonl.")


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


_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;background:#f4f5f7;color:#222}
main{max-width:1180px;margin:0 auto;padding:20px 28px 60px;background:#fff;min-height:100vh}
h1{font-size:1.5em;margin:.2em 0 .6em}h2{font-size:1.2em;margin-top:2em;padding-bottom:.25em;
border-bottom:2px solid #3b5b92;color:#1f3b6b}h3{font-size:1em;margin:1.2em 0 .4em}
nav{background:#eef3fb;border-radius:6px;padding:8px 14px;font-size:.92em}nav a{margin-right:14px;color:#1f3b6b}
img{max-width:100%;height:auto;display:block;margin:8px 0}
table{border-collapse:collapse;font-size:.92em;margin:8px 0}th,td{padding:4px 10px;text-align:left;
vertical-align:top;border-bottom:1px solid #e3e6ea}table.kv th{color:#555;font-weight:600;white-space:nowrap}
table.grid th{background:#eef3fb}pre{background:#f6f8fa;border:1px solid #e3e6ea;border-radius:4px;padding:10px;
overflow-x:auto;font-size:.85em;line-height:1.35}code{font-size:.92em}
.note{color:#555;font-size:.92em}.dim{color:#777;font-weight:normal;font-size:.9em}.ok{color:#2e7d32}
.warn{color:#b71c1c}.alert{background:#fdecea;border-left:4px solid #c62828;padding:4px 12px;border-radius:4px}
pre.config{columns:3 300px;column-gap:24px}.verdict{font-size:1.05em;background:#eef3fb;padding:8px 12px;border-radius:4px}
details summary{cursor:pointer;font-family:monospace;font-size:.9em}footer{color:#888;font-size:.8em;margin-top:3em}
"""


# The mark of a page this module wrote: a report is derived from its run, so enas report
# replaces a page bearing it without --force, and nothing else.
GENERATOR = '<meta name="generator" content="enas report">'


def render(run: Run) -> str:
    drawn: set = set()  # series drawn by a section: "All logged figures" leaves them out
    if run.kind == "search":
        sections = [("verdict", "Verdict", _verdict(run)),
                    ("identity", "Run", _identity(run)),
                    ("warnings", "Collapse warnings", _warnings(run)),
                    ("curves", "Reward, baseline, entropy, loss", _search_curves(run, drawn)),
                    ("policy", "Policy: choice probabilities over epochs", _policy(run)),
                    ("arch", "Best architecture", _architecture(run)),
                    ("candidates", "Candidates, the winner first", _candidates(run)),
                    ("figures", "All logged figures", _all_figures(run, drawn))]
    else:
        sections = [("identity", "Run", _identity(run)),
                    ("result", "Result (result.json)", _result(run)),
                    ("curves", "Loss, accuracy / perplexity", _retrain_curves(run, drawn)),
                    ("arch", "Architecture", _architecture(run)),
                    ("warnings", "Warnings", _warnings(run)),
                    ("figures", "All logged figures", _all_figures(run, drawn))]
    config = f'<pre class="config">{html.escape(run.config_text)}</pre>' if run.config_text else ""
    sections.append(("config", "Config (config.yaml)", config or _note("No config.yaml.")))
    sections = [s for s in sections if s[2]]
    nav = "".join(f'<a href="#{sid}">{html.escape(title)}</a>' for sid, title, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{html.escape(title)}</h2>\n{content}\n</section>\n'
                   for sid, title, content in sections)
    title = f"enas {run.kind} report: {run.dir.resolve().name}"
    now = datetime.datetime.now().isoformat(sep=" ", timespec="seconds")
    # control characters and lone surrogates from the run's files (names, texts, the config)
    # are shown escaped: they would reach the reader's browser, or fail to encode
    return printable(f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">{GENERATOR}'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n"
            f"<body><main><h1>{html.escape(title)}</h1><nav>{nav}</nav>\n{body}"
            f"<footer>written by enas.report on {now}; self-contained: no scripts, no external resources"
            f"</footer></main></body></html>\n")
