"""Does the model need what its CAM points at? ROAD and the confidence drop, via pytorch-grad-cam.

ROAD (Rong et al. 2022) removes a share of the pixels, most or least relevant first, and fills them
by noisy linear imputation, which leaks less of the removed shape than a black or mean fill. Scores
are changes in the target class's softmax probability. The imputation is ours (imputation.py), equal
to pytorch-grad-cam's to rounding and 4x faster at 224 px; the rest is pytorch-grad-cam's ROAD.
"""

from __future__ import annotations

import numpy as np
import torch
from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
from pytorch_grad_cam.metrics.perturbation_confidence import (
    PerturbationConfidenceMetric,
    RemoveLeastRelevantFirst,
    RemoveMostRelevantFirst,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
from torch import nn

from cxrcam.evaluation.imputation import noisy_linear_imputation


def road_scores(model: nn.Module, images: torch.Tensor, cams: np.ndarray, targets: list[int],
                percentiles: list[int], seed: int = 0) -> dict[str, np.ndarray]:
    """Per image and percentile p, the probability change when the (100 - p) % most relevant pixels
    (``morf``, should fall) or least relevant pixels (``lerf``, should stay) are imputed, and per
    image ``combined`` = mean over p of (lerf - morf) / 2, higher is more faithful."""
    outputs = [ClassifierOutputSoftmaxTarget(t) for t in targets]
    morf, lerf = [], []
    with torch.random.fork_rng():  # the imputer's noise comes from torch's global RNG
        torch.manual_seed(seed)
        for p in percentiles:
            # pytorch-grad-cam's ROADMostRelevantFirst / ROADLeastRelevantFirst with our imputer
            morf.append(PerturbationConfidenceMetric(RemoveMostRelevantFirst(p, noisy_linear_imputation))(
                images, cams, outputs, model))
            lerf.append(PerturbationConfidenceMetric(RemoveLeastRelevantFirst(p, noisy_linear_imputation))(
                images, cams, outputs, model))
    morf, lerf = np.stack(morf, axis=1), np.stack(lerf, axis=1)  # (images, percentiles)
    return {"morf": morf, "lerf": lerf, "combined": ((lerf - morf) / 2).mean(axis=1)}


def confidence_change(model: nn.Module, images: torch.Tensor, cams: np.ndarray, targets: list[int]) -> dict:
    """Average Drop and Increase in Confidence (Chattopadhyay et al. 2018) when the image is
    multiplied by its CAM: per image, the relative probability drop and whether it rose."""
    outputs = [ClassifierOutputSoftmaxTarget(t) for t in targets]
    with torch.no_grad():
        before = model(images).softmax(1)[torch.arange(len(targets)), torch.as_tensor(targets)].cpu().numpy()
    after = CamMultImageConfidenceChange()(images, cams, outputs, model, return_diff=False)
    return {"confidence_drop": np.maximum(before - after, 0) / np.maximum(before, 1e-12),
            "confidence_increase": (after > before).astype(np.float32)}
