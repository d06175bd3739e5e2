"""Throughput of the search: shared phase, controller, derive, memory.

* shared-phase images/s (enas_micro, enas_macro, nb201) and tokens/s (enas_rnn) at
  paper sizes (configs/*_search.yaml) and smoke sizes (configs/smoke/*_search.yaml),
  one freshly sampled architecture per step, as the shared phase runs;
* each workload's achieved FLOP/s (FlopCounterMode over forward + backward) as a
  fraction of this machine's dense fp32 matmul throughput, measured in the same run
  (2048 x 2048 @ 2048 x 2048): once at the start and end (``matmul_gflops``,
  ``matmul_gflops_end``) and once after every timed step in the worker
  (``matmul_gflops_<workload>``). ``matmul_fraction_<workload>`` is the median over
  steps of (FLOPs / step time) / (rate of the probe right after that step), so a
  machine whose speed drifts during the run still gets a fair fraction;
* the RNN shared phase at hidden 256, batch 64, BPTT 35 (``rnn_tokens_per_s_h256``,
  ``rnn_matmul_fraction_h256``; target >= 0.7);
* controller samples/s, batched (K = 100 in one pass) and one at a time;
* the time of one derive (N sampled archs, each scored on one validation batch);
* peak memory of each workload: max-RSS growth of a fresh worker process over its
  state after building the model (CPU), torch.cuda.max_memory_allocated (GPU).

Each shared-phase workload runs in its own worker process (clean max-RSS, one
thread setting). Data are synthetic batches of the real shapes.

    python benchmarks/throughput.py --quick          # < 5 min on 2 CPU cores
    python benchmarks/throughput.py                  # more steps, larger CPU batches

On CPU, paper-size image steps take seconds, so their batch is reduced (printed as
``batch_<space>_paper``); ``--paper-batch N`` overrides. Every figure is a
``name=value`` line.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from _bench import (
    SIZES, SPACE_NAMES, Workload, controller_for, emit, header, loadavg, matmul_flops, matmul_probe, median,
    pick_device, sample_archs, setup_process, sized, timed,
)

CTRL_HIDDEN = {"enas_rnn": 100, "enas_micro": 64, "enas_macro": 64, "nb201": 64}  # configs/*_search.yaml


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def worker(spec: dict) -> dict:
    """One shared-phase workload: steps/s, FLOPs per step, peak memory."""
    device = pick_device(spec["device"])
    setup_process(spec["threads"])
    size = sized(spec["space"], spec["size"], spec.get("model"), batch=spec.get("batch"))
    w = Workload(spec["space"], size, device, channels_last=spec.get("channels_last"))
    archs = sample_archs(w.space, spec["steps"] + spec["warmup"], seed=7)
    probe = matmul_probe(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss0 = rss_mb()  # model, optimizer and batch built; no step run yet
    flops = [w.flops_per_step(a) for a in archs[: spec["flop_archs"]]]
    for a in archs[: spec["warmup"]]:
        w.step(a)
    # Each step is followed by one probe matmul, so every step has a matmul rate taken
    # seconds from it: the fraction is then robust to this machine's speed drifting
    # during the run (shared 2-core VMs move by 20 % within minutes; RESULTS.md).
    ts, rates = [], []
    for a in archs[spec["warmup"]:]:
        ts.append(timed(lambda a=a: w.step(a), device))
        rates.append(probe())
    flops_per_step = sum(flops) / len(flops)
    out = {
        "batch": size.batch,
        "step_s": median(ts),
        "matmul_flops": median(rates),
        "matmul_fraction": median([flops_per_step / (t * r) for t, r in zip(ts, rates)]),
        "units_per_step": w.tokens_or_images(),
        "flops_per_step": flops_per_step,
        "peak_mem_mb": (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
                        else rss_mb() - rss0),
        "rss_mb": rss_mb(),
    }
    return out


def run_worker(spec: dict) -> dict:
    cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"worker failed: {spec}\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def report(tag: str, r: dict, lm: bool) -> None:
    unit = "tokens" if lm else "images"
    rate = r["units_per_step"] / r["step_s"]
    emit(f"batch_{tag}", r["batch"])
    emit(f"step_ms_{tag}", 1e3 * r["step_s"])
    emit(f"{unit}_per_s_{tag}", rate)
    emit(f"gflop_per_step_{tag}", r["flops_per_step"] / 1e9)
    emit(f"achieved_gflops_{tag}", r["flops_per_step"] / r["step_s"] / 1e9)
    # paired with the probe matmul after each step (worker); see worker()
    emit(f"matmul_gflops_{tag}", r["matmul_flops"] / 1e9)
    emit(f"matmul_fraction_{tag}", r["matmul_fraction"])
    emit(f"peak_mem_mb_{tag}", r["peak_mem_mb"])
    emit(f"loadavg_{tag}", loadavg())


def controller_rates(space_name: str, quick: bool) -> dict:
    from enas.nas.space import build_space

    space = build_space(space_name, SIZES[space_name]["paper"].space_args)
    torch.manual_seed(0)
    ctrl = controller_for(space, CTRL_HIDDEN[space_name])
    g = torch.Generator().manual_seed(0)
    K, n_single = 100, (20 if quick else 100)
    reps = 3 if quick else 5
    with torch.no_grad():
        ctrl(K, generator=g)  # warm-up
        tb = median([timed(lambda: ctrl(K, generator=g), torch.device("cpu")) for _ in range(reps)])
        t1 = timed(lambda: [ctrl(1, generator=g) for _ in range(n_single)], torch.device("cpu"))
    # a REINFORCE step's sample (with grad) and its backward, num_aggregate = 10
    t_grad = median([timed(lambda: ctrl(10, generator=g).log_prob.sum().backward(), torch.device("cpu"))
                     for _ in range(reps)])
    return {"batched": K / tb, "single": n_single / t1, "grad10_ms": 1e3 * t_grad}


def derive_time(space_name: str, size_name: str, device, n: int, batch: int | None, channels_last) -> tuple:
    w = Workload(space_name, sized(space_name, size_name, eval_batch=batch), device, channels_last=channels_last)
    ctrl = controller_for(w.space, CTRL_HIDDEN[space_name])
    w.model.eval()
    w.score(sample_archs(w.space, 1, 3)[0])  # warm-up

    def derive():
        with torch.no_grad():
            archs = ctrl(n, generator=torch.Generator().manual_seed(5)).archs
        return [w.score(a) for a in archs]

    return timed(derive, device), w.size.eval_batch


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer steps and repeats: < 5 min on 2 CPU cores")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in every process")
    ap.add_argument("--spaces", nargs="+", default=list(SPACE_NAMES), choices=SPACE_NAMES)
    ap.add_argument("--sizes", nargs="+", default=["smoke", "paper"], choices=("smoke", "paper"))
    ap.add_argument("--paper-batch", type=int, default=None,
                    help="batch of paper-size image workloads (default: the config's on GPU; 8 quick / 32 on CPU)")
    ap.add_argument("--channels-last", default="auto", choices=("auto", "on", "off"),
                    help="image models in channels_last (auto: on, as enas/tasks/image.py does)")
    ap.add_argument("--skip", nargs="*", default=[], choices=("shared", "h256", "controller", "derive"))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    device = pick_device(args.device)
    threads = setup_process(args.threads)
    cl = {"auto": None, "on": True, "off": False}[args.channels_last]
    cuda = device.type == "cuda"
    header(device, threads)
    emit("channels_last", args.channels_last if not cuda or cl is not None else "on")
    t_start = time.perf_counter()
    peak = matmul_flops(device, reps=3 if args.quick else 7)
    emit("matmul_gflops", peak / 1e9)

    base = {"device": device.type, "threads": threads, "channels_last": cl}
    if "shared" not in args.skip:
        for size in args.sizes:
            for name in args.spaces:
                lm = name == "enas_rnn"
                spec = dict(base, space=name, size=size, warmup=1, flop_archs=2)
                if size == "paper" and not lm and not cuda:
                    spec["batch"] = args.paper_batch or (8 if args.quick else 32)
                elif size == "paper" and args.paper_batch and not lm:
                    spec["batch"] = args.paper_batch
                slow = size == "paper" and not cuda
                spec["steps"] = (3 if slow else 5) if args.quick else (8 if slow else 20)
                report(f"{name}_{size}", run_worker(spec), lm)

    if "h256" not in args.skip:
        spec = dict(base, space="enas_rnn", size="paper", model={"hidden": 256}, batch=64, warmup=1,
                    flop_archs=2, steps=5 if args.quick else 20)
        r = run_worker(spec)
        report("enas_rnn_h256", r, True)
        emit("rnn_tokens_per_s_h256", r["units_per_step"] / r["step_s"])
        emit("rnn_matmul_fraction_h256", r["matmul_fraction"])

    if "controller" not in args.skip:
        for name in args.spaces:
            c = controller_rates(name, args.quick)
            emit(f"controller_samples_per_s_batched_k100_{name}", c["batched"])
            emit(f"controller_samples_per_s_single_{name}", c["single"])
            emit(f"controller_sample_backward_k10_ms_{name}", c["grad10_ms"])

    if "derive" not in args.skip:
        n = 10 if args.quick else 100
        dsize = "smoke" if (args.quick and not cuda) else "paper"
        emit("derive_samples", n)
        emit("derive_size", dsize)
        for name in args.spaces:
            t, eb = derive_time(name, dsize, device, n, None, cl)
            emit(f"derive_eval_batch_{name}", eb)
            emit(f"derive_s_{name}", t)
    peak2 = matmul_flops(device, reps=3)
    emit("matmul_gflops_end", peak2 / 1e9)
    emit("loadavg_end", loadavg())
    emit("wall_s", time.perf_counter() - t_start)


if __name__ == "__main__":
    main()
