"""One prepared check of every CUDA path, run in one go when a GPU is lent.

For each space at the sizes of its paper configs (configs/*_search.yaml and
*_retrain.yaml) it runs the engine's own loops (enas/nas/search.py, enas/child/retrain.py), not
a copy of them:

* search: two shared passes (the first warms up: cuDNN autotuning, allocator), one
  controller phase and one derive, with the config's GPU defaults (bf16 autocast,
  channels_last, non-finite check on the device); every loss and reward checked for
  finiteness; time per shared step, per controller update and per derive; the
  paper-scale epoch and full search extrapolated from them; host-device syncs per
  shared step (torch.cuda sync debug mode) and peak memory;
* retrain at the paper's final size, with and without ``torch.compile``: time per
  step (second pass), per evaluated image, the epoch and full run extrapolated;
* the supernet step against the stand-alone child's (benchmarks/supernet_overhead.py);
* bf16 autocast against fp32 on one fixed batch (eval mode): the losses agree within
  BF16_RTOL;
* the RNN step at paper size with each kernel (model.kernel).

The data are synthetic, written to a temporary folder in the official layouts
(random pixels, random words over a 10,000-word vocabulary): timing does not depend
on the values, and the GPU machine has no dataset. The losses are therefore not
meaningful, only finite. ``--device cpu --tiny`` runs everything at the smoke
configs' sizes with a few steps, in seconds (tests/test_gpu_check.py runs it, so this
script cannot rot between GPU runs). Without CUDA and without ``--device cpu`` it says
so and exits 2. A section that fails prints ``<name>_error=...``, the others still
run, and the exit code is 1.

    python benchmarks/gpu_check.py                        # one H200: under 8 minutes
    python benchmarks/gpu_check.py --device cpu --tiny    # seconds, any machine

Every figure is a ``name=value`` line; all of them also go to the JSON file
(``--json``, default runs/gpu_check/gpu_check-<time>.json), rewritten after each
section so that a run cut short keeps what it measured.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import pickle
import random
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch

from _bench import ROOT, Workload, cpu_model, median, sample_archs, setup_process, sized, timed
from supernet_overhead import measure as overhead

from enas.nas.archfile import load_arch
from enas.config import load_retrain, load_search
from enas.child.retrain import Retrain
from enas.nas.search import Search
from enas.nas.space import build_space

SPACES = {  # space -> (search config, retrain config or None, architecture for the retrain)
    "enas_micro": ("cifar10_micro_search", "cifar10_micro_retrain", "enas_micro"),
    "enas_macro": ("cifar10_macro_search", "cifar10_macro_retrain", "enas_macro"),
    "enas_rnn": ("ptb_search", "ptb_retrain", "enas_ptb"),
    "nb201": ("nb201_search", None, None),  # NB201 has no paper-size retrain config
}
PTB_TRAIN_TOKENS, PTB_VALID_TOKENS = 929_589, 73_760  # Mikolov's PTB splits, end-of-sentence tokens included
CIFAR_TRAIN, CIFAR_TEST = 50_000, 10_000
VOCAB = 10_000
BF16_RTOL = 0.03  # bf16 keeps 8 bits of mantissa; a mean loss through a deep net stays well within 3 %
# Steps per timed pass: (GPU, --tiny). A few hundred on the GPU, as the check promises.
SHARED_STEPS = (150, 2)
RETRAIN_STEPS = (60, 2)
CTRL_UPDATES = (10, 1)  # controller updates timed (each of the config's num_aggregate samples)
KERNEL_STEPS = (20, 2)


class Report:
    """name=value lines, and the same figures in a JSON file rewritten as they come."""

    def __init__(self, path: Path):
        self.path, self.figures, self.failed = path, {}, False
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str, value) -> None:
        self.figures[name] = value
        shown = f"{value:.4g}" if isinstance(value, float) else value
        print(f"{name}={shown}", flush=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.figures, indent=1, default=str) + "\n")
        os.replace(tmp, self.path)

    @contextlib.contextmanager
    def section(self, name: str):
        """A failing section reports its error and lets the next one run."""
        t0 = time.monotonic()
        try:
            yield
        except Exception as e:  # noqa: BLE001 - the check reports every failure and goes on
            self.failed = True
            self(f"{name}_error", f"{type(e).__name__}: {str(e)[:300]}")
            traceback.print_exc(file=sys.stderr)
        finally:
            self(f"{name}_check_seconds", round(time.monotonic() - t0, 1))


# ---- synthetic data in the official layouts -------------------------------------------------

def write_cifar(folder: Path, n_train: int, n_test: int, seed: int = 0) -> None:
    """cifar-10-batches-py/{data_batch_1..5,test_batch} of random pixels."""
    rng = np.random.default_rng(seed)
    d = folder / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    per = [n_train // 5 + (i < n_train % 5) for i in range(5)]
    for name, n in [(f"data_batch_{i + 1}", per[i]) for i in range(5)] + [("test_batch", n_test)]:
        blob = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                b"labels": rng.integers(0, 10, n).tolist()}
        (d / name).write_bytes(pickle.dumps(blob, protocol=3))


def write_ptb(folder: Path, train_tokens: int, valid_tokens: int, vocab: int = VOCAB, seed: int = 0) -> None:
    """ptb.{train,valid,test}.txt of random words; every word of the ``vocab`` occurs in
    train (so the vocabulary, and the decoder, have the paper's size)."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab - 1)]  # + <eos>, which the loader adds per line
    folder.mkdir(parents=True, exist_ok=True)

    def text(n: int, all_words: bool) -> str:
        toks = (words + rng.choices(words, k=max(n - len(words), 0))) if all_words else rng.choices(words, k=n)
        return "\n".join(" ".join(toks[i:i + 20]) for i in range(0, len(toks), 20)) + "\n"

    (folder / "ptb.train.txt").write_text(text(train_tokens, True))
    (folder / "ptb.valid.txt").write_text(text(valid_tokens, False))
    (folder / "ptb.test.txt").write_text(text(valid_tokens, False))


# ---- helpers -------------------------------------------------------------------------------

def reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device):
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else "n/a (CPU)"


@contextlib.contextmanager
def count_syncs(device, out: list):
    """Counts host-device synchronisations (torch.cuda sync debug mode warns at each)."""
    if device.type != "cuda":
        yield
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode(0)
    out.append(sum(1 for w in caught if "synchroniz" in str(w.message).lower()))


def is_lm(space: str) -> bool:
    return space == "enas_rnn"


def finite(x) -> bool:
    return all(math.isfinite(float(v)) for v in (x if isinstance(x, (list, tuple)) else [x]))


def tiny_sets(space: str, lm: bool, retrain: bool = False) -> list[str]:
    """--tiny: the space's test-sized model (its small_model) and small batches, so that
    the whole check runs in seconds on a CPU."""
    small = build_space(space).small_model
    sets = [f"model.{k}={json.dumps(v)}" for k, v in small.items()]
    sets += ["data.batch_size=4", "data.eval_batch_size=4"] + (["data.bptt=8"] if lm else [])
    if not retrain:
        sets += ["controller.num_aggregate=2", "search.derive_samples=2", "search.derive_batches=1",
                 "search.reward_batches=1"]
    return sets


def tiny_size(space: str, tiny: bool, model: dict | None = None):
    """The paper config's sizes, or with --tiny the smoke config's with the small model."""
    if not tiny:
        return sized(space, "paper", model=model)
    small = {**build_space(space).small_model, **(model or {})}
    return sized(space, "smoke", model=small, batch=4, eval_batch=4, bptt=8 if space == "enas_rnn" else 0)


# ---- the sections --------------------------------------------------------------------------

def check_search(space: str, device, tiny: bool, data: Path, rep: Report) -> None:
    k = int(tiny)
    name = SPACES[space][0]
    paper = load_search(ROOT / "configs" / f"{name}.yaml")
    cfg_path = ROOT / "configs" / ("smoke" if tiny else "") / f"{name}.yaml"
    base = load_search(cfg_path)
    sets = ["search.epochs=1", f"controller.updates_per_epoch={CTRL_UPDATES[k]}", "search.log_every=1000000"]
    if tiny:
        sets += tiny_sets(space, is_lm(space))
        base = load_search(cfg_path, sets)
    steps, b = SHARED_STEPS[k], base.data.batch_size
    if is_lm(space):
        sub = data / "ptb"
    else:
        sub = data / "cifar"
        n_valid = base.data.eval_batch_size * max(base.search.derive_batches, base.search.reward_batches, 2)
        sets += [f"data.train_size={steps * b}", f"data.valid_size={n_valid}"]
    cfg = load_search(cfg_path, sets)
    reset_peak(device)
    search = Search(cfg, data / "run", sub, device, log=False)
    search.open_log(None)
    n = search.task.num_train_batches(0)
    p = f"{space}_search"
    rep(f"{p}_steps_per_pass", n)
    rep(f"{p}_nonfinite_check", search.check)
    rep(f"{p}_amp_bf16", bool(getattr(search.task, "amp", False)))
    t_warm = timed(search.train_shared, device)  # warm-up pass (also timed: first-pass costs)
    rep(f"{p}_first_pass_seconds", round(t_warm, 2))
    search.epoch = 0
    search.step = 0
    syncs: list = []
    with count_syncs(device, syncs):
        t = timed(search.train_shared, device)
    figs = search.loop.epoch_sums
    rep(f"{p}_shared_step_ms", 1e3 * t / n)
    losses = {kk: float(v) / max(search.loop.epoch_count, 1) for kk, v in figs.items()}
    rep(f"{p}_train_figures", losses)
    rep(f"{p}_skipped_steps", search.loop.skipped_steps)
    rep(f"{p}_syncs_per_shared_step", syncs[0] / n if syncs else "n/a (CPU)")
    rewards: list = []
    real_reward = search.controller.reward
    search.controller.reward = lambda net, a: rewards.append(real_reward(net, a)) or rewards[-1]
    search.phase, search.step = "controller", 0
    t = timed(search.update_controller, device)
    search.controller.reward = real_reward
    rep(f"{p}_controller_update_ms", 1e3 * t / cfg.controller.updates_per_epoch)
    rep(f"{p}_rewards_finite", finite([float(r) for r in rewards]))
    t_derive = timed(search.derive_epoch, device)
    rep(f"{p}_derive_seconds", t_derive)
    rep(f"{p}_derive_score_finite", finite(search.best["score"]))
    rep(f"{p}_peak_memory_mb", peak_mb(device))
    ok = finite(list(losses.values())) and finite([float(r) for r in rewards]) and search.loop.skipped_steps == 0
    rep(f"{p}_finite", ok)
    # paper scale: the paper config's steps per epoch, its controller updates, one derive
    # of its size (derive time scales with the number of candidates and batches)
    if is_lm(space):
        per_epoch = PTB_TRAIN_TOKENS // (paper.data.batch_size * paper.data.bptt)
    else:
        per_epoch = math.ceil(paper.data.train_size / paper.data.batch_size)
    # derive time scales with candidates x validation batches (0 batches = the whole split)
    ran = cfg.search.derive_samples * (cfg.search.derive_batches or search.task.num_valid_batches())
    if is_lm(space):
        whole = PTB_VALID_TOKENS // (paper.data.eval_batch_size * paper.data.bptt)
    else:
        whole = math.ceil(paper.data.valid_size / paper.data.eval_batch_size)
    scale = paper.search.derive_samples * (paper.search.derive_batches or whole) / ran
    step_s = 1e-3 * rep.figures[f"{p}_shared_step_ms"]
    update_s = (1e-3 * rep.figures[f"{p}_controller_update_ms"]
                * paper.controller.num_aggregate / cfg.controller.num_aggregate)
    epoch_s = per_epoch * step_s + paper.controller.updates_per_epoch * update_s + t_derive * scale
    rep(f"{p}_paper_epoch_seconds", epoch_s)
    rep(f"{p}_paper_search_minutes", epoch_s * paper.search.epochs / 60)
    if not ok:
        raise RuntimeError(f"non-finite figures in the {space} search: {losses}, skipped {search.loop.skipped_steps}")


def check_retrain(space: str, device, tiny: bool, data: Path, rep: Report, compile_mode: str) -> None:
    _, name, arch_name = SPACES[space]
    if name is None:
        rep(f"{space}_retrain", "skipped: no paper-size retrain config for this space")
        return
    paper = load_retrain(ROOT / "configs" / f"{name}.yaml")
    sp, arch, _ = load_arch(ROOT / "configs" / "archs" / f"{arch_name}.yaml")
    cfg_path = ROOT / "configs" / ("smoke" if tiny else "") / f"{name}.yaml"
    sub = data / ("ptb" if is_lm(space) else "cifar_final")
    p = f"{space}_retrain_compile_{compile_mode}"
    if compile_mode == "on" and is_lm(space):
        # variable BPTT changes the window length each step: compiled, that recompiles
        sets = ["data.variable_bptt=false"]
    else:
        sets = []
    if tiny:
        sets += tiny_sets(space, is_lm(space), retrain=True)
    cfg = load_retrain(cfg_path, [f"retrain.compile={compile_mode}", "retrain.log_every=1000000", *sets], sp)
    reset_peak(device)
    with contextlib.ExitStack() as stack:
        if tiny and compile_mode == "on":
            # --tiny checks that the model compiles (TorchDynamo captures it) and runs;
            # inductor's code generation for the CPU would take minutes
            from unittest import mock

            eager = functools.partial(torch.compile, backend="eager")
            stack.enter_context(mock.patch.object(torch, "compile", eager))
            rep(f"{p}_backend", "eager (--tiny)")
        rt = Retrain(cfg, sp, arch, data / "run", sub, device, log=False)
    rt.open_log(None)
    n = rt.task.num_train_batches(0)
    t_first = timed(lambda: rt.sgd_pass(rt.task, rt.train_model, rt.opt, cfg.train.grad_clip, lambda i: None,
                                        "warm-up", check=rt.check), device)
    rep(f"{p}_first_pass_seconds", round(t_first, 2))
    rt.epoch, rt.step = 1, 0
    t = timed(lambda: rt.sgd_pass(rt.task, rt.train_model, rt.opt, cfg.train.grad_clip, lambda i: None,
                                  "timed", check=rt.check), device)
    step_s = t / n
    figs = {kk: float(v) / max(rt.epoch_count, 1) for kk, v in rt.epoch_sums.items()}
    rep(f"{p}_step_ms", 1e3 * step_s)
    rep(f"{p}_train_figures", figs)
    t_eval = timed(lambda: rt.task.evaluate(rt.model, None, "test" if rt.valid_is_test else "valid"), device)
    rep(f"{p}_peak_memory_mb", peak_mb(device))
    if is_lm(space):
        per_epoch = PTB_TRAIN_TOKENS // (paper.data.batch_size * paper.data.bptt)
        eval_s = t_eval * PTB_VALID_TOKENS / _tokens(sub / "ptb.valid.txt")
    else:
        per_epoch = math.ceil(CIFAR_TRAIN / paper.data.batch_size)
        eval_s = t_eval * CIFAR_TEST / _test_images(sub)
    epoch_s = per_epoch * step_s + eval_s
    rep(f"{p}_paper_epoch_seconds", epoch_s)
    rep(f"{p}_paper_run_hours", epoch_s * paper.retrain.epochs / 3600)
    if not finite(list(figs.values())) or rt.skipped_steps:
        raise RuntimeError(f"non-finite figures in the {space} retrain: {figs}, skipped {rt.skipped_steps}")


def _tokens(path: Path) -> int:
    return sum(len(line.split()) + 1 for line in path.read_text().splitlines())  # + <eos> per line


def _test_images(sub: Path) -> int:
    with open(sub / "cifar-10-batches-py" / "test_batch", "rb") as f:
        return len(pickle.load(f)[b"labels"])


def check_overhead(space: str, device, tiny: bool, rep: Report) -> None:
    r = overhead(space, tiny_size(space, tiny), device, num_archs=1 if tiny else 5,
                 repeats=1 if tiny else 5, verbose=False)
    rep(f"{space}_overhead_ratio", r["ratio"])
    rep(f"{space}_overhead_supernet_ms", r["supernet_ms"])
    rep(f"{space}_overhead_child_ms", r["child_ms"])


def check_bf16(space: str, device, tiny: bool, rep: Report) -> None:
    w = Workload(space, tiny_size(space, tiny), device)
    arch = sample_archs(w.space, 1, seed=7)[0]
    w.model.eval()

    def loss(dtype):
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) if dtype else contextlib.nullcontext()
        with torch.no_grad(), ctx:
            if w.lm:
                ce, _, _ = w.model(w.x, w.model.init_hidden(w.size.batch), arch, target=w.y)
                return float(ce)
            logits, _ = w.model(w.x, arch)
            return float(torch.nn.functional.cross_entropy(logits.float(), w.y))

    l32, l16 = loss(None), loss(torch.bfloat16)
    rel = abs(l16 - l32) / max(abs(l32), 1e-12)
    rep(f"{space}_bf16_loss", l16)
    rep(f"{space}_fp32_loss", l32)
    rep(f"{space}_bf16_rel_diff", rel)
    rep(f"{space}_bf16_agrees", rel <= BF16_RTOL)
    if rel > BF16_RTOL:
        raise RuntimeError(f"bf16 loss {l16:.5g} vs fp32 {l32:.5g}: relative difference {rel:.3g} > {BF16_RTOL}")


def check_rnn_kernels(device, tiny: bool, rep: Report) -> None:
    import typing

    from search_spaces.enas_rnn import ModelArgs

    kernels = [k for k in typing.get_args(typing.get_type_hints(ModelArgs)["kernel"]) if k != "auto"]
    if tiny:  # inductor needs minutes on a small CPU for the 12-node step; the unit tests check its values
        kernels.remove("compiled")
        rep("rnn_kernel_compiled_step_ms", "not timed with --tiny (tests/test_fast_paths.py checks the kernel)")
    steps = KERNEL_STEPS[int(tiny)]
    for kern in kernels:
        w = Workload("enas_rnn", tiny_size("enas_rnn", tiny, {"kernel": kern}), device)
        archs = sample_archs(w.space, steps + 2, seed=11)
        rep(f"rnn_kernel_{kern}_first_step_s", timed(lambda: w.step(archs[0]), device))  # compile time too
        w.step(archs[1])
        ts = [timed(lambda a=a: w.step(a), device) for a in archs[2:]]
        rep(f"rnn_kernel_{kern}_step_ms", 1e3 * median(ts))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--tiny", action="store_true", help="smoke-config sizes and a few steps (seconds, for CPU)")
    p.add_argument("--spaces", nargs="+", default=list(SPACES), choices=list(SPACES))
    p.add_argument("--json", type=Path, help="where the figures go (default runs/gpu_check/gpu_check-<time>.json)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("cuda_available=false", flush=True)
        print("gpu_check: no CUDA device here (torch %s, built for CUDA %s); on a CPU-only machine run "
              "`python benchmarks/gpu_check.py --device cpu --tiny` to check the script itself"
              % (torch.__version__, torch.version.cuda), file=sys.stderr)
        return 2
    device = torch.device(args.device)
    setup_process(1 if args.tiny else None)  # --tiny: one thread, steady on a busy machine
    out = args.json or ROOT / "runs" / "gpu_check" / f"gpu_check-{time.strftime('%Y%m%d-%H%M%S')}.json"
    rep = Report(out)
    t0 = time.monotonic()
    rep("device", torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({cpu_model()})")
    rep("torch_version", torch.__version__)
    rep("cuda_version", str(torch.version.cuda))
    rep("tiny", args.tiny)
    k = int(args.tiny)
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        data = Path(tmp)
        # enough images for the largest timed pass (micro: 150 x 160) and a derive
        n_train = max(SHARED_STEPS[k] * 160, RETRAIN_STEPS[k] * 144)
        write_cifar(data / "cifar", n_train + 2_000, 200)
        write_cifar(data / "cifar_final", RETRAIN_STEPS[k] * (4 if args.tiny else 144), 20 if args.tiny else 500)
        if args.tiny:
            write_ptb(data / "ptb", 600, 400, vocab=50)
        else:
            write_ptb(data / "ptb", SHARED_STEPS[k] * 64 * 35 + 64 * 60, 64 * 35 * 40)
        rep("data", "synthetic (random pixels / random words in the official layouts): figures are times, "
                    "losses only checked finite")
        for space in args.spaces:
            with rep.section(f"{space}_search"):
                check_search(space, device, args.tiny, data, rep)
            with rep.section(f"{space}_retrain_compile_off"):
                check_retrain(space, device, args.tiny, data, rep, "off")
            with rep.section(f"{space}_overhead"):
                check_overhead(space, device, args.tiny, rep)
            with rep.section(f"{space}_bf16"):
                check_bf16(space, device, args.tiny, rep)
        if "enas_rnn" in args.spaces:
            with rep.section("rnn_kernels"):
                check_rnn_kernels(device, args.tiny, rep)
        # last: compiling takes minutes, and a run cut short keeps everything above
        for space in args.spaces:
            with rep.section(f"{space}_retrain_compile_on"):
                check_retrain(space, device, args.tiny, data, rep, "on")
    rep("total_seconds", round(time.monotonic() - t0, 1))
    rep("ok", not rep.failed)
    rep("json", str(out))
    return 1 if rep.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
