"""Image classification: data on the device, augmentation, loss, reward.

Datasets (``load_images``): CIFAR-10, CIFAR-100 (fine labels) and an image folder of
the user's own (enas/data/imagefolder.py, resized to ``data.image_size``). The model
is built for the data's number of classes and image size (``model_kwargs``).

The whole split lives on the device as normalised float tensors (per-channel
mean/std of the training images used); pad-4 random crop, horizontal flip and
cutout run as batched tensor ops driven by a ``torch.Generator`` seeded from
(seed, epoch), so an epoch's order and augmentation are reproducible (exact resume)
and differ between epochs. No per-image Python in the loop.

Splits (ENAS_REFERENCE section 2): ``search`` trains the shared weights on the first
``train_size`` training images and scores on the last ``valid_size``; ``final``
trains on all training images and evaluates on the test set (CIFAR's test batch, the
image folder's ``val/``; there is no validation set: ``evaluate(..., "valid")``
reports the test set, as the official final runs do).

A controller reward (``reward``) is the accuracy on a minibatch of the *training* batch
size drawn from a shuffled stream of the validation images, without augmentation, as
the official ``build_valid_rl`` draws it (``tf.train.shuffle_batch`` of ``batch_size``:
general_child.py 667-676, micro_child.py 781-790); derive and final scores read the
fixed, consecutive ``eval_batch_size`` batches (``score``), the same for every candidate.

BN while scoring a *supernet* arch (``arch`` given) follows ``eval_bn``: ``batch``
uses the minibatch's own statistics without touching the running averages,
``recalibrate`` recomputes running statistics for that arch on ``RECALIBRATE_BATCHES``
training batches first (then restores the supernet's), ``running`` uses the supernet's
running averages (the official macro reward, general_child.py 691: ``_model(x,
False)``), ``train`` is ``batch`` with dropout on (the official micro reward,
micro_child.py 804: ``is_training=True``). Dropout is off in the other modes; a child
(``arch=None``) is scored in plain eval mode. benchmarks/studies/reward_noise.py measures the
modes (docs/experiments/cifar-reward-bn.md).

Several processes (``shard``, enas/train/distributed.py): training minibatch i is
``perm[i*G:(i+1)*G]`` of the global batch G (``train_batch``), same permutation and
augmentation draws on every rank, and this process trains on its equal contiguous
share; validation and test batches are split likewise and the sums (loss, correct,
count) added over the ranks, so every figure is the whole batch's. BN in training
mode and ``eval_bn: batch`` normalise with the share's statistics (not the global
batch's); ``recalibrate`` runs its full batches on every rank, so it stays exact.
"""
from __future__ import annotations

import contextlib
import math
import weakref

import torch
import torch.nn as nn
import torch.nn.functional as F

from enas.data.images import PAD, augment, load_images
from enas.errors import DataError
from enas.train.distributed import Shard
from enas.tasks import TASKS

_BN = nn.modules.batchnorm._BatchNorm
EVAL_BN = ("batch", "recalibrate", "running", "train")  # scoring modes (module docstring)
# Training batches that recalibrate BN for one arch (eval_bn: recalibrate); 16 ranked no
# better on NB201 (docs/experiments/beat-chance.md)
RECALIBRATE_BATCHES = 4


@TASKS.register("image")
class ImageTask:
    metric = "accuracy"

    def __init__(self, data_cfg, data_dir, device, seed: int, split: str = "search",
                 eval_bn: str = "batch", amp: str = "auto",
                 channels_last: bool = True, aux_weight: float = 0.0, label_smoothing: float = 0.0,
                 shard: Shard | None = None, train_batch: int | None = None, **ignored):
        # **ignored: LM-only options (retrain passes both tasks' settings alike).
        if split not in ("search", "final"):
            raise ValueError(f"split must be 'search' or 'final', got {split!r}")
        if eval_bn not in EVAL_BN:
            raise ValueError(f"eval_bn must be one of {EVAL_BN}, got {eval_bn!r}")
        self.cfg, self.split, self.seed = data_cfg, split, int(seed)
        self.device = torch.device(device)
        self.eval_bn = eval_bn
        self.aux_weight, self.label_smoothing = float(aux_weight), float(label_smoothing)
        cuda = self.device.type == "cuda"
        self.amp = cuda and amp in ("auto", "bf16")
        # channels_last on CPU too: PyTorch's CPU backward of the depthwise/grouped convs is
        # 2-7x faster in that layout (measured with benchmarks/throughput.py, supernet step at batch 16).
        self.channels_last = bool(channels_last)
        self._prepared: weakref.WeakSet = weakref.WeakSet()
        self._mods: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

        d = load_images(data_cfg, data_dir)
        self.num_classes = d["num_classes"]
        self.class_names = d.get("classes")  # None where the dataset names none
        n = d["train_x"].shape[0]
        if split == "search":
            nv = data_cfg.valid_size
            nt = data_cfg.train_size or n - nv
            if nv < 1 or nt < 1 or nt + nv > n:
                raise DataError(f"data.train_size {data_cfg.train_size} + data.valid_size {nv} do not fit "
                                f"the {n} training images; set them so that they do (train_size 0 = all but "
                                f"the validation images), e.g. data.train_size: 0, data.valid_size: "
                                f"{max(1, n // 10)}")
            train = (d["train_x"][:nt], d["train_y"][:nt])
            valid = (d["train_x"][n - nv:], d["train_y"][n - nv:])
            test = (d["test_x"], d["test_y"])
        else:
            train = (d["train_x"], d["train_y"])
            valid = test = (d["test_x"], d["test_y"])
        x = train[0].double() / 255.0
        self.mean = x.mean(dim=(0, 2, 3)).float()  # per channel, training images only
        self.std = x.std(dim=(0, 2, 3)).float()
        self.train_x, self.train_y = self._to_device(*train)
        self.valid_x, self.valid_y = self._to_device(*valid)
        self.test_x, self.test_y = (self.valid_x, self.valid_y) if test is valid else self._to_device(*test)
        self.valid_is_test = test is valid  # final split: no validation images besides the test set
        self._epoch_plan: tuple[int, dict] | None = None
        self._reward_plan: tuple[int, torch.Tensor] | None = None
        # Global training minibatch and this process's share of every batch.
        self.shard = shard or Shard()
        self.train_batch = int(train_batch or data_cfg.batch_size)
        if self.shard.world > 1 and self.train_x.shape[0] < self.train_batch:
            raise DataError(f"{self.train_x.shape[0]} training images are fewer than one global minibatch "
                            f"({self.train_batch})")

    def _to_device(self, x_u8, y):
        x = (x_u8.float() / 255.0 - self.mean[None, :, None, None]) / self.std[None, :, None, None]
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.to(self.device).contiguous(memory_format=fmt), y.to(self.device)

    # ------------------------------------------------------------------ training

    def model_kwargs(self) -> dict:
        return {"num_classes": self.num_classes, "image_size": self.train_x.shape[-1]}

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """channels_last weights when enabled (idempotent; also done lazily on first use)."""
        if model not in self._prepared:
            if self.channels_last:
                model.to(memory_format=torch.channels_last)
            self._prepared.add(model)
        return model

    def num_train_batches(self, epoch: int | None = None) -> int:
        # the last partial batch is dropped (a different remainder each epoch)
        return max(1, self.train_x.shape[0] // self.train_batch)

    def start_epoch(self, epoch: int) -> None:
        pass  # no carried state

    def _plan(self, epoch: int) -> dict:
        """Order and augmentation of one epoch, from a generator seeded by (seed, epoch)."""
        if self._epoch_plan is None or self._epoch_plan[0] != epoch:
            n, dev = self.train_x.shape[0], self.device
            g = torch.Generator(device=dev)
            g.manual_seed((self.seed * 1_000_003 + epoch * 7_919 + 17) % (2**63))
            _, _, H, W = self.train_x.shape
            rand = lambda hi: torch.randint(0, hi, (n,), generator=g, device=dev)  # noqa: E731
            plan = {"perm": torch.randperm(n, generator=g, device=dev),
                    "ox": rand(2 * PAD + 1), "oy": rand(2 * PAD + 1), "flip": rand(2).bool(),
                    "cy": rand(H), "cx": rand(W)}
            self._epoch_plan = (epoch, plan)
        return self._epoch_plan[1]

    def train_batches(self, epoch: int):
        """Yields {"x": [B, 3, S, S] float, "y": [B] int64}; deterministic in (seed, epoch)."""
        p, bs = self._plan(epoch), self.train_batch
        b = bs // self.shard.world  # this process's share
        for i in range(self.num_train_batches()):
            start = i * bs + self.shard.rank * b
            sl = slice(start, start + b)
            idx = p["perm"][sl]
            x = self.train_x[idx]
            if self.cfg.augment or self.cfg.cutout:
                if self.cfg.augment:
                    ox, oy, flip = p["ox"][sl], p["oy"][sl], p["flip"][sl]
                else:  # cutout only: centre crop, no flip
                    ox = oy = torch.full_like(idx, PAD)
                    flip = torch.zeros_like(idx, dtype=torch.bool)
                x = augment(x, ox, oy, flip, p["cy"][sl], p["cx"][sl], self.cfg.cutout)
            if not self.channels_last:
                x = x.contiguous()
            yield {"x": x, "y": self.train_y[idx]}

    def _autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)

    def train_loss(self, model, batch, arch):
        """CE (+ aux_weight * aux CE); stats are detached tensors (no host sync)."""
        self.prepare_model(model)
        x, y = batch["x"], batch["y"]
        with self._autocast():
            logits, aux = model(x, arch)  # [B, K], [B, K] or None
        ce = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        loss = ce
        if aux is not None and self.aux_weight > 0:
            loss = loss + self.aux_weight * F.cross_entropy(aux.float(), y, label_smoothing=self.label_smoothing)
        acc = (logits.detach().argmax(dim=1) == y).float().mean()
        return loss, {"loss": ce.detach(), "accuracy": acc}

    # ------------------------------------------------------------------ scoring

    def _modules(self, model) -> tuple[list, list, list]:
        """(all modules, BN modules, dropout modules) of ``model``, cached per model."""
        if model not in self._mods:
            mods = list(model.modules())
            self._mods[model] = (mods, [m for m in mods if isinstance(m, _BN)],
                                 [m for m in mods if isinstance(m, nn.Dropout)])
        return self._mods[model]

    @staticmethod
    def _set_training(mods, flag: bool) -> None:
        # Module.train() walks the tree through Module.__setattr__: ~0.1 s on a micro
        # supernet's ~7k modules, more than scoring one minibatch on a GPU, and the
        # controller phase scores hundreds of archs per epoch. Writing the flag is
        # what train() does for plain modules, at a fraction of the cost.
        for m in mods:
            m.__dict__["training"] = flag

    @contextlib.contextmanager
    def _scoring(self, model, arch):
        """Eval mode, no grad, BN per ``eval_bn`` for a supernet arch; restores everything."""
        self.prepare_model(model)
        mods, bns, drops = self._modules(model)
        flags = [m.training for m in mods]
        bns = bns if arch is not None and self.eval_bn != "running" else []
        saved = [(m, dict(m._buffers), m.momentum) for m in bns]
        self._set_training(mods, False)
        try:
            with torch.no_grad():
                if bns and self.eval_bn in ("batch", "train"):
                    # An eval-mode BN without running statistics normalises with the
                    # batch's own and updates nothing (official micro search: BN always
                    # in training mode).
                    for m in bns:
                        m._buffers["running_mean"] = m._buffers["running_var"] = None
                    if self.eval_bn == "train":
                        self._set_training(drops, True)
                elif bns:  # recalibrate: fresh cumulative statistics for this arch
                    for m in bns:
                        b = m._buffers
                        b["running_mean"] = torch.zeros_like(b["running_mean"])
                        b["running_var"] = torch.ones_like(b["running_var"])
                        b["num_batches_tracked"] = torch.zeros_like(b["num_batches_tracked"])
                        m.momentum = None  # cumulative average over the batches
                    self._set_training(bns, True)
                    bs = self.cfg.batch_size
                    for i in range(RECALIBRATE_BATCHES):
                        x = self.train_x[(i * bs) % self.train_x.shape[0]:][:bs]
                        with self._autocast():
                            model(x, arch)
                    self._set_training(bns, False)
                yield
        finally:
            for m, buffers, momentum in saved:
                m._buffers.update(buffers)
                m.momentum = momentum
            for m, f in zip(mods, flags):
                m.__dict__["training"] = f

    def num_valid_batches(self) -> int:
        return -(-self.valid_x.shape[0] // self.cfg.eval_batch_size)

    def _batches(self, split: str, num_batches: int = 0, first: int = 0):
        """``num_batches`` eval batches from batch ``first``, wrapping (0 = the whole split)."""
        x, y = (self.valid_x, self.valid_y) if split == "valid" else (self.test_x, self.test_y)
        ebs = self.cfg.eval_batch_size
        n = -(-x.shape[0] // ebs)
        order = range(n) if num_batches <= 0 else [(first + k) % n for k in range(min(num_batches, n))]
        for i in order:
            yield self.shard.chunk(x[i * ebs:(i + 1) * ebs]), self.shard.chunk(y[i * ebs:(i + 1) * ebs])

    def _run(self, model, arch, batches, hits: list | None = None):
        """(summed CE, correct count, examples) as device tensors / int; each image's
        correctness appended to ``hits`` when given."""
        loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        count = 0
        for x, y in batches:
            if y.shape[0] == 0:
                continue  # an empty share of a short last batch
            with self._autocast():
                logits, _ = model(x, arch)
            loss = loss + F.cross_entropy(logits.float(), y, reduction="sum")
            right = logits.argmax(dim=1) == y
            correct = correct + right.sum()
            if hits is not None:
                hits.append(right)
            count += y.shape[0]
        # Several processes: each scored its share; the figures are the whole batch's.
        return self.shard.sum(loss, correct, count)

    def _reward_order(self, p: int) -> torch.Tensor:
        """The validation images in pass ``p`` of the reward stream: a permutation from (seed, p)."""
        if self._reward_plan is None or self._reward_plan[0] != p:
            g = torch.Generator(device=self.device)
            g.manual_seed((self.seed * 1_000_003 + p * 7_919 + 29) % (2**63))
            self._reward_plan = (p, torch.randperm(self.valid_x.shape[0], generator=g, device=self.device))
        return self._reward_plan[1]

    def reward(self, model, arch, num_batches: int = 1, first: int = 0) -> torch.Tensor:
        """Accuracy (a 0-d device tensor) on reward minibatches ``first`` .. ``first +
        num_batches - 1`` of the stream: each pass over the validation images is a fresh
        permutation, cut into minibatches of the training batch size (the remainder of a
        pass is skipped, as a shuffled queue would mix it into the next)."""
        n = self.valid_x.shape[0]
        bs = min(self.train_batch, n)
        per_pass = n // bs

        def batches():
            for i in range(first, first + num_batches):
                idx = self._reward_order(i // per_pass)[(i % per_pass) * bs:][:bs]
                yield self.shard.chunk(self.valid_x[idx]), self.shard.chunk(self.valid_y[idx])

        with self._scoring(model, arch):
            _, correct, count = self._run(model, arch, batches())
        return correct.double() / count

    def score(self, model, arch, num_batches: int = 0, first: int = 0, sync: bool = True):
        """(accuracy, its binomial standard error) on ``num_batches`` validation batches
        from batch ``first`` (wrapping; 0 = all). ``sync=False``: 0-d device tensors, so
        that several scores cost one host read."""
        with self._scoring(model, arch):
            _, correct, count = self._run(model, arch, self._batches("valid", num_batches, first))
        p = correct.double() / count
        se = torch.sqrt(p * (1 - p) / count)
        return (p, se) if not sync else tuple(torch.stack([p, se]).tolist())

    def paired_se(self, model, arch_a, arch_b, num_batches: int = 0, first: int = 0) -> float:
        """Standard error of accuracy(a) - accuracy(b) on the same validation images: the
        spread of the per-image differences (a paired comparison: architectures that share
        weights tend to fail on the same images, which cancels in the difference)."""
        hits = []
        for arch in (arch_a, arch_b):
            hits.append([])
            with self._scoring(model, arch):
                self._run(model, arch, self._batches("valid", num_batches, first), hits[-1])
        d = torch.cat(hits[0]).double() - torch.cat(hits[1]).double()
        n, s1, s2 = self.shard.sum(d.numel(), d.sum(), d.pow(2).sum())
        if n < 2:
            return math.nan
        return math.sqrt(max(float(s2 - s1 * s1 / n) / (n - 1), 0.0) / n)

    def as_metric(self, value: float, se: float) -> tuple[float, float]:
        """A score is the validation accuracy itself."""
        return value, se

    def evaluate(self, model, arch, split: str) -> dict:
        """{"loss", "accuracy"} over a whole split ("valid" or "test")."""
        if split not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
        with self._scoring(model, arch):
            loss, correct, count = self._run(model, arch, self._batches(split))
        return {"loss": loss.item() / count, "accuracy": correct.item() / count}

    # ------------------------------------------------------------------ training-free scores

    def probe_input(self, kind: str, n: int) -> torch.Tensor:
        """Inputs for a training-free score (enas/nas/training_free.py): ``constant``, n images
        of ones (synflow); ``data``, the first n training images without augmentation."""
        if kind == "constant":
            return torch.ones(n, *self.train_x.shape[1:], device=self.device)
        return self.train_x[:n].contiguous()

    def probe_forward(self, model, x: torch.Tensor, dtype=None) -> torch.Tensor:
        """A child's logits [n, K] for ``x`` (in ``dtype`` when given)."""
        return model(x if dtype is None else x.to(dtype), None)[0]

    # ------------------------------------------------------------------ resume

    def state_dict(self) -> dict:
        return {}  # no carried state: an epoch's order and augmentation come from (seed, epoch)

    def load_state_dict(self, state: dict) -> None:
        pass
