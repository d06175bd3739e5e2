"""docs/config.md, generated from the sections' source: every setting with its type, its
default and the comment beside it (or the comment lines just above it).

    python -m enas.config.docs > docs/config.md

tests/test_config_docs.py fails when docs/config.md differs from what this prints.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import sys
import textwrap
import tokenize
import typing

from enas.config.schema import (ControllerSection, DataSection, ImageSearchSection, LMSearchSection, OptimSection, PerKind,
                     ScoreSection, SearchConfig, SearchSection, SpaceSection)
from enas.config.schema_retrain import RetrainConfig, RetrainSection

COMMAND = "python -m enas.config.docs > docs/config.md"

# (heading: the keys' prefix, the section), in the order a config file gives them
SECTIONS = [("space", SpaceSection), ("data", DataSection), ("train", OptimSection),
            ("controller", ControllerSection), ("controller.tanh_constant / controller.temperature", PerKind),
            ("search", SearchSection), ("search.score", ScoreSection), ("search.lm", LMSearchSection),
            ("search.image", ImageSearchSection), ("retrain", RetrainSection)]

INTRO = f"""# Settings

Every setting of a search config and a retrain config: its type, its default and what it
does. This page is generated from enas/config/schema.py and schema_retrain.py, where each
setting is declared with its comment; do not edit it by hand, regenerate it:
`{COMMAND}`.

A config is YAML, one mapping per section. `--set a.b=c` overrides any value (read as
YAML); `base: OTHER.yaml` starts from another config's values. Unknown keys, wrong types
and out-of-range values are refused before anything runs, naming the key. The `model`
section and `space.args` belong to the space (its `ModelArgs` and `Args`; see
docs/own-space.md). Settings of one kind of data live in that task's section:
`search.lm` for a language model (data.dataset ptb or text), `search.image` for
images (cifar10, cifar100, imagefolder); a config gives only its own task's.
"""


def comments(cls) -> dict[str, str]:
    """Field name -> its comment: the one on its line, else the comment lines just above."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    on_line = {tok.start[0]: tok.string.lstrip("#").strip()
               for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    out = {}
    for node in ast.parse(source).body[0].body:
        if not isinstance(node, ast.AnnAssign):
            continue
        text = on_line.get(node.lineno) if not lines[node.lineno - 1].lstrip().startswith("#") else None
        if text is None:
            above, n = [], node.lineno - 1
            while n >= 1 and lines[n - 1].lstrip().startswith("#"):
                above.insert(0, on_line[n])
                n -= 1
            text = " ".join(above)
        if not text:
            raise ValueError(f"{cls.__name__}.{node.target.id} has no comment: say what it does beside it")
        out[node.target.id] = text
    return out


def type_text(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " / ".join(str(a) for a in args)
    if origin is typing.Union or str(origin) == "types.UnionType":
        inner = [a for a in args if a is not type(None)]
        return f"{type_text(inner[0])} or null"
    if dataclasses.is_dataclass(tp):
        return "section"
    return {dict: "mapping", bool: "true / false", int: "integer", float: "number", str: "text"}.get(tp, str(tp))


def default_text(f: dataclasses.Field) -> str:
    if f.default_factory is not dataclasses.MISSING:
        return str(f.default_factory() or "{}")
    if f.default is dataclasses.MISSING:
        return "required"
    if dataclasses.is_dataclass(f.default):
        return "(below)"
    if f.default == "":
        return '""'
    if f.default is None:
        return "null"
    if isinstance(f.default, bool):
        return str(f.default).lower()
    return str(f.default)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(prefix: str, cls) -> list[str]:
    notes, hints = comments(cls), typing.get_type_hints(cls)
    rows = ["| setting | type | default | what it does |", "|---|---|---|---|"]
    keys = prefix.split(" / ")
    for f in dataclasses.fields(cls):
        name = " / ".join(f"`{k}.{f.name}`" for k in keys)
        rows.append(f"| {name} | {_cell(type_text(hints[f.name]))} | `{_cell(default_text(f))}` | {_cell(notes[f.name])} |")
    return rows


def page() -> str:
    out = [INTRO]
    for title, cls in (("A search config", SearchConfig), ("A retrain config", RetrainConfig)):
        notes = comments(cls)
        out.append(f"{title} (`enas {'search' if cls is SearchConfig else 'retrain'}`) has these sections: "
                   + "; ".join(f"`{f.name}` ({notes[f.name]})" for f in dataclasses.fields(cls)) + ".\n")
    for prefix, cls in SECTIONS:
        out.append(f"## {' / '.join(f'`{k}`' for k in prefix.split(' / '))}\n")
        doc = inspect.getdoc(cls)
        if doc and not doc.startswith(cls.__name__ + "("):  # dataclasses invent a signature
            out.append(" ".join(doc.split()) + "\n")
        out.append("\n".join(table(prefix, cls)) + "\n")
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(page())
