"""What the bench scripts share: interleaved timing that waits for the device before every clock read."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    """CUDA runs kernels asynchronously: a clock read without this measures only the launches."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(runs: list[Callable[[], int]], repeats: int, device: torch.device) -> list[float]:
    """Throughput of each run (each returns the number of images it processed); the runs take turns
    after one warm-up each, so a slow phase of the machine hits all alike."""
    for run in runs:
        run()
    images, spent = [0] * len(runs), [0.0] * len(runs)
    for _ in range(repeats):
        for i, run in enumerate(runs):
            synchronize(device)
            started = time.perf_counter()
            images[i] += run()
            synchronize(device)
            spent[i] += time.perf_counter() - started
    return [n / seconds for n, seconds in zip(images, spent, strict=True)]


def batch_run(call: Callable[[], object], n_images: int) -> Callable[[], int]:
    """A run for :func:`images_per_second` that processes one batch of ``n_images`` per call."""
    def run() -> int:
        call()
        return n_images
    return run
