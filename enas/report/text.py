"""The report's small pieces of HTML: a key-value table, a figure as a person reads it,
a value with its standard error, a note. Every text that came from the run is escaped
here or by the caller (html.escape); render() escapes what is left (errors.printable)."""
from __future__ import annotations

import html
import math
from typing import Any


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
