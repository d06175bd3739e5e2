"""Range checks the sections' ``__post_init__`` share; each raises ValueError naming the key
(the loader turns it into one ConfigError line)."""
from __future__ import annotations

from enas.errors import brief

# Seeds: the generators are seeded with seed * 1,000,003 + epoch (enas/nas/search.py), which must
# stay a 64-bit integer; numpy takes seeds below 2**32.
MAX_SEED = 2**32 - 1


def at_least(section: str, obj, low, *names) -> None:
    for n in names:
        if getattr(obj, n) < low:
            raise ValueError(f"{section}.{n} must be >= {low}, got {getattr(obj, n)}")


def positive(section: str, obj, *names) -> None:
    for n in names:
        if not getattr(obj, n) > 0:
            raise ValueError(f"{section}.{n} must be > 0, got {getattr(obj, n)}")


def check_seed(section: str, obj) -> None:
    if not 0 <= obj.seed <= MAX_SEED:
        raise ValueError(f"{section}.seed must be in 0..{MAX_SEED:,}, got {brief(obj.seed)}")


def fraction(section: str, obj, *names) -> None:
    """Each of ``names`` in [0, 1)."""
    for n in names:
        if not 0.0 <= getattr(obj, n) < 1.0:
            raise ValueError(f"{section}.{n} must be in [0, 1), got {getattr(obj, n)}")
