"""Stopping a training run cleanly when the cluster asks: SLURM sends SIGTERM (and, with
``--signal``, SIGUSR1 or submitit's SIGUSR2) before it preempts a job or its time runs out."""

from __future__ import annotations

import signal
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def ignore_stop_signals(worker_id: int = 0) -> None:
    """For data-loading workers (a DataLoader's worker_init_fn): SLURM signals every process of a
    job step, and a forked worker would otherwise run the trainer's or submitit's handler too."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


class StopSignals:
    """While active, a stop signal is only remembered: the trainer finishes its current step, saves
    ``last.pt`` and then calls :meth:`hand_over`, which gives the signal to whoever handled it
    before (submitit's handler requeues the job and exits), or returns when that was the default."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _remember(self, signum, frame) -> None:
        self.received = signum

    def __call__(self) -> bool:
        return self.received is not None

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # only the main thread sets handlers
            self._previous = {s: signal.signal(s, self._remember) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name

    def hand_over(self) -> None:
        previous = self._previous.get(self.received)
        if callable(previous):
            self.__exit__()
            previous(self.received, None)
