"""Refuse a network that cannot fit in memory before allocating it.

Configs and architecture files are shared, so ``model.hidden: 1000000000`` must end in
an error that names the value, not in the allocator's traceback, an overflow deep in
torch.nn, or a machine swapping for minutes. The network is first built on PyTorch's
``meta`` device (shapes without storage) to count its parameters. Training holds every
parameter about four times (the weights, their gradients, and SGD momentum or Adam's two
moments), so that is the floor checked here: activations come on top, which is why a
network that passes can still run out of memory, but one that fails never could fit.

The activations are checked first, from the settings alone (``check_step``): a space
estimates the values one training step keeps for its backward pass
(``activation_elements``), which the batch size multiplies, so ``data.batch_size:
10000000`` is refused before any network or batch exists.
"""
from __future__ import annotations

import os
from typing import Callable

import torch
import torch.nn as nn

from enas.errors import ConfigError
from enas.storage.files import read_regular

COPIES = 4  # weights, gradients, two optimiser buffers


try:
    from torch.utils._device import DeviceContext
except ImportError:  # pragma: no cover - a torch without it: plain meta construction
    DeviceContext = None


def _shapes_only():
    """``torch.device("meta")``, except that in-place writes into a meta tensor (the
    initialisers' ``normal_``, ``uniform_``, ``fill_``) return at once: there is nothing
    to write, and PyTorch runs them through its reference kernels, which take ~6 s for
    a micro supernet's 1,700 convolutions (skipped, the build takes about as long as a
    real one)."""
    if DeviceContext is None:
        return torch.device("meta")

    class ShapesOnly(DeviceContext):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            if name.endswith("_") and not name.endswith("__"):
                # torch.nn.init passes its tensor by keyword
                target = args[0] if args else next(iter((kwargs or {}).values()), None)
                if isinstance(target, torch.Tensor) and target.is_meta:
                    return target
            return super().__torch_function__(func, types, args, kwargs)

    return ShapesOnly(torch.device("meta"))


def device_bytes(device: torch.device) -> int | None:
    """Total memory of ``device`` (GPU memory, or the machine's RAM for the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no figure, no check
        return None


def sizes_of(section: str, values: dict) -> str:
    """``model.hidden=1000, model.layers=2`` for the error message (the section's defaults if empty)."""
    return ", ".join(f"{section}.{k}={v}" for k, v in values.items()) or f"the default {section} sizes"


# The meta build still makes every module as a Python object (~2.5 KB, ~1.5 ms each): a
# space of someone else's whose size arguments repeat cells without a declared limit
# (space.py model_limits) is stopped here, not after minutes and gigabytes. The largest
# built-in network, a micro supernet of 16 cells per stage, has ~45,000.
MAX_MODULES = 200_000


class _TooManyModules(Exception):
    pass


def _count_modules():
    """A hook that stops a build once it has registered MAX_MODULES modules."""
    count = [0]

    def hook(module, name, submodule):
        count[0] += 1
        if count[0] > MAX_MODULES:
            raise _TooManyModules
    return torch.nn.modules.module.register_module_module_registration_hook(hook)


def check_fits(build: Callable[[], nn.Module], what: str, sizes: str, device: torch.device) -> None:
    """Raise a ConfigError naming ``sizes`` (the config values that size ``what``) when the
    parameters of ``build()`` alone cannot fit in ``device``'s memory, or it has more than
    MAX_MODULES modules."""
    handle = _count_modules()
    try:
        with _shapes_only():
            params = sum(p.numel() * p.element_size() for p in build().parameters())
    except _TooManyModules:
        raise ConfigError(f"the {what} of {sizes} has more than {MAX_MODULES:,} modules (layers, cells and their "
                          f"parts); reduce these sizes") from None
    except RuntimeError as e:
        if "overflow" not in str(e).lower():
            raise
        params = float("inf")  # more bytes than a 64-bit size can count
    finally:
        handle.remove()
    have = device_bytes(device)
    need = params * COPIES
    if have is not None and need > have:
        shown = "more than 2**63 bytes" if need == float("inf") else f"{need / 2**30:,.1f} GiB"
        raise ConfigError(f"the {what} of {sizes} needs {shown} to train (its weights, gradients and optimiser "
                          f"state) and {device} has {have / 2**30:,.1f} GiB; reduce these sizes")


def available_bytes(device: torch.device) -> int | None:
    """Memory ``device`` can still give: free GPU memory, or the RAM the kernel reports
    available (free plus reclaimable caches) for the CPU; None where there is no figure."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in read_regular("/proc/meminfo", 1 << 16).decode("ascii", "replace").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no figure, no check
        return None


def check_step(space, model_args, task_kwargs: dict, data, batch_size: int, model: dict, device: torch.device,
               processes: int = 1) -> None:
    """Raise a ConfigError naming the settings that size a step (``data`` section, the
    ``model`` section's values) when the activations of one training step of
    ``batch_size`` examples cannot fit in what ``device`` has available; ``processes``
    share the device's memory (several processes on the CPU). Nothing is built: the
    space's ``activation_elements`` is a formula. A space without one is held to its
    input batch alone (3 x image_size^2 values an image, one a token), which catches an
    absurd batch size, not a network too large for the device."""
    text = "vocab_size" in task_kwargs
    seq_len = (max(data.bptt, data.bptt_max) if data.variable_bptt else data.bptt) if text else 1
    named = [f"data.batch_size={data.batch_size}"]
    if text:
        named.append(f"data.bptt={data.bptt}" + (f", data.bptt_max={data.bptt_max}" if data.variable_bptt else ""))
    elif data.dataset == "imagefolder":
        named.append(f"data.image_size={data.image_size}")
    named.append(sizes_of("model", model))
    estimate = getattr(space, "activation_elements", None)
    if estimate is not None:
        values, held = estimate(model_args, batch_size=batch_size, seq_len=seq_len, **task_kwargs), "activations"
    else:
        values, held = batch_size * (seq_len if text else 3 * task_kwargs.get("image_size", 32) ** 2), "input batch"
    need = values * 4 * processes  # float32
    have = available_bytes(device)
    if have is not None and need > have:
        who = f" in each of {processes} processes" if processes > 1 else ""
        raise ConfigError(f"one training step with {', '.join(named)} keeps about {need / processes / 2**30:,.1f} GiB "
                          f"of {held}{who} for its backward pass and {device} has {have / 2**30:,.1f} GiB available; "
                          f"reduce these sizes")
