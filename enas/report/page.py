"""The report page: one function per section, each returning escaped HTML, or "" when
it has nothing to say; ``render`` puts them together. The charts are drawn here (the
headline curves, the policy's heat maps, every other logged figure, each once); the
sections that read the run's other files are in sections.py."""
from __future__ import annotations

import datetime
import html
import re

import numpy as np

from enas.errors import one_line, printable
from enas.storage import runfolder as rf
from enas.report.charts import chart, heatmaps, img, small_multiples, xlabel
from enas.report.runfolder import Run, Series
from enas.report.sections import (_architecture, _candidates, _identity, _result, _verdict, _warnings,
                       candidate_rows)
from enas.report.text import _fmt, _note, _pm, _table

__all__ = ["GENERATOR", "render", "candidate_rows", "_fmt", "_note", "_pm", "_result", "_table"]


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
        decisions = run.space.decisions()
        for d in decisions:  # every figure the space declares, drawn or not
            ks = [rf.policy_key(d.name, lab) for lab in rf.policy_labels(d)]
            if any(k in keys for k in ks):
                used.update(ks)
        for g, ds in rf.policy_groups(decisions).items():
            for d, labels in ds:
                ks = [rf.policy_key(d.name, lab) for lab in labels]
                if any(k in keys for k in ks):
                    groups.setdefault(g, []).append((d.name, labels, ks))
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
            grid = np.array([[rf.as_float(r.get(k)) for r in rows] for k in ks], dtype=float)
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
