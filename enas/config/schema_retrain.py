"""The settings of ``enas retrain``: training one architecture from scratch. The data and
optimiser sections are the search's (enas/config/schema.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from enas.config.checks import at_least, check_seed, fraction, positive
from enas.config.schema import DataSection, OptimSection


@dataclass(frozen=True)
class RetrainSection:
    """Training one architecture from scratch (paper 3.2 / 3.3 "final" models)."""

    epochs: int = 10  # training epochs (paper: 630 micro, 310 macro (official scripts), 3000 PTB (enas_lm)
    seed: int = 0  # seeds every generator of the retrain: the same seed, the same run
    aux_weight: float = 0.0  # auxiliary head loss weight (paper: 0.4, micro)
    # Final drop-path probability (1 - keep 0.6 -> 0.4, micro final): the model scales it
    # linearly with cell depth, the trainer linearly with training progress (epoch/epochs).
    drop_path: float = 0.0
    label_smoothing: float = 0.0  # image: cross-entropy label smoothing; 0 = off (the paper's)
    # LM: non-monotonically triggered averaged SGD (Merity et al. 2018, as in enas_lm):
    # start averaging the weights once the valid ppl is worse than the best of all
    # epochs before the last asgd_patience ones; evaluate with the averaged weights.
    asgd: bool = False
    asgd_patience: int = 10  # asgd: epochs of the trigger's window (enas_lm fixed_lib.py best_valid_ppl_threshold = 10)
    # torch.compile the child for training: "on" compiles it (image models: a static
    # graph; an LM with variable BPTT recompiles per window length); "auto" is the plain
    # module: compiling becomes a device's default only once benchmarks/gpu_check.py shows
    # the compiled child correct and faster there (docs/gpu.md).
    compile: Literal["auto", "on", "off"] = "auto"
    # Several CUDA processes: image children normalise with BN statistics of the whole
    # global batch (SyncBatchNorm). PyTorch has no CPU SyncBatchNorm: on CPU each process
    # uses its own share's statistics (docs/distributed.md).
    sync_bn: bool = True
    log_every: int = 50  # console/TensorBoard every N steps
    checkpoint_minutes: float = 10.0  # time-based checkpoint inside long epochs
    max_bad_steps: int = 20  # consecutive non-finite steps before stopping
    amp: Literal["auto", "off", "bf16"] = "auto"  # bf16 autocast on CUDA when auto
    channels_last: bool = True  # image models: NHWC tensors and weights (faster grouped convs)
    # The architecture's space is your own: the file or module that registers it (the
    # search config's space.module). Architecture files never name code to import.
    space_module: str = ""
    smoke: bool = False  # a tiny run that checks the install: the console says so (search.smoke)

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"retrain.epochs must be >= 1, got {self.epochs}")
        check_seed("retrain", self)
        at_least("retrain", self, 1, "log_every", "max_bad_steps")
        at_least("retrain", self, 0, "aux_weight", "asgd_patience")
        fraction("retrain", self, "label_smoothing")
        positive("retrain", self, "checkpoint_minutes")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"retrain.drop_path must be in [0, 1), got {self.drop_path}")
        if self.asgd_patience < 1:
            raise ValueError(f"retrain.asgd_patience must be >= 1, got {self.asgd_patience}")


@dataclass(frozen=True)
class RetrainConfig:
    data: DataSection  # the data set and how it is fed
    train: OptimSection  # SGD on the child's weights
    retrain: RetrainSection = RetrainSection()  # the training run
    model: dict = field(default_factory=dict)  # the child's size, checked against the arch's space's ModelArgs
