"""BatchNorm without affine parameters or running statistics, for supernets.

A supernet's BN layers see a different sub-network at every step, so running
statistics averaged over those steps describe no single architecture, and affine
parameters learn an average over all of them. NAS-Bench-201's and NATS-Bench's own
weight-sharing baselines therefore train their supernets with ``affine=False,
track_running_stats=False`` (every layer normalises with its batch's statistics, in
training and when scoring), which their maintainer found matters more than the search
algorithm (D-X-Y/AutoDL-Projects, issues 70 and 115). ``search.supernet_bn: plain``.
"""
from __future__ import annotations

import torch.nn as nn

_BN = nn.modules.batchnorm._BatchNorm


def make_plain(model: nn.Module) -> int:
    """Replace every BN layer of ``model`` in place by one of the same kind, size, eps and
    momentum without affine parameters or running statistics; returns how many. Call it
    before moving the model to its device (the new layers are made on the CPU)."""
    count = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, _BN) and (child.affine or child.track_running_stats):
                setattr(module, name, type(child)(child.num_features, eps=child.eps, momentum=child.momentum,
                                                  affine=False, track_running_stats=False))
                count += 1
    return count
