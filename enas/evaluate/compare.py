"""Does the supernet rank like stand-alone training? Compare a ranking with your own
ground truth.

    enas compare benchmarks/results/nb201_ground_truth.csv \\
        --rank runs/nb201/ranks.csv --runs runs/nb201 runs/nb201-random [--json out.json]

Inputs:

* the ground-truth CSV of ``enas ground-truth`` (columns ``arch``,
  ``test_accuracy``, ``seed``, ...); an architecture trained with several seeds counts
  with its mean accuracy;
* ``--rank FILE``: an ``enas rank`` CSV (``arch``, ``score``, ``params``); a repeated
  arch counts with its mean score;
* ``--runs DIR ...``: search run folders; each one's ``best_arch.yaml`` is looked up.

Printed as ``name=value`` lines (and ``--json OUT``):

* the ground truth: architectures, rows, accuracy min / median / max, and where
  architectures have several seeds the seed-to-seed Kendall tau-b and Spearman rho
  (the ceiling any supernet ranking can reach against this table);
* with ``--rank``: over the architectures in both files, Kendall tau-b (ties
  handled), Spearman rho (Pearson correlation of average ranks) and the top-k
  overlap (``--topk``, default 5 and 10: how many of the k best by supernet score are
  among the k best by accuracy, and that count / k; ties broken by the arch text);
* with ``--runs``: the found cell's ground-truth accuracy and its percentile among
  the ground-truth cells (the share of the *other* cells it beats, ties counting
  half: 100 = best, 50 = what a uniformly random cell gets on average), or a note
  that it is not in the table yet.

Arch texts are compared in one canonical form (NB201 cell strings re-written by
the space, JSON mappings with sorted keys), so a hand-written list matches.
Tau, rho and percentiles come from enas/evaluate/stats.py (numpy only).
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from enas.storage import safeyaml
from enas.nas.archfile import load_arch
from enas.errors import DataError, brief, one_line
from enas.storage.files import check_out, write_out
from enas.storage.text import MAX_CSV_BYTES, NotText, read_text
from enas.evaluate.rank import arch_text, parse_arch_line
from enas.runs import reopen_search
from enas.nas.space import build_space
from enas.storage import runfolder
from enas.evaluate.against_table import policy_expectation
from enas.evaluate.stats import kendall_tau_b, percentile, spearman_rho, topk_overlap


class CompareError(DataError):
    """A user's mistake (missing file, wrong columns); one line, exit 2."""


# ---- reading ------------------------------------------------------------------------------

class Canon:
    """Canonical arch text: a space's text form re-written by the space, JSON/YAML
    mappings as sorted compact JSON."""

    def __init__(self, space_name: str | None):
        self.space = None
        if space_name:
            try:
                self.space = build_space(space_name)
            except Exception:  # noqa: BLE001 - a space that needs args (or none of that name): compare JSON only
                self.space = None

    def __call__(self, text: str) -> str:
        t = text.strip()
        if t.startswith("{"):
            try:  # a cell of anyone's CSV: no aliases, no deep nesting (enas/storage/safeyaml.py)
                return json.dumps(safeyaml.load(t), sort_keys=True, separators=(",", ":"))
            except (yaml.YAMLError, TypeError, ValueError):
                return t
        parse = getattr(self.space, "parse_text", None)
        if parse is not None:
            try:
                return self.space.to_text(parse(t))
            except Exception:  # noqa: BLE001 - not this space's text: keep as written
                return t
        return t


def _read_text(path: Path, what: str) -> str:
    """The text of a regular file of at most MAX_CSV_BYTES (a device, a FIFO or a huge
    file is refused instead of read forever or waited on)."""
    try:
        return read_text(path, MAX_CSV_BYTES)
    except FileNotFoundError:
        raise CompareError(f"{path} does not exist") from None
    except NotText as e:
        raise CompareError(f"{e}; give the {what}") from None
    except OSError as e:
        raise CompareError(f"{path}: {e.strerror or e}; give the {what}") from None


def _read_csv(path: Path, need: tuple[str, ...], what: str) -> list[tuple[int, dict]]:
    """(line, row) of every row of ``path``, whose header must name ``need``; a field over
    csv's limit, a NUL byte or a row with more fields than the header end in one line."""
    reader = csv.DictReader(io.StringIO(_read_text(path, what)))
    try:
        columns = reader.fieldnames or []
        missing = [c for c in need if c not in columns]
        if missing:
            raise CompareError(f"{path} has no column {brief(missing[0])} (columns: {brief(', '.join(columns))}); "
                               f"give the {what}")
        rows = []
        for row in reader:
            if None in row:
                raise CompareError(f"{path}, line {reader.line_num}: more fields than the header's "
                                   f"{len(columns)}")
            rows.append((reader.line_num, row))
    except csv.Error as e:
        raise CompareError(f"{path}, line {reader.line_num}: {e}") from None
    if not rows:
        raise CompareError(f"{path} has no rows")
    return rows


def _number(path: Path, line: int, column: str, value, kind=float):
    try:
        x = kind(value)
    except (TypeError, ValueError):
        raise CompareError(f"{path}, line {line}: {column} {brief(value, 40)} is not a number") from None
    if kind is float and not math.isfinite(x):
        raise CompareError(f"{path}, line {line}: {column} is {x}")
    return x


def load_ground_truth(path: Path) -> tuple[dict[str, float], dict[int, dict[str, float]], Canon, int]:
    """(mean accuracy by arch, {seed: {arch: accuracy}}, canonicaliser, rows)."""
    rows = _read_csv(path, ("arch", "test_accuracy"), "CSV of `enas ground-truth`")
    spaces = {r.get("space") for _, r in rows if r.get("space")}
    canon = Canon(next(iter(spaces)) if len(spaces) == 1 else None)
    by_arch: dict[str, list[float]] = {}
    by_seed: dict[int, dict[str, float]] = {}
    seen: dict[tuple[str, int], int] = {}
    for line, r in rows:
        acc = _number(path, line, "test_accuracy", r["test_accuracy"])
        a = canon(r["arch"] or "")
        seed = _number(path, line, "seed", r["seed"], int) if r.get("seed") not in (None, "") else 0
        if (a, seed) in seen:  # one training per (arch, seed): a second row is a copy or another recipe's
            raise CompareError(f"{path}, line {line}: architecture {brief(a, 80)} with seed {seed} again "
                               f"(first on line {seen[a, seed]}); keep one row per architecture and seed")
        seen[a, seed] = line
        by_arch.setdefault(a, []).append(acc)
        by_seed.setdefault(seed, {})[a] = acc
    return {a: statistics.mean(v) for a, v in by_arch.items()}, by_seed, canon, len(rows)


def load_rank(path: Path, canon: Canon) -> dict[str, float]:
    scores: dict[str, list[float]] = {}
    for line, r in _read_csv(path, ("arch", "score"), "CSV of `enas rank`"):
        try:
            s = float(r["score"])
        except (TypeError, ValueError):
            raise CompareError(f"{path}, line {line}: score {brief(r['score'], 40)} is not a number") from None
        if math.isfinite(s):  # enas rank writes nan for an architecture it could not score
            scores.setdefault(canon(r["arch"] or ""), []).append(s)
    return {a: statistics.mean(v) for a, v in scores.items()}


def uniform_cells(path: Path, canon: Canon, gt: dict[str, float]) -> list[str]:
    """The canonical texts of the cells listed in ``path`` (one a line, e.g. the ground
    truth's uniformly drawn cells) that ``gt`` holds, each once, in file order."""
    lines = _read_text(Path(path), "list of architectures, one a line").splitlines()
    texts = (canon(line.strip()) for line in lines if line.strip())
    return [t for t in dict.fromkeys(texts) if t in gt]


def run_arch(run_dir: Path, canon: Canon) -> tuple[str, dict]:
    path = Path(run_dir) / runfolder.BEST_ARCH
    if not path.exists():
        raise CompareError(f"{run_dir} has no best_arch.yaml (not a finished search run?)")
    space, arch, doc = load_arch(path)
    return canon(arch_text(space, arch)), doc.get("provenance") or {}


def run_policy_expectation(run_dir: Path, uniform: list[str], gt: dict[str, float]) -> dict[str, float]:
    """policy_expectation of a search run's trained policy over the ground truth's
    uniformly drawn cells (``uniform``: canonical texts)."""

    search = reopen_search(Path(run_dir), None, torch.device("cpu"))
    archs = [parse_arch_line(search.space, t) for t in uniform]
    return policy_expectation(search.policy, archs, [gt[t] for t in uniform])


# ---- the comparison -----------------------------------------------------------------------

def fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def compare(gt_path, rank_path=None, runs=(), topk=(5, 10)) -> dict:
    """Everything printed, as an ordered dict of name -> value."""
    truth, by_seed, canon, nrows = load_ground_truth(Path(gt_path))
    accs = list(truth.values())
    out: dict = {"ground_truth": str(gt_path), "gt_archs": len(truth), "gt_rows": nrows,
                 "gt_seeds": len(by_seed), "gt_accuracy_min": min(accs),
                 "gt_accuracy_median": statistics.median(accs), "gt_accuracy_max": max(accs)}
    # seed-to-seed reliability: every pair of seeds over the archs trained with both
    taus, rhos = [], []
    for s1, s2 in itertools.combinations(sorted(by_seed), 2):
        both = sorted(set(by_seed[s1]) & set(by_seed[s2]))
        if len(both) < 2:
            continue
        a, b = [by_seed[s1][x] for x in both], [by_seed[s2][x] for x in both]
        tau, rho = kendall_tau_b(a, b), spearman_rho(a, b)
        out[f"seed{s1}_vs_seed{s2}_archs"] = len(both)
        out[f"seed{s1}_vs_seed{s2}_kendall_tau_b"] = tau
        out[f"seed{s1}_vs_seed{s2}_spearman_rho"] = rho
        out[f"seed{s1}_vs_seed{s2}_mean_abs_diff"] = float(np.mean(np.abs(np.subtract(a, b))))
        taus.append(tau)
        rhos.append(rho)
    if taus:
        out["seed_kendall_tau_b_mean"] = float(np.mean(taus))
        out["seed_spearman_rho_mean"] = float(np.mean(rhos))
    if rank_path is not None:
        scores = load_rank(Path(rank_path), canon)
        common = sorted(set(scores) & set(truth))
        out["rank_file"] = str(rank_path)
        out["rank_archs"] = len(scores)
        out["common_archs"] = len(common)
        x, y = [scores[a] for a in common], [truth[a] for a in common]
        out["kendall_tau_b"] = kendall_tau_b(x, y)
        out["spearman_rho"] = spearman_rho(x, y)
        for k in topk:
            hit, used = topk_overlap(scores, truth, k)
            out[f"top{k}_k_used"] = used
            out[f"top{k}_overlap"] = hit
            out[f"top{k}_overlap_fraction"] = hit / used if used else math.nan
    for i, run in enumerate(runs, start=1):
        a, prov = run_arch(Path(run), canon)
        out[f"run{i}_dir"] = str(run)
        out[f"run{i}_arch"] = a
        if isinstance(prov.get("score"), (int, float)):
            out[f"run{i}_search_score"] = float(prov["score"])
        if a in truth:
            others = [v for b, v in truth.items() if b != a]
            out[f"run{i}_gt_accuracy"] = truth[a]
            out[f"run{i}_gt_percentile"] = percentile(truth[a], others)
        else:
            out[f"run{i}_gt_accuracy"] = None
            out[f"run{i}_note"] = ("not in the ground truth: add it with `enas ground-truth --archs` "
                                   "(same --config and --out)")
    return out


def add_arguments(p) -> None:
    """The options of ``enas compare`` (the CLI makes the parser)."""
    p.add_argument("ground_truth", help="CSV written by `enas ground-truth`")
    p.add_argument("--rank", help="CSV written by `enas rank` (arch, score, params)")
    p.add_argument("--runs", nargs="+", default=[], help="search run folders (their best_arch.yaml)")
    p.add_argument("--topk", type=int, nargs="+", default=[5, 10], help="k of the top-k overlap (default 5 10)")
    p.add_argument("--json", help="also write the figures as JSON")
    p.add_argument("--force", action="store_true", help="replace an existing --json file (never a run's own file)")


def run(args) -> int:
    """Print the comparison; user mistakes raise a UserError (one line, exit 2)."""
    if args.json:
        check_out(Path(args.json), args.force, option="--json")
    out = compare(args.ground_truth, args.rank, args.runs, args.topk)
    for k, v in out.items():  # file and folder names, arch texts: anyone's text, on one line each
        print(f"{k}={one_line(fmt(v))}")
    if out.get("common_archs") is not None and out["common_archs"] < 2:
        print("warning: fewer than 2 architectures in both files; rank the ground truth's cells with "
              "`enas rank RUN --archs LIST` (`enas ground-truth --write-archs LIST` writes it)", file=sys.stderr)
    if args.json:
        write_out(args.json, json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v)
                                         for k, v in out.items()}, indent=2) + "\n", args.force, option="--json")
    return 0
