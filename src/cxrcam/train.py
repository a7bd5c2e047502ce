"""``python -m cxrcam.train``: fit one model, keep the best checkpoint by validation macro-F1,
and evaluate it once on the held-out test split.

Reads top to bottom: data, model, optimiser, resume, loop, test. Hydra is used only here; the
work itself is done by plain functions of the ``cxrcam`` subpackages.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, WeightedRandomSampler
from tqdm import tqdm

from cxrcam.cli import exit_on_bad_arguments, run_stage
from cxrcam.config import config_dir, validate_train_config
from cxrcam.data.dataset import CXRDataset, build_transform
from cxrcam.data.layout import discover_images
from cxrcam.data.scan import unreadable_images
from cxrcam.data.split import checkpoint_split_file, file_sha256, read_split, stratified_split, write_split
from cxrcam.data.synthetic import ensure_synthetic
from cxrcam.errors import CxrcamError
from cxrcam.models import build_model, count_parameters, spatial_layer
from cxrcam.reporting.figures import plot_confusion_matrix, plot_roc, plot_training_curves
from cxrcam.reporting.predictions import write_predictions
from cxrcam.rundir import claim_run_dir
from cxrcam.training.checkpoint import build_metadata, load_checkpoint, save_checkpoint
from cxrcam.training.loop import predict, restore_rng_state, rng_state, select_device, train_one_epoch
from cxrcam.training.metrics import classification_report, quick_metrics

log = logging.getLogger("cxrcam.train")

# settings a resumed run may change: where the data lives and how fast the run goes, not what it learns
# (model.pretrained too: the weights come from the checkpoint)
RESUME_MAY_CHANGE = ("resume", "seed", "paths.", "data.name", "data.root", "data.split_file", "data.synthetic",
                     "data.num_workers", "data.preload", "data.on_bad_image", "trainer.device", "trainer.amp",
                     "trainer.channels_last", "model.pretrained", "demo_epochs.")
METRICS_FIELDS = ("epoch", "train_loss", "val_loss", "val_accuracy", "val_balanced_accuracy",
                  "val_macro_f1", "lr", "epoch_s", "wall_s")


def split_counts(rows: list[dict], classes: list[str]) -> dict[str, dict[str, int]]:
    """{split: {class: number of images}}."""
    counts = {split: dict.fromkeys(classes, 0) for split in ("train", "val", "test")}
    for row in rows:
        counts[row["split"]][row["label"]] += 1
    return counts


def make_split(data: dict, seed: int, run_dir: Path, source: Path | None,
               resumed_sha256: str | None) -> tuple[list[dict], list[str]]:
    """The split of this run, written to ``<run_dir>/split.csv`` (from ``source`` when given: a
    resumed run must reuse its own, whose hash is ``resumed_sha256``), and the unreadable images
    left out of it."""
    classes = list(data["classes"])
    if source is not None:
        rows = read_split(source, classes, key="data.split_file")
        skipped = unreadable_images([r["path"] for r in rows], data["on_bad_image"])
        bad = set(skipped)
        rows = [r for r in rows if r["path"] not in bad]
    else:
        items = discover_images(data["root"], classes)
        skipped = unreadable_images([str(p) for p, _ in items], data["on_bad_image"])
        bad = set(skipped)
        rows = stratified_split([(p, c) for p, c in items if str(p) not in bad], data["val_fraction"],
                                data["test_fraction"], seed)
    if skipped:
        log.warning("left out %d unreadable image(s); they are listed in test_metrics.json", len(skipped))
    write_split(rows, run_dir / "split.csv")
    if resumed_sha256 is not None and file_sha256(run_dir / "split.csv") != resumed_sha256:
        raise CxrcamError(f"without the {len(skipped)} unreadable image(s) the split differs from the one the "
                          "resumed checkpoint was trained on; restore those files to resume")
    for split, counts in split_counts(rows, classes).items():
        missing = [c for c, n in counts.items() if n == 0]
        if missing:
            raise CxrcamError(f"the {split} split has no image of class(es) {missing}; "
                              "add images or change data.val_fraction / data.test_fraction")
        log.info("%s: %d images %s", split, sum(counts.values()), counts)
    return rows, skipped


def make_loader(rows: list[dict], split: str, classes: list[str], data: dict, augment: bool,
                class_balance: str = "none") -> DataLoader:
    chosen = [r for r in rows if r["split"] == split]
    labels = [classes.index(r["label"]) for r in chosen]
    transform = build_transform(data["mean"], data["std"], data["augment"] if augment else None)
    dataset = CXRDataset([r["path"] for r in chosen], labels, data["image_size"], transform,
                         preload=data["preload"], desc=f"{split} split")
    sampler = None
    if class_balance == "sampler":
        counts = np.bincount(labels, minlength=len(classes))
        sampler = WeightedRandomSampler(torch.tensor(1.0 / counts[labels]), len(labels), replacement=True)
    return DataLoader(dataset, batch_size=data["batch_size"], shuffle=augment and sampler is None,
                      sampler=sampler, num_workers=data["num_workers"],
                      persistent_workers=data["num_workers"] > 0)


def class_weights(rows: list[dict], classes: list[str]) -> torch.Tensor:
    """Inverse-frequency weights over the train split, normalised so a balanced set gets 1 per class."""
    counts = np.array(list(split_counts(rows, classes)["train"].values()))
    return torch.tensor(counts.sum() / (len(classes) * counts), dtype=torch.float32)


def make_optimizer(params, optim: dict, epochs: int, steps_per_epoch: int):
    kind = torch.optim.Adam if optim["name"] == "adam" else torch.optim.AdamW
    optimizer = kind(params, lr=optim["lr"], weight_decay=optim["weight_decay"])
    if optim["scheduler"] == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=optim["lr"],
                                                        total_steps=epochs * steps_per_epoch)
    elif optim["scheduler"] == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    else:
        scheduler = None
    return optimizer, scheduler


def write_metrics_csv(history: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRICS_FIELDS)
        writer.writeheader()
        writer.writerows(history)


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_resumable(checkpoint: dict, cfg: dict) -> None:
    """A resumed run continues the checkpoint's trajectory: every setting that shapes it (model,
    optimiser, schedule, batch, size, augmentation, split fractions, ...) must be the checkpoint's.
    Only where the data lives and how fast it runs may change; trainer.epochs only without a
    schedule that spans them."""
    if "training" not in checkpoint:
        raise CxrcamError(f"resume={cfg['resume']} holds no training state; resume from checkpoints/last.pt")
    trained, asked = _flatten(checkpoint["meta"]["config"]), _flatten(cfg)
    missing = object()
    for key in sorted(set(trained) | set(asked)):
        if key.startswith(RESUME_MAY_CHANGE) or key == "trainer.epochs":
            continue
        before, now = trained.get(key, missing), asked.get(key, missing)
        if before != now:
            before, now = ("(not set)" if value is missing else repr(value) for value in (before, now))
            raise CxrcamError(f"cannot resume with {key}={now}: the checkpoint was trained with {key}={before}, "
                              "and a resumed run continues its trajectory; resume with the run's own settings (its "
                              ".hydra/overrides.yaml lists them), or start a new run to change them")
    planned, epochs = trained["trainer.epochs"], asked["trainer.epochs"]
    if cfg["optim"]["scheduler"] != "none" and planned != epochs:
        raise CxrcamError(f"cannot resume with trainer.epochs={epochs}: the {cfg['optim']['scheduler']} "
                          f"schedule spans the checkpoint's trainer.epochs={planned}; pass that")


def train(cfg: dict, run_dir: Path) -> dict:
    """Train, checkpoint and test one model; returns the test report (also in test_metrics.json)."""
    validate_train_config(cfg)
    data, model_cfg, optim, trainer = cfg["data"], cfg["model"], cfg["optim"], cfg["trainer"]
    classes = list(data["classes"])
    torch.manual_seed(cfg["seed"])
    device = select_device(trainer["device"], key="trainer.device")
    channels_last = trainer["channels_last"]
    resume = load_checkpoint(cfg["resume"]) if cfg["resume"] else None
    if resume is not None:
        check_resumable(resume, cfg)
    # the model and the split file before any data, so that what does not fit stops the run early;
    # a resumed run's weights come from its checkpoint, not from model.pretrained
    model = build_model(model_cfg["name"], len(classes), data["image_size"], dropout=model_cfg["dropout"],
                        pretrained=model_cfg["pretrained"] if resume is None else False,
                        pooled_size=model_cfg.get("pooled_size"))
    spatial_layer(model, model_cfg["target_layer"], data["image_size"], key="model.target_layer")
    split_source = Path(data["split_file"]) if data["split_file"] else None
    if resume is not None and split_source is None:
        split_source = checkpoint_split_file(resume["meta"], cfg["resume"], "data.split_file")
    elif resume is not None and file_sha256(split_source) != resume["meta"]["split"]["sha256"]:
        raise CxrcamError(f"data.split_file={split_source} is not the split the resumed checkpoint was trained on "
                          "(its sha256 differs); drop data.split_file or pass that run's own split.csv")
    claim_run_dir(run_dir, "train", hint="set hydra.run.dir to a new folder (to continue a run: "
                  "resume=<that run>/checkpoints/last.pt)")
    checkpoint_dir = run_dir / "checkpoints"
    log.info("run dir %s, device %s", run_dir, device)

    # data
    if data["synthetic"]:
        ensure_synthetic(data["root"], **data["synthetic"])
    rows, skipped = make_split(data, cfg["seed"], run_dir, split_source,
                               resume["meta"]["split"]["sha256"] if resume is not None else None)
    train_loader = make_loader(rows, "train", classes, data, augment=True,
                               class_balance=trainer["class_balance"])
    val_loader = make_loader(rows, "val", classes, data, augment=False)
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    meta = build_metadata(model_cfg["name"], classes, data["image_size"], data["mean"], data["std"],
                          model_cfg["target_layer"], cfg, str(run_dir / "split.csv"),
                          file_sha256(run_dir / "split.csv"))

    # optimiser and loss
    weights = class_weights(rows, classes).to(device) if trainer["class_balance"] == "loss" else None
    criterion = nn.CrossEntropyLoss(weight=weights)
    optimizer, scheduler = make_optimizer(model.parameters(), optim, trainer["epochs"], len(train_loader))
    use_amp = trainer["amp"] and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_amp else None

    # resume
    start_epoch, best_f1, history = 1, -1.0, []
    if resume is not None:
        state = resume["training"]
        model.load_state_dict(resume["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        start_epoch, best_f1, history = state["epoch"] + 1, state["best_val_macro_f1"], state["history"]
        previous_best = Path(cfg["resume"]).with_name("best.pt")
        if not previous_best.is_file():
            raise CxrcamError(f"cannot resume: {previous_best} is missing; it must sit beside {cfg['resume']}")
        checkpoint_dir.mkdir(exist_ok=True)
        shutil.copy2(previous_best, checkpoint_dir / "best.pt")  # later epochs replace it if they beat it
        log.info("resumed from %s at epoch %d", cfg["resume"], start_epoch)

    # loop
    wall = history[-1]["wall_s"] if history else 0.0
    for epoch in tqdm(range(start_epoch, trainer["epochs"] + 1), desc=f"training {model_cfg['name']}",
                      unit="epoch", initial=start_epoch - 1, total=trainer["epochs"]):
        started = time.perf_counter()
        train_loss = train_one_epoch(model, train_loader, criterion, optimizer, scheduler, device, epoch,
                                     channels_last, scaler)
        probs, labels, val_loss = predict(model, val_loader, device, channels_last, use_amp, desc="validate")
        val = quick_metrics(labels, probs)
        elapsed = time.perf_counter() - started
        wall += elapsed
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                        **{f"val_{k}": v for k, v in val.items()},
                        "lr": optimizer.param_groups[0]["lr"], "epoch_s": elapsed, "wall_s": wall})
        write_metrics_csv(history, run_dir / "metrics.csv")
        log.info("epoch %d: train loss %.4f, val loss %.4f, val acc %.4f, balanced acc %.4f, macro-F1 %.4f",
                 epoch, train_loss, val_loss, val["accuracy"], val["balanced_accuracy"], val["macro_f1"])
        weights_cpu = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        epoch_meta = {**meta, "epoch": epoch, "val_metrics": val}
        if val["macro_f1"] > best_f1:
            best_f1 = val["macro_f1"]
            save_checkpoint({"state_dict": weights_cpu, "meta": epoch_meta}, checkpoint_dir / "best.pt")
        save_checkpoint({"state_dict": weights_cpu, "meta": epoch_meta, "training": {
            "epoch": epoch, "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": rng_state(), "best_val_macro_f1": best_f1, "history": history,
        }}, checkpoint_dir / "last.pt")

    # test, once, with the best checkpoint
    best = load_checkpoint(checkpoint_dir / "best.pt")
    model.load_state_dict(best["state_dict"])
    test_rows = [r for r in rows if r["split"] == "test"]
    test_loader = make_loader(rows, "test", classes, data, augment=False)
    probs, labels, _ = predict(model, test_loader, device, channels_last, use_amp, desc="test")
    report = {
        "model": model_cfg["name"],
        "best_epoch": best["meta"]["epoch"],
        "best_val_macro_f1": best_f1,
        "epochs": trainer["epochs"],
        "train_wall_s": round(wall, 1),
        "num_parameters": count_parameters(model),
        "image_size": data["image_size"],
        "device": str(device),
        "skipped_images": skipped,
        **classification_report(labels, probs, classes),
    }
    (run_dir / "test_metrics.json").write_text(json.dumps(report, indent=2))
    write_predictions(run_dir / "test_predictions.csv",
                      [(r["path"], r["label"], p) for r, p in zip(test_rows, probs, strict=True)], classes)
    title = f"{model_cfg['name']} (best epoch {report['best_epoch']})"
    plot_confusion_matrix(report["confusion_matrix"], classes, run_dir / "confusion_matrix.png",
                          title=f"{title}: test confusion matrix")
    plot_roc(labels, probs, classes, run_dir / "roc.png", title=f"{title}: test ROC, one vs rest")
    plot_training_curves(history, run_dir / "training_curves.png", title=f"{model_cfg['name']}: training")
    log.info("test: accuracy %.4f, balanced accuracy %.4f, macro-F1 %.4f, macro AUROC %s",
             report["accuracy"], report["balanced_accuracy"], report["macro_f1"], report["macro_auroc"])
    return report


def how_to_resume(run_dir: Path) -> str:
    last = run_dir / "checkpoints" / "last.pt"
    if last.is_file():
        return (f"to continue: python -m cxrcam.train <the same overrides> resume={last.absolute()} "
                "(into a new run dir: drop or change hydra.run.dir)")
    if (run_dir / "split.csv").exists():
        return f"no epoch was saved yet, so there is nothing to resume: start again in a new run dir ({run_dir} is taken)"
    return "no epoch was saved yet, so there is nothing to resume: start again"


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float:
    report = run_stage("cxrcam.train", train, cfg, how_to_resume)
    return report["best_val_macro_f1"]  # what a sweeper may optimise: never the test score


if __name__ == "__main__":
    exit_on_bad_arguments("cxrcam.train", config_dir(), "train")
    main()
