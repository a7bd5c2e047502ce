"""One epoch of training and one pass of prediction; everything else lives in cxrcam.train."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from cxrcam.errors import CxrcamError


def select_device(name: str, key: str) -> torch.device:
    """``key`` is the option as the calling stage names it (trainer.device, device), for errors."""
    if name != "auto":
        try:
            device = torch.device(name)
        except (RuntimeError, TypeError):
            raise CxrcamError(f"{key}={name!r} is not a torch device; use auto, cpu, cuda, cuda:N or mps") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise CxrcamError(f"{key}={name!r} but no CUDA GPU is available here; use {key}=auto")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise CxrcamError(f"{key}={name!r} but MPS is not available here; use {key}=auto")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def rng_state() -> dict:
    """The RNG state that training draws from (sampler order, augmentation, dropout)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_device(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


def train_one_epoch(model: nn.Module, loader, criterion: nn.Module, optimizer, scheduler,
                    device: torch.device, epoch: int, channels_last: bool = False,
                    scaler: torch.amp.GradScaler | None = None) -> float:
    """Mean training loss; stops with a clear message on a non-finite loss."""
    model.train()
    total, count = 0.0, 0
    bar = tqdm(loader, desc=f"epoch {epoch} train", unit="batch", leave=False)
    for step, (images, labels) in enumerate(bar):
        images, labels = _to_device(images, device, channels_last), labels.to(device)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=scaler is not None):
            loss = criterion(model(images), labels)
        if not math.isfinite(loss.item()):
            raise CxrcamError(f"loss became {loss.item()} at epoch {epoch}, step {step}; lower optim.lr "
                              "or check the data. The last good checkpoint is kept")
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item() * len(labels)
        count += len(labels)
        bar.set_postfix(loss=f"{total / count:.4f}")
    return total / max(count, 1)


@torch.no_grad()
def predict(model: nn.Module, loader, device: torch.device, channels_last: bool = False,
            amp: bool = False, desc: str = "predict") -> tuple[np.ndarray, np.ndarray, float]:
    """Softmax probabilities, true labels and the mean unweighted cross-entropy."""
    model.eval()
    all_probs, all_labels, total = [], [], 0.0
    for images, labels in tqdm(loader, desc=desc, unit="batch", leave=False):
        images, labels = _to_device(images, device, channels_last), labels.to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            logits = model(images).float()
        total += F.cross_entropy(logits, labels, reduction="sum").item()
        all_probs.append(logits.softmax(1).cpu())
        all_labels.append(labels.cpu())
    probs, labels = torch.cat(all_probs).numpy(), torch.cat(all_labels).numpy()
    return probs, labels, total / max(len(labels), 1)
