"""Word-level data and the language-model task, on tiny generated corpora (no network)."""
import random

import pytest
import torch

from enas.config import DataSection
from enas.data import text
from enas.errors import DataError
from enas.tasks.lm import LanguageModelTask
from search_spaces.enas_rnn import ENAS_PTB_CELL, EnasRNNSpace, ModelArgs


def write_corpus(d, names=("train.txt", "valid.txt", "test.txt"), seed=0, lines=(300, 60, 60)):
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(30)]
    for name, n in zip(names, lines):
        (d / name).write_text("".join(" ".join(rng.choices(words, k=rng.randint(3, 12))) + "\n" for _ in range(n)))


def test_tokenise_vocab_batchify(tmp_path):
    assert text.tokenize_lines(["a b  c\n", "\n", "b a\n"]) == ["a", "b", "c", "<eos>", "<eos>", "b", "a", "<eos>"]
    (tmp_path / "train.txt").write_text("the cat sat\nthe dog\n")
    (tmp_path / "valid.txt").write_text("the bird\n")
    (tmp_path / "test.txt").write_text("cat dog\n")
    c = text.load_corpus("text", tmp_path)
    assert c.vocab.itos == ["the", "cat", "sat", "<eos>", "dog", "<unk>"]
    assert c.train.tolist() == [0, 1, 2, 3, 0, 4, 3]
    assert c.valid.tolist() == [0, 5, 3]  # "bird" is unseen in training -> <unk>
    data = torch.arange(103)
    b = text.batchify(data, 4)
    assert b.shape == (25, 4) and b[:, 1].tolist() == list(range(25, 50))
    x, y = text.get_window(b, 20, 10)
    assert x.shape == (4, 4) and torch.equal(y, b[21:25])
    wins = text.window_starts(25, 10, False, 10, None)
    assert wins == [(0, 10), (10, 10), (20, 4)]
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    lens = [text.sample_bptt(35, 55, g1) for _ in range(500)]
    assert lens == [text.sample_bptt(35, 55, g2) for _ in range(500)]
    assert 5 <= min(lens) and max(lens) <= 55 and 30 < sum(lens) / len(lens) < 36


def test_missing_text_files_named(tmp_path):
    with pytest.raises(DataError, match="train.txt"):
        text.load_corpus("text", tmp_path)


def test_ptb_no_network_message(tmp_path, monkeypatch):
    def offline(url, dest, timeout=None):
        raise OSError("network is unreachable")

    monkeypatch.setattr(text, "_download", offline)
    with pytest.raises(DataError) as e:
        text.load_corpus("ptb", tmp_path / "ptb")
    msg = str(e.value)
    assert "ptb.train.txt" in msg and "ptb.valid.txt" in msg and str(tmp_path / "ptb") in msg
    assert "wojzaremba" in msg or "simple-examples" in msg
    assert not (tmp_path / "ptb").exists()  # a failed download leaves no empty folder behind


def test_ptb_checksum(tmp_path, monkeypatch):
    def corrupt(url, dest, timeout=None):
        dest.write_text("not the treebank\n")

    monkeypatch.setattr(text, "_download", corrupt)
    with pytest.raises(DataError, match="md5"):
        text.load_corpus("ptb", tmp_path)
    assert not (tmp_path / "ptb.train.txt").exists()
    # files a user placed there are used as they are, checksum or not
    write_corpus(tmp_path, names=text.PTB_FILES)
    monkeypatch.setattr(text, "_download", lambda *a, **k: pytest.fail("must not download"))
    c = text.load_corpus("ptb", tmp_path)
    assert "<unk>" not in c.vocab.stoi and c.train.numel() > 0


def make_task(tmp_path, **data):
    write_corpus(tmp_path)
    cfg = DataSection(dataset="text", batch_size=4, eval_batch_size=3, bptt=8, **data)
    return LanguageModelTask(cfg, tmp_path, "cpu", seed=1, split="search")


def test_lm_task(tmp_path):
    torch.manual_seed(0)
    task = make_task(tmp_path, variable_bptt=True, bptt_max=12)
    assert task.metric == "ppl"
    space = EnasRNNSpace()
    model = space.supernet(ModelArgs(hidden=12), **task.model_kwargs())
    task.start_epoch(0)
    batches = list(task.train_batches(0))
    assert len(batches) == task.num_train_batches() == task.num_train_batches(0)
    assert len(list(task.train_batches(5))) == task.num_train_batches(5)
    assert [b["start"] for b in batches] == [b["start"] for b in task.train_batches(0)]  # deterministic
    assert all(b["seq_len"] <= 12 for b in batches)
    # variable BPTT scales the step (the loop applies it after clipping), not the loss
    assert [task.lr_scale(b) for b in batches] == [b["seq_len"] / 8 for b in batches]
    loss, stats = task.train_loss(model, batches[0], ENAS_PTB_CELL)
    assert float(loss.detach()) == pytest.approx(float(stats["loss"] + stats["extra_loss"]), rel=1e-6)
    # No "ppl": the loop averages step stats, and a mean of exp(loss) means nothing.
    assert loss.requires_grad and set(stats) == {"loss", "extra_loss"} and not stats["loss"].requires_grad
    loss.backward()
    assert task._train_hidden is not None and not task._train_hidden.requires_grad
    task.on_bad_step()  # the loop's hook after a skipped non-finite step: drop the carried state
    assert task._train_hidden is None

    r1, se1 = task.score(model, ENAS_PTB_CELL, 1, 0)  # a controller reward: one window
    assert 0 < r1 < 80 and 0 < se1 < r1 and model.training  # mode restored
    s, _ = task.score(model, ENAS_PTB_CELL, 2)
    s_all, se_all = task.score(model, ENAS_PTB_CELL, 0)
    assert 0 < s and 0 < se_all
    # the whole-split score skips only the warm-up tokens evaluate reads
    ev = task.evaluate(model, ENAS_PTB_CELL, "valid")
    assert s_all == pytest.approx(80.0 / ev["ppl"], rel=0.05)
    assert task.num_valid_batches() == len(text.window_starts(task.valid_data.size(0) - 10, 8, False, 8, None))
    assert ev["ppl"] == pytest.approx(torch.tensor(ev["loss"]).exp().item(), rel=1e-5)
    # roughly uniform over the vocabulary at init
    assert 0.5 * len(task.vocab) < ev["ppl"] < 2 * len(task.vocab)
    assert set(task.evaluate(model, ENAS_PTB_CELL, "test")) == {"loss", "ppl"}


def test_reward_depends_on_its_own_architecture_only(tmp_path):
    """A score (a reward is one window) starts from zeros warmed up by its own architecture
    on the tokens before its window: whatever was scored before it changes nothing."""
    torch.manual_seed(0)
    task = make_task(tmp_path)
    space = EnasRNNSpace()
    model = space.supernet(ModelArgs(hidden=12), **task.model_kwargs())
    g = torch.Generator().manual_seed(0)
    from enas.nas.controller import RandomPolicy

    a, b, c = RandomPolicy(space.decisions())(3, generator=g).archs
    rewards = []
    for before in (b, c, None):
        if before is not None:
            task.score(model, before, 1, 0)  # the window before a's
        rewards.append(task.score(model, a, 1, 1)[0])
    assert rewards[0] == rewards[1] == rewards[2]
    # by hand: zeros, the same arch over the 10 tokens before window 1, then the window
    model.eval()
    start = task.reward_warmup + task.cfg.bptt
    with torch.no_grad():
        h = model.init_hidden(3)
        _, h, _ = model(task.valid_data[start - 10:start], h, a)
        x, y = task.valid_data[start:start + 8], task.valid_data[start + 1:start + 9]
        logits, _, _ = model(x, h, a)
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
    assert rewards[0] == pytest.approx(80.0 / float(ce.exp()), rel=1e-5)


def test_score_blocks_and_standard_error(tmp_path):
    """Consecutive windows from ``first``; a block past the end starts earlier; the
    standard error comes from the per-(window, stream) mean losses (delta method)."""
    torch.manual_seed(0)
    task = make_task(tmp_path)
    model = EnasRNNSpace().supernet(ModelArgs(hidden=12, init_range=1.0), **task.model_kwargs())
    n = task.num_valid_batches()
    assert task.score(model, ENAS_PTB_CELL, 2, n - 1) == task.score(model, ENAS_PTB_CELL, 2, n - 2)
    assert task.score(model, ENAS_PTB_CELL, 2, n) == task.score(model, ENAS_PTB_CELL, 2, 0)
    model.eval()
    start = task.reward_warmup
    with torch.no_grad():
        h = model.init_hidden(3)
        _, h, _ = model(task.valid_data[:start], h, ENAS_PTB_CELL)
        cols = []
        for i in (start, start + 8):
            logits, h, _ = model(task.valid_data[i:i + 8], h, ENAS_PTB_CELL)
            ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)),
                                                   task.valid_data[i + 1:i + 9].reshape(-1), reduction="none")
            cols.append(ce.view(8, 3).mean(0))
    cols = torch.cat(cols).double()
    value = 80.0 / float(cols.mean().exp())
    se = value * float(cols.std() / len(cols) ** 0.5)
    got = task.score(model, ENAS_PTB_CELL, 2, 0)
    assert got[0] == pytest.approx(value, rel=1e-5) and got[1] == pytest.approx(se, rel=1e-4)


def test_lm_task_resume_is_exact(tmp_path):
    torch.manual_seed(0)
    task = make_task(tmp_path)
    model = EnasRNNSpace().supernet(ModelArgs(hidden=12), **task.model_kwargs())
    task.start_epoch(0)
    it = task.train_batches(0)
    task.train_loss(model, next(it), ENAS_PTB_CELL)
    state = task.state_dict()
    nxt = next(it)
    model.eval()  # no dropout: the continuation must match exactly
    a = task.train_loss(model, nxt, ENAS_PTB_CELL)[1]["loss"]

    other = make_task(tmp_path)
    other.load_state_dict(state)
    b = other.train_loss(model, list(other.train_batches(0))[1], ENAS_PTB_CELL)[1]["loss"]
    assert torch.equal(a, b)


def test_non_standard_ptb_file_is_used_with_a_note(tmp_path, capsys):
    from enas.data.text import ensure_ptb

    for name in ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"):
        (tmp_path / name).write_text("a b c\n")
    assert ensure_ptb(tmp_path) == tmp_path
    err = capsys.readouterr().err
    assert err.count("\n") == 1  # one line for the run, not one per file
    assert "ptb.train.txt, ptb.valid.txt, ptb.test.txt in" in err and "not the standard Penn Treebank" in err


def test_missing_ptb_files_are_the_only_ones_named(tmp_path, monkeypatch):
    def offline(url, dest, timeout=None):
        raise OSError("network is unreachable")

    monkeypatch.setattr(text, "_download", offline)
    (tmp_path / "ptb.train.txt").write_text("a b c\n")
    with pytest.raises(DataError) as e:
        text.load_corpus("ptb", tmp_path)
    msg = str(e.value).splitlines()[0]
    assert "ptb.valid.txt, ptb.test.txt" in msg and "ptb.train.txt" not in msg
