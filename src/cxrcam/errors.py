"""The one exception type a user is meant to read: entry points print it as a single line."""

from __future__ import annotations

import os
import sys


class CxrcamError(Exception):
    """A problem with the user's data, configuration or files, with what to do about it."""


def exit_quietly_on_interrupt(command: str) -> None:
    """Ctrl-C outside a stage's own handling (while torch and Hydra load, while Hydra composes the
    config) prints one line and exits with 130, the shell's code for it, instead of a traceback."""
    previous = sys.excepthook

    def hook(kind, value, traceback):
        if issubclass(kind, KeyboardInterrupt):
            print(f"{command}: interrupted", file=sys.stderr, flush=True)
            os._exit(130)
        previous(kind, value, traceback)

    sys.excepthook = hook
