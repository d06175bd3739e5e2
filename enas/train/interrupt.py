"""Graceful stop: SIGINT / SIGTERM finish the current step, then the loop checkpoints.

The handler only sets a flag; the training loop polls ``requested`` between steps,
writes a checkpoint, prints the command that resumes, and exits non-zero. A second
signal while stopping falls through to the default behaviour (kill).
"""
from __future__ import annotations

import signal
import threading


class StopRequested(Exception):
    """Raised by the loop after it has checkpointed, to unwind to the CLI."""

    def __init__(self, signum: int, resume_command: str):
        super().__init__(resume_command)
        self.signum = signum
        self.resume_command = resume_command


class GracefulStop:
    def __init__(self):
        self.signum: int | None = None
        self._old = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame):
        if self.signum is not None:  # second signal: stop now
            signal.signal(signum, self._old.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False
