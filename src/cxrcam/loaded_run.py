"""A trained run as explain, evaluate and the benches use it: one loader, so that a checkpoint is
read, checked and turned into a model, its input transform and its CAM layer in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cxrcam.checkpoint import checkpoint_paths, load_checkpoint
from cxrcam.data.batches import to_batch
from cxrcam.data.split import split_file_for
from cxrcam.models import model_from_checkpoint, spatial_layer


@dataclass(frozen=True)
class CamLayer:
    name: str
    module: nn.Module
    grid: list[int]  # the map's (height, width) at the run's input size


@dataclass(frozen=True)
class LoadedRun:
    path: Path  # the checkpoint
    meta: dict
    model: nn.Module  # in eval mode, on the device it was loaded for

    @property
    def model_name(self) -> str:
        return self.meta["model_name"]

    @property
    def class_names(self) -> list[str]:
        return self.meta["class_names"]

    @property
    def image_size(self) -> int:
        return self.meta["image_size"]

    @property
    def run_dir(self) -> Path:
        """<run dir>/checkpoints/best.pt -> <run dir>."""
        return self.path.parents[1]

    @property
    def split_sha256(self) -> str:
        return self.meta["split"]["sha256"]

    def split_file(self, override: str | None = None) -> Path:
        """Its own split.csv (verified by its hash), or the one split_file= names."""
        return split_file_for(self.meta, self.path, override)

    def batch(self, pixels: list[np.ndarray]) -> torch.Tensor:
        """uint8 (size, size) images as the model takes them, on its device."""
        return to_batch(pixels, self.meta["normalization"], next(self.model.parameters()).device)

    def cam_layer(self, name: str | None = None) -> CamLayer:
        """The layer ``name`` (None: the run's own CAM layer); one without a spatial map is refused."""
        name = name or self.meta["target_layer"]
        module, grid = spatial_layer(self.model, name, self.image_size)
        return CamLayer(name, module, grid)


def load_run(path: str | Path, device: torch.device) -> LoadedRun:
    path = Path(path)
    payload = load_checkpoint(path)
    return LoadedRun(path, payload["meta"], model_from_checkpoint(payload).to(device))


def load_runs(ckpt, sweep, device: torch.device) -> list[LoadedRun]:
    """The runs a ckpt= (one path or a list) or sweep= (a multirun dir) option names."""
    return [load_run(path, device) for path in checkpoint_paths(ckpt, sweep)]
