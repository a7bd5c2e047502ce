"""Grad-CAM at about the cost of one forward pass.

Grad-CAM needs only d(class score)/d(A) at the target layer's output A. pytorch-grad-cam's GradCAM
backpropagates through the whole network to get it (about 3x a forward pass on ResNet50). Here the
input and the parameters do not require grad, so the forward up to A records no graph; a forward
hook hands the rest of the network a copy of A that does, and the backward runs through the head
only (ResNet50: pooling and the linear layer). The maps equal pytorch-grad-cam's GradCAM, scaled the
same way (see tests and scripts/bench_explain.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
import torch
from pytorch_grad_cam.utils.image import scale_cam_image
from torch import nn


class FastGradCAM:
    """Grad-CAM for a batch at input resolution, scaled to [0, 1] as pytorch-grad-cam does."""

    def __init__(self, model: nn.Module, target_layer: nn.Module):
        self.model, self.target_layer = model, target_layer

    def __call__(self, images: torch.Tensor, targets: Sequence[int]) -> tuple[np.ndarray, torch.Tensor]:
        """(CAMs (N, H, W), logits (N, classes)) for images (N, C, H, W), one target class per image."""
        if len(targets) != len(images):
            raise ValueError(f"one target class per image: {len(images)} images, {len(targets)} targets")
        index = torch.as_tensor(list(targets)).view(-1, 1)
        with self._head_graph(images) as (logits, activation):
            (grads,) = torch.autograd.grad(logits.gather(1, index.to(logits.device)).sum(), activation)
        return self._scaled(activation, grads, images), logits.detach()

    def per_class(self, images: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
        """(CAMs (N, classes, H, W), logits): one forward pass, then one head-only backward per class."""
        with self._head_graph(images) as (logits, activation):
            maps = []
            for k in range(logits.shape[1]):
                (grads,) = torch.autograd.grad(logits[:, k].sum(), activation, retain_graph=True)
                maps.append(self._scaled(activation, grads, images))
        return np.stack(maps, axis=1), logits.detach()

    @contextmanager
    def _head_graph(self, images: torch.Tensor):
        """Yields (logits, activation) with autograd recording only what follows the target layer;
        ``activation`` is the leaf to differentiate against. Parameters' requires_grad, the
        train/eval mode and the hook are restored on exit, whatever happens."""
        captured = {}

        def hand_over(module, inputs, output):
            captured["activation"] = output.detach().requires_grad_(True)
            return captured["activation"].clone()  # later in-place ops must not touch the leaf

        frozen = [p for p in self.model.parameters() if p.requires_grad]
        was_training = self.model.training
        handle = self.target_layer.register_forward_hook(hand_over)
        try:
            for p in frozen:
                p.requires_grad_(False)
            self.model.eval()
            # CAMs in float32 even where training used autocast; gradients on even under no_grad()
            with torch.enable_grad(), torch.autocast(images.device.type, enabled=False):
                logits = self.model(images)
                yield logits, captured["activation"]
        finally:
            handle.remove()
            for p in frozen:
                p.requires_grad_(True)
            self.model.train(was_training)

    @staticmethod
    def _combine(activation: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """Grad-CAM: each channel weighted by its spatially averaged gradient."""
        return (grads.mean(dim=(2, 3), keepdim=True) * activation).sum(dim=1)

    def _scaled(self, activation: torch.Tensor, grads: torch.Tensor, images: torch.Tensor) -> np.ndarray:
        cams = self._combine(activation.detach(), grads).clamp_min(0).float().cpu().numpy()
        size = (images.shape[-1], images.shape[-2])
        # pytorch-grad-cam scales per layer (min-max, resize) and again after aggregating layers
        return scale_cam_image(scale_cam_image(cams, size))


class FastHiResCAM(FastGradCAM):
    """HiResCAM (Draelos & Carin 2020): gradient times activation element-wise, summed over channels.

    Grad-CAM averages each channel's gradient over space, which is exact for a head that pools
    globally (ResNet50; then the two maps are equal) but not for one that keeps positions, such as
    SimpleCNN's flatten + linear head: there a channel's gradient can be positive at the marker and
    negative elsewhere, and Grad-CAM's average hides where the evidence is.
    """

    @staticmethod
    def _combine(activation: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return (grads * activation).sum(dim=1)
