"""The lung segmenter's two targets: its Dice on phantoms it never saw (another generator seed, so
no image of its training set's family) and the wall time of ``python -m cxrcam.segment`` with the
defaults of conf/segment.yaml.

Without --checkpoint it first trains the default segmenter (the first run also generates the
default phantoms: that is timed apart). Dice is reported at the segmenter's input size and at the
phantoms' full 256 px (probabilities resized, as evaluate does for a CAM model's size).

    python scripts/bench_segment.py                                   # train with the defaults, then score
    python scripts/bench_segment.py --checkpoint outputs/segment/RUN/checkpoints/best.pt
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cxrcam.data.images import read_grayscale
from cxrcam.data.layout import discover_images
from cxrcam.data.synthetic import CLASSES, ensure_synthetic
from cxrcam.evaluation.anatomy import read_mask, sibling_mask_path
from cxrcam.segmentation.segmenter import dice, load_segmenter


def train_default(out_dir: Path) -> tuple[Path, float]:
    """best.pt of ``python -m cxrcam.segment`` with the defaults, and its wall time (data generated beforehand)."""
    subprocess.run([sys.executable, "-c", "from cxrcam.data.synthetic import ensure_synthetic; "
                    "ensure_synthetic('data/synthetic-500x256px-seed0', 500, 256, 0)"], check=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cxrcam.segment", f"hydra.run.dir={out_dir}"], check=True,
                   env={**os.environ, "TQDM_DISABLE": "1"})
    return out_dir / "checkpoints" / "best.pt", time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a segmenter's best.pt; default: train one with the defaults")
    parser.add_argument("--seed", type=int, default=1, help="generator seed of the held-out phantoms")
    parser.add_argument("--n-per-class", type=int, default=50)
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()
    report = {"torch_threads": torch.get_num_threads()}
    if args.checkpoint:
        checkpoint = Path(args.checkpoint)
    else:
        checkpoint, report["train_wall_s"] = train_default(Path(tempfile.mkdtemp()) / "segment")
    metrics = checkpoint.parent.parent / "metrics.json"
    if metrics.is_file():
        run = json.loads(metrics.read_text())
        report |= {"val_dice": run["val_dice"], "test_dice": run["test_dice"], "epochs_wall_s": run["train_wall_s"]}
    root = ensure_synthetic(f"data/synthetic-{args.n_per_class}x256px-seed{args.seed}", args.n_per_class, 256,
                            args.seed)
    segmenter = load_segmenter(checkpoint, torch.device("cpu"))
    own, full = [], []
    for path, _ in discover_images(root, list(CLASSES)):
        mask_path = sibling_mask_path(path, "masks")
        at_full, at_own = segmenter.predict(read_grayscale(path), 256)
        own.append(dice(at_own, read_mask(mask_path, segmenter.image_size)))
        full.append(dice(at_full, read_mask(mask_path, 256)))
    report |= {"held_out_images": len(own), "held_out_seed": args.seed,
               f"held_out_dice_{segmenter.image_size}px": float(np.mean(own)), "held_out_dice_min": float(np.min(own)),
               "held_out_dice_256px": float(np.mean(full))}
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
