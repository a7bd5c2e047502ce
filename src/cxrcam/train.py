"""``python -m cxrcam.train``: fit one model, keep the best checkpoint by validation macro-F1,
and evaluate it once on the held-out test split.

Reads top to bottom: data, model, optimiser, resume, loop, test. Hydra is used only here; the
work itself is done by plain functions of the ``cxrcam`` subpackages.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from cxrcam.checkpoint import build_metadata, load_checkpoint, save_checkpoint
from cxrcam.cli import exit_on_bad_arguments, run_stage
from cxrcam.config import RENAMED_KEYS, config_dir, validate_train_config
from cxrcam.data.batches import ModelInput, SplitBatches, auto_num_workers, epoch_plan, shard
from cxrcam.data.dataset import CXRDataset
from cxrcam.data.layout import discover_images
from cxrcam.data.scan import unreadable_images
from cxrcam.data.split import checkpoint_split_file, file_sha256, read_split, stratified_split, write_split
from cxrcam.data.synthetic import ensure_synthetic
from cxrcam.data.table import table_images
from cxrcam.device import select_device, tune_for
from cxrcam.errors import CxrcamError, StoppedBySignal
from cxrcam.models import DEFAULT_CAM_LAYER, build_model, count_parameters, spatial_layer
from cxrcam.reporting.figures import plot_confusion_matrix, plot_roc, plot_training_curves
from cxrcam.reporting.predictions import write_predictions
from cxrcam.rundir import claim_run_dir, is_requeue_of_its_claimant
from cxrcam.training.distributed import (Processes, any_rank, barrier, broadcast, device_of, gather_objects,
                                         gather_shards, processes_from_env, scratch_hydra_dirs, total)
from cxrcam.training.distributed import start as start_processes
from cxrcam.training.loop import (REFRESH_EVERY, EpochState, predict, probabilities_and_loss, restore_rng_state,
                                  rng_state, train_one_epoch)
from cxrcam.training.metrics import classification_report, quick_metrics
from cxrcam.signals import StopSignals

log = logging.getLogger("cxrcam.train")

# settings a resumed run may change: where the data lives, how fast the run goes and which layer its
# checkpoints name for CAMs, not what it learns (model.pretrained too: the weights come from the checkpoint).
# trainer.early_stop_patience too, like trainer.epochs: it decides how long the trajectory runs, never any
# step of it, so a resumed run is a prefix of the uninterrupted one either way (and checkpoints from
# before it existed lack the key). data.csv and data.image_dir say where a CSV-described set lives; its
# columns, path suffix, label map and split column decide which images and labels it is, so they stay
RESUME_MAY_CHANGE = ("resume", "paths.", "data.name", "data.root", "data.csv", "data.image_dir", "data.split_file",
                     "data.synthetic", "data.num_workers", "data.preload", "data.on_bad_image", "device", "trainer.amp",
                     "trainer.channels_last", "trainer.compile", "trainer.dist_timeout_min", "model.pretrained",
                     "cam.", "trainer.early_stop_patience", "demo_epochs.", "seed_pretrained.")
METRICS_FIELDS = ("epoch", "train_loss", "val_loss", "val_accuracy", "val_balanced_accuracy",
                  "val_macro_f1", "lr", "epoch_s", "wall_s")


def best_epoch_index(history: list[dict]) -> int:
    """The index of the epoch best.pt holds: the first with the highest val macro-F1 (a tie is no
    improvement: best.pt is replaced only by a strictly better one)."""
    scores = [row["val_macro_f1"] for row in history]
    return scores.index(max(scores))


def epochs_without_improvement(history: list[dict]) -> int:
    """Epochs since the best one, from the history alone: a resumed run derives it from last.pt's."""
    return len(history) - 1 - best_epoch_index(history) if history else 0


def split_counts(rows: list[dict], classes: list[str]) -> dict[str, dict[str, int]]:
    """{split: {class: number of images}}."""
    counts = {split: dict.fromkeys(classes, 0) for split in ("train", "val", "test")}
    for row in rows:
        counts[row["split"]][row["label"]] += 1
    return counts


def images_of(data: dict, classes: list[str]) -> tuple[list[tuple[Path, str]], dict[Path, str] | None]:
    """(path, class) of every image data= describes: in class folders, or listed in a CSV file
    (data=csv, which may also give each image's official split)."""
    if "csv" not in data:
        return discover_images(data["root"], classes), None
    return table_images(data["csv"], data["image_dir"], classes, data["path_column"], data["label_column"],
                        data["path_suffix"], data["split_column"], data["label_map"])


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
        items, official = images_of(data, classes)
        skipped = unreadable_images([str(p) for p, _ in items], data["on_bad_image"])
        bad = set(skipped)
        kept = [(p, c) for p, c in items if str(p) not in bad]
        rows = (stratified_split(kept, data["val_fraction"], data["test_fraction"], seed) if official is None
                else [{"path": str(p), "label": c, "split": official[p]} for p, c in kept])
    if skipped:
        log.warning("left out %d unreadable image(s); they are listed in test_metrics.json", len(skipped))
    write_split(rows, run_dir / "split.csv")
    if resumed_sha256 is not None and file_sha256(run_dir / "split.csv") != resumed_sha256:
        raise CxrcamError(f"without the {len(skipped)} unreadable image(s) the split differs from the one the "
                          "resumed checkpoint was trained on; restore those files to resume")
    for split, counts in split_counts(rows, classes).items():
        missing = [c for c, n in counts.items() if n == 0]
        if missing:
            change = (f"data.split_column={data['split_column']!r} (null: draw a split)"
                      if data.get("split_column") else "data.val_fraction / data.test_fraction")
            raise CxrcamError(f"the {split} split has no image of class(es) {missing}; add images or change {change}")
        log.info("%s: %d images %s", split, sum(counts.values()), counts)
    return rows, skipped


def make_batches(rows: list[dict], split: str, classes: list[str], data: dict, device: torch.device,
                 processes: Processes) -> SplitBatches:
    chosen = [r for r in rows if r["split"] == split]
    dataset = CXRDataset([r["path"] for r in chosen], [classes.index(r["label"]) for r in chosen],
                         data["image_size"], preload=data["preload"], desc=f"{split} split")
    workers = data["num_workers"]
    workers = auto_num_workers(processes.local_world) if workers == "auto" else workers
    return SplitBatches(dataset, data["batch_size"], workers, pin_memory=device.type == "cuda")


def sampling_weights(batches: SplitBatches, n_classes: int, class_balance: str) -> torch.Tensor | None:
    """Per-image weights that draw each class equally often, for class_balance=sampler."""
    if class_balance != "sampler":
        return None
    counts = torch.bincount(batches.labels, minlength=n_classes).double()
    return 1.0 / counts[batches.labels]


def predict_split(model: nn.Module, batches: SplitBatches, model_input: ModelInput, device: torch.device,
                  amp: bool, processes: Processes, desc: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Probabilities, labels and mean loss over the whole split: each process predicts its shard."""
    indices = shard(len(batches), processes.rank, processes.world)
    logits, labels = predict(model, batches(indices), batches.steps(len(indices)), model_input, device, amp, desc)
    return probabilities_and_loss(*gather_shards((logits, labels), processes))


def class_weights(rows: list[dict], classes: list[str]) -> torch.Tensor:
    """Inverse-frequency weights over the train split, normalised so a balanced set gets 1 per class."""
    counts = np.array(list(split_counts(rows, classes)["train"].values()))
    return torch.tensor(counts.sum() / (len(classes) * counts), dtype=torch.float32)


def make_optimizer(params, optim: dict, epochs: int, steps_per_epoch: int, fused: bool = False):
    """``fused`` (CUDA): one kernel per step, and with a GradScaler no host sync to check for inf."""
    kind = torch.optim.Adam if optim["name"] == "adam" else torch.optim.AdamW
    optimizer = kind(params, lr=optim["lr"], weight_decay=optim["weight_decay"], fused=fused or None)
    if optim["scheduler"] == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=optim["lr"],
                                                        total_steps=epochs * steps_per_epoch)
    elif optim["scheduler"] == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    else:
        scheduler = None
    return optimizer, scheduler


def weights_on_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


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


@contextmanager
def out_of_memory_names_its_settings(data: dict, device: torch.device) -> Iterator[None]:
    try:
        yield
    except torch.OutOfMemoryError:
        raise CxrcamError(f"{device} ran out of memory with data.batch_size={data['batch_size']} (per process) at "
                          f"data.image_size={data['image_size']}; lower data.batch_size (or the image size)") from None


def check_resumable(checkpoint: dict, cfg: dict, processes: int = 1) -> None:
    """A resumed run continues the checkpoint's trajectory: every setting that shapes it (model,
    optimiser, schedule, batch, size, augmentation, split fractions, ...) must be the checkpoint's.
    Only where the data lives and how fast it runs may change; trainer.epochs only without a
    schedule that spans them."""
    if "training" not in checkpoint:
        raise CxrcamError(f"resume={cfg['resume']} holds no training state; resume from checkpoints/last.pt")
    trained_by = checkpoint["training"].get("processes", 1)
    if trained_by != processes:
        raise CxrcamError(f"cannot resume with {processes} process(es): the checkpoint was trained by {trained_by}, "
                          "and data.batch_size is per process, so the global batch would change; resume with "
                          f"{trained_by}")
    # a checkpoint written before a key was renamed holds it by its old name
    trained = {RENAMED_KEYS.get(key, key): value for key, value in _flatten(checkpoint["meta"]["config"]).items()}
    asked = _flatten(cfg)
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
    """Train, checkpoint and test one model; returns the test report (also in test_metrics.json).

    Under torchrun (or a SLURM job step of several tasks) every process runs this on its share of
    each batch; only rank 0 writes the run dir, which is rank 0's."""
    validate_train_config(cfg)
    data, model_cfg, optim, trainer = cfg["data"], cfg["model"], cfg["optim"], cfg["trainer"]
    classes = list(data["classes"])
    processes = processes_from_env()
    device = device_of(processes, select_device(cfg["device"]))
    start_processes(processes, device, trainer["dist_timeout_min"])
    run_dir, main = broadcast(run_dir, processes), processes.is_main
    if not main:
        logging.getLogger("cxrcam").setLevel(logging.WARNING)
    torch.manual_seed(cfg["seed"])
    tune_for(device)
    if trainer["sync_batchnorm"] and processes.world > 1 and device.type != "cuda":
        raise CxrcamError("trainer.sync_batchnorm=true needs CUDA GPUs (PyTorch's SyncBatchNorm has no CPU "
                          "version); set trainer.sync_batchnorm=false")
    requeued = run_dir / "checkpoints" / "last.pt"
    if cfg["resume"] is None and broadcast(main and is_requeue_of_its_claimant(run_dir) and requeued.is_file(),
                                           processes):
        cfg = {**cfg, "resume": str(requeued)}  # SLURM requeued this job: it continues where it stopped
    resume = load_checkpoint(cfg["resume"]) if cfg["resume"] else None
    if resume is not None:
        check_resumable(resume, cfg, processes.world)
    # the model and the split file before any data, so that what does not fit stops the run early;
    # a resumed run's weights come from its checkpoint, not from model.pretrained
    model = build_model(model_cfg["name"], len(classes), data["image_size"], dropout=model_cfg["dropout"],
                        pretrained=model_cfg["pretrained"] if resume is None else False,
                        pooled_size=model_cfg.get("pooled_size"))
    # the layer a resumed run's checkpoints name stays its own unless cam.layer says otherwise
    own_layer = resume["meta"]["target_layer"] if resume is not None else DEFAULT_CAM_LAYER[model_cfg["name"]]
    cam_layer = cfg["cam"]["layer"] or own_layer
    spatial_layer(model, cam_layer, data["image_size"])
    split_source = Path(data["split_file"]) if data["split_file"] else None
    if resume is not None and split_source is None:
        split_source = checkpoint_split_file(resume["meta"], cfg["resume"], "data.split_file")
    elif resume is not None and file_sha256(split_source) != resume["meta"]["split"]["sha256"]:
        raise CxrcamError(f"data.split_file={split_source} is not the split the resumed checkpoint was trained on "
                          "(its sha256 differs); drop data.split_file or pass that run's own split.csv")
    if main:
        claim_run_dir(run_dir, "train", hint="set hydra.run.dir to a new folder (to continue a run: "
                      "resume=<that run>/checkpoints/last.pt)")
    checkpoint_dir = run_dir / "checkpoints"
    global_batch = data["batch_size"] * processes.world
    log.info("run dir %s, device %s, %d process(es) x batch %d = global batch %d", run_dir, device,
             processes.world, data["batch_size"], global_batch)

    # data: rank 0 makes the split, the others read it
    if main:
        if data["synthetic"]:
            ensure_synthetic(data["root"], **data["synthetic"])
        rows, skipped = make_split(data, cfg["seed"], run_dir, split_source,
                                   resume["meta"]["split"]["sha256"] if resume is not None else None)
    barrier(processes)
    if not main:
        rows, skipped = read_split(run_dir / "split.csv", classes, key="data.split_file"), []
    train_batches, val_batches = (make_batches(rows, split, classes, data, device, processes)
                                  for split in ("train", "val"))
    balance = sampling_weights(train_batches, len(classes), trainer["class_balance"])
    model_input = ModelInput(data["mean"], data["std"], trainer["channels_last"])
    model = model.to(device, memory_format=torch.channels_last if trainer["channels_last"] else torch.preserve_format)
    if trainer["sync_batchnorm"] and processes.world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    fit_model = DistributedDataParallel(model) if processes.world > 1 else model
    fit_model = torch.compile(fit_model) if trainer["compile"] else fit_model
    meta = build_metadata(model_cfg["name"], classes, data["image_size"], data["mean"], data["std"],
                          cam_layer, cfg, str(run_dir / "split.csv"),
                          file_sha256(run_dir / "split.csv"))

    # optimiser and loss
    weights = class_weights(rows, classes).to(device) if trainer["class_balance"] == "loss" else None
    criterion = nn.CrossEntropyLoss(weight=weights)
    steps = train_batches.steps(math.ceil(len(train_batches) / processes.world))  # per epoch
    optimizer, scheduler = make_optimizer(model.parameters(), optim, trainer["epochs"], steps,
                                          fused=device.type == "cuda")
    use_amp = trainer["amp"] and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_amp else None

    # resume: at the end of an epoch, or mid-epoch after a stop signal
    start_epoch, best_f1, history, partial = 1, -1.0, [], None
    if resume is not None:
        state = resume["training"]
        model.load_state_dict(resume["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"][processes.rank] if isinstance(state["rng"], list) else state["rng"])
        start_epoch, best_f1, history = state["epoch"] + 1, state["best_val_macro_f1"], state["history"]
        if state.get("partial_epoch"):  # its loss so far is the sum over all processes: rank 0 carries it
            partial = state["partial_epoch"]
            partial = EpochState(partial["step"], partial["loss_sum"].to(device) * main, partial["images"] * main)
        previous_best = Path(cfg["resume"]).with_name("best.pt")
        if not previous_best.is_file():
            raise CxrcamError(f"cannot resume: {previous_best} is missing; it must sit beside {cfg['resume']}")
        if main and previous_best.resolve() != (checkpoint_dir / "best.pt").resolve():  # not a requeue
            checkpoint_dir.mkdir(exist_ok=True)
            shutil.copy2(previous_best, checkpoint_dir / "best.pt")  # later epochs replace it if they beat it
        log.info("resumed from %s at epoch %d%s", cfg["resume"], start_epoch,
                 f", step {partial.step}" if partial else "")

    def save_last(epoch: int, epoch_meta: dict, partial_epoch: EpochState | None = None) -> None:
        """last.pt: everything a resumed run needs to continue exactly (every rank's RNG state)."""
        rngs = gather_objects(rng_state(), processes)
        if partial_epoch is not None:
            loss_sum, images = epoch_totals(partial_epoch)
            partial_epoch = EpochState(partial_epoch.step, torch.tensor(loss_sum), int(images))
        if not main:
            return
        save_checkpoint({"state_dict": weights_on_cpu(model), "meta": epoch_meta, "training": {
            "epoch": epoch, "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": rngs, "processes": processes.world, "best_val_macro_f1": best_f1, "history": history,
            "partial_epoch": None if partial_epoch is None else {
                "step": partial_epoch.step, "loss_sum": partial_epoch.loss_sum.cpu(), "images": partial_epoch.images},
        }}, checkpoint_dir / "last.pt")

    def epoch_totals(state: EpochState) -> tuple[float, float]:
        """The summed loss and the images of the epoch so far, over all processes."""
        both = torch.stack([state.loss_sum.float(), torch.tensor(float(state.images), device=device)])
        loss_sum, images = total(both, processes).tolist()
        return loss_sum, images

    stop_requested = StopSignals()

    def should_stop(step: int) -> bool:
        """Every step alone; under DDP every REFRESH_EVERY steps, all ranks together."""
        if processes.world == 1:
            return stop_requested()
        return step % REFRESH_EVERY == 0 and any_rank(stop_requested(), processes, device)

    # loop
    def stop(epoch: int, step: int) -> None:
        """After a stop signal: last.pt is saved; the previous handler (submitit's requeue) or one line."""
        if main:
            log.warning("stopped by %s at epoch %d after step %d; checkpoints/last.pt continues from there",
                        stop_requested.name, epoch, step)
        stop_requested.hand_over()
        raise StoppedBySignal(f"stopped by {stop_requested.name} at epoch {epoch} after step {step}; "
                              f"{how_to_resume(run_dir)}", stop_requested.received)

    patience = trainer.get("early_stop_patience")

    def stops_early() -> bool:
        """``patience`` epochs without a better val macro-F1. The history is the same on every rank
        (validation gathers every rank's predictions), but rank 0's decision is broadcast anyway, so
        no rank can go on alone into a collective."""
        return patience is not None and broadcast(epochs_without_improvement(history) >= patience, processes)

    wall, stopped_early = (history[-1]["wall_s"] if history else 0.0), False
    with stop_requested, out_of_memory_names_its_settings(data, device):
        for epoch in tqdm(range(start_epoch, trainer["epochs"] + 1), desc=f"training {model_cfg['name']}",
                          unit="epoch", initial=start_epoch - 1, total=trainer["epochs"]):
            if stops_early():  # before the next epoch, so a run resumed from such a last.pt stops too
                stopped_early = True
                log.info("early stop after epoch %d: no better val macro-F1 for %d epochs; best epoch %d",
                         history[-1]["epoch"], epochs_without_improvement(history),
                         history[best_epoch_index(history)]["epoch"])
                break
            if epoch > start_epoch and any_rank(stop_requested(), processes, device):  # came after the last step
                stop(epoch - 1, steps)
            started = time.perf_counter()
            indices, augment = epoch_plan(len(train_batches), global_batch, cfg["seed"], epoch, data["augment"],
                                          processes.rank, processes.world, balance)
            state = train_one_epoch(fit_model, train_batches(indices, augment, partial.step if partial else 0),
                                    steps, criterion, optimizer, scheduler, model_input, device, epoch, scaler,
                                    partial, should_stop)
            partial = None
            if state.step < steps:
                save_last(epoch - 1, {**meta, "epoch": epoch - 1}, state)
                stop(epoch, state.step)
            loss_sum, images = epoch_totals(state)
            train_loss = loss_sum / max(images, 1)
            probs, labels, val_loss = predict_split(model, val_batches, model_input, device, use_amp, processes,
                                                    "validate")
            val = quick_metrics(labels, probs)
            elapsed = time.perf_counter() - started
            wall += elapsed
            history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                            **{f"val_{k}": v for k, v in val.items()},
                            "lr": optimizer.param_groups[0]["lr"], "epoch_s": elapsed, "wall_s": wall})
            log.info("epoch %d: train loss %.4f, val loss %.4f, val acc %.4f, balanced acc %.4f, macro-F1 %.4f",
                     epoch, train_loss, val_loss, val["accuracy"], val["balanced_accuracy"], val["macro_f1"])
            epoch_meta = {**meta, "epoch": epoch, "val_metrics": val}
            if val["macro_f1"] > best_f1:
                best_f1 = val["macro_f1"]
                if main:
                    save_checkpoint({"state_dict": weights_on_cpu(model), "meta": epoch_meta},
                                    checkpoint_dir / "best.pt")
            if main:
                write_metrics_csv(history, run_dir / "metrics.csv")
            save_last(epoch, epoch_meta)

    # test, once, with the best checkpoint
    barrier(processes)
    best = load_checkpoint(checkpoint_dir / "best.pt")
    model.load_state_dict(best["state_dict"])
    test_rows = [r for r in rows if r["split"] == "test"]
    with out_of_memory_names_its_settings(data, device):
        probs, labels, _ = predict_split(model, make_batches(rows, "test", classes, data, device, processes),
                                         model_input, device, use_amp, processes, "test")
    report = {
        "model": model_cfg["name"],
        "best_epoch": best["meta"]["epoch"],
        "best_val_macro_f1": best_f1,
        "epochs": trainer["epochs"],
        "epochs_run": history[-1]["epoch"] if history else 0,
        "early_stop_patience": patience,
        "stopped_early": stopped_early,
        "train_wall_s": round(wall, 1),
        "num_parameters": count_parameters(model),
        "image_size": data["image_size"],
        "device": str(device),
        "processes": processes.world,
        "batch_size_per_process": data["batch_size"],
        "global_batch_size": global_batch,
        "skipped_images": skipped,
        **classification_report(labels, probs, classes),
    }
    if not main:
        return report
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
    exit_on_bad_arguments("cxrcam.train", config_dir(), "train", RENAMED_KEYS)
    sys.argv = scratch_hydra_dirs(sys.argv, processes_from_env())
    main()
