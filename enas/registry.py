"""A tiny name -> factory registry, loud on duplicates and unknown names.

Used for search spaces (``SPACES``), tasks (``TASKS``) and ops (``search_spaces.ops.OPS``).
"""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from enas.errors import RegistryError, brief

T = TypeVar("T")




class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise RegistryError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise RegistryError(unknown_message(self.kind, name, self._items)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)


def unknown_message(kind: str, name: str, known) -> str:
    """'unknown op 'sep_conv3x3'; did you mean 'sep_conv_3x3'? (known: ...)'"""
    known = sorted(known)
    close = difflib.get_close_matches(str(name)[:100], known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {brief(name)}{hint} (known: {', '.join(known)})"
