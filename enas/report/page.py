"""The report page: one function per section, each returning escaped HTML, or "" when
it has nothing to say (sections.py, curves.py); ``render`` puts them together."""
from __future__ import annotations

import datetime
import html

from ..errors import printable
from .curves import MAX_GROUPS, MAX_PANELS, _all_figures, _policy, _retrain_curves, _search_curves
from .runfolder import Run
from .sections import (_architecture, _candidates, _identity, _result, _verdict, _warnings,
                       candidate_rows)
from .text import _fmt, _note, _pm, _table

__all__ = ["GENERATOR", "MAX_GROUPS", "MAX_PANELS", "render", "candidate_rows", "_fmt", "_note", "_pm",
           "_result", "_table"]


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
