"""Training a segmenter: Dice + BCE loss, one epoch of steps, and per-image Dice on a held-out split."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from cxrcam.segmentation.segmenter import THRESHOLD, dice, postprocess, to_input


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE for every pixel plus soft Dice per image: BCE alone lets the small boundary errors that
    Dice is judged on go unpunished."""
    probs = logits.sigmoid().flatten(1)
    target_flat = target.flatten(1)
    dice = (2 * (probs * target_flat).sum(1) + 1) / (probs.sum(1) + target_flat.sum(1) + 1)
    return F.binary_cross_entropy_with_logits(logits, target) + (1 - dice).mean()


def train_epoch(model: nn.Module, images: np.ndarray, masks: np.ndarray, batch_size: int,
                optimizer: torch.optim.Optimizer, scheduler, device: torch.device, generator: torch.Generator,
                desc: str) -> float:
    """One pass over the training pairs in a seeded order; the mean loss per image."""
    model.train()
    order = torch.randperm(len(images), generator=generator).numpy()
    total = 0.0
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", leave=False):
        batch = order[start:start + batch_size]
        x = to_input(images[batch], device)
        y = torch.as_tensor(masks[batch], device=device).float()
        loss = dice_bce_loss(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item() * len(batch)
    return total / len(order)


@torch.no_grad()
def predict_masks(model: nn.Module, images: np.ndarray, batch_size: int, device: torch.device) -> np.ndarray:
    """Post-processed bool masks at the input size: what an evaluation would use."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        probs = model(to_input(images[start:start + batch_size], device)).sigmoid().cpu().numpy()
        out += [postprocess(p > THRESHOLD) for p in probs]
    return np.stack(out)


def mean_dice(model: nn.Module, images: np.ndarray, masks: np.ndarray, batch_size: int,
              device: torch.device) -> tuple[float, list[float]]:
    """(mean, per image) Dice of the post-processed predictions against the masks."""
    scores = [dice(p, t) for p, t in zip(predict_masks(model, images, batch_size, device), masks, strict=True)]
    return float(np.mean(scores)), scores
