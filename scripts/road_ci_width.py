"""How wide ROAD's confidence interval is at 8 to 128 images: what faithfulness.n_images buys.

Trains the demo's SimpleCNN (experiment=demo: 128 px, 3 epochs; 400 phantoms per class as make demo
has it), scores ROAD combined of its default Grad-CAM (the default percentiles and seed) on every
test image, then prints per n the mean and spread of the width of the evaluation's interval (95 %
percentile bootstrap, 1,000 resamples) over 20 class-balanced subsets of n, drawn as the evaluation
draws them (seeds 0-19).

    python scripts/road_ci_width.py                 # 7.5-9.5 minutes on 2 busy CPU cores
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_evaluate import config  # noqa: E402

from cxrcam.data.split import split_images  # noqa: E402
from cxrcam.evaluate import layers_for  # noqa: E402
from cxrcam.evaluation.faithfulness import road_scores  # noqa: E402
from cxrcam.evaluation.samples import balanced_subset, load_samples  # noqa: E402
from cxrcam.evaluation.stats import bootstrap_ci  # noqa: E402
from cxrcam.explanation.methods import make_cam  # noqa: E402
from cxrcam.loaded_run import load_run  # noqa: E402
from cxrcam.train import train  # noqa: E402


def road_combined_of_test_images(run_dir: Path, cfg: dict) -> tuple[np.ndarray, list[str]]:
    """Per test image of the run, ROAD combined of its true class's CAM, and the images' labels."""
    run = load_run(run_dir / "checkpoints" / "best.pt", torch.device("cpu"))
    samples, _ = load_samples(split_images(str(run.split_file()), run.class_names, "test", None), run.image_size)
    images = run.batch([s.gray for s in samples])
    targets = [run.class_names.index(s.label) for s in samples]
    layer = run.cam_layer(layers_for(cfg["cam"]["layer"], run.model_name)[0])
    cam = make_cam(cfg["cam"]["method"], run.model, layer.module)
    cams = torch.cat([cam(images[i:i + 32], targets[i:i + 32])[0] for i in range(0, len(samples), 32)]).numpy()
    road = road_scores(run.model, images, cams, targets, cfg["faithfulness"]["percentiles"], cfg["seed"])
    return road["combined"], [s.label for s in samples]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=400, help="phantoms per class")
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 48, 64, 96, 128])
    args = parser.parse_args()
    cfg = config("evaluate")
    with tempfile.TemporaryDirectory() as tmp:
        train(config("train", "experiment=demo", "model=simple_cnn", f"data.synthetic.n_per_class={args.per_class}",
                     f"paths.data_dir={tmp}", "device=cpu"), Path(tmp) / "run")
        torch.manual_seed(0)
        combined, labels = road_combined_of_test_images(Path(tmp) / "run", cfg)
    boot = cfg["bootstrap"]
    print(f"SimpleCNN, demo settings: ROAD combined over all {len(combined)} test images {combined.mean():.3f} "
          f"(sd {combined.std(ddof=1):.3f}); {boot['level']:.0%} bootstrap interval width over 20 balanced subsets:")
    for n in args.sizes:
        widths = []
        for seed in range(20):
            ci = bootstrap_ci(combined[balanced_subset(labels, n, seed)], boot["n_resamples"], boot["level"], seed)
            widths.append(ci["high"] - ci["low"])
        print(f"  n = {n:>3}: width {np.mean(widths):.3f} (min {np.min(widths):.3f}, max {np.max(widths):.3f})")


if __name__ == "__main__":
    main()
