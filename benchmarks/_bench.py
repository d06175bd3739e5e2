"""Shared pieces of the benchmark scripts (not a test module, not part of the package).

Workloads time the engine's own training step (``Loop.train_step``: zero_grad ->
backward -> clip_grad_norm_ -> isfinite check -> SGD step, the step ``Loop.sgd_pass``
takes) with the task's loss on synthetic batches of the real shapes: timing does not
depend on pixel or token values, and the scripts then need no dataset.

Sizes: ``paper`` is read from the search config configs/*_search.yaml (the batch can
be overridden, slow CPUs); ``smoke`` from configs/smoke/*_search.yaml.
"""
from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from enas.config import load_search
from enas.nas.controller import Controller
from enas.train.loop import Loop
from enas.train.malloc import keep_freed_memory
from enas.nas.space import build_space

SPACE_NAMES = ("enas_rnn", "enas_micro", "enas_macro", "nb201")
VOCAB = 10_000  # PTB


@dataclass
class Size:
    model: dict
    batch: int
    bptt: int = 0  # LM only
    eval_batch: int = 100
    optim: dict = field(default_factory=dict)
    aux_weight: float = 0.0
    space_args: dict = field(default_factory=dict)
    grad_clip: float = 0.0


# the search config of each space: configs/<file>.yaml ("paper") and configs/smoke/<file>.yaml ("smoke")
CONFIGS = {"enas_rnn": "ptb_search", "enas_micro": "cifar10_micro_search",
           "enas_macro": "cifar10_macro_search", "nb201": "nb201_search"}
ROOT = Path(__file__).resolve().parents[1]


def size_from_config(space: str, name: str) -> Size:
    """The sizes of configs/[smoke/]<space's search config>.yaml, read, not repeated here."""
    cfg = load_search(ROOT / "configs" / ("smoke" if name == "smoke" else "") / f"{CONFIGS[space]}.yaml")
    t, d = cfg.train, cfg.data
    return Size(dict(cfg.model), d.batch_size, bptt=d.bptt if d.dataset in ("ptb", "text") else 0,
                eval_batch=d.eval_batch_size, aux_weight=getattr(cfg.search.image, "aux_weight", 0.0), space_args=dict(cfg.space.args),
                optim=dict(lr=t.lr, momentum=t.momentum, nesterov=t.nesterov, weight_decay=t.weight_decay),
                grad_clip=t.grad_clip)


class _Sizes(dict):
    """SIZES[space][name], read from the config on first use."""

    def __missing__(self, space: str) -> dict:
        if space not in CONFIGS:
            raise KeyError(space)
        self[space] = {name: size_from_config(space, name) for name in ("paper", "smoke")}
        return self[space]


SIZES = _Sizes()


def sized(space: str, name: str, model: dict | None = None, **fields) -> Size:
    """SIZES[space][name] with some model arguments and Size fields (those not None or 0)
    overridden."""
    size = SIZES[space][name]
    over = {k: v for k, v in fields.items() if v}
    if model:
        over["model"] = {**size.model, **model}
    return type(size)(**{**size.__dict__, **over})


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    return torch.device(name)


def setup_process(n: int | None) -> int:
    """Per-process settings as `enas` makes them (enas/cli.py), then torch's thread count."""
    keep_freed_memory()
    if n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def loadavg() -> str:
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except Exception:  # noqa: BLE001
        pass
    return platform.processor() or "unknown"


def emit(name: str, value) -> None:
    if isinstance(value, float):
        value = f"{value:.4g}"
    print(f"{name}={value}", flush=True)


def header(device: torch.device, threads: int) -> None:
    emit("device", device.type if device.type == "cpu" else torch.cuda.get_device_name(device))
    emit("cpu_model", cpu_model().replace(" ", "_"))
    emit("cpu_count", os.cpu_count())
    emit("torch_threads", threads)
    emit("omp_num_threads", os.environ.get("OMP_NUM_THREADS", "unset"))
    emit("torch_version", torch.__version__)
    emit("loadavg_start", loadavg())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def median(xs):
    return statistics.median(xs)


# ---------------------------------------------------------------------------- workloads


class Workload:
    """One model (supernet or child) of one space with its optimizer and a fixed batch."""

    def __init__(self, space_name: str, size: Size, device: torch.device, model=None, seed: int = 0,
                 channels_last: bool | None = None):
        self.name, self.size, self.device = space_name, size, device
        self.space = build_space(space_name, size.space_args)
        self.model_args = self.space.ModelArgs(**size.model)
        self.lm = self.space.modality == "lm"
        self.kwargs = {"vocab_size": VOCAB} if self.lm else {"num_classes": 10}
        g = torch.Generator().manual_seed(seed)
        if self.lm:
            self.x = torch.randint(0, VOCAB, (size.bptt, size.batch), generator=g).to(device)
            self.y = torch.randint(0, VOCAB, (size.bptt, size.batch), generator=g).to(device)
            self.xe = torch.randint(0, VOCAB, (size.bptt, size.eval_batch), generator=g).to(device)
        else:
            self.x = torch.randn(size.batch, 3, 32, 32, generator=g).to(device)
            self.y = torch.randint(0, 10, (size.batch,), generator=g).to(device)
            self.xe = torch.randn(size.eval_batch, 3, 32, 32, generator=g).to(device)
            self.ye = torch.randint(0, 10, (size.eval_batch,), generator=g).to(device)
        self.cuda = device.type == "cuda"
        # image models: channels_last on CPU and CUDA by default, as enas/tasks/image.py does
        self.channels_last = (True if channels_last is None else channels_last) and not self.lm
        if self.channels_last:
            fmt = torch.channels_last
            self.x, self.xe = self.x.contiguous(memory_format=fmt), self.xe.contiguous(memory_format=fmt)
        if model is None:
            torch.manual_seed(seed)
            model = self.space.supernet(self.model_args, **self.kwargs)
        self.set_model(model)

    def set_model(self, model):
        self.model = model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.model.train()
        self.params = list(self.model.parameters())
        o = dict(self.size.optim)
        self.opt = torch.optim.SGD(self.params, lr=o.get("lr", 0.05), momentum=o.get("momentum", 0.0),
                                   nesterov=o.get("nesterov", False), weight_decay=o.get("weight_decay", 0.0))
        self.hidden = self.model.init_hidden(self.size.batch) if self.lm else None

    def child(self, arch):
        """A standalone child of ``arch`` holding the supernet's current weights."""
        torch.manual_seed(1)
        c = self.space.child(arch, self.model_args, **self.kwargs)
        sup_sd = self.model.state_dict()
        c.load_state_dict({k: sup_sd[k] for k in c.state_dict()})
        w = Workload.__new__(Workload)
        w.__dict__.update({k: v for k, v in self.__dict__.items() if k not in ("model", "params", "opt")})
        w.set_model(c)
        w.hidden = self.hidden  # LM: the same carried state
        return w

    def autocast(self):
        import contextlib

        if self.cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def loss(self, arch):
        with self.autocast():
            if self.lm:
                # the LM task's loss (enas/tasks/lm.py train_loss)
                ce, hidden, extra = self.model(self.x, self.hidden, arch, target=self.y)
                self.hidden = hidden.detach()
                return ce + extra
            logits, aux = self.model(self.x, arch)
            loss = F.cross_entropy(logits.float(), self.y)
            if aux is not None and self.size.aux_weight > 0:
                loss = loss + self.size.aux_weight * F.cross_entropy(aux.float(), self.y)
            return loss

    def train_loss(self, model, batch, arch):
        """The task interface ``Loop.train_step`` calls: this workload's fixed batch."""
        return self.loss(arch), {}

    def step(self, arch) -> None:
        """One shared-phase step: the engine's own (Loop.train_step)."""
        Loop.train_step(self, self.model, self.opt, self.params, self.size.grad_clip or math.inf, None, arch)

    def fwd_bwd(self, arch) -> None:
        loss = self.loss(arch)
        loss.backward()

    @torch.no_grad()
    def score(self, arch) -> float:
        """One derive candidate: eval-mode forward on one validation batch, a host read."""
        with self.autocast():
            if self.lm:
                logits, _, _ = self.model(self.xe, self.model.init_hidden(self.size.eval_batch), arch)
                return float(F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), self.xe.reshape(-1)))
            logits, _ = self.model(self.xe, arch)
            return (logits.argmax(1) == self.ye).float().mean().item()

    def tokens_or_images(self) -> int:
        return self.size.batch * (self.size.bptt if self.lm else 1)

    def flops_per_step(self, arch) -> int:
        """Forward + backward FLOPs (FlopCounterMode: matmuls and convolutions)."""
        from torch.utils.flop_counter import FlopCounterMode

        hidden = self.hidden
        with FlopCounterMode(display=False) as fc:
            self.fwd_bwd(arch)
        self.model.zero_grad(set_to_none=True)
        self.hidden = hidden
        return fc.get_total_flops()


def controller_for(space, hidden: int = 64) -> Controller:
    return Controller(space.decisions(), space.initial_anchors, hidden=hidden)


def sample_archs(space, n: int, seed: int, hidden: int = 64):
    torch.manual_seed(seed)
    ctrl = controller_for(space, hidden)
    with torch.no_grad():
        return ctrl(n, generator=torch.Generator().manual_seed(seed)).archs


def matmul_probe(device: torch.device, n: int = 2048):
    """A function timing one dense fp32 n x n @ n x n matmul, returning FLOP/s. It
    allocates nothing after this call, so it does not move peak-memory figures."""
    a, b, c = (torch.randn(n, n, device=device) for _ in range(3))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    torch.mm(a, b, out=c)  # warm-up
    return lambda: 2 * n**3 / timed(lambda: torch.mm(a, b, out=c), device)


def matmul_flops(device: torch.device, n: int = 2048, reps: int = 5) -> float:
    """Dense fp32 matmul throughput of this machine (FLOP/s, median of ``reps``)."""
    probe = matmul_probe(device, n)
    return median([probe() for _ in range(reps)])
