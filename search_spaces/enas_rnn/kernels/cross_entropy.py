"""Mean token cross-entropy with a one-pass backward, for the language-model loss.

F.cross_entropy (log_softmax + nll_loss) spends most of a PTB step's non-matmul time on
the [tokens, vocab] logits (2240 x 10000 in the paper's search): nll_loss's backward
zero-fills a dense gradient, and log_softmax's backward then reads it and the saved
output again and runs a second exp pass. Here the forward saves the softmax itself and
the backward turns it into softmax - one_hot in place: one exp pass per step instead of
two, and a fifth of the backward time (measured with benchmarks/throughput.py). tests/test_fast_paths.py
checks it against F.cross_entropy.
"""
from __future__ import annotations

import torch


def nll_from_softmax(logits: torch.Tensor, p: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-row -log p_t from the logits [N, V] and their softmax p.

    log p_t = x_t - max_j x_j + log max_j p_j, since the largest softmax entry is
    exp(0) / Z. max p >= 1 / V never underflows; p_t itself can (to 0 in float32 once it
    is 87 nats below the max), so -log p_t would give inf."""
    x_t = logits.gather(1, target[:, None]).squeeze(1)
    return logits.amax(1) - x_t - p.amax(1).log()


def softmax_to_grad_(p: torch.Tensor, target: torch.Tensor, scale) -> torch.Tensor:
    """(p - one_hot(target)) * scale, in place in the softmax p [N, V]: the gradient of
    scale * sum_i -log p_i[target_i] with respect to the logits."""
    p[torch.arange(target.numel(), device=p.device), target] -= 1.0
    return p.mul_(scale)


class _TokenCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target):
        p = torch.softmax(logits, dim=1)
        ctx.save_for_backward(p, target)
        ctx.used = False
        return nll_from_softmax(logits, p, target).mean()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        if ctx.used:  # the saved softmax was overwritten by the first backward
            raise RuntimeError("token_cross_entropy does not support a second backward (retain_graph)")
        ctx.used = True
        p, target = ctx.saved_tensors  # softmax, in the buffer nothing else holds
        return softmax_to_grad_(p, target, grad / target.numel()), None


def token_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean_i -log softmax(logits_i)[target_i]; logits [N, V], target [N] (int64)."""
    if not (torch.is_grad_enabled() and logits.requires_grad):
        return torch.nn.functional.cross_entropy(logits, target)
    return _TokenCrossEntropy.apply(logits, target)
