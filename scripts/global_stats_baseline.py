"""Accuracy of a global-intensity logistic regression on a dataset (see cxrcam.data.audit).

    python scripts/global_stats_baseline.py                    # the demo's synthetic set
    python scripts/global_stats_baseline.py --root /data/COVID-19_Radiography_Dataset
"""

from __future__ import annotations

import argparse
import time

from cxrcam.data.audit import global_intensity_baseline
from cxrcam.data.layout import discover_images
from cxrcam.data.synthetic import CLASSES, ensure_synthetic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="dataset folder; default: the demo's synthetic set (generated if missing)")
    parser.add_argument("--classes", nargs="+", default=list(CLASSES))
    parser.add_argument("--n-per-class", type=int, default=500, help="synthetic set size (default: the demo's)")
    args = parser.parse_args()
    root = args.root or ensure_synthetic(f"data/synthetic-{args.n_per_class}x256px-seed0", args.n_per_class, 256, 0)
    items = discover_images(root, args.classes)
    started = time.perf_counter()
    accuracy = global_intensity_baseline([p for p, _ in items], [args.classes.index(c) for _, c in items])
    print(f"{len(items)} images, {len(args.classes)} classes: global-intensity logistic regression "
          f"5-fold accuracy {accuracy:.3f} (chance {1 / len(args.classes):.3f}), {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
