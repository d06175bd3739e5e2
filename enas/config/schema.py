"""Every setting of a search and a retrain: typed frozen sections, each setting with its
default and a comment saying what it does (ENAS constants name the paper's section).
docs/config.md is generated from this file (``python -m enas.config.docs``).

Settings of one kind of data live in that task's section: ``search.lm`` (language
models: data.dataset ptb or text) and ``search.image`` (cifar10, cifar100,
imagefolder). A config holds only its own task's section; the loader fills it with
its defaults when the config does not give it.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from enas.config.checks import at_least, check_seed, fraction, positive

# Architectures sampled at once (derive, rank): each one is scored on validation data, so
# this many already take hours, and the samples are drawn in one batch of tensors.
MAX_SAMPLES = 100_000

# The task each dataset feeds (enas/tasks/): its search settings are search.<task>.
TASK_OF_DATASET = {"ptb": "lm", "text": "lm", "cifar10": "image", "cifar100": "image", "imagefolder": "image"}
TASK_TEXT = {"lm": "a language-model search (data.dataset ptb or text)",
             "image": "an image search (data.dataset cifar10, cifar100 or imagefolder)"}


@dataclass(frozen=True)
class SpaceSection:
    name: str  # the registered search space (enas_rnn, enas_micro, enas_macro, nb201, or your own)
    args: dict = field(default_factory=dict)  # the space's own arguments, checked against its Args
    # A space of your own: the Python file (or importable module) that registers it
    # (enas/nas/space.py import_space_module); empty for the built-in and installed spaces.
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
    batch_size: int = 64  # training minibatch (several processes: docs/distributed.md)
    eval_batch_size: int = 64  # validation / test minibatch (rewards, derive, evaluation)
    bptt: int = 35  # text: tokens per truncated-BPTT window (paper 3.2)
    # Variable BPTT length of enas_lm: N(bptt, 5) w.p. 0.95 else N(bptt/2, 5), capped.
    variable_bptt: bool = False
    bptt_max: int = 55  # text: the cap of a variable BPTT window
    # Image search split: the first train_size training images train the shared weights,
    # the last valid_size score the controller (paper, CIFAR-10: 45,000 / 5,000).
    # 0 = all remaining images. Retraining uses the whole training set.
    train_size: int = 45000
    valid_size: int = 5000  # image search: images that score the controller (see train_size)
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
        at_least("data", self, 1, "batch_size", "eval_batch_size", "bptt")
        if self.variable_bptt and self.bptt_max < 1:  # a window of 0 tokens would never end the epoch
            raise ValueError(f"data.bptt_max must be >= 1 with data.variable_bptt, got {self.bptt_max}")
        at_least("data", self, 0, "train_size", "valid_size", "cutout")
        if not 8 <= self.image_size <= 512:
            raise ValueError(f"data.image_size must be between 8 and 512 pixels, got {self.image_size}")
        if self.dataset in ("cifar10", "cifar100") and self.image_size != 32:
            raise ValueError(f"data.image_size is {self.image_size}, but {self.dataset} images are 32 x 32; "
                             f"remove data.image_size (it resizes imagefolder images)")


@dataclass(frozen=True)
class OptimSection:
    """SGD on the shared (or child) weights."""

    lr: float  # SGD learning rate (a schedule's peak)
    lr_min: float = 0.0  # cosine: the learning rate at the end of each period
    momentum: float = 0.0  # SGD momentum (official CIFAR: 0.9)
    nesterov: bool = False  # Nesterov momentum (official CIFAR: true)
    # L2 weight decay, PyTorch's convention: the official code adds l2 * sum(w^2), so weight_decay = 2 * l2.
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # gradients clipped to this global norm; 0 = off
    schedule: Literal["constant", "cosine", "exp"] = "constant"  # the learning-rate schedule, per epoch
    t0: int = 10  # cosine with warm restarts: first period (epochs) (official: 10)
    t_mul: int = 2  # period multiplier (official: 2)
    decay_rate: float = 0.96  # exp: lr *= decay_rate each epoch after decay_start (paper, PTB)
    decay_start: int = 15  # exp: the epoch the decay starts
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
        at_least("train", self, 0.0, "lr_min", "weight_decay", "grad_clip", "decay_start")
        fraction("train", self, "momentum")
        positive("train", self, "decay_rate")
        if self.schedule == "cosine" and (self.t0 < 1 or self.t_mul < 1):
            raise ValueError("cosine schedule needs t0 >= 1 and t_mul >= 1")


@dataclass(frozen=True)
class PerKind:
    """One value per kind of decision (controller.tanh_constant, controller.temperature)."""

    categorical: float = 0.0  # op choices and other categorical decisions
    index: float = 0.0  # input (anchor) choices, attended over earlier nodes (paper 2.1)
    skip: float = 0.0  # macro skip connections, a Bernoulli per earlier layer (paper 2.3)

    def __post_init__(self):
        at_least("controller.tanh_constant / temperature", self, 0.0, "categorical", "index", "skip")


@dataclass(frozen=True)
class ControllerSection:
    kind: Literal["enas", "random"] = "enas"  # the LSTM policy (paper 2.1), or uniform draws (random search)
    hidden: int = 64  # LSTM size: 64 CIFAR, 100 PTB (paper 3.1, 3.2)
    init_range: float = 0.1  # weights drawn uniformly in [-r, r] (official code; enas_lm 0.01)
    # categorical logits from the group's input embedding (h . E^T), no output head of
    # their own: enas_lm's controller; false: melodyguan's separate w_soft
    tie_heads: bool = False
    lr: float = 3.5e-4  # Adam learning rate (paper: 0.00035)
    adam_beta1: float = 0.0  # Adam's first-moment decay (official: Adam(beta1=0, eps=1e-3))
    adam_beta2: float = 0.999  # Adam's second-moment decay
    adam_eps: float = 1e-3  # Adam's epsilon (official: 1e-3)
    # The C of logits = C * tanh(logits / T), per decision kind; 0 = no shaping.
    tanh_constant: PerKind = PerKind()
    temperature: PerKind = PerKind()  # the T of tanh_constant's formula, per decision kind; 0 = none
    entropy_weight: float = 1e-4  # weight of the policy's entropy, added to the reward (paper 3.1)
    baseline_decay: float = 0.99  # decay of the reward's moving-average baseline (paper 2.1)
    updates_per_epoch: int = 30  # Adam steps per controller phase
    num_aggregate: int = 10  # samples whose gradients are averaged per Adam step
    # macro: KL(sigmoid(logit / 2) || target) penalty, as the official controller computes
    # it (paper 2.2 says KL(p_skip || target)); the sampled skip rate settles near 0.31 at
    # 0.4, the official behaviour, and near 0.40 at 0.45 (enas/nas/controller.py _skip)
    skip_target: float = 0.4
    skip_weight: float = 0.0  # macro: weight of the skip-rate penalty in the loss (official macro: 0.8)
    # Advantages divided by a moving standard deviation of R - b (the baseline's
    # decay): the update and the entropy bonus then weigh the same whatever the reward's
    # scale (accuracy, c / ppl) and however it narrows as the shared weights train.
    # false = the paper's raw R - b.
    reward_norm: bool = False

    def __post_init__(self):
        if self.updates_per_epoch < 0 or self.num_aggregate < 1:
            raise ValueError("controller.updates_per_epoch must be >= 0 and num_aggregate >= 1")
        if not 0.0 <= self.baseline_decay < 1.0:
            raise ValueError(f"controller.baseline_decay must be in [0, 1), got {self.baseline_decay}")
        at_least("controller", self, 1, "hidden")
        positive("controller", self, "init_range", "lr", "adam_eps")
        fraction("controller", self, "adam_beta1", "adam_beta2")
        at_least("controller", self, 0.0, "entropy_weight", "skip_weight")
        if not 0.0 < self.skip_target < 1.0:
            raise ValueError(f"controller.skip_target must be in (0, 1), got {self.skip_target}")


@dataclass(frozen=True)
class ScoreSection:
    """How a search scores an architecture (rewards, derive, ``enas rank``): the weight
    of each term. The supernet alone (the default) is the paper's reward, unscaled.
    With any other weight, every term is standardised over ``reference`` uniformly drawn
    architectures (median and interquartile range, enas/nas/scoring.py; the supernet's again
    at each controller phase, as its weights change) and the score is the weighted sum. The training-free
    term is enas/nas/training_free.py's, computed on the untrained child."""

    supernet: float = 1.0  # the shared weights' reward on validation data (the paper's score)
    naswot: float = 0.0  # NASWOT (Mellor et al. 2021) of the untrained child (docs/evaluation.md)
    reference: int = 50  # uniformly drawn architectures that standardise each term

    def __post_init__(self):
        at_least("search.score", self, 0, "supernet", "naswot")
        if not any(w > 0 for w in self.weights().values()):
            raise ValueError("search.score needs a term with a weight > 0 (the paper: supernet: 1)")
        if not 2 <= self.reference <= 10_000:
            raise ValueError(f"search.score.reference must be in 2..10000 (uniform architectures that "
                             f"standardise each term), got {self.reference}")

    def weights(self) -> dict:
        return {"supernet": self.supernet, "naswot": self.naswot}

    def terms(self) -> dict:
        """The terms with a weight > 0."""
        return {k: w for k, w in self.weights().items() if w > 0}

    @property
    def paper(self) -> bool:
        """The supernet's score alone, as the paper rewards."""
        return set(self.terms()) == {"supernet"}


@dataclass(frozen=True)
class LMSearchSection:
    """search.lm: settings of a language-model search (enas/tasks/lm.py)."""

    reward_c: float = 80.0  # reward = c / valid_ppl (paper 3.2)
    # A reward starts from a zero state that its own architecture first runs over this
    # many validation tokens before the scored window (docs/experiments/ptb-reward-state.md)
    reward_warmup: int = 10

    def __post_init__(self):
        positive("search.lm", self, "reward_c")
        at_least("search.lm", self, 0, "reward_warmup")


@dataclass(frozen=True)
class ImageSearchSection:
    """search.image: settings of an image search (enas/tasks/image.py)."""

    aux_weight: float = 0.0  # auxiliary head loss weight in the shared phase (official micro search: 0.4)
    # BN while scoring a sampled arch: the minibatch's statistics, recalibrated per arch,
    # the supernet's running averages (official macro reward), or the minibatch's with
    # dropout on (official micro reward) (docs/experiments/cifar-reward-bn.md)
    eval_bn: Literal["batch", "recalibrate", "running", "train"] = "batch"
    channels_last: bool = True  # NHWC tensors and weights, CPU and CUDA (faster grouped convs)

    def __post_init__(self):
        at_least("search.image", self, 0, "aux_weight")


TASK_SECTIONS = {"lm": LMSearchSection, "image": ImageSearchSection}


@dataclass(frozen=True)
class SearchSection:
    epochs: int = 10  # search epochs, each a shared phase then a controller phase (paper 2.1)
    seed: int = 0  # seeds every generator of the search: the same seed, the same run
    controller_warmup_epochs: int = 0  # shared-only epochs before the controller trains
    # Probability that a shared step trains a uniformly drawn architecture instead of one
    # from the policy: 0 = the paper (the policy picks what the shared weights learn), 1 =
    # the shared weights trained as random search with weight sharing does, whatever the
    # policy prefers (docs/experiments/own-ground-truth.md).
    uniform_shared: float = 0.0
    # BN of the supernet: standard (the paper's, with affine parameters and running
    # statistics) or plain (neither: every op normalises with its batch's statistics,
    # NAS-Bench-201's and NATS-Bench's weight-sharing protocol). Children retrain with
    # standard BN either way.
    supernet_bn: Literal["standard", "plain"] = "standard"
    score: ScoreSection = ScoreSection()  # what an architecture's score is (search.score below)
    reward_batches: int = 1  # validation minibatches per controller reward (paper: one)
    derive_samples: int = 10  # archs sampled from the policy at each derive
    # validation minibatches per candidate, the same for all candidates of a derive and a
    # different block each epoch; 0 = whole split (paper: one minibatch)
    derive_batches: int = 1
    # end of the search: the best final_candidates distinct archs of the last derive are
    # re-scored on final_batches validation batches (0 = whole split) for best_arch.yaml
    final_candidates: int = 5
    final_batches: int = 0  # validation batches of that re-scoring (see final_candidates)
    # Last stage: the final_train best candidates of the final derive are trained from
    # scratch for final_train_epochs epochs each (the search's train settings, one cosine)
    # and the best on the validation split becomes best_arch.yaml (0 = off). Short
    # training ranks cells far better than a supernet does (NAS-Bench-201: 12- and
    # 200-epoch accuracies correlate at about 0.9).
    final_train: int = 0
    final_train_epochs: int = 5  # epochs of each final-stage training (see final_train)
    # A parameter budget (null = none): no architecture the search trains, rewards,
    # derives or trains in its final stage has more parameters than this, counted on the
    # network you will retrain, whose model settings are budget_model (your retrain
    # config's model section; empty: the space's published final network, e.g. NB201's
    # C=16 with 5 cells per stage), not on this config's smaller model. Enforced by
    # rejection: draws that do not fit are drawn again, and the controller's update sees
    # them with a reward below every draw that fits (enas/nas/budget.py; docs/evaluation.md,
    # "A parameter budget", has the measurement behind the choice).
    max_params: typing.Optional[int] = None
    budget_model: dict = field(default_factory=dict)  # the model section max_params counts on (see max_params)
    log_every: int = 20  # console/TensorBoard every N shared steps
    checkpoint_minutes: float = 10.0  # time-based checkpoint inside long epochs
    max_bad_steps: int = 20  # consecutive non-finite steps before stopping
    entropy_floor: float = 0.0  # collapse warning when policy entropy is below this
    amp: Literal["auto", "off", "bf16"] = "auto"  # bf16 autocast on CUDA when auto
    # A tiny run that checks the install (configs/smoke/): the console says so, and that
    # figures near chance are expected, so a newcomer does not take them for a bug.
    smoke: bool = False
    lm: Optional[LMSearchSection] = None  # a language-model search's own settings (search.lm below)
    image: Optional[ImageSearchSection] = None  # an image search's own settings (search.image below)

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"search.epochs must be >= 1, got {self.epochs}")
        check_seed("search", self)
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
        if self.final_train > self.final_candidates:
            raise ValueError(f"search.final_train ({self.final_train}) trains the best of the final "
                             f"derive's candidates; it cannot exceed search.final_candidates "
                             f"({self.final_candidates})")
        at_least("search", self, 1, "final_train_epochs")
        if self.max_params is not None and self.max_params < 1:
            raise ValueError(f"search.max_params must be a positive number of parameters (or null for no "
                             f"budget), got {self.max_params}")
        if self.budget_model and self.max_params is None:
            raise ValueError("search.budget_model sizes the network search.max_params counts; set "
                             "search.max_params too, or remove search.budget_model")
        if self.supernet_bn == "plain" and self.image and self.image.eval_bn in ("recalibrate", "running"):
            raise ValueError(f"search.image.eval_bn: {self.image.eval_bn} reads BN running statistics, which "
                             "search.supernet_bn: plain does not keep; use eval_bn: batch")
        at_least("search", self, 1, "log_every", "max_bad_steps")
        at_least("search", self, 0, "controller_warmup_epochs", "entropy_floor", "final_train")
        positive("search", self, "checkpoint_minutes")

    @property
    def task(self):
        """The task's own section (search.lm or search.image)."""
        return self.lm or self.image


@dataclass(frozen=True)
class SearchConfig:
    space: SpaceSection  # the search space
    data: DataSection  # the data set and how it is fed
    train: OptimSection  # SGD on the shared weights
    controller: ControllerSection = ControllerSection()  # the policy and its REINFORCE update
    search: SearchSection = SearchSection()  # the search loop
    model: dict = field(default_factory=dict)  # the supernet's size, checked against the space's ModelArgs

    def __post_init__(self):
        # the task's own section: given or its defaults; the other task's is refused
        task = TASK_OF_DATASET[self.data.dataset]
        for other in TASK_SECTIONS:
            if other != task and getattr(self.search, other) is not None:
                raise ValueError(f"search.{other} holds the settings of {TASK_TEXT[other]}; this config's "
                                 f"data.dataset is {self.data.dataset}: remove search.{other}")
        if getattr(self.search, task) is None:
            search = dataclasses.replace(self.search, **{task: TASK_SECTIONS[task]()})
            object.__setattr__(self, "search", search)  # frozen: set once, while the object is built
