"""Decisions, architectures and the search-space protocol.

A search space declares an ordered list of decisions with stable names
(``node3/input``, ``normal/node2/a/op``, ``layer5/skips``); an architecture is a
plain dict keyed by those names. The controller (enas/nas/controller.py) only ever
sees this list, so it never needs to know whether it designs an RNN or a CNN
(NNI's "every choice has a label" contract; ENAS paper, section 2).

Three kinds of decision:

* ``categorical``: one name out of ``choices`` (an op, an activation).
* ``index``: one earlier node out of ``num_inputs``; the controller attends over
  the anchors (LSTM outputs) of those nodes (paper, section 2.1 / 2.3).
* ``skip``: any subset of ``num_inputs`` earlier layers, an independent yes/no
  per layer (macro space, paper section 2.2). Stored as a sorted list of indices.

Anchors: each node an ``index``/``skip`` decision can pick has an anchor, an LSTM
output of the controller that the decision attends over and that is fed back when the
node is picked. The official controllers make them in different places, so a space
declares where (paper 2.1-2.3; each space's ``decisions`` cites the official lines):

* ``anchor=True``: the output of this decision's own LSTM step is the anchor of a new
  node in ``scope`` (official macro skips, PTB index steps);
* ``anchor_step="after"``: one more LSTM step, on the input this decision's choice
  feeds, makes the anchor; the scope's next decision then reads the go embedding
  (official micro controller after a node's second op, macro after layer 0's op);
* ``anchor_step="before"``: one LSTM step on the current input makes the anchor before
  this decision, whose own step then reads the go embedding (official PTB node 0).

``SearchSpace.initial_anchors`` gives, per scope, the anchors of the inputs the scope
is given before its first decision (an ``int`` or ``InputAnchors``): the two cell
inputs of a micro cell, node 0 of enas_lm's cell. An ``index``/``skip`` decision's
``num_inputs`` must equal the number of anchors its scope holds at that point.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import shlex
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, Mapping, Protocol, Sequence, Union

import torch.nn as nn

from enas.config import ConfigError, from_dict, is_module_path
from enas.errors import QUOTE_CHARS, ArchError, RegistryError, UntrustedCodeError, brief
from enas.registry import Registry, unknown_message

ArchValue = Union[str, int, list]
Arch = dict  # {decision name: str (categorical) | int (index) | sorted list[int] (skip)}

KINDS = ("categorical", "index", "skip")
ANCHOR_STEPS = ("", "before", "after")
INPUT_ANCHORS = ("step", "step_zero", "zero")


@dataclass(frozen=True)
class InputAnchors:
    """The anchors of the inputs a scope is given (``SearchSpace.initial_anchors``)."""

    count: int = 0
    # "step": each takes one LSTM step on the go embedding and its output is the anchor;
    # "step_zero": the same steps give the attention keys, but picking such an input feeds
    #   zeros (official micro_controller.py 135-140 writes zeros as the anchor);
    # "zero": no step, key and fed value are zeros (enas_lm controller.py, all_h[0])
    kind: str = "step"

    def __post_init__(self):
        if self.count < 0 or self.kind not in INPUT_ANCHORS:
            raise ValueError(f"InputAnchors: count must be >= 0 and kind one of {INPUT_ANCHORS}, "
                             f"got {self.count}, {self.kind!r}")


def input_anchors(value: "int | InputAnchors") -> InputAnchors:
    """A space's ``initial_anchors`` entry as ``InputAnchors`` (an int n: n "step" anchors)."""
    return value if isinstance(value, InputAnchors) else InputAnchors(int(value))


@dataclass(frozen=True)
class Decision:
    name: str
    kind: str  # one of KINDS
    choices: tuple[str, ...] = ()  # categorical only
    num_inputs: int = 0  # index / skip: candidates 0 .. num_inputs-1
    # Decisions of one group share an output head (and, for categorical decisions,
    # an embedding table): all "activation" decisions of the RNN cell, all "op"
    # decisions of both micro cells (the official controller shares w_soft).
    group: str = ""
    scope: str = ""  # anchor list this decision reads from / appends to
    anchor: bool = False  # the output of this decision's LSTM step is a new anchor
    anchor_step: str = ""  # "before" / "after": an extra LSTM step makes a new anchor (module docstring)
    # index: the picked anchor is fed back divided by (distance_offset + num_inputs - j),
    # damping far nodes (official PTB controllers: 0.1); None feeds it as it is
    distance_offset: float | None = None
    # Learned bias added before the tanh shaping, initial value per choice
    # (micro: [10, 10, 0, 0, 0], paper section 4 / official micro_controller.py).
    bias_init: tuple[float, ...] | None = None
    # Fixed offset added after shaping: micro normal cell [+.25,+.25,-.25,-.25,-.25],
    # RNN index prior -(l-j)^2/6 (official enas_lm controller).
    logit_offset: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"decision {self.name}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "categorical" and len(self.choices) < 1:
            raise ValueError(f"decision {self.name}: categorical needs choices")
        if self.kind != "categorical" and self.num_inputs < 1:
            raise ValueError(f"decision {self.name}: {self.kind} needs num_inputs >= 1")
        if self.anchor_step not in ANCHOR_STEPS:
            raise ValueError(f"decision {self.name}: anchor_step must be one of {ANCHOR_STEPS}, got {self.anchor_step!r}")
        if self.anchor and self.anchor_step:
            raise ValueError(f"decision {self.name}: anchor and anchor_step each make the node's anchor; set one")
        if self.distance_offset is not None and self.kind != "index":
            raise ValueError(f"decision {self.name}: distance_offset applies to index decisions")
        if not self.group:
            object.__setattr__(self, "group", self.kind)

    @property
    def size(self) -> int:
        return len(self.choices) if self.kind == "categorical" else self.num_inputs


def validate(decisions: Sequence[Decision], arch: Mapping[str, Any]) -> Arch:
    """Check ``arch`` against ``decisions``; return a clean copy (lists sorted).

    Rejects missing, extra and out-of-range values with the decision's name.
    """
    if not isinstance(arch, Mapping):
        raise ArchError(f"an architecture must be a mapping of decision names, got {type(arch).__name__}")
    names = [d.name for d in decisions]
    extra = sorted(set(arch) - set(names))
    if extra:
        raise ArchError(unknown_message("decision", extra[0], names))
    out: Arch = {}
    for d in decisions:
        if d.name not in arch:
            raise ArchError(f"decision {d.name!r} is missing")
        v = arch[d.name]
        if d.kind == "categorical":
            if not isinstance(v, str) or v not in d.choices:
                raise ArchError(f"decision {d.name!r}: {brief(v)} is not one of {list(d.choices)}")
        elif d.kind == "index":
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < d.num_inputs:
                raise ArchError(f"decision {d.name!r}: input {brief(v)} is out of range 0..{d.num_inputs - 1}")
        else:
            if not isinstance(v, (list, tuple)) or any(
                isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < d.num_inputs for i in v
            ):
                raise ArchError(
                    f"decision {d.name!r}: skips must be a list of layer indices in 0..{d.num_inputs - 1}, "
                    f"got {brief(v)}"
                )
            if len(set(v)) != len(v):
                raise ArchError(f"decision {d.name!r}: repeated skip index in {brief(v)}")
            v = sorted(v)
        out[d.name] = v
    return out


class SearchSpace(Protocol):
    """What every space in search_spaces/ provides (see search_spaces/enas_rnn/cell.py).

    ``Args`` (frozen dataclass) defines the space itself and is written into every
    architecture file; ``ModelArgs`` (frozen dataclass) sizes the networks (width,
    depth, dropout), which differ between search and retraining for one arch.
    ``modality`` names the task family ("lm" or "image") the space's models serve.
    """

    name: ClassVar[str]
    modality: ClassVar[str]
    Args: ClassVar[type]
    ModelArgs: ClassVar[type]
    args: Any
    initial_anchors: Mapping[str, "int | InputAnchors"]

    def decisions(self) -> list[Decision]: ...

    def supernet(self, model_args: Any, **task_kwargs) -> nn.Module: ...

    def child(self, arch: Arch, model_args: Any, **task_kwargs) -> nn.Module: ...

    def describe(self, arch: Arch) -> str: ...

    # Optional hooks:
    #   extras(arch) -> dict           extra readable fields for arch files (nb201: cell_string)
    #   parse_text(line) -> Arch        one architecture per line for `enas rank --archs`
    #   to_text(arch) -> str            its inverse (the CSV column of `enas rank`)
    #   extra_keys, check_extras(arch, doc)   extra arch-file keys and their consistency check
    #   draw(arch, path)                a picture of the cell(s) (PNG)
    #   param_free_choices: set[str]    op names without weights (collapse warning)
    #   small_model: dict               ModelArgs small enough for the tests every space gets
    #                                   (tests/test_every_space.py); defaults otherwise
    #   arg_limits: dict[str, int]      the largest value of an integer Args field, the most
    #                                   items of a list one (check_arg_limits); 1024 otherwise
    #   count_params(arch, model_args, **task_kwargs) -> int   the child's parameter count
    #                                   without building it (search.max_params, enas/nas/budget.py);
    #                                   otherwise the child is built on the meta device
    #   retrain_model: dict             ModelArgs of the network the space's paper retrains:
    #                                   what search.max_params counts when budget_model is empty
    #   model_limits: dict[str, int]    the same for ModelArgs fields that repeat cells or
    #                                   layers (widths are left to the memory check)


SPACES: Registry[type] = Registry("search space")
PLUGIN_GROUP = "enas.search_spaces"  # entry points: space name -> the module that registers it


def _plugins() -> dict:
    return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}


def space_class(name: str) -> type:
    """The registered space ``name``, importing its module (an entry point of the
    ``enas.search_spaces`` group) on first use: the engine never imports a space by name."""
    if name not in SPACES:
        plugin = _plugins().get(name)
        if plugin is not None:
            importlib.import_module(plugin.value.split(":")[0])
    if name not in SPACES:
        raise RegistryError(unknown_message("search space (space.name)", name, set(SPACES.names()) | set(_plugins()))
                            + "; a space of your own is found through the file that defines it: space.module in "
                              "a search config, retrain.space_module in a retrain config, --space-module for "
                              "enas show")
    return SPACES.get(name)


def import_space_module(spec: str, key: str = "space.module") -> None:
    """Import the user's code that registers a space (docs/own-space.md, "A search space of your
    own"): a Python file (``my_space.py``) or an importable module name (``mypkg.spaces``).

    This is the one place a config makes enas run code, by design: ``key`` names the code
    to run, as a script's path would. Architecture files never do, and a command that
    opens an existing run imports only what its command line names (``run_module``).
    A file is imported once
    per path, under a name derived from that path, so a space registers once however many
    configs name it."""
    if not spec:
        return


    if not is_module_path(spec):
        try:
            importlib.import_module(spec)
        except ModuleNotFoundError as e:
            if e.name is None or not spec.startswith(e.name):
                raise  # the module itself imports something missing: its traceback says what
            raise ConfigError(f"{key}: no module named {spec!r} can be imported; give the path of your "
                              f"space's file (e.g. {key}: my_space.py) or install the package") from None
        return
    path = Path(spec).resolve()
    if not path.is_file():
        raise ConfigError(f"{key}: {spec} is not a file; give the Python file that defines your space "
                          f"(a relative path is relative to the config file)")
    name = "enas_user_space_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    if name in sys.modules:
        return
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"{key}: {spec} cannot be imported as Python code; name a .py file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise  # an error in the user's own code: its traceback is what they need


def run_module(named: str, given: str | None, where, key: str) -> str:
    """The module a command that opens an existing run may import: the one its command
    line names (``given``, ``--space-module``), never one the run's own files name
    (``named``, the ``key`` of ``where``): a run folder is a file anyone can edit, and a
    one-line change to its config.yaml must not make enas run someone else's code."""
    if given:
        return str(Path(given).resolve()) if is_module_path(given) else given
    if named:
        shown = shlex.quote(named) if named.isprintable() and len(named) <= QUOTE_CHARS else "FILE"
        raise UntrustedCodeError(f"{where} names Python code to import ({key}: {brief(named)}); enas imports no code "
                                 f"that a run folder's files name. If you trust that code, name it on the command "
                                 f"line: --space-module {shown}")
    return ""


def build_space(name: str, args: Mapping[str, Any] | None = None, module: str = ""):
    """Instantiate a space from a plain mapping of its Args (checked strictly), after
    importing ``module`` (``space.module``) when the space is the user's own."""
    import_space_module(module)
    cls = space_class(name)
    args = dict(args or {})
    check_arg_limits(cls, args)
    return cls(from_dict(cls.Args, args, "space.args"))


# A space's arguments size everything built from it (its decisions, the controller, the
# supernet) before any memory check can see a network: ``num_nodes: 1000000`` would build
# a million decisions first. Each space declares the largest value of each integer
# argument and the longest list it takes (``arg_limits``); an argument it does not name
# is held to DEFAULT_ARG_LIMIT. The ``model`` section's widths are left to the memory check
# (enas/train/memory.py counts parameters on the meta device, at no cost whatever the width); its
# repeat counts, which that count pays for module by module (``cells_per_stage: 100000``
# built for minutes into gigabytes), are bounded by the space's ``model_limits``.
DEFAULT_ARG_LIMIT = 1024


def check_arg_limits(cls, args: Mapping[str, Any], section: str = "space.args") -> None:
    """Every integer argument at most, and every list argument at most as long as, the
    space's limit for it; the error names the key, the value and the limit. ``section``
    "model": the ``model`` section, bounded by the space's ``model_limits`` alone."""
    limits = getattr(cls, "arg_limits" if section == "space.args" else "model_limits", {})
    for key, value in args.items():
        limit = limits.get(key, DEFAULT_ARG_LIMIT if section == "space.args" else None)
        if limit is None:
            continue
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > limit:
            raise ConfigError(f"{section}.{key} = {brief(value)} is more than space {cls.name} allows "
                              f"(at most {limit:,})")
        if isinstance(value, (list, tuple, dict, str)) and len(value) > limit:
            raise ConfigError(f"{section}.{key} holds {len(value):,} items, more than space {cls.name} allows "
                              f"(at most {limit:,})")
