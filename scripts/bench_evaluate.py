"""ROAD's imputation, ours against pytorch-grad-cam's, and the time of a whole evaluation.

Prints the seconds per imputed image (3 channels) of cxrcam's noisy linear imputation and of
pytorch-grad-cam's NoisyLinearImputer, timed in turns on ROAD's masks (the default percentiles,
most and least relevant first, of a Grad-CAM-like map: a random 7 x 7 grid upsampled) of a few
phantoms, and the largest difference between the two from the same noise seed. Then it trains a
model for 1 epoch on synthetic phantoms and times cxrcam.evaluation's evaluate_cams with the default
config (CAMs, scores, ROAD and the confidence drop, the sanity check) on 200 other phantoms.

    python scripts/bench_evaluate.py                               # CPU, 224 px, SimpleCNN
    python scripts/bench_evaluate.py --device cuda --model resnet50 --json bench_evaluate.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # evaluate_cams's progress bar would break into the output

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_timing import batch_run, images_per_second, synchronize  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from pytorch_grad_cam.metrics.perturbation_confidence import (  # noqa: E402
    RemoveLeastRelevantFirst,
    RemoveMostRelevantFirst,
)
from pytorch_grad_cam.metrics.road import NoisyLinearImputer  # noqa: E402

from cxrcam.config import config_dir  # noqa: E402
from cxrcam.data.batches import to_batch  # noqa: E402
from cxrcam.data.synthetic import CLASSES, ensure_synthetic, render_phantom  # noqa: E402
from cxrcam.evaluate import layers_for  # noqa: E402
from cxrcam.evaluation.evaluator import evaluate_cams  # noqa: E402
from cxrcam.evaluation.imputation import noisy_linear_imputation  # noqa: E402
from cxrcam.evaluation.samples import Sample  # noqa: E402
from cxrcam.loaded_run import load_run  # noqa: E402
from cxrcam.models import MODEL_NAMES  # noqa: E402
from cxrcam.train import train  # noqa: E402

NORMALIZATION = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def config(name: str, *overrides: str) -> dict:
    """An entry point's resolved config, as Hydra composes it."""
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        return OmegaConf.to_container(compose(name, overrides=list(overrides)), resolve=True)


def phantoms(n: int, size: int, seed: int) -> list[Sample]:
    """Synthetic CXRs with their lung and lesion masks, the classes in turn."""
    out = []
    for i in range(n):
        label = CLASSES[i % len(CLASSES)]
        p = render_phantom(label, np.random.default_rng([seed, i]), size)
        out.append(Sample(f"phantom{i}.png", label, (p.image * 255).round().astype(np.uint8), p.lungs, p.lesion, None))
    return out


def road_masks(size: int, percentiles: list[int], seed: int) -> list[torch.Tensor]:
    """The binary masks ROAD imputes for one map: pytorch-grad-cam's own perturbations, each given an
    imputer that returns the mask it is handed."""
    grid = torch.from_numpy(np.random.default_rng(seed).random((1, 1, 7, 7), np.float32))
    cam = torch.nn.functional.interpolate(grid, size=(size, size), mode="bilinear")[0, 0]
    cam = (cam - cam.min()) / (cam.max() - cam.min())  # a CAM in [0, 1], as pytorch-grad-cam scales them
    return [remove(p, lambda _, mask: mask)(None, cam) for p in percentiles
            for remove in (RemoveMostRelevantFirst, RemoveLeastRelevantFirst)]


def imputation_cases(n_images: int, size: int, percentiles: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    images = to_batch([s.gray for s in phantoms(n_images, size, seed=1)], NORMALIZATION)
    return [(image, mask) for i, image in enumerate(images) for mask in road_masks(size, percentiles, seed=i)]


def imputation_seconds(cases: list, repeats: int) -> tuple[float, float, float]:
    """(ours, pytorch-grad-cam's) seconds per imputed image, timed in turns, and the largest
    difference of their outputs, each pair drawn from the same seed."""
    reference = NoisyLinearImputer()
    runs = [batch_run(lambda impute=impute: [impute(image, mask) for image, mask in cases], len(cases))
            for impute in (noisy_linear_imputation, reference)]
    ours_rate, reference_rate = images_per_second(runs, repeats, torch.device("cpu"))
    difference = 0.0
    for image, mask in cases:
        torch.manual_seed(0)
        ours = noisy_linear_imputation(image, mask)
        torch.manual_seed(0)
        difference = max(difference, float((ours - reference(image, mask)).abs().max()))
    return 1 / ours_rate, 1 / reference_rate, difference


def trained_checkpoint(root: Path, model: str, size: int, device: torch.device) -> Path:
    """A 1-epoch run on 16 phantoms per class; returns its best.pt."""
    data = ensure_synthetic(root / "synthetic", n_per_class=16, resolution=size, seed=0)
    run_dir = root / "run"
    train(config("train", "data=covid_radiography", f"data.root={data}", "data.num_workers=0",
                 f"data.image_size={size}", "data.batch_size=16", "trainer.epochs=1", f"device={device}",
                 "optim.lr=1e-3", f"model={model}"), run_dir)
    return run_dir / "checkpoints" / "best.pt"


def evaluate_seconds(checkpoint: Path, samples: list[Sample], device: torch.device) -> float:
    """Seconds of evaluate_cams with the default config (its first CAM method and layer, with the
    faithfulness and sanity checks), after a warm-up on 4 images without them."""
    cfg = config("evaluate", f"device={device}")
    run = load_run(checkpoint, device)
    method = cfg["cam"]["method"][0] if isinstance(cfg["cam"]["method"], list) else cfg["cam"]["method"]
    layer = layers_for(cfg["cam"]["layer"], run.model_name)[0]
    split_file = str(run.split_file())
    evaluate_cams(run, samples[:4], split_file, method, layer, cfg, with_checks=False)
    synchronize(device)
    started = time.perf_counter()
    evaluate_cams(run, samples, split_file, method, layer, cfg)
    synchronize(device)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=2, help="phantoms whose ROAD masks are imputed")
    parser.add_argument("--repeats", type=int, default=2, help="timed imputation runs of each, in turns")
    parser.add_argument("--model", default="simple_cnn", choices=MODEL_NAMES)
    parser.add_argument("--eval-images", type=int, default=200)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (the evaluation; imputing is on the CPU)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    device = torch.device(args.device)
    percentiles = config("evaluate")["faithfulness"]["percentiles"]
    cases = imputation_cases(args.images, args.size, percentiles)
    print(f"imputation: {len(cases)} ROAD masks (percentiles {percentiles}, most and least relevant first) of "
          f"{args.images} phantoms at {args.size} px, 3 channels, {torch.get_num_threads()} threads, "
          f"{args.repeats} runs each in turns after a warm-up", flush=True)
    ours, reference, difference = imputation_seconds(cases, args.repeats)
    print(f"  ours {ours:.4f} s/image, pytorch-grad-cam {reference:.4f} s/image: {reference / ours:.1f}x; "
          f"max |difference| {difference:.1e}", flush=True)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = trained_checkpoint(Path(tmp), args.model, args.size, device)
        seconds = evaluate_seconds(checkpoint, phantoms(args.eval_images, args.size, seed=2), device)
    print(f"evaluate_cams: {args.model} (1 epoch) on {args.eval_images} phantoms at {args.size} px, default "
          f"config, {device}: {seconds:.1f} s")
    if args.json:
        args.json.write_text(json.dumps({"ours_s_per_image": ours, "pgc_s_per_image": reference,
                                         "max_abs_diff": difference, "evaluate_200_s": seconds}, indent=2))


if __name__ == "__main__":
    main()
