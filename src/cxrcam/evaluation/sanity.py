"""Model-parameter randomisation test (Adebayo et al. 2018), cascading from the top.

Re-initialise the model's blocks one after another, output end first, and compare each CAM with
the trained model's. A method whose maps depend on what the model learned shows the similarity
falling towards 0; one that mostly reflects the input (an edge detector) stays similar.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage
from scipy.stats import rankdata
from torch import nn


def randomisation_blocks(model: nn.Module) -> list[str]:
    """The model's top-level blocks that hold parameters, output end first; a Sequential child is
    opened one level (DenseNet's ``features``, SimpleCNN's layers) so that each stage is a step."""
    blocks = []
    for name, child in model.named_children():
        parts = child.named_children() if isinstance(child, nn.Sequential) else [(None, child)]
        for sub, module in parts:
            if any(True for _ in module.parameters()):
                blocks.append(f"{name}.{sub}" if sub is not None else name)
    return blocks[::-1]


def reinitialise(module: nn.Module) -> None:
    """Every layer's own initialisation, as a fresh model would draw it (BatchNorm statistics too)."""
    for layer in module.modules():
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
        if hasattr(layer, "reset_running_stats"):
            layer.reset_running_stats()


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of two maps; 0 when either is constant (it ranks nothing)."""
    ra, rb = rankdata(a.ravel()), rankdata(b.ravel())
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def ssim(a: np.ndarray, b: np.ndarray, sigma: float = 1.5, data_range: float = 1.0) -> float:
    """Mean structural similarity (Wang et al. 2004, Gaussian window) of two maps in [0, 1]."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    blur = lambda x: ndimage.gaussian_filter(x, sigma, mode="reflect")  # noqa: E731
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(index.mean())


def cascading_randomisation(model: nn.Module, make_cam: Callable[[nn.Module], object], images: torch.Tensor,
                            targets: list[int], seed: int = 0) -> list[dict]:
    """[{block, rank_correlation, ssim}] per cumulative step; ``make_cam(model)`` builds the CAM
    method on a model (the randomised copy). Rank correlation and SSIM are means over images,
    each against the trained model's CAM; the first row is the trained model itself (1, 1)."""
    reference = make_cam(model)(images, targets)[0].cpu().numpy()
    randomised = copy.deepcopy(model)
    rows = [{"block": "trained", "rank_correlation": 1.0, "ssim": 1.0}]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for block in randomisation_blocks(model):
            reinitialise(randomised.get_submodule(block))
            cams = make_cam(randomised)(images, targets)[0].cpu().numpy()
            pairs = list(zip(reference, cams, strict=True))
            rows.append({"block": block, "rank_correlation": float(np.mean([rank_correlation(*p) for p in pairs])),
                         "ssim": float(np.mean([ssim(*p) for p in pairs]))})
    return rows
