"""``enas report RUN``: one self-contained HTML page for a search or a retrain run folder.

The page has inline CSS, its charts as base64 PNG data URIs, no JavaScript and no link
to anything outside itself, so it can be mailed, archived or opened offline. It reads
only what the run folder holds (``config.yaml``, ``metrics.jsonl``, ``best_arch.yaml`` /
``arch.yaml``, ``archs/``, ``result.json``, the checkpoint's derive candidates) and copes
with what is missing: an unfinished run, a run without a controller, NaN figures.

Which figures exist is read from ``metrics.jsonl`` itself: a few headline charts pick
the names they know (reward, baseline, entropy, loss, derived score), and every numeric
figure in the file is also drawn in "All logged figures", grouped by its prefix.
"""
from __future__ import annotations

from pathlib import Path

from enas.errors import UserError
from enas.storage.files import check_out, open_regular, write_out
from enas.storage import runfolder as rf
from enas.report.page import GENERATOR, render
from enas.report.runfolder import load_run


def write_report(run_dir: Path, out: Path | None = None, force: bool = False,
                 space_module: str | None = None) -> Path:
    """Write the HTML report of a search or retrain run folder; return its path.

    Default output: ``RUN_DIR/report.html``. A report enas wrote is replaced (it is
    derived from the run, not data); any other existing file only with ``force``, and
    never a file of a run other than a report (enas/storage/files.py check_out). The file
    appears complete or not at all. ``space_module``: the code of the run's space, if
    it is the user's own (a run's files never make enas import code)."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / rf.REPORT
    force = force or _is_report(out)
    check_out(out, force, ours=lambda name: name.endswith(".html"))
    page = render(load_run(run_dir, space_module))
    return write_out(out, page, force, ours=lambda name: name.endswith(".html"))


def _is_report(path: Path) -> bool:
    """``path`` is a page enas report wrote: a regular file (not a link) that opens with
    its generator mark."""
    try:
        with open_regular(path, follow=False) as f:
            return GENERATOR.encode() in f.read(512)
    except (OSError, UserError):
        return False

