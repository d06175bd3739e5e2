"""Several processes (torchrun): process group, shards, and the few collectives enas needs.

``torchrun --nproc_per_node=N -m enas search|retrain ...`` starts N copies of the
CLI with RANK, WORLD_SIZE and LOCAL_RANK in the environment; ``setup`` joins them
into one process group: NCCL when the device is CUDA (each process on
``cuda:LOCAL_RANK``), Gloo on the CPU. Without those variables every helper here is
a no-op (world 1), so a plain ``enas search`` runs exactly the code it always ran.

How the engine uses it (see docs/distributed.md):

* every process holds the same models and optimisers and takes the same decisions
  (same seeds, same architecture draws, same gathered rewards); data is sharded:
  each process computes its ``Shard`` of every minibatch;
* ``average_gradients`` after each backward makes the step that of the whole
  minibatch; ``Shard.sum`` makes a validation figure that of the whole batch;
* only rank 0 writes the run folder; ``on_main`` runs file reading/creation there
  and hands the result (or the error) to everyone;
* a failing process exits non-zero at once (enas/cli.py), which ends its peers'
  pending collectives with an error instead of a hang; ``ENAS_DIST_TIMEOUT_S``
  (default 1800) bounds every collective otherwise.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Callable, Iterable, TypeVar

import torch
import torch.distributed as dist

from enas.config import ConfigError
from enas.errors import UserError

T = TypeVar("T")
ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
_comm_device = torch.device("cpu")  # where collective buffers live: cuda:LOCAL_RANK under NCCL


class PeerError(RuntimeError):
    """Another process failed first (it printed the error); this one stops quietly."""

    def __init__(self, code: int):
        super().__init__(f"another process failed (exit code {code})")
        self.code = code


class OutOfSync(RuntimeError):
    """Processes that must hold equal weights do not: a bug, not a user error."""


# ---- process group ---------------------------------------------------------------------

def launched() -> bool:
    """Started by torchrun (or anything that sets its environment variables)."""
    return all(k in os.environ for k in ENV)


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def world() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0)) if active() else 0


def is_main() -> bool:
    return rank() == 0


def tag() -> str:
    """Prefix for a process's own messages: '[rank 1/4] ' under torchrun, else ''."""
    return f"[rank {rank()}/{world()}] " if world() > 1 else ""


def timeout() -> datetime.timedelta:
    return datetime.timedelta(seconds=float(os.environ.get("ENAS_DIST_TIMEOUT_S", 1800)))


def setup(device: torch.device) -> torch.device:
    """Join torchrun's process group (once); returns this process's device.

    CUDA -> NCCL and ``cuda:LOCAL_RANK``; CPU -> Gloo. Not launched by torchrun: returns
    ``device`` unchanged and starts nothing."""
    global _comm_device
    if not launched() or active():
        return _local_device(device) if active() else device
    device = _local_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(device)
        # A timed-out NCCL collective aborts the process instead of hanging (default in
        # recent PyTorch; set for older ones).
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        dist.init_process_group("nccl", timeout=timeout(), device_id=device)
    else:
        dist.init_process_group("gloo", timeout=timeout())
    _comm_device = device if backend == "nccl" else torch.device("cpu")
    return device


def _local_device(device: torch.device) -> torch.device:
    if device.type != "cuda":
        return device
    lr = int(os.environ.get("LOCAL_RANK", 0))
    if device.index is not None and device.index != lr and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise ConfigError(f"--device {device}: under torchrun each process uses cuda:LOCAL_RANK; "
                          "pass --device cuda (or auto) and choose GPUs with CUDA_VISIBLE_DEVICES")
    if lr >= torch.cuda.device_count():
        raise ConfigError(f"LOCAL_RANK {lr} but only {torch.cuda.device_count()} CUDA devices are visible; "
                          "use --nproc_per_node <= the number of GPUs")
    return torch.device("cuda", lr)


def backend() -> str | None:
    return dist.get_backend() if active() else None


def teardown() -> None:
    if active():
        dist.destroy_process_group()


# ---- collectives (identity with one process) ----------------------------------------------

def barrier() -> None:
    if world() > 1:
        dist.barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` of rank ``src`` on every rank (pickled; for small things and state dicts)."""
    if world() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_comm_device)
    return box[0]


def all_gather(t: torch.Tensor) -> torch.Tensor:
    """[world, *t.shape]: every rank's ``t``, in rank order, on ``t``'s device."""
    if world() == 1:
        return t.detach().unsqueeze(0)
    x = t.detach().to(_comm_device).contiguous()
    out = [torch.empty_like(x) for _ in range(world())]
    dist.all_gather(out, x)
    return torch.stack(out).to(t.device)


def max_ints(values: Iterable[int]) -> list[int]:
    """Element-wise maximum over ranks."""
    vals = [int(v) for v in values]
    if world() == 1:
        return vals
    t = torch.tensor(vals, dtype=torch.int64, device=_comm_device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def average_gradients(params: Iterable[torch.nn.Parameter], stats: dict) -> dict:
    """Replace each gradient by its mean over ranks; return ``stats`` averaged likewise.

    One flat all-reduce of the gradients that exist plus the step's figures. Every rank
    ran the same architecture, so the same parameters have gradients everywhere (a
    supernet's unused candidates have none on every rank: nothing to wait for, unlike
    DistributedDataParallel's unused-parameter problem). With equal shard sizes and
    per-example mean losses, the mean of the shards' gradients is the gradient of the
    whole minibatch, i.e. the single-process step."""
    n = world()
    if n == 1:
        return stats
    grads = [p.grad for p in params if p.grad is not None]
    keys = list(stats)  # the same order on every rank (the same code made the dict)
    parts = [g.reshape(-1).float() for g in grads]
    parts += [torch.as_tensor(stats[k], device=grads[0].device if grads else None).reshape(1).float() for k in keys]
    flat = torch.cat(parts).to(_comm_device)
    dist.all_reduce(flat)
    flat.div_(n)
    off = 0
    with torch.no_grad():
        for g in grads:
            g.copy_(flat[off:off + g.numel()].view_as(g))
            off += g.numel()
    return {k: flat[off + j].to(grads[0].device if grads else flat.device) for j, k in enumerate(keys)}


def broadcast_module(module: torch.nn.Module, src: int = 0, buffers_only: bool = False) -> None:
    """Overwrite ``module``'s parameters (and buffers) with rank ``src``'s."""
    if world() == 1:
        return
    tensors = list(module.buffers()) if buffers_only else [*module.parameters(), *module.buffers()]
    with torch.no_grad():
        for t in tensors:
            x = t.detach().to(_comm_device)
            dist.broadcast(x, src=src)
            if x is not t:
                t.copy_(x)


def check_in_sync(what: str, tensors: Iterable[torch.Tensor], extra: Iterable[float] = ()) -> None:
    """Raise OutOfSync on every rank unless all ranks hold bitwise-equal ``tensors``
    (compared by per-tensor sums and norms) and ``extra`` numbers."""
    if world() == 1:
        return
    ts = [t.detach() for t in tensors]
    sig = torch.stack([torch.stack([t.double().sum(), t.double().norm()]) for t in ts]).reshape(-1) if ts \
        else torch.zeros(0, dtype=torch.float64)
    sig = torch.cat([sig.cpu(), torch.tensor([float(v) for v in extra], dtype=torch.float64)])
    rows = all_gather(sig)
    bad = [r for r in range(1, world()) if not torch.equal(rows[r], rows[0])]
    if bad:
        raise OutOfSync(f"{what} differ between rank 0 and rank(s) {bad}: the processes were meant to take "
                        "identical steps (a bug; please report it with the command line)")


# ---- who does what -------------------------------------------------------------------------

def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only (reading or writing the run folder) and return its result
    on every rank; if it raises, rank 0 re-raises the error and the others PeerError."""
    if world() == 1:
        return fn()
    out, err = None, None
    if is_main():
        try:
            out = (True, fn())
        except Exception as e:  # noqa: BLE001 - re-raised below, after the others know
            out, err = (False, _code_of(e)), e
    ok, val = broadcast_object(out)
    if ok:
        return val
    if err is not None:
        raise err
    raise PeerError(val)


def local_main_first(fn: Callable[[], T]) -> T:
    """Run ``fn`` (e.g. build a task: may download or extract data) on each machine's
    LOCAL_RANK 0 first, then on the others, so files are prepared once per machine. If
    it fails there, every rank stops (that rank shows the error)."""
    if world() == 1:
        return fn()
    first = local_rank() == 0
    out, err = None, None
    if first:
        try:
            out = fn()
        except Exception as e:  # noqa: BLE001
            err = e
    failed = max_ints([_code_of(err) if err is not None else 0])[0]
    if failed:
        if err is not None:
            raise err
        raise PeerError(failed)
    return out if first else fn()


def _code_of(err: BaseException) -> int:
    return 2 if isinstance(err, UserError) else 1


def decorrelate_rng() -> None:
    """Ranks > 0: reseed the global generator from its state and the rank, so dropout
    masks differ between shards. Rank 0 keeps its stream, the one checkpoints hold (a
    run resumed on any number of processes continues rank 0's stream)."""
    r = rank()
    if r == 0:
        return
    base = int(torch.randint(0, 2**62, (1,)).item())
    torch.manual_seed((base + r * 0x9E3779B97F4A7C15) % 2**63)


def require_multiple(key: str, value: int, why: str) -> None:
    n = world()
    if n > 1 and value % n:
        raise ConfigError(f"{key} = {value} is not a multiple of the number of processes ({n}): {why}; "
                          f"use a multiple of {n} or another --nproc_per_node")


# ---- shards --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shard:
    """This process's share of every batch: ``rank`` of ``world`` equal contiguous parts."""

    rank: int = 0
    world: int = 1

    def take(self, t: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Equal contiguous share of ``t`` along ``dim`` (size must divide)."""
        if self.world == 1:
            return t
        n = t.size(dim)
        assert n % self.world == 0, f"{n} rows do not split into {self.world} equal shards"
        b = n // self.world
        return t.narrow(dim, self.rank * b, b).contiguous()

    def chunk(self, t: torch.Tensor) -> torch.Tensor:
        """Share of ``t`` along dim 0, sizes differing by at most one (possibly empty)."""
        if self.world == 1:
            return t
        return t.tensor_split(self.world)[self.rank]

    def gather(self, t: torch.Tensor | None, dim: int = 0) -> torch.Tensor | None:
        """Inverse of ``take``: the shards of all ranks concatenated along ``dim``."""
        if self.world == 1 or t is None:
            return t
        return torch.cat(list(all_gather(t).unbind(0)), dim=dim)

    def sum(self, *values):
        """Sum of each value over ranks (gathered and added in rank order, so every rank
        gets the same bits). Tensors come back as float64 0-d tensors, ints as ints."""
        if self.world == 1:
            return values
        dev = next((v.device for v in values if isinstance(v, torch.Tensor)), torch.device("cpu"))
        vec = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=dev).reshape(()) for v in values])
        tot = all_gather(vec).sum(0)
        return tuple(int(tot[i].item()) if isinstance(v, int) else tot[i] for i, v in enumerate(values))


def shard() -> Shard:
    return Shard(rank(), world())
