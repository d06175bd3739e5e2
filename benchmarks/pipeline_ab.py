"""Paired A/B of the RNN shared-phase step: this tree's cell + decoder pipeline against
another version of search_spaces/enas_rnn/kernels/pipeline.py, in one process.

Why: on a shared 2-core VM the machine's speed moves by 20 % within minutes, so two
fresh-process runs of throughput.py cannot resolve a change of a few per cent. Here
both versions run in the same process on the same model (hidden 256, batch 64, BPTT 35,
as ``rnn_matmul_fraction_h256``), alternating step by step with the same sampled
architecture per pair and the order flipped every pair; the figure is the per-pair
ratio of step times. Its noise floor, from A/A runs (the same file on both sides, 60
pairs, 2-core EPYC): medians 0.978 and 1.015, so changes under ~3 % are not resolved
(benchmarks/RESULTS.md).

    git show REV:search_spaces/enas_rnn/kernels/pipeline.py > /tmp/old_pipeline.py
    python benchmarks/pipeline_ab.py /tmp/old_pipeline.py --pairs 60

The other file must offer the same ``cell_and_decoder`` call and import from this tree.
Prints ``ab_step_ms_this``, ``ab_step_ms_other`` (medians) and ``ab_ratio_*`` (this /
other per pair: median, mean and its standard error) as ``name=value`` lines.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _bench import Workload, emit, header, loadavg, sample_archs, setup_process, sized  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("other", type=Path, nargs="?", default=None,
                    help="another version of search_spaces/enas_rnn/kernels/pipeline.py (default: this tree's plain "
                         "path, cell_bptt + F.linear + token_cross_entropy, as where no pipeline runs)")
    ap.add_argument("--pairs", type=int, default=60)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--one-thread", action="store_true", help="a third arm: the plain path on 1 torch thread")
    args = ap.parse_args()
    if args.other is not None and not args.other.is_file():
        raise SystemExit(f"error: {args.other} is not a file (give a copy of search_spaces/enas_rnn/kernels/pipeline.py)")
    threads = setup_process(args.threads)
    header(torch.device("cpu"), threads)

    import search_spaces.enas_rnn.cell as model_module

    import search_spaces.enas_rnn.kernels.pipeline as pipe

    real_plan = pipe.lane_plan
    plain = pipe.cell_and_decoder

    def other_call(*a, **k):  # the same function with lane_plan saying "no pipeline here"
        pipe.lane_plan = lambda *_a, **_k: None
        try:
            return plain(*a, **k)
        finally:
            pipe.lane_plan = real_plan

    if args.other is None:
        versions = {"this": model_module.cell_and_decoder, "other": other_call}
    else:
        spec = importlib.util.spec_from_file_location("other_pipeline", args.other)
        other = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(other)
        versions = {"this": model_module.cell_and_decoder, "other": other.cell_and_decoder}

    # the workload of rnn_matmul_fraction_h256 (throughput.py)
    w = Workload("enas_rnn", sized("enas_rnn", "paper", {"hidden": args.hidden}, batch=args.batch), torch.device("cpu"))
    warmup = 2
    archs = sample_archs(w.space, args.pairs + warmup, seed=7)
    # name -> (cell_and_decoder, torch threads of the caller); "plain_1thread": the plain
    # path on one thread, as OMP_NUM_THREADS=1 runs it (no pipeline runs on one thread)
    arms = {name: (fn, threads) for name, fn in versions.items()}
    if args.one_thread:
        arms["plain_1thread"] = (versions["other"] if args.other is None else other_call, 1)
    ms = {name: [] for name in arms}
    names = list(arms)
    try:
        for i, arch in enumerate(archs):
            for name in names[i % len(names):] + names[:i % len(names)]:  # the order rotates every round
                model_module.cell_and_decoder, n = arms[name]
                torch.set_num_threads(n)
                t = time.perf_counter()
                w.step(arch)
                if i >= warmup:
                    ms[name].append(1e3 * (time.perf_counter() - t))
    finally:
        model_module.cell_and_decoder = versions["this"]
        torch.set_num_threads(threads)
    ratios = [a / b for a, b in zip(ms["this"], ms["other"])]
    tokens = w.size.bptt * w.size.batch
    for name in arms:
        emit(f"ab_tokens_per_s_{name}", tokens / statistics.median(ms[name]) * 1e3)
    emit("loadavg_end", loadavg())
    emit("ab_pairs", len(ratios))
    emit("ab_step_ms_this", statistics.median(ms["this"]))
    emit("ab_step_ms_other", statistics.median(ms["other"]))
    emit("ab_ratio_median", statistics.median(ratios))
    emit("ab_ratio_mean", statistics.mean(ratios))
    emit("ab_ratio_se", statistics.stdev(ratios) / len(ratios) ** 0.5)


if __name__ == "__main__":
    main()
