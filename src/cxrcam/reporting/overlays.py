"""Grad-CAM pictures: an overlay per image, a per-class panel, and the model-comparison grid."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def overlay_rgb(gray: np.ndarray, cam: np.ndarray, colormap: str = "jet", alpha: float = 0.45) -> np.ndarray:
    """uint8 RGB: the grayscale image with the CAM (same shape, values in [0, 1]) blended on top."""
    if gray.shape != cam.shape:
        raise ValueError(f"image {gray.shape} and CAM {cam.shape} must have the same shape")
    heat = matplotlib.colormaps[colormap](np.clip(cam, 0, 1))[..., :3]
    base = np.repeat(gray[..., None].astype(np.float32) / 255, 3, axis=2)
    blended = (1 - alpha) * base + alpha * heat
    return (np.clip(blended, 0, 1) * 255).round().astype(np.uint8)


def resize_cam(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a CAM to an image's size: the model saw the image stretched to a square,
    so stretching the map back puts every value over the pixels it was computed from."""
    return np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize((width, height),
                                                                               Image.Resampling.BILINEAR))


def save_overlay(gray: np.ndarray, cam: np.ndarray, path: Path, colormap: str, alpha: float) -> None:
    Image.fromarray(overlay_rgb(gray, cam, colormap, alpha)).save(path)


def plot_class_panel(gray: np.ndarray, cams: np.ndarray, probs: np.ndarray, class_names: list[str],
                     path: Path, title: str, colormap: str, alpha: float) -> None:
    """The image as the model saw it, then one CAM overlay per class with that class's probability."""
    n = len(class_names) + 1
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 3.1))
    axes[0].imshow(gray, cmap="gray", vmin=0, vmax=255)
    axes[0].set_title("input", fontsize=9)
    predicted = int(np.argmax(probs))
    for k, name in enumerate(class_names):
        axes[k + 1].imshow(overlay_rgb(gray, cams[k], colormap, alpha))
        axes[k + 1].set_title(f"{name}: p={probs[k]:.2f}" + (" (pred.)" if k == predicted else ""), fontsize=9,
                              fontweight="bold" if k == predicted else "normal")
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_model_comparison(rows: list[dict], model_names: list[str], path: Path, colormap: str,
                          alpha: float) -> None:
    """Rows = samples, columns = models; each cell the overlay for that model's predicted class.

    Each row dict: ``label`` (row title), ``gray`` (image per model, as that model saw it) and
    ``cells``: per model a dict with ``cam``, ``predicted``, ``probability``.
    """
    fig, axes = plt.subplots(len(rows), len(model_names), figsize=(2.9 * len(model_names), 3.0 * len(rows)),
                             squeeze=False)
    for r, row in enumerate(rows):
        for m, name in enumerate(model_names):
            cell, ax = row["cells"][m], axes[r, m]
            ax.imshow(overlay_rgb(row["gray"][m], cell["cam"], colormap, alpha))
            ax.set_title(f"{name}\npred {cell['predicted']} ({cell['probability']:.2f})", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            if m == 0:
                ax.set_ylabel(row["label"], fontsize=10)
    fig.suptitle("Grad-CAM of the predicted class, per model", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
