"""Batches that keep an accelerator busy: uint8 images are indexed from memory (or streamed by
worker processes), moved to the device as uint8 (a quarter of float32's traffic), and augmented,
scaled and normalised there, a whole batch at a time.

Every random choice of an epoch (its order and each image's augmentation) is drawn up front from a
generator seeded by (seed, epoch), for the global order of images: a resumed run redraws it
exactly, and a batch is the same images with the same augmentation whatever the number of
processes it is dealt out to.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler

from cxrcam.data.dataset import CXRDataset
from cxrcam.signals import ignore_stop_signals

# the columns of an augmentation draw, one row per image
ANGLE, SHIFT_X, SHIFT_Y, SCALE, BRIGHTNESS, CONTRAST, FLIP = range(7)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def draw_augmentation(n: int, augment: dict, generator: torch.Generator) -> torch.Tensor:
    """(n, 7) per-image parameters with the ranges of torchvision's RandomAffine(degrees=rotation,
    translate=(t, t), scale=(1-s, 1+s)) and ColorJitter(brightness, contrast): angle in degrees,
    shifts as fractions of the image, scale, brightness and contrast factors, and a flip flag."""
    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)

    params = torch.stack([
        uniform(-augment["rotation"], augment["rotation"]),
        uniform(-augment["translate"], augment["translate"]),
        uniform(-augment["translate"], augment["translate"]),
        uniform(1 - augment["scale"], 1 + augment["scale"]),
        uniform(max(0.0, 1 - augment["brightness"]), 1 + augment["brightness"]),
        uniform(max(0.0, 1 - augment["contrast"]), 1 + augment["contrast"]),
        (torch.rand(n, generator=generator, dtype=torch.float64) < 0.5).double() if augment.get("hflip")
        else torch.zeros(n, dtype=torch.float64),
    ], dim=1)
    return params.float()


def epoch_plan(n: int, batch_size: int, seed: int, epoch: int, augment: dict | None, rank: int = 0, world: int = 1,
               weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """This process's image indices for one training epoch and their augmentation.

    The global order is a permutation (with ``weights``, a draw with replacement) padded to whole
    global batches of ``batch_size * world`` images the way DistributedSampler pads, and process
    ``rank`` takes every ``world``-th position of it: step k of every process together covers
    positions [k * batch_size * world, (k + 1) * batch_size * world) of the global order.
    """
    generator = epoch_generator(seed, epoch)
    if weights is None:
        order = torch.randperm(n, generator=generator)
    else:
        order = torch.multinomial(weights.double(), n, replacement=True, generator=generator)
    params = draw_augmentation(n, augment, generator) if augment else None
    padded = math.ceil(n / world) * world
    if padded > n:
        order = torch.cat([order, order[:padded - n]])
        params = torch.cat([params, params[:padded - n]]) if params is not None else None
    return order[rank::world], params[rank::world] if params is not None else None


def shard(n: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """This process's share of a split to predict on: every ``world``-th image, unpadded, so that
    the gathered shards are the whole split once."""
    return torch.arange(n)[rank::world]


def auto_num_workers(processes_per_node: int = 1) -> int:
    """Decoding workers for a streamed split: the cores this process may use, less one for itself,
    at most 8; none on a machine of one or two cores, where they would compete with training."""
    cores = len(os.sched_getaffinity(0)) // max(processes_per_node, 1)
    return min(max(cores - 1, 0), 8) if cores > 2 else 0


class _Chunks(Sampler):
    """The index lists of the current epoch; a persistent DataLoader reads them anew each epoch."""

    def __init__(self):
        self.chunks: list[list[int]] = []

    def __iter__(self):
        return iter(self.chunks)

    def __len__(self) -> int:
        return len(self.chunks)


class SplitBatches:
    """(uint8 images (B, 1, H, W), labels, augmentation or None) for chosen indices of a split, from
    the preloaded tensor or, for a split that was not preloaded, decoded by worker processes."""

    def __init__(self, dataset: CXRDataset, batch_size: int, num_workers: int = 0, pin_memory: bool = False):
        self.dataset, self.batch_size, self.pin_memory = dataset, batch_size, pin_memory
        self.labels = torch.tensor(dataset.labels, dtype=torch.long)
        self._chunks = _Chunks()
        self._loader = None
        if dataset.pixels is None:
            self._loader = DataLoader(dataset, batch_sampler=self._chunks, num_workers=num_workers,
                                      pin_memory=pin_memory, persistent_workers=num_workers > 0,
                                      worker_init_fn=ignore_stop_signals)

    def __len__(self) -> int:
        return len(self.dataset)

    def steps(self, n_indices: int) -> int:
        return math.ceil(n_indices / self.batch_size)

    def __call__(self, indices: torch.Tensor, params: torch.Tensor | None = None,
                 start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        starts = range(start_step * self.batch_size, len(indices), self.batch_size)
        chunks = [indices[s:s + self.batch_size] for s in starts]
        if self._loader is not None:
            self._chunks.chunks = [chunk.tolist() for chunk in chunks]
            images_of = iter(self._loader)
        for start, chunk in zip(starts, chunks, strict=True):
            if self._loader is not None:
                images, _ = next(images_of)
            else:
                images = self.dataset.pixels[chunk]
                images = images.pin_memory() if self.pin_memory else images
            yield images, self.labels[chunk], params[start:start + self.batch_size] if params is not None else None


def augment(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] (B, 1, H, W), each with its own affine warp (one grid_sample, bilinear,
    black beyond the edge), brightness and contrast (torchvision's: scale; blend with the image's
    mean), clamped to [0, 1]."""
    angle = torch.deg2rad(params[:, ANGLE])
    cos, sin, scale = torch.cos(angle), torch.sin(angle), params[:, SCALE]
    shift = 2 * params[:, [SHIFT_X, SHIFT_Y]]  # affine_grid's coordinates span [-1, 1]
    # output pixel p comes from input pixel R(-angle) (p - shift) / scale, mirrored when flipped
    inverse = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1) / scale[:, None, None]
    theta = torch.cat([inverse, -(inverse @ shift[:, :, None])], dim=2)
    theta[:, 0] *= 1 - 2 * params[:, FLIP, None]
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    brightened = warped.mul_(params[:, BRIGHTNESS, None, None, None]).clamp_(0, 1)
    contrast = params[:, CONTRAST, None, None, None]
    mean = brightened.mean(dim=(1, 2, 3), keepdim=True)
    return brightened.mul_(contrast).add_((1 - contrast) * mean).clamp_(0, 1)


class ModelInput:
    """uint8 (B, 1, H, W) on any device → what the model takes: augmented when parameters are given,
    scaled to [0, 1], normalised by the checkpoint's statistics into three channels."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], channels_last: bool = False):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.channels_last = channels_last

    def __call__(self, images: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        x = images.float().div_(255)
        if params is not None:
            x = augment(x, params.to(x.device, non_blocking=True))
        if self.mean.device != x.device:  # once: a copy per step from pageable memory would wait for the device
            self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
        x = (x - self.mean).div_(self.std)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def to_batch(pixels: list[np.ndarray], normalization: dict, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (H, W) images, as load_image returns them, to one model-ready batch (N, 3, H, W);
    ``normalization`` is a checkpoint's {"mean": ..., "std": ...}."""
    images = torch.from_numpy(np.stack(pixels))[:, None].to(device)
    return ModelInput(normalization["mean"], normalization["std"])(images)
