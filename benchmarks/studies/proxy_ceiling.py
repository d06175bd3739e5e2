"""Is a search on the CPU proxy held back by the proxy or by its supernet? (the study of
docs/experiments/nb201-proxy-depth.md, "On the 200-epoch table").

On each NAS-Bench-201 table that ships with enas it prints the Kendall tau-b of:

* stand-alone training on the proxy: the ground truth's uniform cells
  (``--ground-truth`` CSV of ``enas ground-truth``, seed 0 rows, the cells listed in
  ``--cells``), and the mean table percentile of the best of k of them picked by those
  accuracies, by the table itself for comparison;
* the supernet of a finished NB201 run on the same cells, scored by its validation
  accuracy and by its negative loss, and on the 200 cells ``enas table`` draws;
* with ``--depths``, the training-free scores on those 200 cells at the run's depth and
  at NB201's (``cells_per_stage`` 5).

    python benchmarks/studies/proxy_ceiling.py RUN --data-dir sample \\
        --ground-truth benchmarks/results/nb201_ground_truth.csv \\
        --cells benchmarks/results/nb201_uniform50_seed0.txt --depths 1 5
"""
from __future__ import annotations

import dataclasses
import random
import sys
from pathlib import Path

import numpy as np
import torch

import _study
from enas.errors import DataError
from enas.evaluate.against_table import load_tables
from enas.evaluate.compare import load_ground_truth, uniform_cells
from enas.evaluate.stats import kendall_tau_b, kendall_tau_b_se
from enas.nas import training_free
from enas.runs import reopen_search

DRAWS = 5000  # best-of-k draws: the mean percentile to about 0.3 points


def add_arguments(p):
    p.add_argument("run", help="a finished nb201 search run folder")
    p.add_argument("--data-dir", default="sample")
    p.add_argument("--ground-truth", required=True, help="CSV of `enas ground-truth` (arch, seed, test_accuracy)")
    p.add_argument("--cells", required=True, help="the uniform cells of the ground truth, one per line")
    p.add_argument("--depths", type=int, nargs="*", default=[], choices=range(1, 9), metavar="N",
                   help="cells_per_stage (1-8) for the training-free scores")


def tau(x, y) -> str:
    return f"{kendall_tau_b(x, y):.3f} (SE {kendall_tau_b_se(x, y):.3f})"


def run(args) -> int:
    torch.set_num_threads(1)
    _, by_seed, canon, _ = load_ground_truth(Path(args.ground_truth))
    alone = by_seed.get(0, {})
    cells = uniform_cells(Path(args.cells), canon, alone)
    if len(cells) < 3:
        raise DataError(f"{len(cells)} cells of {args.cells} have a seed-0 row in {args.ground_truth}; "
                        f"give at least 3 (the cells the ground truth trained)")
    search = reopen_search(Path(args.run), args.data_dir, torch.device("cpu"))
    tables = load_tables(search)
    head = tables[0][0]
    if not all(c in head.archs for c in cells):
        raise DataError(f"cells of {args.cells} are not architectures of the run's space ({search.space.name})")
    drawn = head.sample(200, 0)  # the cells `enas table` ranks (--cells 200 --seed 0)

    def supernet(texts):
        acc, neg_loss = [], []
        with torch.no_grad():
            for t in texts:
                r = search.task.evaluate(search.supernet, head.archs[t], "valid")
                acc.append(r["accuracy"])
                neg_loss.append(-r["loss"])
        return acc, neg_loss

    s_acc, s_loss = supernet(cells)
    d_acc, d_loss = supernet(drawn)
    free = {}
    for depth in args.depths:
        model_args = dataclasses.replace(search.model_args, cells_per_stage=depth)
        for name in training_free.NAMES:
            free[depth, name] = [training_free.score(name, search.space, head.archs[t], model_args, search.task)
                                 for t in drawn]
    print(f"supernet against stand-alone on the {len(cells)} cells: tau {tau(s_acc, [alone[c] for c in cells])}")
    for table, title in tables:
        y = [table.accuracy[c] for c in cells]
        print(title)
        print(f"  {len(cells)} cells: stand-alone {tau([alone[c] for c in cells], y)}, supernet accuracy "
              f"{tau(s_acc, y)}, negative loss {tau(s_loss, y)}")
        yd = [table.accuracy[t] for t in drawn]
        print(f"  200 drawn cells: supernet accuracy {tau(d_acc, yd)}, negative loss {tau(d_loss, yd)}")
        for (depth, name), v in free.items():
            print(f"  200 drawn cells, {name} at cells_per_stage {depth}: {tau(v, yd)}")
        rng = random.Random(0)
        for k in [k for k in (5, 10, 20) if k <= len(cells)]:
            by_alone, by_table = [], []
            for _ in range(DRAWS):
                pick = rng.sample(cells, k)
                by_alone.append(table.percentile(table.accuracy[max(pick, key=alone.get)]))
                by_table.append(table.percentile(max(table.accuracy[c] for c in pick)))
            by_alone = np.array(by_alone)
            print(f"  best of {k}: by stand-alone mean percentile {by_alone.mean():.1f} (at or above the 99th: "
                  f"{100 * np.mean(by_alone >= 99):.0f} %), by the table {np.mean(by_table):.1f}")
    return 0


def main(argv=None) -> int:
    return _study.main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
