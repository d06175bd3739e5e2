"""The small real data sets that ship inside the package: ``--data-dir sample``.

``enas/data/samples/`` holds a CIFAR-10 sample (the official python layout, 4,660
training and 846 test images) and a Penn Treebank sample (``ptb.{train,valid,test}.txt``
from the official validation and test files), described with their source, licence and
checksums in ``enas/data/samples/README.md``. They let a fresh install run the smoke
configs with no download; figures on them are not comparable with the paper's.

The data folder ``sample`` (``--data-dir sample``, ``data.dir: sample`` in a config, the
``data_dir`` of ``enas.api``) names the sample of the config's dataset; a folder of
your own called ``sample`` is named ``./sample``. Everything else is a path. The loaders
read the sample exactly as any other folder, and a run's ``data.json`` records its
absolute path and checksums like those of any other folder.
"""
from __future__ import annotations

from pathlib import Path

from enas.errors import ConfigError

NAME = "sample"
ROOT = Path(__file__).resolve().parent / "samples"
FOLDERS = {"cifar10": "cifar10", "ptb": "ptb"}  # data.dataset -> its folder under ROOT
TITLES = {"cifar10": "CIFAR-10", "ptb": "Penn Treebank"}


def locate(dataset: str, data_dir: str | Path) -> str | Path:
    """``data_dir``, or the shipped sample's folder of ``dataset`` where it is ``sample``."""
    if isinstance(data_dir, Path) or data_dir != NAME:
        return data_dir
    if dataset not in FOLDERS:
        raise ConfigError(f"data folder {NAME!r}: enas ships samples of {' and '.join(FOLDERS)} only, not of "
                          f"{dataset!r}; pass --data-dir DIR (a folder of your own named {NAME} is ./{NAME})")
    return str(ROOT / FOLDERS[dataset])


def hint(dataset: str) -> str:
    """The sentence a failed download ends with: how to run without the full data set."""
    return (f" To try enas offline on the small {TITLES[dataset]} sample that ships with it, pass --data-dir "
            f"{NAME} or run a config of configs/smoke/ (docs/data.md).") if dataset in FOLDERS else ""
