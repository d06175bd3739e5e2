"""Typed, strict, frozen configs (nanoGPT-style dataclasses, pycls-style key checks).

YAML -> ``--set a.b=c`` overrides -> unknown keys rejected with the dotted path and
a close-match suggestion -> types checked -> cross-field checks -> frozen object.
Search and retrain have separate classes; each space validates its own ``space.args``
and ``model`` sections (its ``Args`` / ``ModelArgs`` dataclasses).
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from . import safeyaml
from .errors import ConfigError, brief, printable
from .files import write_atomic

# ---------------------------------------------------------------------------
# generic strict conversion: plain dict -> frozen dataclass
# ---------------------------------------------------------------------------


def from_dict(cls, data: Any, path: str = ""):
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types."""
    where = path or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__} {brief(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key)[:100], list(fields), n=1)
            hint = f"; did you mean '{_join(path, close[0])}'?" if close else ""
            raise ConfigError(
                f"unknown key '{_join(path, _key_text(key))}'{hint} (allowed here: {', '.join(fields)})"
            )
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], _join(path, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key '{_join(path, name)}'")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:  # __post_init__ cross-field checks
        raise ConfigError(f"{where}: {e}") from None


def _join(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


def _key_text(key) -> str:
    """A key from a file, for a message: printable, and cut if long."""
    text = printable(key if isinstance(key, str) else brief(key))
    return text if len(text) <= 100 else text[:100] + f"... ({len(text):,} characters)"


# No setting needs an integer this large, and past it values overflow C integers deep in
# torch (a seed of 10**22 is a traceback in torch.manual_seed).
MAX_INT = 2**53


def _convert(tp, value, path: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin is typing.Union or str(origin) == "types.UnionType":
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, path)
    if origin is Literal:
        # YAML 1.1 reads a bare on/off as a boolean: `compile: off` means "off"
        if isinstance(value, bool) and ("on" if value else "off") in args:
            value = "on" if value else "off"
        if value not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"'{path}': {brief(value)} is not one of {list(args)}{hint}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{path}': expected a list, got {brief(value)}")
        return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{path}': expected a mapping, got {brief(value)}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{path}': expected true or false, got {brief(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{path}': expected an integer, got {brief(value)}")
        if abs(value) > MAX_INT:
            raise ConfigError(f"'{path}': {brief(value)} is larger than any setting takes (at most 2**53)")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"'{path}': expected a number, got {brief(value)}")
        if isinstance(value, int) and abs(value) > MAX_INT or not math.isfinite(value):  # nothing means inf or NaN
            raise ConfigError(f"'{path}': expected a finite number, got {brief(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{path}': expected a string, got {brief(value)}")
        return value
    if tp is Any:
        return value
    raise TypeError(f"config field type {tp!r} at {path} is not supported")  # programming error


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


# ---------------------------------------------------------------------------
# loading: YAML file + overrides
# ---------------------------------------------------------------------------


def read_yaml(path: str | Path, follow: bool = True) -> dict:
    """A config file's mapping; ``follow=False``: a run's config.yaml, never a link."""
    path = Path(path)
    if not os.path.lexists(path):
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = safeyaml.load(safeyaml.read(path, follow))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file") from None
    except OSError as e:  # a folder, a FIFO, a link in a run, /proc/self/mem
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def read_config(path: str | Path, _chain: tuple = (), in_run: bool = False) -> dict:
    """A config file as a dict. ``base: OTHER.yaml`` (a path relative to this file) starts
    from OTHER's values and this file's keys replace them key by key, so a variant of a
    shipped config says only what differs. ``in_run``: a run folder's config.yaml, which
    enas wrote whole (no ``base``) and which is read only as a file of the run, not a link."""
    path = Path(path)
    data = _anchor_module_paths(read_yaml(path, follow=not in_run), path.parent)
    base = data.pop("base", None)
    if base is None:
        return data
    if in_run:
        raise ConfigError(f"{path}: a run's config.yaml holds every value and has no 'base' (got {brief(base)}); "
                          f"remove that line")
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must be the path of another config file, got {brief(base)}")
    other = (path.parent / base).resolve()
    if other in _chain or other == path.resolve():
        raise ConfigError(f"{path}: 'base: {brief(base)}' leads back to {other}; a config cannot be its own base")
    if not other.is_file():
        raise ConfigError(f"{path}: 'base: {brief(base)}': there is no file {other}")
    try:
        return _merge(read_config(other, (*_chain, path.resolve())), data)
    except ConfigError as e:
        if _chain:  # the first file of the chain names the place
            raise
        raise ConfigError(f"{path}: 'base: {brief(base)}': {e}") from None


# Keys naming a Python file that defines a search space (docs/own-space.md, "A search space of your
# own"): a relative path there is relative to the config file that says it, so a config
# and its space travel together and the run folder's config.yaml holds the absolute path.
MODULE_KEYS = (("space", "module"), ("retrain", "space_module"))


def is_module_path(spec: str) -> bool:
    """A file path (``my_space.py``, ``spaces/mine.py``) rather than an importable module name."""
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def _anchor_module_paths(data: dict, folder: Path) -> dict:
    for section, key in MODULE_KEYS:
        sec = data.get(section)
        spec = sec.get(key) if isinstance(sec, dict) else None
        if isinstance(spec, str) and is_module_path(spec) and not Path(spec).is_absolute():
            sec[key] = str((folder / spec).resolve())
    return data


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply ``a.b=c`` strings; values are parsed as YAML (``1e-3``, ``true``, ``[1, 2]``)."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {brief(item)}: expected KEY=VALUE, e.g. --set controller.lr=1e-3")
        key, raw = item.split("=", 1)
        try:
            value = safeyaml.load(raw)
        except safeyaml.UnsafeYAML as e:  # aliases, nesting too deep, huge numbers: never a plain string
            raise ConfigError(f"--set {_key_text(key)}: {e}") from None
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        if len(parts) > safeyaml.MAX_DEPTH:
            raise ConfigError(f"--set {_key_text(key)}: {len(parts):,} levels of keys; no config is nested that deep")
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {_key_text(key)}: '{_key_text(p)}' is a value, not a section")
            node = child
        node[parts[-1]] = value
    return data


def dump(cfg, path: str | Path) -> None:
    write_atomic(path, safeyaml.dump(to_dict(cfg), sort_keys=False))


# ---------------------------------------------------------------------------
# the sections
# ---------------------------------------------------------------------------


# Architectures sampled at once (derive, rank): each one is scored on validation data, so
# this many already take hours, and the samples are drawn in one batch of tensors.
MAX_SAMPLES = 100_000


def _at_least(section: str, obj, low, *names) -> None:
    for n in names:
        if getattr(obj, n) < low:
            raise ValueError(f"{section}.{n} must be >= {low}, got {getattr(obj, n)}")


def _positive(section: str, obj, *names) -> None:
    for n in names:
        if not getattr(obj, n) > 0:
            raise ValueError(f"{section}.{n} must be > 0, got {getattr(obj, n)}")


# Seeds: the generators are seeded with seed * 1,000,003 + epoch (enas/search.py), which must
# stay a 64-bit integer; numpy takes seeds below 2**32.
MAX_SEED = 2**32 - 1


def _seed(section: str, obj) -> None:
    if not 0 <= obj.seed <= MAX_SEED:
        raise ValueError(f"{section}.seed must be in 0..{MAX_SEED:,}, got {brief(obj.seed)}")


def _fraction(section: str, obj, *names) -> None:
    """Each of ``names`` in [0, 1)."""
    for n in names:
        if not 0.0 <= getattr(obj, n) < 1.0:
            raise ValueError(f"{section}.{n} must be in [0, 1), got {getattr(obj, n)}")


@dataclass(frozen=True)
class SpaceSection:
    name: str
    args: dict = field(default_factory=dict)  # checked against the space's Args
    # A space of your own: the Python file (or importable module) that registers it
    # (enas/space.py import_space_module); empty for the built-in and installed spaces.
    module: str = ""


@dataclass(frozen=True)
class DataSection:
    # ptb / text: enas/data/text.py; cifar10 / cifar100: the official python archives
    # (enas/data/cifar.py); imagefolder: DIR/train/<class>/* and DIR/val/<class>/*
    # (enas/data/imagefolder.py)
    dataset: Literal["ptb", "text", "cifar10", "cifar100", "imagefolder"]
    # Where the data is (relative to the working directory; --data-dir overrides it):
    # ptb and cifar10 are downloaded there when missing; "sample": the small real sample
    # that ships with enas (cifar10, ptb: enas/data/shipped.py), for offline smoke runs.
    dir: str = "data"
    batch_size: int = 64
    eval_batch_size: int = 64
    bptt: int = 35  # text: tokens per truncated-BPTT window (paper 3.2)
    # Variable BPTT length of enas_lm: N(bptt, 5) w.p. 0.95 else N(bptt/2, 5), capped.
    variable_bptt: bool = False
    bptt_max: int = 55
    # Image search split: the first train_size training images train the shared weights,
    # the last valid_size score the controller (paper, CIFAR-10: 45,000 / 5,000).
    # 0 = all remaining images. Retraining uses the whole training set.
    train_size: int = 45000
    valid_size: int = 5000
    augment: bool = True  # pad-4 random crop + horizontal flip
    cutout: int = 0  # cutout square size, corner uniform over the image (official models.py); 16 for the paper's 2.89% (3.3)
    # imagefolder: every image is resized to image_size x image_size (CIFAR is 32 x 32;
    # from 64 px the networks' stems halve it until 32-64 px remain, search_spaces/ops.py)
    image_size: int = 32
    skip_bad_images: bool = False  # imagefolder: skip unreadable images instead of stopping

    def __post_init__(self):
        if not self.dir.strip():
            raise ValueError('data.dir is empty: name a folder (or "sample", the data that ships with enas)')
        if Path(self.dir).is_absolute() or ".." in Path(self.dir).parts:  # a config from elsewhere
            # must not make enas download into a folder of its choosing (docs/trust.md)
            raise ValueError(f"data.dir {self.dir!r} is outside the working directory; a config names a folder "
                             f"inside it (or \"sample\"): pass --data-dir DIR for a folder elsewhere")
        for k in ("batch_size", "eval_batch_size", "bptt"):
            if getattr(self, k) < 1:
                raise ValueError(f"data.{k} must be >= 1, got {getattr(self, k)}")
        if self.variable_bptt and self.bptt_max < 1:  # a window of 0 tokens would never end the epoch
            raise ValueError(f"data.bptt_max must be >= 1 with data.variable_bptt, got {self.bptt_max}")
        _at_least("data", self, 0, "train_size", "valid_size", "cutout")
        if not 8 <= self.image_size <= 512:
            raise ValueError(f"data.image_size must be between 8 and 512 pixels, got {self.image_size}")
        if self.dataset in ("cifar10", "cifar100") and self.image_size != 32:
            raise ValueError(f"data.image_size is {self.image_size}, but {self.dataset} images are 32 x 32; "
                             f"remove data.image_size (it resizes imagefolder images)")


@dataclass(frozen=True)
class OptimSection:
    """SGD on the shared (or child) weights."""

    lr: float
    lr_min: float = 0.0
    momentum: float = 0.0
    nesterov: bool = False
    # PyTorch convention: the official code adds l2 * sum(w^2), so weight_decay = 2 * l2.
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # global norm; 0 = off
    schedule: Literal["constant", "cosine", "exp"] = "constant"
    t0: int = 10  # cosine with warm restarts: first period (epochs) (official: 10)
    t_mul: int = 2  # period multiplier (official: 2)
    decay_rate: float = 0.96  # exp: lr *= decay_rate each epoch after decay_start (paper, PTB)
    decay_start: int = 15
    # Several processes (torchrun) in `enas retrain`: each takes data.batch_size examples a
    # step, so the global batch is batch_size x processes. "linear" multiplies the epoch's
    # LR (lr and lr_min) by the number of processes (Goyal et al. 2017); "none" keeps it.
    # A search splits data.batch_size over the processes and must keep "none".
    lr_scaling: Literal["none", "linear"] = "none"
    # How a step with a non-finite gradient is skipped: "host" reads the gradient norm
    # after every step (one host-device sync per step); "device" decides on the device
    # (the fused SGD kernel skips the step, BN statistics are restored by a select) and
    # the host reads the outcome every log_every steps; "auto": device on CUDA.
    nonfinite_check: Literal["auto", "host", "device"] = "auto"

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        _at_least("train", self, 0.0, "lr_min", "weight_decay", "grad_clip", "decay_start")
        _fraction("train", self, "momentum")
        _positive("train", self, "decay_rate")
        if self.schedule == "cosine" and (self.t0 < 1 or self.t_mul < 1):
            raise ValueError("cosine schedule needs t0 >= 1 and t_mul >= 1")


@dataclass(frozen=True)
class PerKind:
    categorical: float = 0.0
    index: float = 0.0
    skip: float = 0.0

    def __post_init__(self):
        _at_least("controller.tanh_constant / temperature", self, 0.0, "categorical", "index", "skip")


@dataclass(frozen=True)
class ControllerSection:
    kind: Literal["enas", "random"] = "enas"
    hidden: int = 64  # LSTM size: 64 CIFAR, 100 PTB (paper 3.1, 3.2)
    init_range: float = 0.1  # uniform init (official code; enas_lm 0.01)
    # categorical logits from the group's input embedding (h . E^T), no output head of
    # their own: enas_lm's controller; false: melodyguan's separate w_soft
    tie_heads: bool = False
    lr: float = 3.5e-4
    adam_beta1: float = 0.0  # official: Adam(beta1=0, eps=1e-3)
    adam_beta2: float = 0.999
    adam_eps: float = 1e-3
    # logits = C * tanh(logits / T) per decision kind; 0 = no shaping.
    tanh_constant: PerKind = PerKind()
    temperature: PerKind = PerKind()
    entropy_weight: float = 1e-4  # added to the reward (paper 3.1)
    baseline_decay: float = 0.99  # moving-average baseline (paper 2.1)
    updates_per_epoch: int = 30  # Adam steps per controller phase
    num_aggregate: int = 10  # samples whose gradients are averaged per Adam step
    # macro: KL(sigmoid(logit / 2) || target) penalty, as the official controller computes
    # it (paper 2.2 says KL(p_skip || target)); the sampled skip rate settles near 0.31 at
    # 0.4, the official behaviour, and near 0.40 at 0.45 (enas/controller.py _skip)
    skip_target: float = 0.4
    skip_weight: float = 0.0
    # Advantages divided by a moving standard deviation of R - b (the baseline's
    # decay): the update and the entropy bonus then weigh the same whatever the reward's
    # scale (accuracy, c / ppl) and however it narrows as the shared weights train.
    # false = the paper's raw R - b.
    reward_norm: bool = False
    # An entropy bonus that rises while the policy's entropy (nats, summed over the
    # decisions) is below this target: after each update the weight is multiplied by
    # exp(entropy_gain * (target - H) / target) and never falls below entropy_weight, so
    # it grows for as long as the policy stays too sharp. 0 = the paper's fixed weight.
    entropy_target: float = 0.0
    entropy_gain: float = 0.05

    def __post_init__(self):
        if self.updates_per_epoch < 0 or self.num_aggregate < 1:
            raise ValueError("controller.updates_per_epoch must be >= 0 and num_aggregate >= 1")
        if not 0.0 <= self.baseline_decay < 1.0:
            raise ValueError(f"controller.baseline_decay must be in [0, 1), got {self.baseline_decay}")
        _at_least("controller", self, 1, "hidden")
        _positive("controller", self, "init_range", "lr", "adam_eps")
        _fraction("controller", self, "adam_beta1", "adam_beta2")
        _at_least("controller", self, 0.0, "entropy_weight", "skip_weight", "entropy_target")
        _positive("controller", self, "entropy_gain")
        if self.entropy_target > 0 and self.entropy_weight == 0:
            raise ValueError("controller.entropy_target raises controller.entropy_weight, which is 0; "
                             "set entropy_weight > 0 (paper: 1e-4) or entropy_target: 0")
        if not 0.0 < self.skip_target < 1.0:
            raise ValueError(f"controller.skip_target must be in (0, 1), got {self.skip_target}")


@dataclass(frozen=True)
class ScoreSection:
    """How a search scores an architecture (rewards, derive, ``enas rank``): the weight
    of each term. The supernet alone (the default) is the paper's reward, unscaled.
    With any other weight, every term is standardised over ``reference`` uniformly drawn
    architectures (mean 0, standard deviation 1; the supernet's again at each controller
    phase, as its weights change) and the score is the weighted sum. The training-free
    terms are enas/training_free.py's, computed on the untrained child."""

    supernet: float = 1.0
    params: float = 0.0
    synflow: float = 0.0
    naswot: float = 0.0
    reference: int = 50

    def __post_init__(self):
        _at_least("search.score", self, 0, "supernet", "params", "synflow", "naswot")
        if not any(w > 0 for w in self.weights().values()):
            raise ValueError("search.score needs a term with a weight > 0 (the paper: supernet: 1)")
        if not 2 <= self.reference <= 10_000:
            raise ValueError(f"search.score.reference must be in 2..10000 (uniform architectures that "
                             f"standardise each term), got {self.reference}")

    def weights(self) -> dict:
        return {k: getattr(self, k) for k in ("supernet", "params", "synflow", "naswot")}

    def terms(self) -> dict:
        """The terms with a weight > 0."""
        return {k: w for k, w in self.weights().items() if w > 0}

    @property
    def paper(self) -> bool:
        """The supernet's score alone, as the paper rewards."""
        return set(self.terms()) == {"supernet"}


@dataclass(frozen=True)
class SearchSection:
    epochs: int = 10
    seed: int = 0
    controller_warmup_epochs: int = 0  # shared-only epochs before the controller trains
    # Probability that a shared step trains a uniformly drawn architecture instead of one
    # from the policy: 0 = the paper (the policy picks what the shared weights learn), 1 =
    # the shared weights trained as random search with weight sharing does, whatever the
    # policy prefers (docs/experiments/own-ground-truth.md).
    uniform_shared: float = 0.0
    # FairNAS's strict fairness (Chu et al., ICCV 2021): each shared step trains as many
    # architectures as a categorical decision has choices, between them every choice of
    # every categorical decision exactly once, and applies their summed gradient. It
    # replaces the step's single draw (policy or uniform); a step costs that many.
    fair_sampling: bool = False
    # BN of the supernet: standard (the paper's, with affine parameters and running
    # statistics) or plain (neither: every op normalises with its batch's statistics,
    # NAS-Bench-201's and NATS-Bench's weight-sharing protocol). Children retrain with
    # standard BN either way.
    supernet_bn: Literal["standard", "plain"] = "standard"
    score: ScoreSection = ScoreSection()
    reward_batches: int = 1  # validation minibatches per controller reward (paper: one)
    derive_samples: int = 10  # archs sampled from the policy at each derive
    # validation minibatches per candidate, the same for all candidates of a derive and a
    # different block each epoch; 0 = whole split (paper: one minibatch)
    derive_batches: int = 1
    # end of the search: the best final_candidates distinct archs of the last derive are
    # re-scored on final_batches validation batches (0 = whole split) for best_arch.yaml
    final_candidates: int = 5
    final_batches: int = 0
    # Last stage: the final_train best candidates of the final derive are trained from
    # scratch for final_train_epochs epochs each (the search's train settings, one cosine)
    # and the best on the validation split becomes best_arch.yaml (0 = off). Short
    # training ranks cells far better than a supernet does (NAS-Bench-201: 12- and
    # 200-epoch accuracies correlate at about 0.9).
    final_train: int = 0
    final_train_epochs: int = 5
    # A parameter budget (null = none): no architecture the search trains, rewards,
    # derives or trains in its final stage has more parameters than this, counted on the
    # network you will retrain, whose model settings are budget_model (your retrain
    # config's model section; empty: the space's published final network, e.g. NB201's
    # C=16 with 5 cells per stage), not on this config's smaller model. Enforced by
    # rejection: draws that do not fit are drawn again, and the controller's update sees
    # them with a reward below every draw that fits (enas/budget.py; docs/evaluation.md,
    # "A parameter budget", has the measurement behind the choice).
    max_params: typing.Optional[int] = None
    budget_model: dict = field(default_factory=dict)
    reward_c: float = 80.0  # LM reward c / valid_ppl (paper 3.2)
    # LM: a reward starts from a zero state that its own architecture first runs over
    # this many validation tokens before the scored window (enas/tasks/lm.py reward)
    reward_warmup: int = 10
    aux_weight: float = 0.0  # image: auxiliary head loss weight in the shared phase (micro search: 0.4)
    # image: BN while scoring a sampled arch (enas/tasks/image.py): the minibatch's statistics,
    # recalibrated per arch, the supernet's running averages (official macro reward), or
    # the minibatch's with dropout on (official micro reward)
    eval_bn: Literal["batch", "recalibrate", "running", "train"] = "batch"
    recalibrate_batches: int = 4
    log_every: int = 20  # console/TensorBoard every N shared steps
    checkpoint_minutes: float = 10.0  # time-based checkpoint inside long epochs
    max_bad_steps: int = 20  # consecutive non-finite steps before stopping
    entropy_floor: float = 0.0  # collapse warning when policy entropy is below this
    amp: Literal["auto", "off", "bf16"] = "auto"  # bf16 autocast on CUDA when auto
    channels_last: bool = True  # image models, CPU and CUDA (faster grouped convs)
    # A tiny run that checks the install (configs/smoke/): the console says so, and that
    # figures near chance are expected, so a newcomer does not take them for a bug.
    smoke: bool = False

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"search.epochs must be >= 1, got {self.epochs}")
        _seed("search", self)
        if self.derive_samples < 1 or self.derive_batches < 0:
            raise ValueError("search.derive_samples must be >= 1 and derive_batches >= 0")
        if self.derive_samples > MAX_SAMPLES:
            raise ValueError(f"search.derive_samples must be <= {MAX_SAMPLES:,} (each candidate is scored on "
                             f"validation data: more would take days), got {self.derive_samples:,}")
        if not 0.0 <= self.uniform_shared <= 1.0:
            raise ValueError(f"search.uniform_shared must be in [0, 1], got {self.uniform_shared}")
        if self.reward_batches < 1:
            raise ValueError(f"search.reward_batches must be >= 1, got {self.reward_batches}")
        if self.final_candidates < 1 or self.final_batches < 0:
            raise ValueError("search.final_candidates must be >= 1 and final_batches >= 0")
        if self.reward_warmup < 0:
            raise ValueError(f"search.reward_warmup must be >= 0, got {self.reward_warmup}")
        if self.final_train > self.final_candidates:
            raise ValueError(f"search.final_train ({self.final_train}) trains the best of the final "
                             f"derive's candidates; it cannot exceed search.final_candidates "
                             f"({self.final_candidates})")
        _at_least("search", self, 1, "final_train_epochs")
        if self.max_params is not None and self.max_params < 1:
            raise ValueError(f"search.max_params must be a positive number of parameters (or null for no "
                             f"budget), got {self.max_params}")
        if self.budget_model and self.max_params is None:
            raise ValueError("search.budget_model sizes the network search.max_params counts; set "
                             "search.max_params too, or remove search.budget_model")
        if self.supernet_bn == "plain" and self.eval_bn in ("recalibrate", "running"):
            raise ValueError(f"search.eval_bn: {self.eval_bn} reads BN running statistics, which "
                             "search.supernet_bn: plain does not keep; use eval_bn: batch")
        _at_least("search", self, 1, "log_every", "max_bad_steps", "recalibrate_batches")
        _at_least("search", self, 0, "controller_warmup_epochs", "aux_weight", "entropy_floor", "final_train")
        _positive("search", self, "checkpoint_minutes", "reward_c")


@dataclass(frozen=True)
class SearchConfig:
    space: SpaceSection
    data: DataSection
    train: OptimSection
    controller: ControllerSection = ControllerSection()
    search: SearchSection = SearchSection()
    model: dict = field(default_factory=dict)  # checked against the space's ModelArgs


@dataclass(frozen=True)
class RetrainSection:
    """Training one architecture from scratch (paper 3.2 / 3.3 "final" models)."""

    epochs: int = 10  # paper: 630 micro, 310 macro (official scripts), 3000 PTB (enas_lm)
    seed: int = 0
    aux_weight: float = 0.0  # auxiliary head loss weight (paper: 0.4, micro)
    # Final drop-path probability (1 - keep 0.6 -> 0.4, micro final): the model scales it
    # linearly with cell depth, the trainer linearly with training progress (epoch/epochs).
    drop_path: float = 0.0
    label_smoothing: float = 0.0
    # LM: non-monotonically triggered averaged SGD (Merity et al. 2018, as in enas_lm):
    # start averaging the weights once the valid ppl is worse than the best of all
    # epochs before the last asgd_patience ones; evaluate with the averaged weights.
    asgd: bool = False
    asgd_patience: int = 10  # enas_lm fixed_lib.py best_valid_ppl_threshold = 10
    # torch.compile the child for training: "on" compiles it (image models: a static
    # graph; an LM with variable BPTT recompiles per window length); "auto" is off on
    # every device until benchmarks/gpu_check.py has run the compiled child on a GPU
    # and benchmarks/RESULTS.md records it (docs/gpu.md).
    compile: Literal["auto", "on", "off"] = "auto"
    # Several CUDA processes: image children normalise with BN statistics of the whole
    # global batch (SyncBatchNorm). PyTorch has no CPU SyncBatchNorm: on CPU each process
    # uses its own share's statistics (docs/distributed.md).
    sync_bn: bool = True
    log_every: int = 50
    checkpoint_minutes: float = 10.0
    max_bad_steps: int = 20
    amp: Literal["auto", "off", "bf16"] = "auto"
    channels_last: bool = True
    # The architecture's space is your own: the file or module that registers it (the
    # search config's space.module). Architecture files never name code to import.
    space_module: str = ""
    smoke: bool = False  # a tiny run that checks the install: the console says so (search.smoke)

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"retrain.epochs must be >= 1, got {self.epochs}")
        _seed("retrain", self)
        _at_least("retrain", self, 1, "log_every", "max_bad_steps")
        _at_least("retrain", self, 0, "aux_weight", "asgd_patience")
        _fraction("retrain", self, "label_smoothing")
        _positive("retrain", self, "checkpoint_minutes")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"retrain.drop_path must be in [0, 1), got {self.drop_path}")
        if self.asgd_patience < 1:
            raise ValueError(f"retrain.asgd_patience must be >= 1, got {self.asgd_patience}")


@dataclass(frozen=True)
class RetrainConfig:
    data: DataSection
    train: OptimSection
    retrain: RetrainSection = RetrainSection()
    model: dict = field(default_factory=dict)  # checked against the arch's space's ModelArgs


def load(cls, path, overrides: list[str] | None = None, in_run: bool = False):
    """A config from a YAML file, or from a mapping of sections (the Python API: module
    paths in it are relative to the working directory); ``in_run``: a run's config.yaml."""
    if isinstance(path, Mapping):
        data = _anchor_module_paths(copy.deepcopy(dict(path)), Path.cwd())
        if "base" in data:
            raise ConfigError("a config mapping has no 'base' (a path relative to a config file); "
                              "merge the values in Python, or pass the config file")
        path = "the config mapping"
    else:
        data = read_config(path, in_run=in_run)
    _check_kind(cls, data, path)
    cfg = from_dict(cls, apply_overrides(data, overrides))
    return cfg


def _check_kind(cls, data: dict, path) -> None:
    """A search config given to `enas retrain` (or the reverse) gets the right command."""
    if cls is SearchConfig and "retrain" in data and "space" not in data:
        raise ConfigError(f"{path} is a retrain config (a 'retrain' section, no 'space'): use "
                          f"`enas retrain ARCH.yaml --config {path}`")
    found = [k for k in ("space", "search", "controller") if k in data]
    if cls is RetrainConfig and found:
        raise ConfigError(f"{path} is a search config (it has a '{found[0]}' section): use `enas search {path}`; "
                          f"a retrain takes an architecture file and a retrain config, "
                          f"`enas retrain ARCH.yaml --config configs/..._retrain.yaml`")


def load_search(path, overrides=None, in_run: bool = False) -> SearchConfig:
    """Load and check a search config. Its ``space.args`` and ``model`` sections belong to
    the space and are checked when the space is built (enas/space.py build_space, the
    space's ModelArgs), before any data is read or run folder made."""
    return load(SearchConfig, path, overrides, in_run)


def load_retrain(path, overrides=None, space=None, in_run: bool = False) -> RetrainConfig:
    """Load and check a retrain config; ``model`` is checked against ``space.ModelArgs``
    (the space comes from the architecture file, not from this config)."""
    cfg = load(RetrainConfig, path, overrides, in_run)
    if space is not None:
        from_dict(type(space).ModelArgs, cfg.model, "model")
    return cfg
