"""``enas rank``: score many architectures with a search run's trained supernet.

"Does the search beat chance?" needs more than the one derived cell: the supernet's
score of uniformly sampled cells (the random baseline's view), of cells from the
trained policy, or of a given list (e.g. cells whose stand-alone accuracy is known,
such as NAS-Bench-201 cells, to measure the ranking correlation of Yu et al., 2020).

Every architecture is scored on the *whole* validation split of the run
(``task.score(model, arch, 0)``), optionally after recalibrating BN statistics for
that architecture (``--recalibrate-bn``: the task's ``eval_bn="recalibrate"``).
The run is reopened exactly as ``enas derive`` does (``runs.reopen_search``: its
config.yaml, checkpoint.pt and recorded data). The CSV has one row per requested architecture, in
request order: ``arch`` (the space's text form, e.g. the NB201 cell string, else
compact JSON), ``score`` (the task's reward: accuracy for images, c / ppl for text),
``score_se`` (its standard error), ``params`` (parameters of the stand-alone child at
the run's model size).

Architecture files (``--archs``): one architecture per line; blank lines and lines
starting with ``#`` are skipped. A line is either a JSON/YAML flow mapping
``{decision: value, ...}`` (any space) or the space's own text form where it has one
(``parse_text``; NB201 cell strings). Both forms of the CSV's ``arch`` column read back.
"""
from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path

import torch
import yaml

from enas.storage import safeyaml

from enas.nas import training_free
from enas.nas.archfile import ArchFileError
from enas.config import MAX_SAMPLES, ConfigError
from enas.nas.controller import RandomPolicy
from enas.storage.files import check_out, make_parents, read_regular, write_atomic
from enas.child.retrain import count_params as test_time_params
from enas.runs import reopen_search
from enas.nas.space import Arch, ArchError, validate


def arch_text(space, arch: Arch) -> str:
    to_text = getattr(space, "to_text", None)
    return to_text(arch) if to_text is not None else json.dumps(arch, separators=(",", ":"))


def parse_arch_line(space, line: str) -> Arch:
    line = line.strip()
    if line.startswith("{"):
        try:
            arch = safeyaml.load(line)
        except yaml.YAMLError as e:
            raise ArchError(f"not a readable mapping: {str(e).splitlines()[0]}") from None
        return validate(space.decisions(), arch)
    parse = getattr(space, "parse_text", None)
    if parse is None:
        raise ArchError(f"expected a mapping {{decision: value, ...}} (space {space.name} has no text form)")
    return validate(space.decisions(), parse(line))


def read_archs(space, path) -> list[Arch]:
    """One architecture per line; errors name the file and the line."""
    path = Path(path)
    try:
        text = read_regular(path, MAX_ARCHS_BYTES).decode()
    except FileNotFoundError:
        raise ArchFileError(f"architecture list {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ArchFileError(f"{path} is not a text file of architectures "
                            f"({getattr(e, 'strerror', None) or e})") from None
    lines = [(n, raw) for n, raw in enumerate(text.splitlines(), start=1)
             if raw.strip() and not raw.lstrip().startswith("#")]
    if len(lines) > MAX_SAMPLES:  # the same limit as --samples: each is scored on the whole validation split
        raise ArchFileError(f"{path} holds {len(lines):,} architectures, more than {MAX_SAMPLES:,}, the most one "
                            f"ranking scores (as for --samples); split it into several lists")
    archs = []
    for n, raw in lines:
        try:
            archs.append(parse_arch_line(space, raw))
        except ArchError as e:
            raise ArchFileError(f"{path}, line {n}: {e}") from None
    if not archs:
        raise ArchFileError(f"{path} holds no architectures (one per line)")
    return archs


MAX_ARCHS_BYTES = 64 * 2**20  # MAX_SAMPLES lines of a few hundred characters


def count_params(search, arch: Arch) -> int:
    """Parameters of the stand-alone child at test time (retrain.count_params)."""
    return test_time_params(search.space.child(arch, search.model_args, **search.task.model_kwargs()))


SCORES = ("run", "supernet") + training_free.NAMES


def scorer(search, name: str):
    """``arch -> (score, standard error)`` by ``name``: ``run``, the run's own scoring
    (search.score: the supernet's, or with training-free terms); ``supernet``, the
    supernet's alone; or a training-free score of the untrained child
    (enas/nas/training_free.py; its standard error is 0: it is exact for the seed)."""
    if name not in SCORES:
        raise ConfigError(f"--score {name!r} is not one of {', '.join(SCORES)}")
    if name == "run":
        search.scoring.refresh(search.supernet, search.global_step, search.cfg.search.reward_batches)
        return lambda arch: search.scoring.score(search.supernet, arch, 0)
    if name == "supernet":
        return lambda arch: search.task.score(search.supernet, arch, 0)
    return lambda arch: (search.scoring.free_value(name, arch), 0.0)


def rank(run_dir, data_dir, device, samples: int | None = None, archs_file=None, policy: bool = False,
         recalibrate_bn: bool = False, out=None, seed: int = 0,
         allow_data_change: bool = False, force: bool = False, space_module: str | None = None,
         score: str = "run") -> tuple[Path, list[dict], str]:
    """Score the requested architectures; write the CSV; return (path, rows, summary).
    An existing ``out`` is replaced only with ``force``, and never a file of a run but an
    earlier ranking (enas/storage/files.py check_out)."""
    if out is not None:
        check_out(Path(out), force, ours=lambda name: name.startswith("ranks"))
    if archs_file is not None and (samples is not None or policy):
        raise ConfigError("--archs ranks the listed architectures; drop --samples / --policy")
    samples = 100 if samples is None else samples
    if not 1 <= samples <= MAX_SAMPLES:
        raise ConfigError(f"--samples must be in 1..{MAX_SAMPLES:,} (each architecture is scored on validation "
                          f"data), got {samples:,}")
    if score not in SCORES:
        raise ConfigError(f"--score {score!r} is not one of {', '.join(SCORES)}")
    run_dir = Path(run_dir)
    search = reopen_search(run_dir, data_dir, device, ["search.image.eval_bn=recalibrate"] if recalibrate_bn else [],
                           allow_data_change, space_module)
    space = search.space
    if archs_file is not None:
        archs, source = read_archs(space, archs_file), f"file {archs_file}"
    else:
        gen = torch.Generator().manual_seed(seed)
        sampler = search.policy if policy else RandomPolicy(space.decisions())
        with torch.no_grad():
            archs = sampler(samples, generator=gen).archs
        source = f"{'trained policy' if policy else 'uniform'} samples, seed {seed}"
    rows, params = [], {}
    t0 = time.monotonic()
    of = scorer(search, score)
    for arch in archs:
        text = arch_text(space, arch)
        if text not in params:
            params[text] = count_params(search, arch)
        value, se = of(arch)
        rows.append({"arch": text, "score": value, "score_se": se, "params": params[text]})
    if out is None:
        kind = "file" if archs_file is not None else "policy" if policy else "uniform"
        out = run_dir / f"ranks-{kind}-n{len(rows)}-{time.strftime('%Y%m%d-%H%M%S')}.csv"
        i = 1
        while out.exists():  # never overwrite an earlier ranking
            out = out.with_name(f"{out.stem.rsplit('.', 1)[0]}.{i}.csv")
            i += 1
    out = Path(out)
    _write_csv(out, rows)
    finite = [r for r in rows if math.isfinite(r["score"])]
    best = max(finite, key=lambda r: r["score"]) if finite else None
    image = search.cfg.search.image  # None: a language model, whose cell has no BN
    bn = "recalibrated per arch" if recalibrate_bn else image.eval_bn if image else "none"
    what = {"run": search.scoring.describe(search.task.metric), "supernet": "the supernet alone"}.get(
        score, f"{score} of the untrained child")
    summary = (f"ranked {len(rows)} architectures ({source}) by {what}, on the whole validation split, "
               f"BN: {bn}, {time.monotonic() - t0:.0f}s")
    if best is not None:
        mean = sum(r["score"] for r in finite) / len(finite)
        summary += f"\n  mean score {mean:.4g}, best {best['score']:.4g}: {best['arch']}"
    return out, rows, summary


def _write_csv(path: Path, rows: list[dict]) -> None:
    """Whole or not at all (enas/storage/files.py)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["arch", "score", "score_se", "params"], lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({"arch": r["arch"], "score": repr(r["score"]), "score_se": repr(r["score_se"]),
                    "params": r["params"]})
    make_parents(path)
    write_atomic(path, buf.getvalue())
