"""Grad-CAM throughput against plain inference, on the same inputs, model, batch and device.

Prints per model: inference img/s, cxrcam's FastGradCAM img/s, pytorch-grad-cam's default GradCAM
img/s, the two ratios to inference, and the largest difference between the two sets of maps.

    python scripts/bench_explain.py                          # the three models at 128 px, batch 16
    python scripts/bench_explain.py --size 224 --batch 32 --device cuda
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from bench_timing import batch_run, images_per_second
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from cxrcam.data.batches import to_batch
from cxrcam.data.synthetic import CLASSES, render_phantom
from cxrcam.explanation.gradcam import FastGradCAM
from cxrcam.models import DEFAULT_CAM_LAYER, MODEL_NAMES, build_model, get_layer


def phantom_batch(n: int, size: int) -> torch.Tensor:
    """Synthetic CXRs, preprocessed as in training (ImageNet normalisation)."""
    pixels = [(render_phantom(CLASSES[i % 4], np.random.default_rng([99, i]), size).image * 255).round()
              .astype(np.uint8) for i in range(n)]
    return to_batch(pixels, {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]})


def bench_model(name: str, images: torch.Tensor, repeats: int) -> tuple[float, float, float, float]:
    """(inference, FastGradCAM, pytorch-grad-cam img/s, max abs difference of the maps)."""
    model = build_model(name, 4, images.shape[-1]).to(images.device, memory_format=torch.channels_last).eval()
    layer = get_layer(model, DEFAULT_CAM_LAYER[name])
    with torch.inference_mode():
        targets = model(images).argmax(1).tolist()

    def infer():
        with torch.inference_mode():
            model(images)

    fast = FastGradCAM(model, layer)
    wanted = [ClassifierOutputTarget(t) for t in targets]
    with GradCAM(model, [layer]) as reference:
        runs = [infer, lambda: fast(images, targets), lambda: reference(images, wanted)]
        rates = images_per_second([batch_run(run, len(images)) for run in runs], repeats, images.device)
        difference = float(np.abs(fast(images, targets)[0] - reference(images, wanted)).max())
    return *rates, difference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    images = phantom_batch(args.batch, args.size).to(device).contiguous(memory_format=torch.channels_last)
    print(f"{device}, {torch.get_num_threads()} threads, batch {args.batch} at {args.size} px, "
          f"{args.repeats} interleaved timed repeats after a warm-up")
    print(f"{'model':<12} {'infer img/s':>11} {'fast img/s':>10} {'pgc img/s':>9} {'fast/infer':>10} "
          f"{'pgc/infer':>9} {'max |diff|':>10}")
    for name in args.models:
        infer_rate, fast_rate, reference_rate, difference = bench_model(name, images, args.repeats)
        print(f"{name:<12} {infer_rate:>11.1f} {fast_rate:>10.1f} {reference_rate:>9.1f} "
              f"{fast_rate / infer_rate:>10.2f} {reference_rate / infer_rate:>9.2f} {difference:>10.1e}")

if __name__ == "__main__":
    main()
