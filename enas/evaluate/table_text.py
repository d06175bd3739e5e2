"""``enas table``'s figures as a person reads them: one aligned block per table and a
verdict line in plain words (``--json`` prints the same figures for machines)."""
from __future__ import annotations

import math
from pathlib import Path

from enas.errors import printable

NAMES = {"run": "run's score", "supernet": "supernet alone", "params": "parameter count (floor)",
         "synflow": "synflow (floor)", "naswot": "naswot (floor)"}
FLOORS = ("params", "synflow", "naswot")
WIDTH = 28  # the first column


def plain_json(value):
    """``value`` with every non-finite float as None: strict JSON (null) for any reader."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    return value


def render(out: dict) -> str:
    """Every table's block, the headline first."""
    fit = "max_params" in out  # the run's budget: everything drawn fits it
    among = f"the table's cells that fit search.max_params = {out['max_params']:,}" if fit else "the table"
    head = (f"{printable(out['run'])}: {out['cells']} cells drawn from {among} (seed {out['seed']}); random "
            f"search with weight sharing: {len(out.get('random_picks', []))} draws of {out['random_candidates']} "
            f"candidates{' that fit' if fit else ''}")
    return "\n\n".join([head] + [_block(t, out) for t in out["tables"]])


def _row(name: str, text: str) -> str:
    return f"  {name:<{WIDTH}}{text}"


def _pm(v: float, se: float) -> str:
    return f"{v:6.3f} +- {se:5.3f}" if math.isfinite(v) else f"{'n/a':>6}{'':10}"


def _pct(v: float) -> str:
    return f"{v:5.1f}" if math.isfinite(v) else "  n/a"


def _block(t: dict, out: dict) -> str:
    where = Path(t["table"]).name if t["title"] else t["table"]  # a shipped table: its title says what it is
    lines = [t["title"] or f"table {printable(t['table'])}",
             f"  {printable(where)}: {t['table_rows']:,} rows, accuracy column {printable(t['metric'])}"]
    if "fit_rows" in t:
        lines.append(f"  {t['fit_rows']:,} rows fit search.max_params = {out['max_params']:,} (counted as the search "
                     f"counts, on the network to retrain); the ranked cells fit it")
    names = [k[4:] for k in t if k.startswith("tau_") and not k.endswith(("_se", "_within"))]
    within = "within_pairs" in t
    pairs = f"   within equal parameter counts ({t['within_pairs']:,} pairs)" if within else ""
    lines.append(_row(f"ranking of {t['cells']} cells", f"Kendall tau-b +- SE{pairs}"))
    for n in names:
        w = (_pm(t[f"tau_{n}_within"], t[f"tau_{n}_within_se"]) if f"tau_{n}_within" in t else "     -") \
            if within else ""
        lines.append(_row(NAMES.get(n, n), f"{_pm(t[f'tau_{n}'], t[f'tau_{n}_se'])}     {w}".rstrip()))
    lines.append(_row("", "percentile among all rows (100 = the best cell)"))
    lines += _placed(t, _key, f"  ({printable(t['metric'])} {t.get('found_accuracy', math.nan):.4g})",
                     f"estimated from {t['cells']} cells, effective sample size {t['policy_ess']:.1f}; ")
    if "fit_rows" in t:
        lines.append(_row("", f"percentile among the {t['fit_rows']:,} rows that fit (100 = the best that fits)"))
        lines += _placed(t, _fit_key, "", "")
    lines.append("  verdict: " + verdict(t))
    return "\n".join(lines)


def _key(name: str) -> str:
    return name


def _fit_key(name: str) -> str:
    """A percentile's key among the rows that fit the budget (against_table: ``*_fit_percentile*``)."""
    return name.replace("percentile", "fit_percentile")


def _placed(t: dict, key, found_note: str, policy_note: str) -> list[str]:
    """The percentile rows: the found cell, the largest ranked cell, random search, the
    policy's samples; ``key`` names the percentiles (among all rows or those that fit)."""
    lines = []
    if key("found_percentile") in t:
        lines.append(_row("found cell", f"{_pct(t[key('found_percentile')])}{found_note}"))
    if key("found_before_final_stage_percentile") in t:
        lines.append(_row("  before the final stage", _pct(t[key("found_before_final_stage_percentile")])))
    if key("candidates_percentiles") in t:
        each = t[key("candidates_percentiles")]
        best = t[key("candidates_best_percentile")]
        at = f"  (number {each.index(best) + 1} of {len(each)} in the run's order)" if best in each else ""
        lines.append(_row("  best final candidate", f"{_pct(best)}{at}"))
    if key("largest_percentile") in t:
        lines.append(_row("largest of the ranked cells", _pct(t[key("largest_percentile")])))
    if t[key("random_percentiles")]:
        each = ", ".join(_pct(p).strip() for p in t[key("random_percentiles")])
        lines.append(_row(f"random search ({len(t[key('random_percentiles')])} draws)",
                          f"{_pct(t[key('random_mean_percentile')])}  mean of {each}"))
    if key("random_before_final_stage_mean_percentile") in t:
        lines.append(_row("  before the final stage", _pct(t[key("random_before_final_stage_mean_percentile")])))
    lines.append(_row("the policy's samples", f"{_pct(t[key('policy_mean_percentile')])}  mean ({policy_note}"
                                              f"uniform: {t[key('uniform_mean_percentile')]:.1f})"))
    return lines


def verdict(t: dict) -> str:
    """One table's figures in plain words: does the found cell beat random search and the
    largest cell, does the supernet rank above counting parameters."""
    parts = []
    key = _fit_key if "fit_rows" in t else _key  # under a budget: among the cells that fit
    found = t.get(key("found_percentile"), math.nan)
    if math.isfinite(found):
        against = []
        for what, name in (("random search", "random_mean_percentile"),
                           ("the largest ranked cell", "largest_percentile")):
            other = t.get(key(name), math.nan)
            if math.isfinite(other):
                word = "beats" if found > other else "does not beat"
                against.append(f"{word} {what} ({found:.1f} vs {other:.1f})")
        among = "among the cells that fit, " if "fit_rows" in t else ""
        parts.append(f"{among}the found cell " + (" and ".join(against) if against else
                                                   f"is at percentile {found:.1f}"))
    elif key("found_percentile") in t:
        parts.append("the found cell is not in this table")
    sup, floor = t.get("tau_supernet", math.nan), t.get("tau_params", math.nan)
    if math.isfinite(sup) and math.isfinite(floor):
        se = math.hypot(t["tau_supernet_se"], t["tau_params_se"])
        z = (sup - floor) / se if se > 0 else math.copysign(math.inf, sup - floor) if sup != floor else 0.0
        if abs(z) < 2:
            where = "level with the parameter-count floor (under 2 standard errors apart; "
        else:
            where = f"{'above' if z > 0 else 'below'} the parameter-count floor by {abs(z):.1f} standard errors ("
        parts.append(f"the supernet ranks {where}tau {sup:.3f} vs {floor:.3f})")
    floors = [t[f"tau_{f}"] for f in FLOORS if math.isfinite(t.get(f"tau_{f}", math.nan))]
    run, best = t.get("tau_run", math.nan), max(floors, default=math.nan)
    if math.isfinite(run) and math.isfinite(best):
        word = "ranks above" if run > best else "does not rank above"
        parts.append(f"the run's score {word} every training-free floor (tau {run:.3f}, the best floor "
                     f"{best:.3f})")
    return "; ".join(parts) + "." if parts else "nothing to compare (no found cell, no scores)."
