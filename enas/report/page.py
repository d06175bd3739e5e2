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

from ..files import produced, read_regular
from .charts import chart, heatmaps, img, small_multiples, xlabel
from .runfolder import NONFINITE, Run, Series, arch_files, epochs_done



def _table(rows: list[tuple[str, Any]], cls: str = "kv") -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="{cls}">{body}</table>'


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "NaN" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else f"{v:.6g}"
    if v is None:
        return "&ndash;"
    return html.escape(str(v))


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def _identity(run: Run) -> str:
    done, planned = epochs_done(run)
    cfg = run.config
    space = cfg.get("space") or {}
    if not space and run.space is not None:
        from ..config import to_dict

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
    rows = [("folder", f"<code>{html.escape(str(run.dir.resolve()))}</code>"),
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


def _search_curves(run: Run) -> str:
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
        out.append(img(chart(panels), "reward and baseline"))
    else:
        kind = (run.config.get("controller") or {}).get("kind", "?")
        out.append(_note(f"No reward or baseline was logged (controller.kind: <code>{html.escape(str(kind))}</code>"
                         "; a random controller is never trained)."))
    ent = [s for s in (m.get("controller/entropy"), m.get("policy/entropy")) if s]
    if ent:
        panels = [{"title": {"controller/entropy": "entropy of the sampled architectures (per update)",
                             "policy/entropy": "policy entropy (per epoch)"}[s.name],
                   "xlabel": xlabel([s]), "curves": [(s, s.name, None)]} for s in ent]
        out.append(img(chart(panels), "entropy"))
    loss = [s for s in (m.get("shared/loss"), m.get("shared/accuracy")) if s]
    if loss:
        panels = [{"title": f"shared weights: {s.name.split('/')[-1]}", "xlabel": xlabel([s]),
                   "curves": [(s, s.name, None)]} for s in loss]
        out.append(img(chart(panels), "shared loss"))
    score = m.get("derive/score")
    if score:
        panels = [{"title": "derived architecture score (+- 1 standard error)", "xlabel": xlabel([score]),
                   "curves": [(score, "derive/score", m.get("derive/score_se"))]}]
        out.append(img(chart(panels, width=7.0), "derived score"))
    if not out:
        out.append(_note("No curves: metrics.jsonl is empty or missing."))
    return "\n".join(out)


def _metric_word(name: str) -> str:
    """The measured quantity in a figure's name: train/loss, overview/valid_loss -> loss."""
    return re.split(r"[/_]", name)[-1]


def _retrain_curves(run: Run) -> str:
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
        out.append(img(chart(panels), "loss"))
    panels = []
    for metric in ("accuracy", "ppl", "perplexity"):
        for by_epoch in (False, True):
            ss = [s for s in live if _metric_word(s.name) == metric and s.by_epoch == by_epoch]
            if ss:
                panels.append({"title": {"ppl": "perplexity"}.get(metric, metric) + (" per epoch" if by_epoch else ""),
                               "xlabel": xlabel(ss), "curves": [(s, s.name, None) for s in ss]})
    if panels:
        out.append(img(chart(panels), "accuracy or perplexity"))
    lrs = [s for s in live if _metric_word(s.name) == "lr"]
    lr = next((s for s in lrs if not s.by_epoch), lrs[0] if lrs else None)
    if lr:
        out.append(img(chart([{"title": f"learning rate ({lr.name})", "xlabel": xlabel([lr]),
                                 "curves": [(lr, lr.name, None)]}], width=6.0, height=2.6), "learning rate"))
    if not out:
        out.append(_note("No curves: metrics.jsonl is empty or missing."))
    return "\n".join(out)


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
                groups.setdefault(d.group, []).append((d.name, labels, ks))
                used.update(ks)
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
    for g, decisions in groups.items():
        panels = []
        for name, labels, ks in decisions:
            grid = np.array([[_as_float(r.get(k)) for r in rows] for k in ks], dtype=float)
            panels.append((name, labels, grid))
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
    from ..archfile import load_arch

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
    rows = []
    for k in ("epoch", "score", "score_se", "score_is"):
        if k in prov:
            rows.append((k, _fmt(prov[k])))
    fd = prov.get("final_derive")
    if isinstance(fd, dict):
        for k, v in fd.items():
            rows.append((f"final derive: {k.replace('_', ' ')}", _fmt(v)))
    if rows:
        out.append(_table(rows))
    text = doc.get("description") or space.describe(arch)
    out.append(f"<pre>{html.escape(str(text))}</pre>")
    return "\n".join(out)


def _candidates(run: Run) -> str:
    from ..checkpoint import read

    ckpt = run.dir / "checkpoint.pt"
    if not os.path.lexists(ckpt):
        return _note("No checkpoint.pt: the derive candidates are not available.")
    try:
        state = read(ckpt)
    except Exception as e:
        return _note(f'<span class="warn">checkpoint.pt could not be read: {html.escape(str(e))}</span>')
    if not isinstance(state, dict):
        return _note('<span class="warn">checkpoint.pt holds no mapping of values.</span>')
    cands = state.get("candidates") or []
    final = state.get("final") or {}
    if not cands:
        return _note("The checkpoint holds no derive candidates yet.")
    cands = sorted(cands, key=lambda c: _as_float(c.get("score")) if math.isfinite(_as_float(c.get("score")))
                   else -math.inf, reverse=True)
    rows = []
    for i, c in enumerate(cands[:10], start=1):
        arch = c.get("arch") or {}
        summary, desc = _arch_summary(run.space, arch)
        mark = ' <span class="ok">(final winner)</span>' if final.get("arch") == arch else ""
        rows.append(f"<tr><td>{i}</td><td>{_fmt(_as_float(c.get('score')))}</td><td>{_fmt(_as_float(c.get('se')))}"
                    f"</td><td><details><summary>{html.escape(summary)}{mark}</summary><pre>{html.escape(desc)}"
                    f"</pre></details></td></tr>")
    head = ("<p>The last epoch's derive: each candidate sampled from the policy and scored on the same "
            "validation minibatches (higher is better); click a row for the architecture.</p>")
    if final:
        head += (f"<p>Final derive winner: score {_fmt(_as_float(final.get('score')))} "
                 f"&plusmn; {_fmt(_as_float(final.get('se')))} (standard error), epoch {_fmt(final.get('epoch'))}.</p>")
    return (head + '<table class="grid"><tr><th>#</th><th>score</th><th>std. error</th><th>architecture</th></tr>'
            + "".join(rows) + "</table>")


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


def _all_figures(run: Run) -> str:
    m = run.metrics
    numeric = [s for s in m.series.values() if s.values]
    numeric = [s for s in numeric if not (s.name.startswith("policy/") and s.name != "policy/entropy")]
    def constant(s: Series) -> bool:
        return all(v == s.values[0] for v in s.values)  # NaN != NaN: a NaN series is drawn

    singles = [s for s in numeric if constant(s)]
    curves = [s for s in numeric if not constant(s)]
    groups: dict[str, list[Series]] = {}
    for s in curves:
        groups.setdefault(s.name.split("/")[0] + "/" if "/" in s.name else "no prefix", []).append(s)
    out = []
    for g, ss in groups.items():
        out.append(f"<h3><code>{html.escape(g)}</code> <span class=\"dim\">({len(ss)} figure"
                   f"{'s' * (len(ss) > 1)})</span></h3>")
        out.append(img(small_multiples(ss), f"figures {g}"))
    if singles:
        out.append("<h3>constant figures</h3>")
        out.append(_table([(s.name, _fmt(s.values[0]) + (f' <span class="dim">(logged {len(s.values)} times)</span>'
                                                         if len(s.values) > 1 else "")) for s in singles]))
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
    return _table([(k, _fmt(v)) for k, v in run.result.items()])


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
pre.config{columns:3 300px;column-gap:24px}
details summary{cursor:pointer;font-family:monospace;font-size:.9em}footer{color:#888;font-size:.8em;margin-top:3em}
"""


def render(run: Run) -> str:
    if run.kind == "search":
        sections = [("identity", "Run", _identity(run)),
                    ("warnings", "Collapse warnings", _warnings(run)),
                    ("curves", "Reward, baseline, entropy, loss", _search_curves(run)),
                    ("policy", "Policy: choice probabilities over epochs", _policy(run)),
                    ("arch", "Best architecture", _architecture(run)),
                    ("candidates", "Top derive candidates", _candidates(run)),
                    ("figures", "All logged figures", _all_figures(run))]
    else:
        sections = [("identity", "Run", _identity(run)),
                    ("result", "Result (result.json)", _result(run)),
                    ("curves", "Loss, accuracy / perplexity", _retrain_curves(run)),
                    ("arch", "Architecture", _architecture(run)),
                    ("warnings", "Warnings", _warnings(run)),
                    ("figures", "All logged figures", _all_figures(run))]
    config = f'<pre class="config">{html.escape(run.config_text)}</pre>' if run.config_text else ""
    sections.append(("config", "Config (config.yaml)", config or _note("No config.yaml.")))
    sections = [s for s in sections if s[2]]
    nav = "".join(f'<a href="#{sid}">{html.escape(title)}</a>' for sid, title, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{html.escape(title)}</h2>\n{content}\n</section>\n'
                   for sid, title, content in sections)
    title = f"enas {run.kind} report: {run.dir.resolve().name}"
    now = datetime.datetime.now().isoformat(sep=" ", timespec="seconds")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n"
            f"<body><main><h1>{html.escape(title)}</h1><nav>{nav}</nav>\n{body}"
            f"<footer>written by enas.report on {now}; self-contained: no scripts, no external resources"
            f"</footer></main></body></html>\n")
