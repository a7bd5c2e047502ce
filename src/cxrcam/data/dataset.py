"""Torch datasets over split rows, and the train/eval transforms."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2
from tqdm import tqdm

from cxrcam.data.images import load_image


def _to_three_channels(x: torch.Tensor) -> torch.Tensor:
    return x.expand(3, -1, -1)


def build_transform(mean: list[float], std: list[float], augment: dict | None = None):
    """uint8 (1, H, W) → normalised float (3, H, W); augmentation only when ``augment`` is given.

    Augmentation is geometric and photometric but never a horizontal flip unless asked for: the
    heart sits on the patient's left, and a flipped CXR would teach the model an impossible anatomy
    and make left/right CAM readings meaningless.
    """
    steps = []
    if augment:
        steps.append(v2.RandomAffine(degrees=augment["rotation"],
                                     translate=(augment["translate"], augment["translate"]),
                                     scale=(1 - augment["scale"], 1 + augment["scale"])))
        steps.append(v2.ColorJitter(brightness=augment["brightness"], contrast=augment["contrast"]))
        if augment.get("hflip"):
            steps.append(v2.RandomHorizontalFlip())
    steps += [
        v2.ToDtype(torch.float32, scale=True),
        v2.Lambda(_to_three_channels),
        v2.Normalize(mean=list(mean), std=list(std)),
    ]
    return v2.Compose(steps)


def to_batch(pixels: list[np.ndarray], transform, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (H, W) images, as load_image returns them, to one model-ready batch (N, 3, H, W)."""
    return torch.stack([transform(torch.from_numpy(p)[None]) for p in pixels]).to(device)


class CXRDataset(Dataset):
    """Images as 8-bit grayscale at the model's size, optionally decoded once into memory."""

    def __init__(self, paths: list[str], labels: list[int], image_size: int, transform,
                 preload: bool = False, desc: str = "images"):
        self.paths, self.labels = list(paths), list(labels)
        self.image_size, self.transform = image_size, transform
        self.pixels = None
        if preload:
            self.pixels = np.stack([load_image(p, image_size)
                                    for p in tqdm(self.paths, desc=f"loading {desc}", unit="img")])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        pixels = self.pixels[index] if self.pixels is not None else load_image(self.paths[index], self.image_size)
        return self.transform(torch.from_numpy(pixels).unsqueeze(0)), self.labels[index]
