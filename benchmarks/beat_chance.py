"""Does the search beat chance? Searches of three kinds against your own ground truth.

For each seed it runs, on the same data and sizes:

* ``paper``: ENAS as the paper runs it (the policy picks what the shared weights
  train, rewards on one validation minibatch, no warm-up);
* ``recipe``: ENAS with the recommended recipe of the config (README, "Does the
  search beat chance?");
* ``random``: random search with weight sharing (Li & Talwalkar 2019): uniform
  sampling, no controller, a derive among uniformly drawn candidates;

then scores the ground truth's architectures with each run's supernet (``enas rank``),
trains the cells the searches found that the ground truth lacks (ground_truth.py, same
recipe), and prints per run: Kendall tau-b of the supernet's scores against the ground
truth, the found cell's ground-truth accuracy and percentile, whether the collapse
warning fired, the final policy entropy, and wall times; then one summary line per
method. ``--jobs`` runs that many searches at once (one thread each). Everything is
resumable: a finished run, ranking or ground-truth row is not redone.

    python benchmarks/beat_chance.py --data-dir ../shared/data/cifar10-subset --seeds 0 1 2 3 4 --jobs 2
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from compare_ranking import kendall_tau_b, load_ground_truth, load_rank, percentile, run_arch  # noqa: E402

CONFIG = ROOT / "configs/smoke/nb201_search.yaml"
GT_CSV = ROOT / "benchmarks/results/nb201_ground_truth.csv"
GT_LIST = ROOT / "benchmarks/results/nb201_uniform50_seed0.txt"
GT_CONFIG = ROOT / "configs/smoke/nb201_retrain.yaml"
# The measurement's sizes: the children of the ground truth's recipe (16 channels, one
# cell per stage), 3,660 / 1,000 images of the subset, 30 epochs of 30 x 10 controller
# samples, 20 derive candidates scored on all 1,000 validation images.
SIZES = ["model.channels=16", "data.train_size=3660", "data.valid_size=1000", "search.epochs=30",
         "train.t0=30", "train.t_mul=1", "controller.updates_per_epoch=30", "controller.num_aggregate=10",
         "search.derive_samples=20", "search.derive_batches=0"]
METHODS = {
    "paper": ["controller.kind=enas", "search.uniform_shared=0.0", "search.controller_warmup_epochs=0",
              "search.reward_batches=1"],
    "recipe": ["controller.kind=enas"],  # the config as it ships
    "random": ["controller.kind=random"],
}


def sh(argv, log: Path, env=None) -> float:
    t0 = time.monotonic()
    with open(log, "a") as f:
        code = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    if code != 0:
        raise SystemExit(f"failed ({code}): {' '.join(map(str, argv))}; see {log}")
    return time.monotonic() - t0


def one(method: str, seed: int, args, env) -> dict:
    run = args.work / f"{method}-s{seed}"
    log = args.work / f"{method}-s{seed}.log"
    info = {"method": method, "seed": seed, "run": str(run)}
    timing = args.work / f"{method}-s{seed}.json"
    if timing.exists():
        info.update(json.loads(timing.read_text()))
    if not (run / "best_arch.yaml").exists() or "search_seconds" not in info:
        sets = [x for s in SIZES + METHODS[method] + [f"search.seed={seed}"] for x in ("--set", s)]
        if run.exists():  # an interrupted search continues
            argv = [sys.executable, "-m", "enas", "search", "--resume", str(run), "--device", "cpu"]
        else:
            argv = [sys.executable, "-m", "enas", "search", str(CONFIG), *sets, "--data-dir", str(args.data_dir),
                    "--run-dir", str(run), "--device", "cpu"]
        info["search_seconds"] = sh(argv, log, env)
        timing.write_text(json.dumps({"search_seconds": info["search_seconds"]}))
    ranks = run / "ranks-gt.csv"
    if not ranks.exists():
        info["rank_seconds"] = sh([sys.executable, "-m", "enas", "rank", str(run), "--archs", str(GT_LIST),
                                   "--out", str(ranks), "--device", "cpu"], log, env)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    info["collapse_warnings"] = sum(1 for r in rows if r.get("warning/collapse"))
    ent = [r["overview/entropy"] for r in rows if "overview/entropy" in r]
    info["entropy_first_last"] = (ent[0], ent[-1]) if ent else None
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, type=Path)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--work", type=Path, default=ROOT / "runs/beat_chance")
    p.add_argument("--json", type=Path, help="write the results here too")
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    args.data_dir = args.data_dir.resolve()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.monotonic()
    jobs = [(m, s) for s in args.seeds for m in args.methods]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda job: one(job[0], job[1], args, env), jobs))
    # the found cells the ground truth lacks: trained with its recipe (ground_truth.py skips known ones)
    found = args.work / "found.txt"
    gt, _, canon, _ = load_ground_truth(GT_CSV)
    texts = [run_arch(Path(r["run"]), canon)[0] for r in results]
    missing = sorted({t for t in texts if t not in gt})
    if missing:
        found.write_text("\n".join(missing) + "\n")
        sh([sys.executable, "benchmarks/ground_truth.py", "--archs", str(found), "--config", str(GT_CONFIG),
            "--data-dir", str(args.data_dir), "--out", str(GT_CSV), "--work-dir", str(ROOT / "runs/ground_truth/nb201"),
            "--jobs", str(args.jobs)], args.work / "ground_truth.log", env)
        gt, _, canon, _ = load_ground_truth(GT_CSV)
    uniform = {t for t in (line.strip() for line in GT_LIST.read_text().splitlines()) if t}
    pool_acc = [gt[canon(t)] for t in uniform if canon(t) in gt]
    for r, text in zip(results, texts):
        scores = load_rank(Path(r["run"]) / "ranks-gt.csv", canon)
        common = sorted(set(scores) & set(gt))
        r["kendall_tau_b"] = kendall_tau_b([scores[a] for a in common], [gt[a] for a in common])
        r["found"] = text
        r["found_accuracy"] = gt[text]
        r["found_percentile"] = percentile(gt[text], [a for a in pool_acc])
        print(f"{r['method']}_s{r['seed']}: tau_b={r['kendall_tau_b']:.3f} found_acc={r['found_accuracy']:.4f} "
              f"percentile={r['found_percentile']:.0f} collapse_warnings={r['collapse_warnings']} "
              f"entropy={r['entropy_first_last']} search_s={r['search_seconds']:.0f} found={text}", flush=True)
    by = {m: [r for r in results if r["method"] == m] for m in args.methods}
    for m, rs in by.items():
        taus = [r["kendall_tau_b"] for r in rs]
        accs = [r["found_accuracy"] for r in rs]
        line = (f"{m}: seeds={len(rs)} tau_b_mean={sum(taus) / len(taus):.3f} found_acc_mean={sum(accs) / len(accs):.4f}"
                f" collapsed_runs={sum(1 for r in rs if r['collapse_warnings'])}"
                f" search_minutes_mean={sum(r['search_seconds'] for r in rs) / len(rs) / 60:.1f}")
        if m != "random" and "random" in by:
            rnd = {r["seed"]: r for r in by["random"]}
            wins = sum(1 for r in rs if r["seed"] in rnd and r["found_accuracy"] > rnd[r["seed"]]["found_accuracy"])
            ge_tau = sum(1 for r in rs if r["seed"] in rnd and r["kendall_tau_b"] >= rnd[r["seed"]]["kendall_tau_b"])
            line += f" beats_random={wins}/{len(rs)} tau_at_least_random={ge_tau}/{len(rs)}"
        print(line, flush=True)
    print(f"wall_minutes={(time.monotonic() - t0) / 60:.1f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
