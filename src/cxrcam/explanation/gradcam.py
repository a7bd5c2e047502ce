"""Grad-CAM at about the cost of one forward pass, with the maps left on the images' device.

Grad-CAM needs only d(class score)/d(A) at the target layer's output A. pytorch-grad-cam's GradCAM
backpropagates through the whole network to get it (about 3x a forward pass on ResNet50). Here the
input and the parameters do not require grad, so the forward up to A records no graph; a forward
hook hands the rest of the network a copy of A that does, and the backward runs through the head
only (ResNet50: pooling and the linear layer). pytorch-grad-cam then copies the maps to the host and
scales and resizes them one image at a time with OpenCV; :func:`scale_to_input` does the same for the
whole batch in torch, on the device, so a GPU never waits for the host. The maps equal
pytorch-grad-cam's GradCAM (see tests and scripts/bench_explain.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


def unit_range(maps: torch.Tensor) -> torch.Tensor:
    """Each map (the last two dimensions) shifted and divided to [0, 1], as pytorch-grad-cam's
    scale_cam_image does: (m - min) / (1e-7 + max of the shifted map)."""
    shifted = maps - maps.amin(dim=(-2, -1), keepdim=True)
    return shifted / (1e-7 + shifted.amax(dim=(-2, -1), keepdim=True))


def scale_to_input(maps: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Layer maps (..., h, w) scaled and resized to (..., height, width) in one batched call, equal to
    pytorch-grad-cam's scale_cam_image(scale_cam_image(maps, (width, height))): it scales per layer
    before the resize and again after averaging the layers. Bilinear with align_corners=False is
    OpenCV's INTER_LINEAR, enlarging or (should a layer map ever be larger than the input) shrinking:
    neither antialiases then."""
    lead, (h, w) = maps.shape[:-2], maps.shape[-2:]
    flat = unit_range(maps.float()).reshape(-1, 1, h, w)
    resized = F.interpolate(flat, size=(height, width), mode="bilinear", align_corners=False)
    return unit_range(resized.reshape(*lead, height, width))


class FastGradCAM:
    """Grad-CAM for a batch at input resolution, scaled to [0, 1] as pytorch-grad-cam does; maps are
    float32 tensors on the images' device."""

    def __init__(self, model: nn.Module, target_layer: nn.Module):
        self.model, self.target_layer = model, target_layer

    def __call__(self, images: torch.Tensor, targets: Sequence[int] | torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(CAMs (N, H, W), logits (N, classes)) for images (N, C, H, W), one target class per image
        (a list, or a tensor of class indices, which may already be on the device)."""
        if len(targets) != len(images):
            raise ValueError(f"one target class per image: {len(images)} images, {len(targets)} targets")
        # non_blocking on CUDA: a blocking copy would first wait for all the work queued on the GPU (MPS
        # may read a freed host tensor when not blocking: pytorch/pytorch#139550)
        index = torch.as_tensor(targets).to(images.device, non_blocking=images.device.type == "cuda").view(-1, 1)
        with self._head_graph(images) as (logits, activation):
            (grads,) = torch.autograd.grad(logits.gather(1, index).sum(), activation)
        return scale_to_input(self._positive_map(activation, grads), *images.shape[-2:]), logits.detach()

    def per_class(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(CAMs (N, classes, H, W), logits): one forward pass, then one head-only backward per class;
        the maps of all classes are scaled and resized together."""
        with self._head_graph(images) as (logits, activation):
            positive = []
            for k in range(logits.shape[1]):
                (grads,) = torch.autograd.grad(logits[:, k].sum(), activation, retain_graph=True)
                positive.append(self._positive_map(activation, grads))
        return scale_to_input(torch.stack(positive, dim=1), *images.shape[-2:]), logits.detach()

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

    def _positive_map(self, activation: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """The layer map (N, h, w) with negative evidence cut off, as pytorch-grad-cam does."""
        return self._combine(activation.detach(), grads).clamp_min(0)

    @staticmethod
    def _combine(activation: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """Grad-CAM: each channel weighted by its spatially averaged gradient."""
        return (grads.mean(dim=(2, 3), keepdim=True) * activation).sum(dim=1)


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
