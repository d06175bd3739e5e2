"""``enas report RUN``: one self-contained HTML page for a search or a retrain run folder.

The page has inline CSS, its charts as base64 PNG data URIs, no JavaScript and no link
to anything outside itself, so it can be mailed, archived or opened offline. It reads
only what the run folder holds (``config.yaml``, ``metrics.jsonl``, ``best_arch.yaml`` /
``arch.yaml``, ``archs/``, ``result.json``, the checkpoint's derive candidates) and copes
with what is missing: an unfinished run, a run without a controller, NaN figures.

Which figures exist is read from ``metrics.jsonl`` itself: a few headline charts pick
the names they know (reward, baseline, entropy, loss, derived score), and every numeric
figure in the file is also drawn in "All logged figures", grouped by its prefix.

    python -m enas.report RUN_DIR [--out FILE]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import RunDirError, UserError, printable
from ..files import check_out, open_regular, write_atomic
from .page import GENERATOR, render
from .runfolder import load_run


def write_report(run_dir: Path, out: Path | None = None, force: bool = False,
                 space_module: str | None = None) -> Path:
    """Write the HTML report of a search or retrain run folder; return its path.

    Default output: ``RUN_DIR/report.html``. A report enas wrote is replaced (it is
    derived from the run, not data); any other existing file only with ``force``, and
    never a file of a run other than a report (enas/files.py check_out). The file
    appears complete or not at all. ``space_module``: the code of the run's space, if
    it is the user's own (a run's files never make enas import code)."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "report.html"
    force = force or _is_report(out)
    check_out(out, force, ours=lambda name: name.endswith(".html"))
    page = render(load_run(run_dir, space_module))
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        return write_atomic(out, page, replace=force)
    except FileExistsError:
        raise RunDirError(f"{out} already exists; pass --force to replace it, or --out FILE") from None


def _is_report(path: Path) -> bool:
    """``path`` is a page enas report wrote: a regular file (not a link) that opens with
    its generator mark."""
    try:
        with open_regular(path, follow=False) as f:
            return GENERATOR.encode() in f.read(512)
    except (OSError, UserError):
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m enas.report", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--out", help="the HTML file to write (default RUN_DIR/report.html)")
    p.add_argument("--force", action="store_true", help="replace an existing report")
    p.add_argument("--space-module", metavar="FILE", help="the Python file of the run's space, if it is your own")
    a = p.parse_args(argv)
    try:
        path = write_report(Path(a.run_dir), Path(a.out) if a.out else None, a.force, a.space_module)
    except UserError as e:
        print(f"error: {printable(e)}", file=sys.stderr)
        return 2
    print(f"report written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
