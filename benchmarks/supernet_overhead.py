"""What weight sharing costs per training step.

For each space and each of many sampled architectures: the time of one shared-phase
step (forward, backward, clip, SGD step; enas/train/loop.py's sgd_pass) of the supernet
running that architecture, against the same step of the standalone child of that
architecture holding the same weights (copied by key) on the same batch. Supernet
and child steps are interleaved (alternating which goes first), after a warm-up;
each architecture's ratio is median(supernet) / median(child); the space's figure
is the median over architectures. Target: overhead_ratio_<space> <= 1.10.

    python benchmarks/supernet_overhead.py --quick            # < 5 min on 2 CPU cores
    python benchmarks/supernet_overhead.py --size paper --archs 20 --repeats 7

Every figure is printed as a ``name=value`` line.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from _bench import (SPACE_NAMES, Workload, emit, header, loadavg, median, pick_device, sample_archs, setup_process,
                    sized, timed)


def measure(space_name: str, size, device, num_archs: int, repeats: int, verbose: bool,
            channels_last=None) -> dict:
    """``size``: a _bench.Size (e.g. ``sized(space, "paper")``)."""
    sup = Workload(space_name, size, device, channels_last=channels_last)
    archs = sample_archs(sup.space, num_archs, seed=123)
    # warm-up of the supernet on a few archs (allocator, lazy init, momentum buffers)
    for a in archs[:2]:
        sup.step(a)
    ratios, t_sup_all, t_child_all = [], [], []
    for k, arch in enumerate(archs):
        child = sup.child(arch)
        sup.step(arch)  # warm-up for this arch
        child.step(None)
        ts, tc = [], []
        for r in range(repeats):
            if r % 2 == 0:
                ts.append(timed(lambda: sup.step(arch), device))
                tc.append(timed(lambda: child.step(None), device))
            else:
                tc.append(timed(lambda: child.step(None), device))
                ts.append(timed(lambda: sup.step(arch), device))
        ratio = median(ts) / median(tc)
        ratios.append(ratio)
        t_sup_all.append(median(ts))
        t_child_all.append(median(tc))
        if verbose:
            print(f"# {space_name} arch {k}: supernet {median(ts) * 1e3:.1f} ms, child {median(tc) * 1e3:.1f} ms, "
                  f"ratio {ratio:.3f}", file=sys.stderr, flush=True)
    return {
        "ratio": median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "ratio_of_sums": sum(t_sup_all) / sum(t_child_all),
        "supernet_ms": 1e3 * median(t_sup_all),
        "child_ms": 1e3 * median(t_child_all),
        "batch": sup.size.batch,
        "supernet_params": sum(p.numel() for p in sup.params),
        "supernet_tensors": len(sup.params),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few archs and repeats: < 5 min on 2 CPU cores")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--size", default=None, choices=("smoke", "paper"),
                    help="model sizes (default: smoke on CPU, paper on GPU)")
    ap.add_argument("--spaces", nargs="+", default=list(SPACE_NAMES), choices=SPACE_NAMES)
    ap.add_argument("--archs", type=int, default=None, help="sampled architectures per space")
    ap.add_argument("--repeats", type=int, default=None, help="timed steps per model per architecture")
    ap.add_argument("--batch", type=int, default=None,
                    help="batch of the image spaces (default: the config's; 16 on CPU with --quick)")
    ap.add_argument("--channels-last", default="auto", choices=("auto", "on", "off"),
                    help="image models in channels_last (auto: on, as enas/tasks/image.py does)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("-v", "--verbose", action="store_true", help="per-arch timings on stderr")
    args = ap.parse_args(argv)

    device = pick_device(args.device)
    threads = setup_process(args.threads)
    size = args.size or ("paper" if device.type == "cuda" else "smoke")
    cpu = device.type == "cpu"
    num_archs = args.archs or ((4 if cpu else 10) if args.quick else 30)
    repeats = args.repeats or (3 if args.quick else 7)
    image_batch = args.batch or (16 if args.quick and cpu else None)
    cl = {"auto": None, "on": True, "off": False}[args.channels_last]
    header(device, threads)
    emit("size", size)
    emit("archs_per_space", num_archs)
    emit("repeats", repeats)
    emit("channels_last", args.channels_last)
    t0 = time.perf_counter()
    for name in args.spaces:
        batch = None if name == "enas_rnn" else image_batch
        r = measure(name, sized(name, size, batch=batch), device, num_archs, repeats, args.verbose, cl)
        emit(f"batch_{name}", r["batch"])
        emit(f"supernet_step_ms_{name}", r["supernet_ms"])
        emit(f"child_step_ms_{name}", r["child_ms"])
        emit(f"overhead_ratio_min_{name}", r["ratio_min"])
        emit(f"overhead_ratio_max_{name}", r["ratio_max"])
        emit(f"overhead_ratio_of_sums_{name}", r["ratio_of_sums"])
        emit(f"supernet_param_tensors_{name}", r["supernet_tensors"])
        emit(f"overhead_ratio_{name}", f"{r['ratio']:.3f}")
        emit(f"loadavg_after_{name}", loadavg())
    emit("wall_s", time.perf_counter() - t0)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
