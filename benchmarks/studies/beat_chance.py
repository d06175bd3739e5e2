"""Does the search beat chance? Searches of three kinds against a ground truth of our own
(the study of docs/experiments/beat-chance.md).

For each seed it runs, on the same data and sizes:

* ``paper``: ENAS as the paper runs it (the policy picks what the shared weights
  train, rewards on one validation minibatch, no warm-up);
* ``recipe``: ENAS with the recommended recipe of the config (uniform shared
  training, two reward minibatches; docs/experiments/beat-chance.md), its controller
  warm-up set to two thirds of the 30 epochs as the configs set it for theirs;
* ``random``: random search with weight sharing (Li & Talwalkar 2019): uniform
  sampling, no controller, a derive among uniformly drawn candidates;

then scores the ground truth's architectures with each run's supernet (``enas rank``),
trains the cells the searches found that the ground truth lacks (``enas ground-truth``,
same recipe), and prints per run: Kendall tau-b of the supernet's scores against the ground
truth, the found cell's ground-truth accuracy and percentile, whether the collapse
warning fired, the final policy entropy, and wall times; then one summary line per
method. ``--jobs`` runs that many searches at once (one thread each). Everything is
resumable: a finished run, ranking or ground-truth row is not redone.

``--paired`` takes random search's derive from the recipe's run
instead of a run of its own: 20 uniform candidates (``enas rank --samples 20 --seed
SEED``) scored on all validation images on that run's supernet, which is random
search's supernet by construction when the recipe trains the shared weights uniformly
(``search.uniform_shared: 1``; ``tests/test_search.py`` checks that the two runs'
weights are equal). It saves one supernet per seed and compares both derives on the same
weights.

    python benchmarks/studies/beat_chance.py --data-dir enas/data/samples/cifar10 --seeds 0 1 2 3 4 --jobs 2

The ground truth (``--ground-truth``, its uniformly drawn cells ``--uniform``, its
recipe ``--gt-config``) and the search config (``--config``) default to the NB201
files of this checkout (benchmarks/results/, configs/smoke/).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _study
from enas.errors import ConfigError, UserError
from enas.evaluate.compare import load_ground_truth, load_rank, run_arch, run_policy_expectation, uniform_cells
from enas.evaluate.stats import kendall_tau_b, percentile
from enas.storage.files import check_out, make_dirs, open_append, read_json, read_regular, write_atomic, write_out

MAX_METRICS_BYTES = 64 * 2**20  # a study's search logs a few hundred lines

# the files of the committed NB201 measurement, in this checkout
ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs/smoke/nb201_search.yaml"
GT_CSV = ROOT / "benchmarks/results/nb201_ground_truth.csv"
GT_LIST = ROOT / "benchmarks/results/nb201_uniform50_seed0.txt"
GT_CONFIG = ROOT / "configs/smoke/nb201_retrain.yaml"
# The measurement's sizes: the children of the ground truth's recipe (16 channels, one
# cell per stage), 3,660 / 1,000 images of the subset, 30 epochs of 30 x 10 controller
# samples, 20 derive candidates scored on all 1,000 validation images. The derive of
# each epoch only reports progress, so it scores its 20 candidates on one minibatch;
# the final derive re-scores all 20 on all 1,000 images (final_candidates 20), which
# picks the same cell as scoring all of them on everything every epoch, in a third of
# the time.
SIZES = ["model.channels=16", "data.train_size=3660", "data.valid_size=1000", "search.epochs=30",
         "train.t0=30", "train.t_mul=1", "controller.updates_per_epoch=30", "controller.num_aggregate=10",
         "search.derive_samples=20", "search.derive_batches=1", "search.final_candidates=20",
         "search.final_batches=0"]
METHODS = {
    "paper": ["controller.kind=enas", "search.uniform_shared=0.0", "search.controller_warmup_epochs=0",
              "search.reward_batches=1"],
    "recipe": ["controller.kind=enas", "search.controller_warmup_epochs=20"],
    "random": ["controller.kind=random"],
}
CANDIDATES = 20  # random search's derive with --paired: as many as search.derive_samples


class StepFailed(UserError, RuntimeError):
    """A search, ranking or training this study started failed; its log says why."""


def sh(argv, log: Path, env=None) -> float:
    t0 = time.monotonic()
    with open_append(log) as f:
        code = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if code != 0:
        raise StepFailed(f"failed ({code}): {' '.join(map(str, argv))}; see {log}")
    return time.monotonic() - t0


def paired_random(seed: int, source: dict, canon, args, env) -> dict:
    """Random search's derive on ``source``'s supernet: the best of CANDIDATES uniform
    candidates, each scored on the whole validation split."""
    ranks = args.work / f"random-s{seed}-paired.csv"
    timing = args.work / f"random-s{seed}-paired.json"
    if not ranks.exists() or not timing.exists():
        # the supernet is the recipe's: only the derive is random search's own time
        seconds = sh([sys.executable, "-m", "enas", "rank", source["run"], "--samples", str(CANDIDATES),
                      "--seed", str(seed), "--out", str(ranks), "--force", "--device", "cpu"],
                     args.work / f"random-s{seed}.log", env)
        write_atomic(timing, json.dumps({"search_seconds": seconds}))
    scores = load_rank(ranks, canon)  # finite scores only
    return {"method": "random", "seed": seed, "run": source["run"], "paired_with": source["method"],
            "collapse_warnings": 0, "entropy_first_last": None, "found_text": max(scores, key=scores.get),
            **read_json(timing, 2**20)}


def one(method: str, seed: int, args, env) -> dict:
    run = args.work / f"{method}-s{seed}"
    log = args.work / f"{method}-s{seed}.log"
    info = {"method": method, "seed": seed, "run": str(run)}
    timing = args.work / f"{method}-s{seed}.json"
    if timing.exists():
        info.update(read_json(timing, 2**20))
    if not (run / "best_arch.yaml").exists() or "search_seconds" not in info:
        sets = [x for s in SIZES + METHODS[method] + [f"search.seed={seed}"] for x in ("--set", s)]
        if run.exists():  # an interrupted search continues
            argv = [sys.executable, "-m", "enas", "search", "--resume", str(run), "--device", "cpu"]
        else:
            argv = [sys.executable, "-m", "enas", "search", str(args.config), *sets, "--data-dir", str(args.data_dir),
                    "--run-dir", str(run), "--device", "cpu"]
        info["search_seconds"] = sh(argv, log, env)
        write_atomic(timing, json.dumps({"search_seconds": info["search_seconds"]}))
    ranks = run / "ranks-gt.csv"
    if not ranks.exists():
        info["rank_seconds"] = sh([sys.executable, "-m", "enas", "rank", str(run), "--archs", str(args.uniform),
                                   "--out", str(ranks), "--device", "cpu"], log, env)
    text = read_regular(run / "metrics.jsonl", MAX_METRICS_BYTES, follow=False).decode(errors="replace")
    rows = [json.loads(line) for line in text.splitlines()]
    info["collapse_warnings"] = sum(1 for r in rows if r.get("warning/collapse"))
    ent = [r["policy/entropy"] for r in rows if "policy/entropy" in r]
    info["entropy_first_last"] = (ent[0], ent[-1]) if ent else None
    return info


def add_arguments(p) -> None:
    """The study's options."""
    p.add_argument("--data-dir", required=True, type=Path)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--work", type=Path, default=Path("runs/beat_chance"))
    p.add_argument("--json", type=Path, help="write the results here too")
    p.add_argument("--force", action="store_true", help="replace an existing --json file (never a run's own file)")
    p.add_argument("--paired", action="store_true",
                   help="random search's derive on the recipe run's supernet (see the description above)")
    p.add_argument("--config", type=Path, default=CONFIG, help="search config (default configs/smoke/nb201_search.yaml)")
    p.add_argument("--ground-truth", type=Path, default=GT_CSV,
                   help="ground-truth CSV (default benchmarks/results/nb201_ground_truth.csv)")
    p.add_argument("--uniform", type=Path, default=GT_LIST,
                   help="the ground truth's uniformly drawn cells, one a line "
                        "(default benchmarks/results/nb201_uniform50_seed0.txt)")
    p.add_argument("--gt-config", type=Path, default=GT_CONFIG,
                   help="the ground truth's retrain recipe (default configs/smoke/nb201_retrain.yaml)")


def run(args) -> int:
    """Run the searches, rankings and missing ground-truth cells, then print the figures."""
    if args.paired and not {"random", "recipe"} <= set(args.methods):
        raise ConfigError("--paired needs random and recipe among --methods")
    if args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs}: give 1 or more")
    for opt in ("config", "ground_truth", "uniform", "gt_config"):
        if not getattr(args, opt).is_file():
            raise ConfigError(f"--{opt.replace('_', '-')} {getattr(args, opt)}: no such file; name the file")
    if args.json:
        check_out(args.json, args.force, option="--json")
    make_dirs(args.work)
    args.data_dir = args.data_dir.resolve()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.monotonic()
    own = [m for m in args.methods if not (args.paired and m == "random")]
    jobs = [(m, s) for s in args.seeds for m in own]
    gt, _, canon, _ = load_ground_truth(args.ground_truth)
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda job: one(job[0], job[1], args, env), jobs))
        if args.paired:
            source = {r["seed"]: r for r in results if r["method"] == "recipe"}
            results += list(pool.map(lambda s: paired_random(s, source[s], canon, args, env), args.seeds))
    # the found cells the ground truth lacks: trained with its recipe (`enas ground-truth` skips known ones)
    found = args.work / "found.txt"
    texts = [r["found_text"] if "found_text" in r else run_arch(Path(r["run"]), canon)[0] for r in results]
    missing = sorted({t for t in texts if t not in gt})
    if missing:
        write_atomic(found, "\n".join(missing) + "\n")
        sh([sys.executable, "-m", "enas", "ground-truth", "--archs", str(found), "--config", str(args.gt_config),
            "--data-dir", str(args.data_dir), "--out", str(args.ground_truth), "--work-dir", "runs/ground_truth/nb201",
            "--jobs", str(args.jobs)], args.work / "ground_truth.log", env)
        gt, _, canon, _ = load_ground_truth(args.ground_truth)
    cells = uniform_cells(args.uniform, canon, gt)
    pool_acc = [gt[t] for t in cells]
    for r, text in zip(results, texts):
        scores = load_rank(Path(r["run"]) / "ranks-gt.csv", canon)
        common = sorted(set(scores) & set(gt))
        r["kendall_tau_b"] = kendall_tau_b([scores[a] for a in common], [gt[a] for a in common])
        r["found"] = text
        r["found_accuracy"] = gt[text]
        r["found_percentile"] = percentile(gt[text], [a for a in pool_acc])
        # where the trained policy samples: the mean ground truth of its cells; uniform
        # sampling weighs every cell the same, so random search's is the pool's mean
        if r["method"] == "random":
            r["policy_gt"], r["policy_ess"] = sum(pool_acc) / len(pool_acc), len(pool_acc)
        else:
            pol = run_policy_expectation(Path(r["run"]), cells, gt)
            r["policy_gt"], r["policy_ess"] = pol["policy_mean"], pol["policy_ess"]
        print(f"{r['method']}_s{r['seed']}: tau_b={r['kendall_tau_b']:.3f} found_acc={r['found_accuracy']:.4f} "
              f"percentile={r['found_percentile']:.0f} policy_gt={r['policy_gt']:.4f} (ess {r['policy_ess']:.0f}) "
              f"collapse_warnings={r['collapse_warnings']} "
              f"entropy={r['entropy_first_last']} search_s={r['search_seconds']:.0f} found={text}"
              + (f" supernet_of={r['paired_with']}" if "paired_with" in r else ""), flush=True)
    by = {m: [r for r in results if r["method"] == m] for m in args.methods}
    for m, rs in by.items():
        taus = [r["kendall_tau_b"] for r in rs]
        accs = [r["found_accuracy"] for r in rs]
        line = (f"{m}: seeds={len(rs)} tau_b_mean={sum(taus) / len(taus):.3f} found_acc_mean={sum(accs) / len(accs):.4f}"
                f" policy_gt_mean={sum(r['policy_gt'] for r in rs) / len(rs):.4f}"
                f" collapsed_runs={sum(1 for r in rs if r['collapse_warnings'])}"
                f" search_minutes_mean={sum(r['search_seconds'] for r in rs) / len(rs) / 60:.1f}")
        if m != "random" and by.get("random"):
            rnd = {r["seed"]: r for r in by["random"]}
            wins = sum(1 for r in rs if r["seed"] in rnd and r["found_accuracy"] > rnd[r["seed"]]["found_accuracy"])
            ge_tau = sum(1 for r in rs if r["seed"] in rnd and r["kendall_tau_b"] >= rnd[r["seed"]]["kendall_tau_b"])
            line += f" beats_random={wins}/{len(rs)} tau_at_least_random={ge_tau}/{len(rs)}"
        print(line, flush=True)
    print(f"wall_minutes={(time.monotonic() - t0) / 60:.1f}")
    if args.json:
        write_out(args.json, json.dumps(results, indent=1) + "\n", args.force, option="--json")
    return 0


def main(argv=None) -> int:
    return _study.main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
