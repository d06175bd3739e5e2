"""Word-level language modelling (PTB or any corpus): data, loss, reward, evaluation.

Both splits train on the training text and score on the validation text (the paper's
search uses PTB train/valid, paper 3.2); only a final model is evaluated on test.
The recurrent state is carried from one BPTT window to the next (truncated BPTT)
across the training windows of an epoch (reset by ``start_epoch``). A score (and so a
controller reward) never inherits a state: it starts from zeros that its own
architecture first runs over the ``reward_warmup`` tokens before its windows.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from enas.data.text import batchify, get_window, load_corpus, window_starts
from enas.train.distributed import Shard
from enas.errors import DataError
from enas.tasks import TASKS


@TASKS.register("lm")
class LanguageModelTask:
    metric = "ppl"
    valid_is_test = False  # a corpus has its own validation text

    def __init__(self, data_cfg, data_dir, device, seed: int, split: str = "search",
                 reward_c: float = 80.0, reward_warmup: int = 10, amp: str = "auto", shard: Shard | None = None,
                 train_batch: int | None = None, **ignored):
        # **ignored: image-only options (channels_last, aux_weight, ...): retrain passes
        # both tasks' settings alike.
        if split not in ("search", "final"):
            raise ValueError(f"split must be 'search' or 'final', got {split!r}")
        self.cfg, self.split, self.seed = data_cfg, split, int(seed)
        self.reward_c = float(reward_c)  # reward = c / valid_ppl, c = 80 (paper 3.2)
        self.reward_warmup = int(reward_warmup)
        self.device = torch.device(device)
        self.amp = amp == "bf16" or (amp == "auto" and self.device.type == "cuda")
        corpus = load_corpus(data_cfg.dataset, data_dir)
        self.vocab = corpus.vocab
        # Several processes (enas/train/distributed.py): the streams are laid out for the global
        # batch (train_batch columns; eval_batch_size for valid/test) and this process keeps
        # its equal share of the columns; _run sums the figures over the processes.
        self.shard = shard or Shard()
        self.train_batch = int(train_batch or data_cfg.batch_size)
        self.train_data = self.shard.take(batchify(corpus.train, self.train_batch, self.device), 1)  # [T, B]
        self.valid_data = self.shard.take(batchify(corpus.valid, data_cfg.eval_batch_size, self.device), 1)
        self.test_data = self.shard.take(batchify(corpus.test, data_cfg.eval_batch_size, self.device), 1)
        rows = self.train_data.size(0)
        if data_cfg.bptt >= rows:  # one window would unroll the whole text: refuse before building that graph
            raise DataError(f"data.bptt={data_cfg.bptt} is not shorter than the training text laid out in "
                            f"data.batch_size={self.train_batch} columns ({rows} tokens each); use a smaller "
                            f"data.bptt (the paper uses 35) or a smaller data.batch_size")
        self._windows_cache: tuple[int, list] | None = None
        self._epoch = 0
        self._train_hidden: torch.Tensor | None = None

    # ------------------------------------------------------------------ training

    def model_kwargs(self) -> dict:
        return {"vocab_size": len(self.vocab)}

    def _windows(self, epoch: int) -> list[tuple[int, int]]:
        """Training windows of one epoch, deterministic in (seed, epoch)."""
        if self._windows_cache is None or self._windows_cache[0] != epoch:
            c = self.cfg
            gen = None
            if c.variable_bptt:
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            wins = window_starts(self.train_data.size(0), c.bptt, c.variable_bptt, c.bptt_max, gen)
            self._windows_cache = (epoch, wins)
        return self._windows_cache[1]

    def num_train_batches(self, epoch: int | None = None) -> int:
        """Windows in ``epoch`` (default: the one last started). With variable BPTT the
        count differs a little between epochs, so pass the epoch when it is known."""
        return len(self._windows(self._epoch if epoch is None else epoch))

    def start_epoch(self, epoch: int) -> None:
        self._epoch = epoch
        self._train_hidden = None

    def reset_hidden(self) -> None:
        """Forget the carried training state."""
        self._train_hidden = None

    def on_bad_step(self, bad: torch.Tensor | None = None) -> None:
        """Called by the loop after a skipped non-finite step (or, with ``bad``, after every
        step decided on the device, where the flag says whether it was skipped): the state
        carried out of that window may itself be non-finite or huge, and carrying it on
        would poison every later window of the epoch, so start the next one from zeros."""
        if bad is None:
            self.reset_hidden()
        elif self._train_hidden is not None:
            self._train_hidden = torch.where(bad, torch.zeros_like(self._train_hidden), self._train_hidden)

    def train_batches(self, epoch: int):
        for i, L in self._windows(epoch):
            x, y = get_window(self.train_data, i, L)
            yield {"x": x, "y": y, "start": i, "seq_len": L}

    def _autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def train_loss(self, model, batch, arch):
        """Per-token mean cross-entropy + AR/TAR; stats are detached tensors (no host sync)."""
        x, y = batch["x"], batch["y"]  # [L, B] each
        hidden = self._train_hidden
        if hidden is None:
            hidden = model.init_hidden(x.size(1))
        with self._autocast():
            # the mean token cross-entropy, computed inside the model (target=): a model
            # may compute it faster than F.cross_entropy of its [L, B, V] logits
            ce, hidden, extra = model(x, hidden, arch, target=y)
        self._train_hidden = hidden.detach()  # truncated BPTT: carry the value, not the graph
        loss = ce + extra
        # No "ppl" here: the loop averages stats over steps, and a mean of exp(loss) is
        # not a perplexity. exp of the averaged loss is, where one is wanted.
        return loss, {"loss": ce.detach(), "extra_loss": extra.detach()}

    def lr_scale(self, batch) -> float:
        """Variable BPTT: enas_lm / AWD-LSTM scale the learning rate of a step by L / bptt so
        that short windows move the weights less. The loop scales the step after clipping;
        scaling the loss instead would let clipping cancel it whenever it binds."""
        return batch["seq_len"] / self.cfg.bptt if self.cfg.variable_bptt else 1.0

    # ------------------------------------------------------------------ scoring

    def _run(self, model, arch, source, windows, hidden, samples: list | None = None):
        """Over ``windows`` (eval mode, no grad): the token-weighted CE sum and token count,
        and the (count, sum, sum of squares) of each (window, column) mean CE: the columns
        are separate text streams, so these are the samples of a standard error (appended
        to ``samples`` when given). Returns (sum, count, samples, hidden)."""
        total = torch.zeros((), device=self.device)
        m1 = torch.zeros((), device=self.device, dtype=torch.float64)
        m2 = torch.zeros((), device=self.device, dtype=torch.float64)
        count = n = 0
        for i, L in windows:
            x, y = get_window(source, i, L)
            with self._autocast():
                logits, hidden, _ = model(x, hidden, arch)
            ce = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none")
            col = ce.view(y.shape).mean(0).double()  # [B] mean CE of each stream in this window
            if samples is not None:
                samples.append(col)
            total, m1, m2 = total + ce.sum(), m1 + col.sum(), m2 + col.pow(2).sum()
            count, n = count + y.numel(), n + col.numel()
        total, count, n, m1, m2 = self.shard.sum(total, count, n, m1, m2)
        return total, count, (n, m1, m2), hidden

    @contextlib.contextmanager
    def _eval(self, model):
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            model.train(was)

    def _reward_from(self, mean_ce: torch.Tensor) -> torch.Tensor:
        """c / exp(mean CE), on the device. A diverged arch (non-finite loss) gets 0, not
        NaN, so one bad sample cannot poison the controller's moving-average baseline."""
        value = self.reward_c * torch.exp(-mean_ce.clamp(max=700.0))
        return torch.where(torch.isfinite(mean_ce), value, torch.zeros_like(value))

    def _warm_state(self, model, arch, start: int):
        """Zeros, run by ``arch`` over the ``reward_warmup`` tokens before ``start``."""
        hidden = model.init_hidden(self.valid_data.size(1))
        w = min(self.reward_warmup, start)
        if w:
            x, _ = get_window(self.valid_data, start - w, w)
            with self._autocast():
                _, hidden, _ = model(x, hidden, arch)
        return hidden

    def _split_windows(self, source, start: int = 0):
        """Consecutive bptt windows from token ``start`` to the end of ``source``."""
        wins = window_starts(source.size(0) - start, self.cfg.bptt, False, self.cfg.bptt, None)
        return [(start + i, L) for i, L in wins]

    def _score_windows(self):
        """The windows rewards and scores read: after the first reward_warmup tokens
        (capped to leave one window), which only ever warm up a state."""
        src = self.valid_data
        return self._split_windows(src, min(self.reward_warmup, max(src.size(0) - 2, 0)))

    def num_valid_batches(self) -> int:
        return len(self._score_windows())

    def score(self, model, arch, num_batches: int = 0, first: int = 0, sync: bool = True):
        """(c / ppl, its standard error) over ``num_batches`` consecutive validation windows
        from window ``first`` (0 = all); a controller reward is one window. ``sync=False``:
        0-d device tensors, so that several scores cost one host read.

        The state starts at zero and the same architecture first runs over the
        ``reward_warmup`` tokens before the first window, unscored, so a score depends on
        its own architecture only. A zero state alone makes the window's first tokens
        context-free: on a trained PTB-subset supernet, one-window rewards then ranked 40
        random cells at Spearman 0.87 against their whole-split score, 0.99 with 10
        warm-up tokens (as with 35; benchmarks/studies/ptb_reward_state.py, docs/experiments/ptb-reward-state.md).
        The state is carried across the windows, so a block that would run past the end
        of the split starts earlier instead of wrapping."""
        with self._eval(model):
            total, count, (n, m1, m2), _ = self._score_run(model, arch, num_batches, first)
        value = self._reward_from(total / count)
        # delta method: d(c e^-m)/dm = -c e^-m, so se(value) = value * se(mean CE)
        var = (m2 - m1 * m1 / n) / (n - 1) if n > 1 else torch.full_like(m1, math.nan)
        se = value * torch.sqrt(var.clamp(min=0.0) / n)
        return (value, se) if not sync else tuple(torch.stack([value.double(), se.double()]).tolist())

    def reward(self, model, arch, num_batches: int = 1, first: int = 0) -> torch.Tensor:
        """A controller reward (0-d device tensor): ``score`` of ``num_batches`` consecutive
        validation windows from window ``first`` (wrapping), as the official valid queues
        read them in order (enas_lm data_utils.py input_producer, shuffle=False)."""
        return self.score(model, arch, num_batches, first, sync=False)[0]

    def _score_run(self, model, arch, num_batches: int, first: int, samples: list | None = None):
        wins = self._score_windows()
        if num_batches > 0:
            n = min(num_batches, len(wins))
            first = min(first % len(wins), len(wins) - n)
            wins = wins[first:first + n]
        return self._run(model, arch, self.valid_data, wins, self._warm_state(model, arch, wins[0][0]), samples)

    def paired_se(self, model, arch_a, arch_b, num_batches: int = 0, first: int = 0) -> float:
        """Standard error of score(a) - score(b) on the same validation windows: the spread
        of the per-stream differences of mean CE (a paired comparison: both read the same
        text, so the text's own difficulty cancels), through the delta method at the two
        scores' mean (d(c e^-m)/dm = -c e^-m)."""
        cols, values = [], []
        with self._eval(model):
            for arch in (arch_a, arch_b):
                cols.append([])
                total, count, _, _ = self._score_run(model, arch, num_batches, first, cols[-1])
                values.append(self._reward_from(total / count))
        d = torch.cat(cols[0]) - torch.cat(cols[1])
        n, s1, s2 = self.shard.sum(d.numel(), d.sum(), d.pow(2).sum())
        if n < 2:
            return math.nan
        var = max(float(s2 - s1 * s1 / n) / (n - 1), 0.0)
        return float((values[0] + values[1]) / 2) * math.sqrt(var / n)

    def as_metric(self, value: float, se: float) -> tuple[float, float]:
        """A score (c / ppl) as the validation perplexity and its standard error."""
        if not value > 0:
            return math.inf, math.nan
        return self.reward_c / value, self.reward_c * se / value ** 2

    def evaluate(self, model, arch, split: str) -> dict:
        """{"loss", "ppl"} over a whole split ("valid" or "test") from a fresh state."""
        if split not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
        src = self.valid_data if split == "valid" else self.test_data
        with self._eval(model):
            total, count, _, _ = self._run(model, arch, src, self._split_windows(src), model.init_hidden(src.size(1)))
        loss = total.item() / count
        return {"loss": loss, "ppl": math.exp(min(loss, 700.0)) if math.isfinite(loss) else float("inf")}

    # ------------------------------------------------------------------ resume

    def probe_input(self, kind: str, n: int) -> torch.Tensor:
        """Inputs for a training-free score (enas/nas/training_free.py): ``constant``, n streams
        of token 0 (synflow, whose absolute weights make any row a positive input);
        ``data``, the first window of n training streams. [bptt, n] int64."""
        n = min(n, self.train_data.size(1))
        x = get_window(self.train_data, 0, min(self.cfg.bptt, self.train_data.size(0) - 1))[0][:, :n]
        return torch.zeros_like(x) if kind == "constant" else x

    def probe_forward(self, model, tokens: torch.Tensor, dtype=None) -> torch.Tensor:
        """A child's logits [T, n, V] for ``tokens`` from a zero state."""
        hidden = model.init_hidden(tokens.size(1))
        return model(tokens, hidden if dtype is None else hidden.to(dtype), None)[0]

    def state_dict(self) -> dict:
        cpu = lambda t: None if t is None else t.detach().cpu()  # noqa: E731
        return {
            "epoch": self._epoch,
            "train_hidden": cpu(self.shard.gather(self._train_hidden)),  # all columns
        }

    def load_state_dict(self, state: dict) -> None:
        dev = lambda t: None if t is None else t.to(self.device)  # noqa: E731
        self._epoch = int(state["epoch"])
        h = state["train_hidden"]
        if h is not None and h.size(0) != self.train_batch:
            h = None  # a retrain resumed on another number of processes: other streams
        self._train_hidden = dev(None if h is None else self.shard.take(h))

