"""The op registry shared by every supernet and every child (DARTS operations.py).

An op name turns into computation here and nowhere else. Every factory takes
``(channels, stride)`` and returns an ``nn.Module``; supernets keep their candidates
in ``nn.ModuleDict`` keyed by op name and children instantiate the same factory with
the same arguments, which is what makes "supernet == child" hold exactly.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from enas.registry import Registry

OPS: Registry = Registry("op")
