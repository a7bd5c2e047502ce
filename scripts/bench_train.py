"""Training throughput: the input pipeline alone, the trainer's own epoch code, and a bare loop.

Per model, measured in turns: the loader alone (uint8 batches indexed from memory, moved to the
device, augmented and normalised there), the trainer's epoch code (cxrcam.training.loop with that
loader, its optimiser, AMP and channels_last settings), and a bare loop of the same model,
optimiser, AMP setting and batch on random tensors already on the device. trainer/bare is what the
input pipeline and the loop's bookkeeping cost: 1.0 means the model alone sets the pace.

    python scripts/bench_train.py                                  # CPU, 224 px, batch 32
    python scripts/bench_train.py --device cuda --json bench_train.json
    python scripts/bench_train.py --models simple_cnn --size 128 --steps 10
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # the epoch's progress bar would break into the table; before tqdm loads

import torch  # noqa: E402
from bench_timing import images_per_second  # noqa: E402
from torch import nn  # noqa: E402

from cxrcam.data.batches import ModelInput, SplitBatches, epoch_plan  # noqa: E402
from cxrcam.data.dataset import CXRDataset  # noqa: E402
from cxrcam.models import MODEL_NAMES, build_model  # noqa: E402
from cxrcam.train import make_optimizer  # noqa: E402
from cxrcam.device import tune_for  # noqa: E402
from cxrcam.training.loop import backward_and_step, train_one_epoch  # noqa: E402

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
AUGMENT = {"rotation": 7, "translate": 0.05, "scale": 0.08, "brightness": 0.2, "contrast": 0.2, "hflip": False}
OPTIM = {"name": "adam", "lr": 1e-4, "weight_decay": 0.0, "scheduler": "none"}


def preloaded_images(n: int, size: int) -> CXRDataset:
    """n random grayscale images in memory, as a preloaded split holds them."""
    pixels = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8)
    return CXRDataset.from_pixels(pixels, [i % 4 for i in range(n)])


def bench_model(name: str, dataset: CXRDataset, batch: int, steps: int, repeats: int, device: torch.device,
                amp: bool, channels_last: bool, compile_model: bool) -> dict[str, float]:
    size = dataset.image_size
    batches = SplitBatches(dataset, batch, pin_memory=device.type == "cuda")
    model_input = ModelInput(MEAN, STD, channels_last)
    model = build_model(name, 4, size).to(device, memory_format=torch.channels_last if channels_last
                                          else torch.preserve_format)
    optimizer, _ = make_optimizer(model.parameters(), OPTIM, 1, steps, fused=device.type == "cuda")
    fit_model = torch.compile(model) if compile_model else model  # as trainer.compile=true does
    scaler = torch.amp.GradScaler("cuda") if amp else None
    criterion = nn.CrossEntropyLoss()
    epoch = iter(range(1, 10**9))

    def plan() -> tuple[torch.Tensor, torch.Tensor]:
        indices, params = epoch_plan(len(dataset), batch, 0, next(epoch), AUGMENT)
        return indices[:steps * batch], params[:steps * batch]

    def loader() -> int:
        indices, params = plan()
        for images, _, step_params in batches(indices, params):
            model_input(images.to(device, non_blocking=True), step_params)
        return len(indices)

    def trainer() -> int:
        indices, params = plan()
        state = train_one_epoch(fit_model, batches(indices, params), steps, criterion, optimizer, None, model_input,
                                device, 1, scaler)
        return state.images

    images = torch.randn(batch, 3, size, size, device=device)
    images = images.contiguous(memory_format=torch.channels_last) if channels_last else images
    labels = torch.randint(0, 4, (batch,), device=device)

    def bare() -> int:
        model.train()
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                loss = criterion(fit_model(images), labels)
            backward_and_step(loss, optimizer, scaler)
        return steps * batch

    loader_rate, trainer_rate, bare_rate = images_per_second([loader, trainer, bare], repeats, device)
    return {"loader_img_s": loader_rate, "trainer_img_s": trainer_rate, "bare_img_s": bare_rate,
            "trainer_over_bare": trainer_rate / bare_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--steps", type=int, help="training steps per timed run (default: 3 on CPU, 40 on CUDA)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each kind, in turns, after a warm-up")
    parser.add_argument("--no-amp", dest="amp", action="store_false", help="float32 on CUDA (AMP is on by default)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (trainer.compile=true); "
                        "the warm-up run then includes the compilation")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    device = torch.device(args.device)
    steps = args.steps or (40 if device.type == "cuda" else 3)
    amp = args.amp and device.type == "cuda"
    torch.manual_seed(0)
    tune_for(device)
    dataset = preloaded_images(steps * args.batch, args.size)
    print(f"{device}{f' ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else ''}, "
          f"{torch.get_num_threads()} threads, {args.size} px, batch {args.batch}, {steps} steps per run, "
          f"{args.repeats} interleaved runs after a warm-up, AMP {'on' if amp else 'off'}, channels_last"
          f"{', torch.compile' if args.compile else ''}")
    print(f"{'model':<12} {'loader img/s':>12} {'trainer img/s':>13} {'bare img/s':>10} {'trainer/bare':>12}")
    results = {}
    for name in args.models:
        result = results[name] = bench_model(name, dataset, args.batch, steps, args.repeats, device, amp, True,
                                                   args.compile)
        print(f"{name:<12} {result['loader_img_s']:>12.1f} {result['trainer_img_s']:>13.1f} "
              f"{result['bare_img_s']:>10.1f} {result['trainer_over_bare']:>12.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
