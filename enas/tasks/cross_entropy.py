"""Mean token cross-entropy with a one-pass backward, for the language-model loss.

F.cross_entropy (log_softmax + nll_loss) spends most of a PTB step's non-matmul time on
the [tokens, vocab] logits (2240 x 10000 in the paper's search): nll_loss's backward
zero-fills a dense gradient, and log_softmax's backward then reads it and the saved
output again. Here the backward turns the saved log-probabilities into
softmax - one_hot in place (one exp pass) and scales it, the same gradient in a fifth
of the time (benchmarks/RESULTS.md). tests/test_fast_paths.py checks it against
F.cross_entropy.
"""
from __future__ import annotations

import torch


class _TokenCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target):
        logp = torch.log_softmax(logits, dim=1)
        ctx.save_for_backward(logp, target)
        ctx.used = False
        return -logp.gather(1, target[:, None]).mean()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        if ctx.used:  # the saved log-probs were overwritten by the first backward
            raise RuntimeError("token_cross_entropy does not support a second backward (retain_graph)")
        ctx.used = True
        logp, target = ctx.saved_tensors
        g = logp.exp_()  # softmax, in the buffer nothing else holds
        g[torch.arange(target.numel(), device=g.device), target] -= 1.0
        return g.mul_(grad / target.numel()), None


def token_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean_i -log softmax(logits_i)[target_i]; logits [N, V], target [N] (int64)."""
    if not (torch.is_grad_enabled() and logits.requires_grad):
        return torch.nn.functional.cross_entropy(logits, target)
    return _TokenCrossEntropy.apply(logits, target)
