"""Which device a stage runs on; every stage (train, explain, evaluate, the benches) asks here."""

from __future__ import annotations

import torch

from cxrcam.errors import CxrcamError


def select_device(name: str) -> torch.device:
    """The torch device a stage's ``device`` option names; auto: cuda > mps > cpu."""
    if name != "auto":
        try:
            device = torch.device(name)
        except (RuntimeError, TypeError):
            raise CxrcamError(f"device={name!r} is not a torch device; use auto, cpu, cuda, cuda:N or mps") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise CxrcamError(f"device={name!r} but no CUDA GPU is available here; use device=auto")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise CxrcamError(f"device={name!r} but MPS is not available here; use device=auto")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def tune_for(device: torch.device) -> None:
    """On CUDA, let cuDNN time its convolution algorithms once for the fixed input size and keep the
    fastest. (Here, not in cxrcam.train: submitit pickles the entry point's module by value, and
    cloudpickle cannot pickle the torch.backends.cudnn module object.)"""
    torch.backends.cudnn.benchmark = device.type == "cuda"
