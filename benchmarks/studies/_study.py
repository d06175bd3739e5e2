"""Shared piece of the study scripts (not part of the package): their command line.

A study is a script, ``python benchmarks/studies/NAME.py ...``, built from the engine's
public pieces (the engine never imports a study). Like an ``enas`` command, a user's
mistake ends in one line on stderr and exit code 2, never a traceback, and every run
folder the study opened is released at the end.
"""
from __future__ import annotations

import argparse
import sys

from enas.storage import runlock
from enas.errors import UserError, printable


def main(doc: str, add_arguments, run, argv=None) -> int:
    """Parse ``argv`` with the options ``add_arguments`` adds, then ``run(args)``."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run(args)
    except UserError as e:
        print(f"error: {printable(e)}", file=sys.stderr)
        return 2
    finally:
        runlock.release_all()
