"""The generic LSTM policy over a space's decision list (paper, sections 2.1-2.4).

It knows three decision kinds (enas/nas/space.py), never a particular space. One
batched pass samples K architectures at once (the LSTM runs on [K, H]) and returns
each sample's exact log-probability and entropy; ``evaluate`` feeds given choices
back through the same code and must return the same numbers (tested).

The controller lives on the CPU whatever device the supernet uses: its output is
Python control flow (which path of the supernet to run), so it is needed on the
host anyway, and a [K, 64] LSTM is too small to gain from a GPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from enas.config import PerKind
from enas.nas.space import Arch, Decision, InputAnchors, input_anchors


@dataclass
class Sample:
    archs: list[Arch]
    log_prob: torch.Tensor  # [K] sum over decisions (carries grad when sampled with grad)
    entropy: torch.Tensor  # [K] sum of full per-decision entropies
    # [K] macro: KL(Bernoulli(p) || Bernoulli(target)) summed over a layer's skip bits,
    # averaged over the layers (official general_controller: reduce_mean over layers)
    skip_penalty: torch.Tensor
    probs: dict = field(default_factory=dict)  # decision -> [size] mean choice prob over K


class Controller(nn.Module):
    def __init__(
        self,
        decisions: Sequence[Decision],
        initial_anchors: Mapping[str, int | InputAnchors] | None = None,
        hidden: int = 64,
        tanh_constant: PerKind = PerKind(),
        temperature: PerKind = PerKind(),
        skip_target: float = 0.4,
        init_range: float = 0.1,
        tie_heads: bool = False,
    ):
        super().__init__()
        self.decisions = list(decisions)
        self.initial_anchors = {k: input_anchors(v) for k, v in (initial_anchors or {}).items()}
        self.tanh_constant = tanh_constant
        self.temperature = temperature
        self.skip_target = skip_target
        H = hidden
        self.lstm = nn.LSTMCell(H, H)
        self.go = nn.Parameter(torch.zeros(1, H))  # learned first input (official g_emb)
        # One head / embedding per categorical group (activations, ops), sized by its choices.
        # tie_heads: the logits are h . E^T with E the group's embedding, no head of its
        # own (enas_lm controller.py: logits = next_h w_emb^T).
        self.tie_heads = tie_heads
        self.heads = nn.ModuleDict()
        self.embeds = nn.ModuleDict()
        self.biases = nn.ParameterDict()
        for d in self.decisions:
            if d.kind != "categorical":
                continue
            if d.group in self.embeds:
                if self.embeds[d.group].num_embeddings != d.size:
                    raise ValueError(f"decisions of group {d.group!r} have different numbers of choices")
                continue
            if not tie_heads:
                self.heads[d.group] = nn.Linear(H, d.size, bias=False)
            self.embeds[d.group] = nn.Embedding(d.size, H)
            if d.bias_init is not None:
                self.biases[d.group] = nn.Parameter(torch.tensor(d.bias_init, dtype=torch.float32))
        # Attention over anchors for index and skip decisions: v . tanh(W1 a_j + W2 h).
        self.attn_anchor = nn.Linear(H, H, bias=False)
        self.attn_query = nn.Linear(H, H, bias=False)
        self.attn_v = nn.Linear(H, 1, bias=False)
        for p in self.parameters():
            nn.init.uniform_(p, -init_range, init_range)  # official: uniform [-0.1, 0.1]
        with torch.no_grad():
            for g, b in self.biases.items():  # the learned op bias keeps its stated start
                b.copy_(torch.tensor(next(d.bias_init for d in self.decisions if d.group == g)))
        self._check_anchors()

    def _check_anchors(self) -> None:
        count = {k: v.count for k, v in self.initial_anchors.items()}
        for d in self.decisions:
            have = count.setdefault(d.scope, 0) + (d.anchor_step == "before")
            if d.kind != "categorical" and d.num_inputs != have:
                raise ValueError(
                    f"decision {d.name}: num_inputs={d.num_inputs} but scope {d.scope!r} has {have} anchors"
                )
            count[d.scope] = have + bool(d.anchor or d.anchor_step == "after")

    def _shape(self, logits: torch.Tensor, d: Decision) -> torch.Tensor:
        """logits = C * tanh(logits / T) (official controllers), then the fixed offset."""
        kind = d.kind
        T = getattr(self.temperature, kind)
        C = getattr(self.tanh_constant, kind)
        if T:
            logits = logits / T
        if C:
            logits = C * torch.tanh(logits)
        if d.logit_offset is not None:
            logits = logits + torch.tensor(d.logit_offset, dtype=logits.dtype)
        return logits

    def forward(
        self,
        num_samples: int = 1,
        archs: Sequence[Arch] | None = None,
        generator: torch.Generator | None = None,
    ) -> Sample:
        """Sample ``num_samples`` architectures, or score the given ``archs``: one LSTM step
        per decision, in the space's order; after each, the chosen value's embedding (or
        the chosen anchors) is the next input (paper 2.1-2.3). Anchor steps where the
        space declares them (enas/nas/space.py)."""
        K = len(archs) if archs is not None else num_samples
        H = self.go.shape[1]
        h = c = torch.zeros(K, H)  # LSTM state [K, H]
        go = self.go.expand(K, H)
        x = go  # next input [K, H]
        anchors: dict[str, list[torch.Tensor]] = {}  # scope -> what picking a node feeds, [K, H] each
        keys: dict[str, list[torch.Tensor]] = {}  # its attention keys, W1 a_j
        log_prob, entropy, penalty = torch.zeros(K), torch.zeros(K), torch.zeros(K)
        out: list[Arch] = [{} for _ in range(K)]
        probs = {}
        num_skip = 0

        def add_anchor(scope: str, value: torch.Tensor, key_of: torch.Tensor) -> None:
            anchors[scope].append(value)
            keys[scope].append(self.attn_anchor(key_of))

        for d in self.decisions:
            if d.scope not in anchors:  # a new scope: its given inputs get anchors first
                anchors[d.scope], keys[d.scope] = [], []
                x = go
                given_in = self.initial_anchors.get(d.scope, InputAnchors())
                for _ in range(given_in.count):
                    if given_in.kind == "zero":
                        add_anchor(d.scope, torch.zeros(K, H), torch.zeros(K, H))
                        continue
                    h, c = self.lstm(go, (h, c))
                    add_anchor(d.scope, h if given_in.kind == "step" else torch.zeros_like(h), h)
            if d.anchor_step == "before":
                h, c = self.lstm(x, (h, c))
                add_anchor(d.scope, h, h)
                x = go
            h, c = self.lstm(x, (h, c))
            given = None if archs is None else [a[d.name] for a in archs]
            if d.kind == "skip":
                values, lp, ent, p, x, kl = self._skip(d, h, anchors[d.scope], keys[d.scope], given, generator)
                penalty, num_skip = penalty + kl, num_skip + 1
            else:
                values, lp, ent, p, x = self._choose(d, h, anchors[d.scope], keys[d.scope], given, generator)
            for k, v in enumerate(values):
                out[k][d.name] = v
            log_prob, entropy = log_prob + lp, entropy + ent
            probs[d.name] = p.detach().mean(0)
            if d.anchor:
                add_anchor(d.scope, h, h)
            elif d.anchor_step == "after":
                h, c = self.lstm(x, (h, c))
                add_anchor(d.scope, h, h)
                x = go
        return Sample(out, log_prob, entropy, penalty / max(num_skip, 1), probs)

    def _attention(self, h: torch.Tensor, keys: list[torch.Tensor]) -> torch.Tensor:
        """v . tanh(W1 a_j + W2 h) over the scope's anchors: [K, n] logits."""
        key = torch.stack(keys, 1)  # [K, n, H]
        return self.attn_v(torch.tanh(key + self.attn_query(h)[:, None])).squeeze(-1)

    def _choose(self, d: Decision, h, anchors, keys, given, generator):
        """A categorical decision (an op: its group's head) or an index decision (an
        earlier node: attention over the anchors). Returns (values, log p, entropy,
        probabilities [K, size], next input [K, H])."""
        if d.kind == "categorical":
            logits = F.linear(h, self.embeds[d.group].weight) if self.tie_heads else self.heads[d.group](h)
            if d.group in self.biases:
                logits = logits + self.biases[d.group]
        else:
            logits = self._attention(h, keys)
        logp_all = F.log_softmax(self._shape(logits, d), -1)  # [K, size]
        p = logp_all.exp()
        if given is None:
            idx = torch.multinomial(p.detach(), 1, generator=generator).squeeze(1)
        else:
            idx = torch.tensor([_to_index(d, v) for v in given])
        lp = logp_all.gather(1, idx[:, None]).squeeze(1)
        ent = -(p * logp_all).sum(1)
        if d.kind == "categorical":
            return [d.choices[i] for i in idx.tolist()], lp, ent, p, self.embeds[d.group](idx)
        # feed the chosen node's anchor (official micro controller), damped by its distance
        # where the space says so (official PTB controllers)
        x = torch.stack(anchors, 1)[torch.arange(len(idx)), idx]
        if d.distance_offset is not None:
            x = x / (d.distance_offset + (d.num_inputs - idx))[:, None].to(x.dtype)
        return idx.tolist(), lp, ent, p, x

    def _skip(self, d: Decision, h, anchors, keys, given, generator):
        """A skip set: an independent yes/no per earlier layer (macro, paper 2.2). Returns
        (values, log p, entropy, probabilities [K, n], next input [K, H], KL penalty [K])."""
        # Official: the shaped logit q enters as the pair [-q, q] and a softmax over the
        # pair samples the bit, so p(skip) = sigmoid(2 q): 0.05..0.95 at C = 1.5.
        logits = 2 * self._shape(self._attention(h, keys), d)  # [K, n]
        p = torch.sigmoid(logits)
        if given is None:
            choice = (torch.rand(p.shape, generator=generator) < p.detach()).float()
        else:
            choice = torch.zeros_like(p)
            for k, v in enumerate(given):
                choice[k, list(v)] = 1.0
        lp = -F.binary_cross_entropy_with_logits(logits, choice, reduction="none").sum(1)
        ent = F.binary_cross_entropy_with_logits(logits, p, reduction="none").sum(1)
        # The official penalty (general_controller.py 231-233) is the KL of sigmoid of the
        # shaped pair [-q, q], i.e. of sigmoid(logits / 2), not of the sampled p(skip): at
        # its minimum sigmoid(logits / 2) = target, so the sampled rate settles near
        # t^2 / (t^2 + (1 - t)^2), 0.31 for t = 0.4 (a sampled 0.4 needs skip_target 0.45).
        q, pk = self.skip_target, torch.sigmoid(logits / 2).clamp(1e-6, 1 - 1e-6)  # clamp: 0 * log 0 = nan
        kl = (pk * torch.log(pk / q) + (1 - pk) * torch.log((1 - pk) / (1 - q))).sum(1)
        # the next input: the mean of the chosen layers' anchors (official general_controller)
        x = (choice[..., None] * torch.stack(anchors, 1)).sum(1) / (1.0 + choice.sum(1, keepdim=True))
        values = [[j for j, v in enumerate(row) if v] for row in choice.tolist()]
        return values, lp, ent, p, x, kl

    def evaluate(self, archs: Sequence[Arch]) -> Sample:
        return self(archs=archs)


def _to_index(d: Decision, value) -> int:
    return d.choices.index(value) if d.kind == "categorical" else int(value)


class RandomPolicy(nn.Module):
    """Uniform sampling with the controller's interface and no parameters: the
    "random search with weight sharing" baseline (Li & Talwalkar, 2019)."""

    def __init__(self, decisions: Sequence[Decision], **_ignored):
        super().__init__()
        self.decisions = list(decisions)

    def forward(self, num_samples=1, archs=None, generator=None) -> Sample:
        K = len(archs) if archs is not None else num_samples
        out: list[Arch] = [{} for _ in range(K)]
        logp = 0.0
        ent = 0.0
        probs = {}
        for d in self.decisions:
            n = d.size
            if d.kind == "skip":
                bits = torch.rand(K, n, generator=generator) < 0.5
                for k in range(K):
                    out[k][d.name] = [j for j, v in enumerate(bits[k].tolist()) if v]
                logp += n * math.log(0.5)
                ent += n * math.log(2)
                probs[d.name] = torch.full((n,), 0.5)
            else:
                idx = torch.randint(n, (K,), generator=generator).tolist()
                for k, i in enumerate(idx):
                    out[k][d.name] = d.choices[i] if d.kind == "categorical" else i
                logp -= math.log(n)
                ent += math.log(n)
                probs[d.name] = torch.full((n,), 1.0 / n)
        if archs is not None:
            out = [dict(a) for a in archs]
        return Sample(out, torch.full((K,), logp), torch.full((K,), ent), torch.zeros(K), probs)

    def evaluate(self, archs):
        return self(archs=archs)



def build_policy(kind: str, space, cfg) -> nn.Module:
    """``cfg``: the ControllerSection."""
    if kind == "random":
        return RandomPolicy(space.decisions())
    return Controller(
        space.decisions(),
        space.initial_anchors,
        hidden=cfg.hidden,
        tanh_constant=cfg.tanh_constant,
        temperature=cfg.temperature,
        skip_target=cfg.skip_target,
        init_range=cfg.init_range,
        tie_heads=cfg.tie_heads,
    )
