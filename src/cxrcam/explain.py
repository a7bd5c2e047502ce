"""``python -m cxrcam.explain``: Grad-CAM overlays, per-class panels and model comparisons for
checkpoints written by ``cxrcam.train``.

    python -m cxrcam.explain ckpt=RUN/checkpoints/best.pt image=some.png
    python -m cxrcam.explain ckpt=RUN/checkpoints/best.pt image=folder/        # recursive
    python -m cxrcam.explain ckpt=RUN/checkpoints/best.pt split=test per_class=2
    python -m cxrcam.explain sweep=MULTIRUN_DIR split=test per_class=2         # + comparison.png
    python -m cxrcam.explain ckpt=[a.pt,b.pt] image=folder/
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from cxrcam.cli import exit_on_bad_arguments, run_over_files
from cxrcam.config import config_dir, validate_explain_config
from cxrcam.data.images import read_grayscale, resize_grayscale
from cxrcam.data.layout import IMAGE_EXTENSIONS, IMAGES_FOLDER, images_under
from cxrcam.data.split import split_images
from cxrcam.device import select_device
from cxrcam.errors import CxrcamError
from cxrcam.explanation.methods import make_cam
from cxrcam.loaded_run import CamLayer, LoadedRun, load_runs
from cxrcam.reporting.overlays import plot_model_comparison, resize_cam, save_class_panel, save_overlay
from cxrcam.reporting.predictions import write_predictions
from cxrcam.rundir import claim_run_dir

log = logging.getLogger("cxrcam.explain")
TARGETS = ("predicted", "true", "all")
PNG_WRITERS = 2  # threads drawing and writing the PNGs while the next batch is read and explained; PIL's PNG
# encoder, most of the time an image takes, releases the GIL


def select_samples(cfg: dict, run: LoadedRun) -> list[tuple[str, str | None]]:
    """(path, true label or None): the given file or folder, or per_class images of the checkpoint's
    own split (verified by its sha256) or of split_file=. A file's label is known when it lies in
    the class layout (:func:`layout_label`)."""
    if cfg["image"]:
        image, classes = Path(cfg["image"]), run.class_names
        if image.is_dir():
            found = [(str(p), layout_label(p, classes)) for p in images_under(image)]
            if not found:
                raise CxrcamError(f"image={image} holds no image file ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                                  "nothing to explain")
            return found
        if image.is_file():
            return [(str(image), layout_label(image, classes))]
        raise CxrcamError(f"image={image} does not exist; pass an image file or a folder")
    if cfg["split"]:  # the same images on every call and for every model
        return split_images(str(run.split_file(cfg["split_file"])), run.class_names, cfg["split"], cfg["per_class"])
    raise CxrcamError("say what to explain: image=<file or folder> or split=test [per_class=N]")


def layout_label(path: Path, class_names: list[str]) -> str | None:
    """The true class of an image in the dataset layout ``<root>/<class>/images/.../x.png`` (as
    training reads it) when ``<class>`` is one of the model's classes; None elsewhere."""
    folder = next((p for p in Path(os.path.abspath(path)).parents if p.name == IMAGES_FOLDER), None)
    return folder.parent.name if folder is not None and folder.parent.name in class_names else None


def cam_targets(target: str, class_names: list[str], predicted: int, true: str | None) -> list[int]:
    """The classes whose overlay is written for one image."""
    if target == "predicted":
        return [predicted]
    if target == "all":
        return list(range(len(class_names)))
    if target == "true":
        return [class_names.index(true)] if true in class_names else [predicted]
    return [class_names.index(target)]


def cam_layer(run: LoadedRun, cam_cfg: dict) -> CamLayer:
    """The layer a run's CAMs are taken at; a target or a layer that does not fit the model is a
    CxrcamError."""
    if cam_cfg["target"] not in (*TARGETS, *run.class_names):
        raise CxrcamError(f"cam.target={cam_cfg['target']!r} is not one of {[*TARGETS, *run.class_names]}")
    return run.cam_layer(cam_cfg["layer"])


def explain_run(run: LoadedRun, layer: CamLayer, samples: list[tuple[str, str | None]], cam_cfg: dict,
                batch_size: int, out_dir: Path, keep: set[str]) -> tuple[list[dict], list[str]]:
    """Overlays, panels, predictions.csv and cams.npz for one model; returns a result per readable
    image (with its image and CAM when its path is in ``keep``, for the comparison figure) and the
    files that could not be read. Images are decoded a batch at a time, so memory stays bounded."""
    classes, size = run.class_names, run.image_size
    cam = make_cam(cam_cfg["method"], run.model, layer.module, cam_cfg["aug_smooth"], cam_cfg["eigen_smooth"])
    for folder in ("overlays", "panels"):
        (out_dir / folder).mkdir(parents=True, exist_ok=True)

    results, all_cams, failures, pending = [], [], [], []
    with ThreadPoolExecutor(PNG_WRITERS) as writer:
        for start in tqdm(range(0, len(samples), batch_size), desc=f"explaining {run.model_name}",
                          unit="batch"):
            batch, unread = read_batch(samples[start:start + batch_size], size, cam_cfg["overlay_size"] == "original")
            failures += unread
            if not batch:
                continue
            cams, logits = cam.per_class(run.batch([gray for _, _, gray, _ in batch]))  # (batch, classes, size, size)
            cams = cams.cpu().numpy()  # drawn and saved on the host: one copy per batch
            probs = logits.float().softmax(1).cpu().numpy()
            all_cams.append(cams.astype(np.float16))
            drawn = []
            for (path, label, gray, original), p, c in zip(batch, probs, cams, strict=True):
                predicted = int(p.argmax())
                stem = f"{len(results):04d}_{Path(path).stem}"
                title = panel_title(path, label, classes[predicted], run.model_name)
                drawn += draw_pictures(writer, (gray, original, c, p), classes, cam_cfg, out_dir, stem, title, label)
                result = {"path": path, "label": label, "predicted": classes[predicted],
                          "probability": float(p[predicted]), "probs": p}
                if path in keep:
                    result.update(gray=gray, cam=c[predicted])
                results.append(result)
            wait_for(pending)  # the batch before: at most two batches of images wait for their files
            pending = drawn
        wait_for(pending)
    write_predictions(out_dir / "predictions.csv", [(r["path"], r["label"], r["probs"]) for r in results], classes)
    if all_cams:
        np.savez_compressed(out_dir / "cams.npz", cams=np.concatenate(all_cams),
                            paths=np.array([r["path"] for r in results]),
                            labels=np.array([r["label"] or "" for r in results]),
                            predicted=np.array([classes.index(r["predicted"]) for r in results]),
                            class_names=np.array(classes), method=cam_cfg["method"], layer=layer.name)
    return results, failures


def panel_title(path: str, label: str | None, predicted: str, model_name: str) -> str:
    return f"{Path(path).name}: true {label or '?'}, predicted {predicted} ({model_name})"


def read_batch(samples: list[tuple[str, str | None]], size: int,
               keep_original: bool) -> tuple[list[tuple], list[str]]:
    """(path, label, the image as the model sees it, the original or None) per readable file, and
    the files that could not be read. Each file is decoded once: for the model and for an
    original-size overlay."""
    batch, failures = [], []
    for path, label in samples:
        try:
            original = read_grayscale(path)
        except CxrcamError as exc:
            log.error("%s", exc)
            failures.append(path)
            continue
        batch.append((path, label, resize_grayscale(original, size), original if keep_original else None))
    return batch, failures


def draw_pictures(writer: ThreadPoolExecutor, arrays: tuple, classes: list[str], cam_cfg: dict, out_dir: Path,
                  stem: str, title: str, label: str | None) -> list[Future]:
    """Queue one image's panel and overlays on the writer threads. ``arrays``: the image as the
    model saw it, the original (or None), its CAMs (classes, size, size) and class probabilities."""
    gray, original, cams, probs = arrays
    predicted = int(probs.argmax())
    futures = [writer.submit(save_class_panel, gray, cams, probs, classes, out_dir / "panels" / f"{stem}.png", title,
                             cam_cfg["colormap"], cam_cfg["alpha"])]
    for k in cam_targets(cam_cfg["target"], classes, predicted, label):
        futures.append(writer.submit(write_overlay, gray, original, cams[k],
                                     out_dir / "overlays" / f"{stem}_{classes[k]}.png", cam_cfg))
    return futures


def wait_for(futures: list[Future]) -> None:
    """Until these files are written; a write that failed raises here."""
    for future in futures:
        future.result()


def write_overlay(gray: np.ndarray, original: np.ndarray | None, cam: np.ndarray, out: Path, cam_cfg: dict) -> None:
    """At model resolution, or over the original image with the map stretched back to its size."""
    if original is not None:
        gray, cam = original, resize_cam(cam, *original.shape)
    save_overlay(gray, cam, out, cam_cfg["colormap"], cam_cfg["alpha"])


def comparison_paths(samples: list[tuple[str, str | None]], n_rows: int = 8) -> list[str]:
    """One image per true class (its first) when labels are known, else the first images."""
    by_label = {}
    for path, label in samples:
        if label is not None:
            by_label.setdefault(label, path)
    return list(by_label.values()) or [path for path, _ in samples[:n_rows]]


def comparison_rows(per_model: list[list[dict]], paths: list[str]) -> list[dict]:
    rows = []
    for path in paths:
        cells = [next((r for r in results if r["path"] == path), None) for results in per_model]
        if all(cells):  # an unreadable image has no row
            rows.append({"label": cells[0]["label"] or Path(path).name, "gray": [c["gray"] for c in cells],
                         "cells": cells})
    return rows


def explain(cfg: dict, run_dir: Path) -> list[str]:
    """Explain every checkpoint; returns the files that could not be read."""
    validate_explain_config(cfg)
    device = select_device(cfg["device"])
    runs = load_runs(cfg["ckpt"], cfg["sweep"], device)
    samples = select_samples(cfg, runs[0])
    # Hydra reads a bare cam.target=true as the boolean: it can only mean the true label
    cam_cfg = {**cfg["cam"], "target": "true" if cfg["cam"]["target"] is True else cfg["cam"]["target"]}
    layers = [cam_layer(run, cam_cfg) for run in runs]  # options that do not fit stop it before it writes
    claim_run_dir(run_dir, "explain")
    names = [run.model_name for run in runs]
    if len({run.split_sha256 for run in runs}) > 1 and cfg["split"]:
        log.warning("the checkpoints were trained on different splits; the %s images come from the first "
                    "one's, and may have been seen in training by the others", cfg["split"])
    compared = comparison_paths(samples) if len(runs) > 1 else []
    per_model, failures = [], []
    for i, run in enumerate(runs):
        out_dir = run_dir if len(runs) == 1 else run_dir / f"{i}_{names[i]}"
        results, failed = explain_run(run, layers[i], samples, cam_cfg, cfg["batch_size"], out_dir,
                                      keep=set(compared))
        per_model.append(results)
        failures = failures or failed  # the same files fail for every model
    rows = comparison_rows(per_model, compared)
    if rows:
        plot_model_comparison(rows, names, run_dir / "comparison.png", cam_cfg["colormap"], cam_cfg["alpha"])
        log.info("model comparison: %s", run_dir / "comparison.png")
    if not per_model[0]:
        raise CxrcamError(f"none of the {len(samples)} image(s) could be read ({', '.join(failures[:3])}"
                          f"{', ...' if len(failures) > 3 else ''}); nothing was explained")
    log.info("explained %d image(s) with %d model(s) into %s", len(per_model[0]), len(runs), run_dir)
    return failures


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="explain")
def main(cfg: DictConfig) -> None:
    run_over_files("cxrcam.explain", explain, cfg)


if __name__ == "__main__":
    exit_on_bad_arguments("cxrcam.explain", config_dir(), "explain")
    main()
