"""Non-monotonically triggered averaged SGD (NT-ASGD; Merity et al. 2018, as in enas_lm).

SGD runs as usual; once the validation figure stops improving, a uniform average of the
weights after every later step is kept, and evaluation (and the best-valid model) uses
the average instead of the last weights.
"""
from __future__ import annotations

import contextlib

import torch


def should_start(history: list[float], current: float, patience: int) -> bool:
    """The trigger (enas_lm fixed.py): ``current`` (lower is better) is worse than the
    best of every epoch before the last ``patience`` ones. ``history`` holds the earlier
    epochs' figures, oldest first, not ``current``."""
    return len(history) > patience and current > min(history[:-patience])


class WeightAverage:
    """The running uniform average of a model's parameters, once started."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.avg: dict[str, torch.Tensor] | None = None
        self.count = 0
        self.start_epoch: int | None = None

    @property
    def started(self) -> bool:
        return self.avg is not None

    def _params(self) -> list[tuple[str, torch.nn.Parameter]]:
        return list(self.model.named_parameters())  # deduplicated (tied embeddings once)

    def start(self, epoch: int) -> None:
        self.avg = {n: p.detach().clone() for n, p in self._params()}
        self.count, self.start_epoch = 0, epoch

    def update(self) -> None:
        """After each applied SGD step: fold the new weights into the average."""
        if self.avg is None:
            return
        self.count += 1
        params = self._params()
        with torch.no_grad():
            torch._foreach_lerp_([self.avg[n] for n, _ in params], [p.detach() for _, p in params], 1.0 / self.count)

    @contextlib.contextmanager
    def swapped_in(self):
        """The weights to evaluate: the average once started, else the SGD weights as they are."""
        if self.avg is None:
            yield
            return
        params = self._params()
        backup = {n: p.detach().clone() for n, p in params}
        with torch.no_grad():
            for n, p in params:
                p.copy_(self.avg[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in params:
                    p.copy_(backup[n])

    def state_dict(self) -> dict:
        return {"avg": self.avg, "count": self.count, "start_epoch": self.start_epoch}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.avg = None if state["avg"] is None else {n: t.to(device) for n, t in state["avg"].items()}
        self.count, self.start_epoch = state["count"], state["start_epoch"]
