"""The CAM methods ``cam.method`` names, behind one interface: ``cam(images, targets)`` and
``cam.per_class(images)``, each returning (maps scaled to [0, 1] at input size, logits), the maps as
float32 tensors on the images' device, so callers copy them to the host once, where they need them."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pytorch_grad_cam import (AblationCAM, EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM,
                              ScoreCAM, XGradCAM)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from cxrcam.errors import CxrcamError
from cxrcam.explanation.gradcam import FastGradCAM, FastHiResCAM

PYTORCH_GRAD_CAM = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "hirescam": HiResCAM,
                    "xgradcam": XGradCAM, "layercam": LayerCAM, "eigencam": EigenCAM,
                    "scorecam": ScoreCAM, "ablationcam": AblationCAM}


class PytorchGradCAM:
    """A pytorch-grad-cam method; its hooks live only for one call, so memory does not grow."""

    def __init__(self, method: str, model: nn.Module, layer: nn.Module, aug_smooth: bool, eigen_smooth: bool):
        self.cam_class, self.model, self.layer = PYTORCH_GRAD_CAM[method], model, layer
        self.aug_smooth, self.eigen_smooth = aug_smooth, eigen_smooth

    def __call__(self, images: torch.Tensor, targets: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            logits = self.model.eval()(images)
        with self.cam_class(self.model, [self.layer]) as cam, torch.autocast(images.device.type, enabled=False):
            maps = cam(images, [ClassifierOutputTarget(t) for t in targets],
                       aug_smooth=self.aug_smooth, eigen_smooth=self.eigen_smooth)
        return torch.from_numpy(maps).to(images.device, torch.float32), logits

    def per_class(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(CAMs (N, classes, H, W), logits): one call per class."""
        first, logits = self(images, [0] * len(images))
        maps = [first] + [self(images, [k] * len(images))[0] for k in range(1, logits.shape[1])]
        return torch.stack(maps, dim=1), logits


def make_cam(method: str, model: nn.Module, layer: nn.Module, aug_smooth: bool = False,
             eigen_smooth: bool = False):
    """Grad-CAM and HiResCAM take the fast path (head-only backward); smoothing and the other
    methods use pytorch-grad-cam."""
    if method not in PYTORCH_GRAD_CAM:
        raise CxrcamError(f"cam.method={method!r} is not one of {list(PYTORCH_GRAD_CAM)}")
    fast = {"gradcam": FastGradCAM, "hirescam": FastHiResCAM}
    if method in fast and not (aug_smooth or eigen_smooth):
        return fast[method](model, layer)
    return PytorchGradCAM(method, model, layer, aug_smooth, eigen_smooth)
