"""``enas ground-truth``: build your own ground truth for a search space by training
architectures from scratch with ONE fixed recipe (the table: enas/evaluate/ground_truth.py).

It trains each architecture with ``enas retrain`` (one subprocess per cell, each on
its own thread budget) and writes one CSV row per (architecture, seed). Compare a
search with it using ``enas compare``.

    enas ground-truth --uniform 50 --space nb201 --sample-seed 0 \\
        --config configs/smoke/nb201_retrain.yaml --data-dir enas/data/samples/cifar10 \\
        --out benchmarks/results/nb201_ground_truth.csv --jobs 2

Architectures: ``--archs FILE`` (one a line, the format ``enas rank --archs`` reads:
the space's text form such as NB201 cell strings, or ``{decision: value, ...}``)
and/or ``--uniform N`` (N *distinct* architectures drawn uniformly from the space's
decisions with ``--sample-seed``; drawn one at a time, so ``--uniform 100`` starts
with the cells of ``--uniform 50`` and extends that table).

Resumable: rows already in ``--out`` for the same (arch, seed) are skipped; a cell
interrupted mid-training continues from its last epoch checkpoint (``enas retrain
--resume``) when its run folder is still in ``--work-dir``. SIGINT / SIGTERM stop the
workers cleanly (each writes its checkpoint) and the command exits non-zero; rerun
the same command to go on. Rows of another recipe (another resolved config) in the
same CSV are refused: one table, one recipe. Run folders are keyed by recipe, arch
and seed (``WORK/<recipe>/<arch hash>-s<seed>``), not by the data folder: use another
--work-dir (and --out) for other data.

``--engine DIR`` runs the children from a frozen copy of ``enas/`` and
``search_spaces/`` (e.g. ``git archive HEAD enas search_spaces | tar -x -C DIR``), so a
build of hours is not trained by two versions of the engine while the project is
being edited.

Ends with ``name=value`` lines (cells, failed, total_seconds, mean_seconds_per_cell,
accuracy min / median / max). No GPU needed; each worker runs with
``--threads`` (default 1) intra-op threads.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from enas.storage import safeyaml
from enas.nas.archfile import save_arch
from enas.errors import UserError
from enas.storage.files import make_dirs, open_append, read_json, read_regular, write_out
from enas.evaluate.rank import read_archs
from enas.nas.space import build_space
from enas.evaluate.ground_truth import (GroundTruthError, append_row, arch_key, canonical, check_header, prepare_csv,
                           read_rows, recipe_hash, sample_uniform, shown, todo)


class Runner:
    """Trains one (arch, seed) with ``enas retrain`` in a subprocess, resuming a folder
    left by an interrupted attempt."""

    def __init__(self, space, config: Path, overrides: list[str], data_dir: str, work: Path, threads: int,
                 engine: Path | None = None):
        self.space, self.config, self.overrides = space, Path(config).resolve(), overrides
        self.data_dir, self.work, self.threads = str(Path(data_dir).resolve()), Path(work).resolve(), threads
        # children import enas as installed, or from a frozen copy (--engine)
        self.engine = Path(engine).resolve() if engine is not None else None
        self.procs: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.stopping = False

    def env(self) -> dict:
        env = dict(os.environ)
        n = str(self.threads)
        env.update(OMP_NUM_THREADS=n, MKL_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n)
        if self.engine is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.engine), env.get("PYTHONPATH")]))
        return env

    def run(self, text: str, arch: dict, seed: int) -> dict:
        name = f"{arch_key(text)}-s{seed}"
        run_dir = self.work / name
        log = self.work / f"{name}.log"
        base = [sys.executable, "-m", "enas"]
        t0 = time.monotonic()
        trained = not (run_dir / "result.json").exists()
        if trained:
            if (run_dir / "checkpoint.pt").exists():
                cmd = base + ["retrain", "--resume", str(run_dir), "--data-dir", self.data_dir, "--device", "cpu"]
            else:
                if run_dir.exists():
                    shutil.rmtree(run_dir)  # started, killed before its first checkpoint
                arch_file = self.work / f"{arch_key(text)}.yaml"
                if not arch_file.exists():
                    save_arch(arch_file, self.space, arch, {"ground_truth": text})
                cmd = base + ["retrain", str(arch_file), "--config", str(self.config),
                              "--set", f"retrain.seed={seed}", "--data-dir", self.data_dir,
                              "--run-dir", str(run_dir), "--device", "cpu"]
                for o in self.overrides:
                    cmd += ["--set", o]
            with self.lock:
                if self.stopping:
                    raise InterruptedError
                with open_append(log) as f:
                    f.write(f"$ {' '.join(cmd)}\n")
                    f.flush()
                    # own process group: a terminal's Ctrl-C reaches it through stop() only
                    proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=self.env(),
                                            cwd=self.engine, start_new_session=True)
                self.procs.add(proc)
            try:
                rc = proc.wait()
            finally:
                with self.lock:
                    self.procs.discard(proc)
            if self.stopping:
                raise InterruptedError
            if rc != 0 or not (run_dir / "result.json").exists():
                try:  # its own retrain's log: a few KB; bounded all the same
                    tail = read_regular(log, 16 * 2**20, follow=False)[-4096:].decode(errors="replace").splitlines()[-3:]
                except OSError as e:
                    tail = [f"log unreadable: {e}"]
                raise RuntimeError(f"enas retrain exited with {rc} ({log}): " + " | ".join(tail))
        res = read_json(run_dir / "result.json", 2**20)
        return {"arch": text, "seed": seed, "test_accuracy": repr(float(res["test_accuracy"])),
                "params": int(res["params"]), "seconds": round(float(res["wall_time_s"]), 1),
                "process_seconds": round(time.monotonic() - t0, 1), "test_loss": repr(float(res["test_loss"])),
                "epochs": int(res["epochs"]), "space": self.space.name, "run_dir": shown(run_dir),
                "_trained": trained}  # False: recovered from a finished folder (not a CSV column)

    def stop(self, signum: int) -> None:
        """Forward the signal: each child checkpoints and exits; new ones do not start."""
        with self.lock:
            self.stopping = True
            for p in self.procs:
                try:
                    p.send_signal(signum)
                except ProcessLookupError:
                    pass


# ---- the command -------------------------------------------------------------------------

def fmt_s(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def parse_seeds(values: list[str]) -> list[int]:
    out = []
    for v in values:
        for part in str(v).split(","):
            if part.strip():
                out.append(int(part))
    if not out:
        raise GroundTruthError("--seeds needs at least one integer")
    return out


def add_arguments(p) -> None:
    """The options of ``enas ground-truth`` (the CLI makes the parser)."""
    p.add_argument("--archs", help="architectures, one a line (as `enas rank --archs` reads)")
    p.add_argument("--uniform", type=int, default=0, metavar="N",
                   help="also N distinct architectures sampled uniformly from the space")
    p.add_argument("--space", default="nb201", help="search space name (default nb201)")
    p.add_argument("--space-args", default="{}", help="space arguments as a YAML mapping, e.g. '{num_nodes: 8}'")
    p.add_argument("--sample-seed", type=int, default=0, help="seed of the uniform samples (default 0)")
    p.add_argument("--config", required=True, help="retrain config: the one recipe every cell trains with")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--out", required=True, help="CSV to write or extend")
    p.add_argument("--seeds", nargs="+", default=["0"], help="training seeds per arch, e.g. --seeds 0 1 (or 0,1)")
    p.add_argument("--jobs", type=int, default=1, help="parallel enas retrain processes (default 1)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per process (default 1)")
    p.add_argument("--work-dir", help="run folders (default: runs/ground_truth/<OUT's name without .csv>/)")
    p.add_argument("--engine", metavar="DIR",
                   help="run the children from this frozen copy of the engine (a folder holding enas/ and\n"
                        "search_spaces/), so edits to the project during a long build cannot change the recipe")
    p.add_argument("--write-archs", metavar="FILE",
                   help="also write the architecture list (one a line; feed it to `enas rank --archs`)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing --write-archs file that holds another list (never a run's own file)")
    p.add_argument("--list-only", action="store_true", help="print the architectures and what is left; train nothing")


def _write_archs(path: Path, text: str, force: bool) -> None:
    """The list, by the rule of every --out; a file that holds this very list already is
    left as it is (extending a table reruns the same command)."""
    try:
        if read_regular(path, len(text.encode()) + 1).decode() == text:
            return
    except (OSError, UnicodeDecodeError):
        pass
    write_out(path, text, force, option="--write-archs")


def run(args) -> int:
    """Build or extend the table; user mistakes raise a UserError (one line, exit 2)."""
    try:
        space_args = safeyaml.load(args.space_args) or {}
        space = build_space(args.space, space_args)
        archs: list[dict] = []
        if args.archs:
            archs += read_archs(space, args.archs)
        if args.uniform:
            archs += sample_uniform(space, args.uniform, args.sample_seed)
        if not archs:
            raise GroundTruthError("no architectures: give --archs FILE and/or --uniform N")
        seeds = parse_seeds(args.seeds)
        config = Path(args.config).resolve()
        recipe, _ = recipe_hash(config, args.set, space)
    except UserError:
        raise
    except (yaml.YAMLError, ValueError) as e:
        raise GroundTruthError(str(e)) from None
    if args.jobs < 1 or args.threads < 1:
        raise GroundTruthError("--jobs and --threads must be >= 1")
    engine = None
    if args.engine:
        engine = Path(args.engine)
        if not (engine / "enas" / "__main__.py").is_file() or not (engine / "search_spaces").is_dir():
            raise GroundTruthError(f"--engine {engine}: expected a folder holding enas/ and search_spaces/")
    out = Path(args.out)
    texts, by_text = [], {}
    for a in archs:
        t = canonical(space, a)
        if t not in by_text:
            by_text[t] = a
            texts.append(t)
    if args.write_archs:
        _write_archs(Path(args.write_archs), "".join(t + "\n" for t in texts), args.force)
    check_header(out)
    rows = read_rows(out)
    other = sorted({r.get("recipe") for r in rows} - {recipe})
    if other:
        raise GroundTruthError(f"{out} holds rows of another recipe ({', '.join(map(str, other))}; this config is "
                               f"{recipe}): one table, one recipe; use another --out")
    spaces = sorted({r.get("space") for r in rows} - {space.name})
    if spaces:
        raise GroundTruthError(f"{out} holds rows of space {spaces[0]}, not {space.name}")
    pending = todo([(t, s) for t in texts for s in seeds], rows)
    n_total = len(texts) * len(seeds)
    print(f"{len(texts)} architectures x {len(seeds)} seeds = {n_total} cells; {n_total - len(pending)} already in "
          f"{out}, {len(pending)} to train (recipe {recipe}, {args.jobs} jobs x {args.threads} threads)", flush=True)
    if args.list_only:
        for t, s in pending:
            print(f"  todo seed {s}  {t}")
        return 0
    prepare_csv(out)
    work = Path(args.work_dir) if args.work_dir else Path("runs") / "ground_truth" / out.stem
    work = work / recipe
    make_dirs(work)
    runner = Runner(space, config, args.set, str(args.data_dir), work, args.threads, engine)

    stopped: list[int] = []

    def on_signal(signum, _frame):
        if not stopped:
            print(f"\nsignal {signum}: stopping the cells in flight (they checkpoint); rerun the same command "
                  f"to continue", file=sys.stderr, flush=True)
        stopped.append(signum)
        runner.stop(signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    t_start = time.monotonic()
    done, failed, trained, new_rows = 0, 0, 0, []
    try:
        with cf.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futs = {pool.submit(runner.run, t, by_text[t], s): (t, s) for t, s in pending}
            for fut in cf.as_completed(futs):
                t, s = futs[fut]
                try:
                    row = fut.result()
                except InterruptedError:
                    continue
                except Exception as e:  # noqa: BLE001 - report, go on with the others
                    failed += 1
                    print(f"FAILED seed {s} {t}: {e}", file=sys.stderr, flush=True)
                    continue
                row["recipe"] = recipe
                append_row(out, row)
                new_rows.append(row)
                done += 1
                trained += row["_trained"]
                elapsed = time.monotonic() - t_start
                left = len(pending) - done - failed
                # recovered rows cost nothing: the rate is over the cells trained here
                eta = fmt_s(elapsed / trained * left) if trained else "?"
                how = "" if row["_trained"] else " (recovered from its run folder)"
                print(f"[{done + failed}/{len(pending)}] acc {float(row['test_accuracy']):.4f}  seed {s}  "
                      f"{row['seconds']:.0f}s{how}  elapsed {fmt_s(elapsed)}  ETA {eta}  {t}", flush=True)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    total = time.monotonic() - t_start
    all_rows = read_rows(out)
    accs = [float(r["test_accuracy"]) for r in all_rows]
    print(f"cells={done}")
    print(f"failed={failed}")
    print(f"total_seconds={total:.1f}")
    print(f"trained={trained}")
    print(f"recovered={done - trained}")
    if new_rows:
        print(f"mean_seconds_per_cell={statistics.mean(float(r['seconds']) for r in new_rows):.1f}")
    ran = [r for r in new_rows if r["_trained"]]
    if ran:
        print(f"mean_process_seconds_per_cell={statistics.mean(float(r['process_seconds']) for r in ran):.1f}")
        print(f"wall_seconds_per_cell={total / len(ran):.1f}")
    print(f"rows_in_csv={len(all_rows)}")
    if accs:
        print(f"accuracy_min={min(accs):.4f}")
        print(f"accuracy_median={statistics.median(accs):.4f}")
        print(f"accuracy_max={max(accs):.4f}")
    print(f"csv={out}")
    if stopped:
        return 128 + stopped[0]
    return 1 if failed else 0

