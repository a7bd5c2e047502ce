"""A split's images as the uint8 tensors its batches are made of."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from cxrcam.data.images import load_image


class CXRDataset(Dataset):
    """Images as 8-bit grayscale (1, H, W) at the model's size; with ``preload``, decoded once into
    one uint8 tensor (N, 1, H, W) that batches are indexed from. Augmentation and normalisation
    happen later, a batch at a time, on the training device."""

    def __init__(self, paths: list[str], labels: list[int], image_size: int, preload: bool = False,
                 desc: str = "images"):
        self.paths, self.labels, self.image_size = list(paths), list(labels), image_size
        self.pixels = None
        if preload:
            pixels = np.empty((len(self.paths), 1, image_size, image_size), dtype=np.uint8)
            for i, path in enumerate(tqdm(self.paths, desc=f"loading {desc}", unit="img")):
                pixels[i, 0] = load_image(path, image_size)
            self.pixels = torch.from_numpy(pixels)

    @classmethod
    def from_pixels(cls, pixels: torch.Tensor, labels: list[int]) -> CXRDataset:
        """A preloaded split made in memory (N, 1, H, W uint8), with no files behind it."""
        dataset = cls([f"<image {i}>" for i in range(len(pixels))], labels, pixels.shape[-1])
        dataset.pixels = pixels
        return dataset

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self.pixels is not None:
            return self.pixels[index], self.labels[index]
        return torch.from_numpy(load_image(self.paths[index], self.image_size))[None], self.labels[index]
