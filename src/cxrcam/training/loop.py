"""One epoch of training and one pass of prediction; everything else lives in cxrcam.train."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from cxrcam.errors import CxrcamError


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


REFRESH_EVERY = 25  # steps between host reads of the running loss (each read waits for the device)


@dataclass
class EpochState:
    """Where an epoch is: the next step, and the image-weighted loss so far (kept on the device)."""
    step: int
    loss_sum: torch.Tensor
    images: int

    @classmethod
    def start(cls, device: torch.device) -> EpochState:
        return cls(0, torch.zeros((), device=device), 0)

    def mean_loss(self) -> float:
        return self.loss_sum.item() / max(self.images, 1)


def _stop_on_nonfinite(first_bad: torch.Tensor, epoch: int) -> None:
    """``first_bad``: the step and the value of the first non-finite loss, or step -1."""
    step, value = first_bad.tolist()
    if step >= 0:
        raise CxrcamError(f"loss became {value} at epoch {epoch}, step {int(step)}; lower optim.lr or check the "
                          "data. The last good checkpoint is kept")


def backward_and_step(loss: torch.Tensor, optimizer, scaler: torch.amp.GradScaler | None = None) -> None:
    """One optimiser step from ``loss``, through the GradScaler when mixed precision uses one."""
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()


def train_one_epoch(model: nn.Module, batches, steps: int, criterion: nn.Module, optimizer, scheduler,
                    model_input, device: torch.device, epoch: int, scaler: torch.amp.GradScaler | None = None,
                    state: EpochState | None = None, stop_requested=lambda step: False) -> EpochState:
    """Run the epoch's remaining ``steps`` (``batches`` yields uint8 images, labels and augmentation)
    from ``state``; returns where it ended: after all steps, or at the first count of steps done
    for which ``stop_requested(count)`` is true. Nothing waits for the device per step: the loss is
    summed there and read every REFRESH_EVERY steps, when a non-finite loss stops the run naming
    its first step."""
    model.train()
    state = state or EpochState.start(device)
    loss_sum = state.loss_sum.to(device).clone()
    first_bad = torch.tensor([-1.0, 0.0], device=device)
    bar = tqdm(batches, desc=f"epoch {epoch} train", unit="batch", leave=False, initial=state.step, total=steps)
    for step, (images, labels, params) in enumerate(bar, start=state.step):
        images = model_input(images.to(device, non_blocking=True), params)
        labels = labels.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=scaler is not None):
            loss = criterion(model(images), labels)
        backward_and_step(loss, optimizer, scaler)
        if scheduler is not None:
            scheduler.step()
        loss = loss.detach().float()
        is_first_bad = (first_bad[0] < 0) & ~torch.isfinite(loss)
        first_bad = torch.where(is_first_bad, torch.stack([torch.full_like(loss, step), loss]), first_bad)
        loss_sum += loss * len(labels)
        state = EpochState(step + 1, loss_sum, state.images + len(labels))
        if (step + 1) % REFRESH_EVERY == 0 or step + 1 == steps:
            _stop_on_nonfinite(first_bad, epoch)
            bar.set_postfix(loss=f"{state.mean_loss():.4f}")
        if stop_requested(state.step):
            break
    _stop_on_nonfinite(first_bad, epoch)
    return state


@torch.no_grad()
def predict(model: nn.Module, batches, steps: int, model_input, device: torch.device, amp: bool = False,
            desc: str = "predict") -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 logits and labels of every batch, on the CPU (the logits leave the device once, at the end)."""
    model.eval()
    all_logits, all_labels = [], []
    for images, labels, _ in tqdm(batches, desc=desc, unit="batch", leave=False, total=steps):
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            logits = model(model_input(images.to(device, non_blocking=True))).float()
        all_logits.append(logits)
        all_labels.append(labels)
    if not all_logits:
        return torch.zeros((0, 0)), torch.zeros(0, dtype=torch.long)
    return torch.cat(all_logits).cpu(), torch.cat(all_labels)


def probabilities_and_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray, float]:
    """Softmax probabilities, labels and the mean unweighted cross-entropy, as NumPy and a float."""
    loss = F.cross_entropy(logits, labels).item() if len(labels) else 0.0
    return logits.softmax(1).numpy(), labels.numpy(), loss
