"""The one exception type a user is meant to read: entry points print it as a single line."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class CxrcamError(Exception):
    """A problem with the user's data, configuration or files, with what to do about it."""


def exit_quietly_on_interrupt(command: str) -> None:
    """Ctrl-C outside a stage's own handling (while torch and Hydra load, while Hydra composes the
    config, between a sweep's jobs) prints one line and exits with 130, the shell's code for it.

    Handled at the signal, not as a KeyboardInterrupt: one raised inside torch's C++ import code
    aborts the process ("terminate called after throwing ... error_already_set", SIGABRT)."""

    def exit_now(signum, frame):
        print(f"{command}: interrupted", file=sys.stderr, flush=True)
        os._exit(130)

    signal.signal(signal.SIGINT, exit_now)


@contextmanager
def interrupt_raises() -> Iterator[None]:
    """Ctrl-C as a KeyboardInterrupt inside the block, for a stage that says what to do after it."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread sets handlers
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class StoppedBySignal(CxrcamError):
    """A run asked to stop (SIGTERM, or SLURM's warning before a time limit or preemption) that
    saved where it was; entry points exit with 128 + the signal's number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
