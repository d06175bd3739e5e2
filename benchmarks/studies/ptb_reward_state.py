"""How the state a PTB reward starts from changes the reward (the choice behind
``search.lm.reward_warmup``).

A controller reward is c / ppl on one validation window. This script takes a search
run's trained supernet, samples architectures uniformly, and scores each on the same
validation windows starting from

* ``carried``: the state the previously scored (different, random) architecture left,
  what a reward that carries the state from one sample to the next sees;
* ``zero``: a zero state;
* ``warmup W``: a zero state run through the W tokens before the window by the same
  architecture (not scored).

For each it prints the mean Spearman rho, over windows, between the one-window rewards
and the architecture's reward on the whole validation split (carried state over every
window, its own architecture only), and, for ``carried``, how much a reward moves when
only the previous architecture changes (mean absolute change relative to the reward).

    python benchmarks/studies/ptb_reward_state.py RUN_DIR --data-dir DIR [--archs 40] [--windows 8]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from enas.nas.controller import RandomPolicy
from enas.data.text import get_window
from enas.runs import reopen_search


def spearman(a, b) -> float:
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--archs", type=int, default=40)
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--warmups", default="10,35")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.monotonic()
    search = reopen_search(args.run_dir, args.data_dir, torch.device("cpu"))
    task, model = search.task, search.supernet
    model.eval()
    g = torch.Generator().manual_seed(args.seed)
    pol = RandomPolicy(search.space.decisions())
    archs = pol(args.archs, generator=g).archs
    others = pol(args.archs, generator=g).archs  # the "previous" sample of each reward
    others2 = pol(args.archs, generator=g).archs
    src, L = task.valid_data, task.cfg.bptt
    warmups = [int(w) for w in args.warmups.split(",") if w]
    first = max(warmups + [L])
    starts = [first + k * L for k in range(args.windows) if first + (k + 1) * L < src.size(0)]

    def ce(arch, start, hidden):
        x, y = get_window(src, start, L)
        logits, h, _ = model(x, hidden, arch)
        return float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))), h

    def state_after(arch, start, length):
        h = model.init_hidden(src.size(1))
        if length:
            x, _ = get_window(src, start - length, length)
            _, h, _ = model(x, h, arch)
        return h

    with torch.no_grad():
        full = [task.score(model, a, 0)[0] for a in archs]
        rows = {"carried": [], "zero": [], **{f"warmup {w}": [] for w in warmups}}
        moved = []
        for s in starts:
            r = {k: [] for k in rows}
            for a, b, b2 in zip(archs, others, others2):
                zero = model.init_hidden(src.size(1))
                c1, _ = ce(a, s, state_after(b, s, L))  # the state another arch left
                c2, _ = ce(a, s, state_after(b2, s, L))
                moved.append(abs(np.exp(-c1) - np.exp(-c2)) / np.exp(-c1))
                r["carried"].append(-c1)
                r["zero"].append(-ce(a, s, zero)[0])
                for w in warmups:
                    r[f"warmup {w}"].append(-ce(a, s, state_after(a, s, w))[0])
            for k in rows:
                rows[k].append(spearman(r[k], full))
    for k, v in rows.items():
        print(f"rho_vs_full[{k}]={np.mean(v):.3f}  (windows {len(v)}, min {np.min(v):.3f})")
    print(f"carried_reward_change_when_previous_arch_changes={np.mean(moved):.3f}")
    print(f"archs={len(archs)} windows={len(starts)} seconds={time.monotonic() - t0:.1f}")


if __name__ == "__main__":
    main()
