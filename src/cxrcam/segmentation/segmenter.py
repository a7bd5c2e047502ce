"""A trained lung segmenter as evaluate uses it: loaded from its weights-only checkpoint, it turns
a full-resolution radiograph into a lung mask at any size."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from cxrcam.checkpoint import load_checkpoint
from cxrcam.data.images import resize_grayscale
from cxrcam.errors import CxrcamError
from cxrcam.segmentation.unet import ARCHITECTURE, UNet

KIND = "lung_segmenter"  # meta["kind"]: what tells a segmenter's checkpoint from a classifier's
NORMALIZATION = {"mean": 0.5, "std": 0.25}  # of pixels scaled to [0, 1]
THRESHOLD = 0.5


def to_input(images: np.ndarray, device: torch.device, normalization: dict = NORMALIZATION) -> torch.Tensor:
    """uint8 (n, h, w) -> normalised float (n, 1, h, w) on ``device``."""
    x = torch.as_tensor(images, device=device).float().unsqueeze(1) / 255
    return (x - normalization["mean"]) / normalization["std"]


def postprocess(mask: np.ndarray) -> np.ndarray:
    """The two largest connected parts with their holes filled: two lungs, without the specks a
    network leaves outside them or the gaps it leaves inside a dense opacity."""
    labels, n = ndimage.label(mask)
    if n > 2:
        sizes = ndimage.sum(mask, labels, index=range(1, n + 1))
        mask = np.isin(labels, np.argsort(sizes)[::-1][:2] + 1)
    return ndimage.binary_fill_holes(mask)


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two bool masks; 1 when both are empty."""
    total = prediction.sum() + truth.sum()
    return 1.0 if total == 0 else float(2 * (prediction & truth).sum() / total)


def build_unet(architecture: dict) -> UNet:
    return UNet(architecture["base_channels"], architecture["depth"])


@dataclass
class LungSegmenter:
    model: UNet
    image_size: int
    normalization: dict
    meta: dict
    path: Path
    device: torch.device

    @torch.no_grad()
    def predict(self, gray: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(mask at ``size``, mask at the segmenter's own size) of a uint8 image of any size: the
        image is resized to the segmenter's input, and its probabilities (not a thresholded mask)
        are resized to ``size``, so that a larger size gets smooth borders."""
        x = to_input(resize_grayscale(gray, self.image_size)[None], self.device, self.normalization)
        probs = self.model(x).sigmoid()[:, None]
        own = postprocess(probs[0, 0].cpu().numpy() > THRESHOLD)
        if size != self.image_size:
            probs = F.interpolate(probs, size=(size, size), mode="bilinear", align_corners=False)
        return postprocess(probs[0, 0].cpu().numpy() > THRESHOLD), own


def load_segmenter(path: str | Path, device: torch.device, key: str = "lungs") -> LungSegmenter:
    """The segmenter a ``python -m cxrcam.segment`` run saved; ``key`` names the option that gave the path."""
    path = Path(path)
    checkpoint = load_checkpoint(path)
    meta = checkpoint["meta"]
    if meta.get("kind") != KIND:
        what = f"a {meta['model_name']} classifier's" if "model_name" in meta else "not a lung segmenter's"
        raise CxrcamError(f"{key}={path} is {what} checkpoint; pass the checkpoints/best.pt that python -m "
                          "cxrcam.segment wrote")
    model = build_unet(meta["architecture"])
    model.load_state_dict(checkpoint["state_dict"])
    return LungSegmenter(model.to(device).eval(), meta["image_size"], meta["normalization"], meta, path, device)


def segmenter_metadata(architecture: dict, image_size: int, config: dict, training_data: dict, split: dict,
                       epoch: int, val_dice: float, version_info: dict) -> dict:
    """What a segmenter checkpoint says about itself (``version_info``: format, cxrcam, git, torch)."""
    return {**version_info, "kind": KIND, "architecture": {"name": ARCHITECTURE, **architecture},
            "image_size": int(image_size), "normalization": dict(NORMALIZATION), "threshold": THRESHOLD,
            "postprocess": "two largest components, holes filled", "training_data": training_data, "split": split,
            "epoch": epoch, "val_dice": float(val_dice), "config": config}
