"""The causal test's image edits: seconds per image of removing a marker (dilated, inpainted on
its crop) against the same imputation solved over the whole image, and of keeping the lungs only,
on marked phantoms at the given input sizes.

    python scripts/bench_reliance.py                  # 128 and 224 px, 24 marked phantoms
    python scripts/bench_reliance.py --sizes 224 --n 48
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from cxrcam.data.synthetic import CLASSES, ensure_synthetic
from cxrcam.evaluation.imputation import linear_system, solve
from cxrcam.evaluation.reliance import inpaint, lungs_only, removal_mask
from cxrcam.evaluation.samples import load_samples


def whole_image_fill(gray: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The imputation of ``inpaint`` with the whole image as its system's grid."""
    a, b, pixels = linear_system(mask, gray[None].astype(np.float32))
    flat = gray.astype(np.float32).reshape(-1)
    flat[pixels] = solve(a, b)[:, 0]
    return flat.reshape(gray.shape)


def seconds_per_image(edit, cases, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for case in cases:
            edit(*case)
        best = min(best, (time.perf_counter() - started) / len(cases))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    parser.add_argument("--n", type=int, default=24, help="marked phantoms (all COVID)")
    parser.add_argument("--dilation", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = ensure_synthetic(Path(tmp) / "marked", args.n, 256, 1, marker={c: 1.0 for c in CLASSES[:1]})
        images = [(str(p), CLASSES[0]) for p in sorted((root / CLASSES[0] / "images").glob("*.png"))]
        for size in args.sizes:
            samples = load_samples(images, size)[0]
            masks = [(s.gray, removal_mask(s.marker, args.dilation)) for s in samples]
            area = np.mean([m.mean() for _, m in masks])
            crop = seconds_per_image(inpaint, masks)
            whole = seconds_per_image(whole_image_fill, masks)
            lungs = seconds_per_image(lungs_only, [(s.gray, s.lungs, "mean") for s in samples])
            print(f"{size} px ({len(samples)} images, removed marker {area:.1%} of the image): inpainting on the "
                  f"marker's crop {crop * 1e3:.2f} ms/image, on the whole image {whole * 1e3:.2f} ms "
                  f"({whole / crop:.0f}x); lungs only {lungs * 1e3:.3f} ms/image")


if __name__ == "__main__":
    main()
