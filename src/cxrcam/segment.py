"""``python -m cxrcam.segment``: train a small lung segmentation U-Net from scratch on a dataset that
ships lung masks, so that ``python -m cxrcam.evaluate lungs=<its best.pt>`` can score the lung
anatomy of datasets that do not.

    python -m cxrcam.segment                                        # the synthetic phantoms
    python -m cxrcam.segment data=covid_radiography data.root=DATA/COVID-19_Radiography_Dataset

Reads top to bottom: data, split, model, loop, test. Writes ``checkpoints/best.pt`` (the epoch of
the best validation Dice), ``split.csv`` and ``metrics.json`` in its run dir.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from cxrcam.checkpoint import load_checkpoint, provenance, save_checkpoint
from cxrcam.cli import exit_on_bad_arguments, incomplete_outputs, run_stage
from cxrcam.config import config_dir, validate_segment_config
from cxrcam.data.split import file_sha256, stratified_split, write_split
from cxrcam.data.synthetic import ensure_synthetic
from cxrcam.device import select_device, tune_for
from cxrcam.models import count_parameters
from cxrcam.rundir import claim_run_dir
from cxrcam.segmentation.data import lung_mask_pairs, load_pairs
from cxrcam.segmentation.fit import mean_dice, train_epoch
from cxrcam.segmentation.segmenter import build_unet, segmenter_metadata

log = logging.getLogger("cxrcam.segment")


def segment(cfg: dict, run_dir: Path) -> dict:
    """Train, checkpoint and test one segmenter; returns metrics.json's contents."""
    validate_segment_config(cfg)
    data, architecture, trainer = cfg["data"], cfg["model"], cfg["trainer"]
    device = select_device(cfg["device"])
    torch.manual_seed(cfg["seed"])
    tune_for(device)
    size, batch_size = data["image_size"], data["batch_size"]

    # data: the images that have a lung mask, split per class as cxrcam.train splits
    if data["synthetic"]:
        ensure_synthetic(data["root"], **data["synthetic"])
    pairs = lung_mask_pairs(data["root"], list(data["classes"]))
    claim_run_dir(run_dir, "segment")
    mask_of = {str(path): str(mask) for path, _, mask in pairs}
    rows = stratified_split([(path, label) for path, label, _ in pairs], data["val_fraction"], data["test_fraction"],
                            cfg["seed"])
    write_split(rows, run_dir / "split.csv")
    splits = {}
    for split in ("train", "val", "test"):
        chosen = [(r["path"], mask_of[r["path"]]) for r in rows if r["split"] == split]
        splits[split] = load_pairs(chosen, size, f"{split} split")
    log.info("lung masks: %s", {split: len(images) for split, (images, _) in splits.items()})

    # model and optimiser: one-cycle over every step, so the last epochs settle at a low rate
    model = build_unet(architecture).to(device)
    steps_per_epoch = -(-len(splits["train"][0]) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=trainer["lr"], weight_decay=trainer["weight_decay"])
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=trainer["lr"],
                                                    total_steps=trainer["epochs"] * steps_per_epoch)
    generator = torch.Generator().manual_seed(cfg["seed"])
    split_record = {"path": str(run_dir / "split.csv"), "sha256": file_sha256(run_dir / "split.csv")}
    training_data = {"name": data["name"], "root": str(data["root"]), "classes": list(data["classes"]),
                     **{f"n_{split}": len(images) for split, (images, _) in splits.items()}}
    best_path = run_dir / "checkpoints" / "best.pt"

    # loop: best.pt is replaced only by a strictly better validation Dice
    history, best_dice, wall, made_by = [], -1.0, 0.0, provenance()  # git is asked once, not at each best epoch
    for epoch in tqdm(range(1, trainer["epochs"] + 1), desc="training the lung segmenter", unit="epoch"):
        started = time.perf_counter()
        train_loss = train_epoch(model, *splits["train"], batch_size, optimizer, scheduler, device, generator,
                                 f"epoch {epoch}")
        val_dice, _ = mean_dice(model, *splits["val"], batch_size, device)
        elapsed = time.perf_counter() - started
        wall += elapsed
        history.append({"epoch": epoch, "train_loss": train_loss, "val_dice": val_dice,
                        "lr": scheduler.get_last_lr()[0], "epoch_s": round(elapsed, 2), "wall_s": round(wall, 2)})
        log.info("epoch %d: train loss %.4f, val Dice %.4f", epoch, train_loss, val_dice)
        if val_dice > best_dice:
            best_dice = val_dice
            meta = segmenter_metadata(architecture, size, cfg, training_data, split_record, epoch, val_dice,
                                      made_by)
            save_checkpoint({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                             "meta": meta}, best_path)

    # test, once, with the best checkpoint
    best = load_checkpoint(best_path)
    model.load_state_dict(best["state_dict"])
    test_dice, per_image = mean_dice(model, *splits["test"], batch_size, device)
    best["meta"]["test_dice"] = test_dice  # the checkpoint says how well it does on images it never saw
    save_checkpoint(best, best_path)
    report = {"val_dice": best_dice, "test_dice": test_dice, "test_dice_min": min(per_image),
              "best_epoch": best["meta"]["epoch"], "epochs": trainer["epochs"], "train_wall_s": round(wall, 1),
              "image_size": size, "num_parameters": count_parameters(model), "device": str(device),
              "training_data": training_data, "history": history}
    (run_dir / "metrics.json").write_text(json.dumps(report, indent=2))
    log.info("test Dice %.4f (lowest %.4f) on %d images; best epoch %d", test_dice, min(per_image), len(per_image),
             report["best_epoch"])
    return report


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="segment")
def main(cfg: DictConfig) -> float:
    return run_stage("cxrcam.segment", segment, cfg, incomplete_outputs)["val_dice"]


if __name__ == "__main__":
    exit_on_bad_arguments("cxrcam.segment", config_dir(), "segment")
    main()
