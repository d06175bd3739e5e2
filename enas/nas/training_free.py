"""Training-free scores: what an architecture's untrained child says about it.

Each score is computed on the child that ``space.child(arch, model_args)`` builds at
initialisation, with one forward (and for synflow one backward), so it costs about
one training step and needs no supernet. They are the floors a weight-sharing ranking
has to beat (a supernet that ranks no better than counting parameters has not shown
that its training helps) and, in a search, optional terms of the score
(``search.score``, enas/nas/scoring.py).

* ``params``: the number of parameters of the test-time child (the floor every
  NAS-Bench-201 study reports; about Kendall tau 0.3 against its table).
* ``synflow``: Tanaka et al., "Pruning neural networks without any data by
  iteratively conserving synaptic flow" (NeurIPS 2020), used as a NAS score by
  Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS" (ICLR 2021):
  with every parameter replaced by its absolute value and a constant input,
  R = sum of the outputs, and the score is sum_theta |theta * dR/dtheta|. Computed in
  float64 with BN in eval mode at its initial statistics (an identity), as the
  authors compute it without BN; reported as its natural log (the raw value spans
  hundreds of orders of magnitude; the order is the same).
* ``naswot``: Mellor et al., "Neural Architecture Search without Training" (ICML
  2021): the binary code of every ReLU unit (active or not) for each of n inputs;
  K[i, j] = number of units on which inputs i and j agree; the score is log|det K|.
  Networks whose codes separate the inputs (many distinct linear regions) score high.
  Defined for networks whose non-linearities are ``nn.ReLU`` modules.

The task supplies the inputs (``task.probe_input(kind, n)``) and runs the model
(``task.probe_forward(model, inputs)``), so a score never mentions images or tokens.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn

from enas.errors import ConfigError

NASWOT_BATCH = 64  # inputs per naswot code matrix (Mellor et al. use 128; 64 halves the cost)


def count_params(model: nn.Module) -> int:
    """Parameters of the network used at test time (an auxiliary head left out)."""
    n = sum(p.numel() for p in model.parameters())
    aux = getattr(model, "aux_head", None)
    if isinstance(aux, nn.Module):
        n -= sum(p.numel() for p in aux.parameters())
    return n


def synflow(model: nn.Module, forward: Callable[[nn.Module], torch.Tensor]) -> float:
    """log sum_theta |theta * dR/dtheta| with |theta| and R = forward(model).sum().

    ``model`` is changed in place (float64, absolute weights): pass a throwaway child."""
    model.double().eval()
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    model.zero_grad(set_to_none=True)
    forward(model).sum().backward()
    total = sum(float((p.detach() * p.grad).abs().sum()) for p in model.parameters() if p.grad is not None)
    return math.log(total) if total > 0 else -math.inf


def naswot(model: nn.Module, forward: Callable[[nn.Module], torch.Tensor]) -> float:
    """log|det K| of the ReLU codes' agreement matrix over the inputs ``forward`` feeds."""
    codes: list[torch.Tensor] = []

    def keep(_m, _inp, out):
        codes.append((out.detach() > 0).flatten(1).to(torch.float64))

    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise ConfigError("naswot reads the codes of nn.ReLU modules and this space's network has none "
                          "(its activations are functions); use synflow or params")
    hooks = [m.register_forward_hook(keep) for m in relus]
    try:
        model.train()  # BN normalises with the batch's statistics, as Mellor et al. run it
        with torch.no_grad():
            forward(model)
    finally:
        for h in hooks:
            h.remove()
    c = torch.cat(codes, dim=1)  # [n, units]
    k = c @ c.T + (1 - c) @ (1 - c).T  # units on which inputs i and j agree
    return float(torch.linalg.slogdet(k)[1])


NAMES = ("params", "synflow", "naswot")


def score(name: str, space, arch, model_args, task, seed: int = 0) -> float:
    """The training-free score ``name`` of ``arch``'s child at initialisation (seeded)."""
    if name not in NAMES:
        raise ConfigError(f"unknown training-free score {name!r}; known: {', '.join(NAMES)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the same initial weights for the same arch, whatever ran before
        child = space.child(arch, model_args, **task.model_kwargs()).to(task.device)
    if name == "params":
        return float(count_params(child))
    if name == "synflow":
        ones = task.probe_input("constant", 1)
        return synflow(child, lambda m: task.probe_forward(m, ones, torch.float64))
    batch = task.probe_input("data", NASWOT_BATCH)
    return naswot(child, lambda m: task.probe_forward(m, batch, None))
