"""YAML for files that may come from anyone (configs, architecture files, run folders).

``yaml.safe_load`` never runs code, but it still lets a 1 KB file expand into gigabytes
through nested anchors and aliases ("billion laughs"), recurse forever through an alias
to itself, and silently keep the last of two equal keys; nesting deeper than Python's
recursion, and integers longer than Python converts (4,300 digits), end in tracebacks.
None of that has a use in an enas file, so ``load`` refuses all of it, and files over
``MAX_BYTES``, with a ``yaml.YAMLError`` (callers already turn those into one-line
errors naming the file).
"""
from __future__ import annotations

import yaml

from enas.storage.files import read_regular

MAX_BYTES = 4 * 2**20  # the largest shipped file is a few KB; a run's config.yaml too
MAX_DEPTH = 32  # an enas file nests 4 levels (controller.tanh_constant.index)


class UnsafeYAML(yaml.YAMLError):
    pass


def _where(mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


class _StrictLoader(yaml.SafeLoader):
    def compose_node(self, parent, index):
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise UnsafeYAML(f"nesting deeper than {MAX_DEPTH} levels at {_where(mark)}; enas files nest a few")
            return self._compose_node(parent, index)
        finally:
            self._depth -= 1

    def _compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise UnsafeYAML(f"an alias (*{event.anchor}) at {_where(event.start_mark)}: enas files do not use "
                             f"YAML anchors and aliases; write the value out")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                dup = key in seen
            except TypeError:  # an unhashable key; the constructor reports it
                continue
            if dup:
                raise UnsafeYAML(f"the key {key!r} appears twice in one mapping (again at "
                                 f"{_where(key_node.start_mark)}); keep one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read(path, follow: bool = True) -> str:
    """The text of ``path``, a regular file of at most ``MAX_BYTES`` (a device such as
    /dev/zero, a FIFO or a huge file is refused instead of filling memory or waiting);
    ``follow=False``: a run folder's own file, not a link."""
    try:
        raw = read_regular(path, MAX_BYTES, follow)
    except OSError as e:
        if getattr(e, "strerror", None) and "more than" in e.strerror:
            raise UnsafeYAML(f"more than {MAX_BYTES:,} bytes, more than an enas file may have") from None
        raise
    return raw.decode()


def load(text: str):
    """Like ``yaml.safe_load``, refusing aliases, repeated keys and oversized text."""
    if len(text) > MAX_BYTES:
        raise UnsafeYAML(f"{len(text):,} characters, more than the {MAX_BYTES:,} an enas file may have")
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except ValueError as e:  # int(): more digits than Python converts
        raise UnsafeYAML(f"a number enas cannot read ({str(e).split(':')[0]})") from None
    except RecursionError:  # a deep flow sequence the scanner nests before composing
        raise UnsafeYAML(f"nesting deeper than {MAX_DEPTH} levels; enas files nest a few") from None
    except yaml.MarkedYAMLError as e:
        # PyYAML's message spans lines (quoted excerpts with a caret); callers print one line
        parts = [what + (f" at {_where(mark)}" if mark else "")
                 for what, mark in ((e.context, e.context_mark), (e.problem, e.problem_mark)) if what]
        raise UnsafeYAML("; ".join(parts) or "malformed YAML") from None


class Dumper(yaml.SafeDumper):
    """Writes a value that occurs twice out twice: ``load`` refuses aliases."""

    def ignore_aliases(self, data):
        return True


def dump(value, **kwargs) -> str:
    return yaml.dump(value, Dumper=Dumper, **kwargs)
