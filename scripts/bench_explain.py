"""Grad-CAM throughput against plain inference, on the same inputs, model, batch and device.

Prints per model: inference img/s, cxrcam's FastGradCAM img/s (one target per image, and all classes
via per_class), pytorch-grad-cam's default GradCAM img/s, their ratios to inference, and the largest
difference between cxrcam's maps and pytorch-grad-cam's (one target per image and each class).
Timings wait for the device before every clock read (bench_timing), so CUDA's queue is counted.

    python scripts/bench_explain.py                          # the three models at 128 px, batch 16
    python scripts/bench_explain.py --size 224 --batch 32 --device cuda --json bench.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

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


def bench_model(name: str, images: torch.Tensor, repeats: int) -> dict[str, float]:
    """Inference, FastGradCAM, FastGradCAM.per_class and pytorch-grad-cam img/s, and the max abs
    difference of FastGradCAM's maps (both calls) from pytorch-grad-cam's GradCAM."""
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
        runs = [infer, lambda: fast(images, targets), lambda: fast.per_class(images),
                lambda: reference(images, wanted)]
        rates = images_per_second([batch_run(run, len(images)) for run in runs], repeats, images.device)
        differences = [np.abs(fast(images, targets)[0].cpu().numpy() - reference(images, wanted)).max()]
        per_class = fast.per_class(images)[0].cpu().numpy()
        differences += [np.abs(per_class[:, k] - reference(images, [ClassifierOutputTarget(k)] * len(images))).max()
                        for k in range(per_class.shape[1])]
    return dict(zip(["infer_img_s", "fast_img_s", "fast_per_class_img_s", "pgc_img_s"], rates, strict=True),
                max_abs_diff=float(max(differences)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write {model: {infer_img_s, ...}} to this file")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    images = phantom_batch(args.batch, args.size).to(device).contiguous(memory_format=torch.channels_last)
    print(f"{device}, {torch.get_num_threads()} threads, batch {args.batch} at {args.size} px, "
          f"{args.repeats} interleaved timed repeats after a warm-up")
    print(f"{'model':<12} {'infer img/s':>11} {'fast img/s':>10} {'per-class img/s':>15} {'pgc img/s':>9} "
          f"{'fast/infer':>10} {'per-class/infer':>15} {'pgc/infer':>9} {'max |diff|':>10}")
    results = {}
    for name in args.models:
        r = results[name] = bench_model(name, images, args.repeats)
        infer = r["infer_img_s"]
        print(f"{name:<12} {infer:>11.1f} {r['fast_img_s']:>10.1f} {r['fast_per_class_img_s']:>15.1f} "
              f"{r['pgc_img_s']:>9.1f} {r['fast_img_s'] / infer:>10.2f} {r['fast_per_class_img_s'] / infer:>15.2f} "
              f"{r['pgc_img_s'] / infer:>9.2f} {r['max_abs_diff']:>10.1e}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
