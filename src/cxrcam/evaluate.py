"""``python -m cxrcam.evaluate``: Grad-CAMs turned into measurements and one report.

    python -m cxrcam.evaluate ckpt=RUN/checkpoints/best.pt                # its own test split
    python -m cxrcam.evaluate ckpt=RUN/checkpoints/best.pt cam.layer=[layer3.5,layer4.2]
    python -m cxrcam.evaluate ckpt=RUN/checkpoints/best.pt cam.method=[gradcam,hirescam]
    python -m cxrcam.evaluate sweep=MULTIRUN_DIR 'cam.layer={resnet50:[layer4.2,layer3.5]}'
    python -m cxrcam.evaluate sweep=MULTIRUN_DIR                          # every model, one report
    python -m cxrcam.evaluate sweep=MULTIRUN_DIR shortcut_ckpt=CONFOUNDED/checkpoints/best.pt \
        control_ckpt=CONTROL/checkpoints/best.pt                          # + the shortcut audit

Per model, CAM method and layer: localisation against lesion masks, lung-relative attribution and zone
profile, agreement with each class's expected pattern, faithfulness (ROAD, confidence drop) and the
cascading randomisation sanity check; written to cam_metrics.json / .csv, figures/ and
report.html / report.md.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from cxrcam.cli import exit_on_bad_arguments, run_over_files
from cxrcam.config import config_dir, validate_evaluate_config
from cxrcam.data.batches import to_batch
from cxrcam.data.split import file_sha256, split_file_for, split_images
from cxrcam.errors import CxrcamError
from cxrcam.evaluation.anatomy import lung_aligned, single_lung_side
from cxrcam.evaluation.attribution import CRITERIA
from cxrcam.evaluation.faithfulness import confidence_change, road_scores
from cxrcam.evaluation.samples import Sample, balanced_subset, load_samples
from cxrcam.evaluation.sanity import cascading_randomisation
from cxrcam.evaluation.scores import CHANCE, image_scores, lesion_reference, mean_zone_profiles, summarise
from cxrcam.evaluation.stats import bootstrap_ci
from cxrcam.explanation.methods import make_cam
from cxrcam.models import count_parameters, get_layer, model_from_checkpoint, spatial_layer
from cxrcam.reporting.evaluation_report import write_report
from cxrcam.rundir import claim_run_dir
from cxrcam.checkpoint import checkpoint_paths, load_checkpoint
from cxrcam.device import select_device

log = logging.getLogger("cxrcam.evaluate")


def layers_for(option, meta: dict) -> list[str]:
    """The layers cam.layer names for one checkpoint: null (its own target layer), a name, a list,
    or a mapping from model name to any of these, so that a sweep can compare layers per model."""
    if isinstance(option, dict):
        option = option.get(meta["model_name"])
    return [name or meta["target_layer"] for name in (option if isinstance(option, list) else [option])]


def check_patterns(patterns: dict) -> None:
    for label, criteria in patterns.items():
        unknown = sorted(set(criteria) - set(CRITERIA))
        if unknown:
            raise CxrcamError(f"patterns.{label} names {unknown}; known criteria: {list(CRITERIA)}")


def evaluate_model(payload: dict, samples: list[Sample], method: str, layer_name: str, cfg: dict,
                   device: torch.device, with_checks: bool = True, lung_frame: bool = True) -> dict:
    """All measurements of one model's CAMs (of each image's true class) by one method at one layer; with
    ``with_checks``, also faithfulness and the sanity check on a class-balanced subset. Mean
    heatmaps are in the lung-aligned frame, or the image frame without ``lung_frame``."""
    meta = payload["meta"]
    classes, size = meta["class_names"], meta["image_size"]
    started = time.perf_counter()
    model = model_from_checkpoint(payload).to(device)
    layer, grid = spatial_layer(model, layer_name, size)
    cam = make_cam(method, model, layer, cfg["cam"]["aug_smooth"], cfg["cam"]["eigen_smooth"])
    targets = [classes.index(s.label) for s in samples]
    settings = {"tolerance_px": cfg["localisation"]["pointing_tolerance"] * size,
                "peripheral_from": cfg["zones"]["peripheral_from"], "thresholds": cfg["pattern_thresholds"]}

    cams, probs, records = [], [], []
    step = cfg["batch_size"]
    for start in tqdm(range(0, len(samples), step), desc=f"{method} of {meta['model_name']} at {layer_name}",
                      unit="batch"):
        batch = samples[start:start + step]
        images = to_batch([s.gray for s in batch], meta["normalization"], device)
        maps, logits = cam(images, targets[start:start + step])
        maps = maps.cpu().numpy()  # scored on the host: one copy per batch
        probs.append(logits.float().softmax(1).cpu().numpy())
        cams.append(maps)
        records += [image_scores(m, s, {**settings, "criteria": cfg["patterns"].get(s.label, [])})
                    for m, s in zip(maps, batch, strict=True)]
    cams, probs = np.concatenate(cams), np.concatenate(probs)
    labels = [s.label for s in samples]
    bootstrap = {**cfg["bootstrap"], "seed": cfg["seed"]}
    result = {
        "model": meta["model_name"], "checkpoint": payload["path"], "run": Path(payload["path"]).parents[1].name,
        "method": method, "layer": layer_name,
        "grid": grid,
        "image_size": size, "parameters": count_parameters(model), "n_images": len(samples),
        "accuracy": float(np.mean(probs.argmax(1) == np.array(targets))) if samples else float("nan"),
        "scores": summarise(records, labels, classes, bootstrap),
        "zone_profiles": mean_zone_profiles(records, labels, classes),
        "patterns": {c: cfg["patterns"].get(c, []) for c in classes},
        "lesion_patterns": lesion_reference(samples, settings, cfg["patterns"], classes, bootstrap),
        "masks": {**{kind: sum(getattr(s, kind) is not None and bool(getattr(s, kind).any()) for s in samples)
                     for kind in ("lungs", "lesion", "marker")},
                  "one_lung": sum(s.lungs is not None and single_lung_side(s.lungs) is not None for s in samples)},
        "arrays": {"mean_heatmaps": mean_heatmaps(cams, samples, classes, cfg["mean_heatmap_size"], lung_frame),
                   "example": example_overlays(cams, samples, classes)},
    }
    if with_checks:
        subset = balanced_subset(labels, cfg["faithfulness"]["n_images"], cfg["seed"])
        images = to_batch([samples[i].gray for i in subset], meta["normalization"], device)
        subset_targets = [targets[i] for i in subset]
        road = road_scores(model, images, cams[subset], subset_targets, cfg["faithfulness"]["percentiles"],
                           cfg["seed"])
        change = confidence_change(model, images, cams[subset], subset_targets)
        result["faithfulness"] = {
            "n_images": len(subset), "percentiles": cfg["faithfulness"]["percentiles"],
            "road_morf": road["morf"].mean(0).tolist(), "road_lerf": road["lerf"].mean(0).tolist(),
            **{k: bootstrap_ci(v, bootstrap["n_resamples"], bootstrap["level"], bootstrap["seed"])
               for k, v in [("road_combined", road["combined"]), *change.items()]}}
        sanity_subset = balanced_subset(labels, cfg["sanity"]["n_images"], cfg["seed"])
        result["sanity"] = cascading_randomisation(
            model, lambda m: make_cam(method, m, get_layer(m, layer_name), cfg["cam"]["aug_smooth"],
                                      cfg["cam"]["eigen_smooth"]),
            to_batch([samples[i].gray for i in sanity_subset], meta["normalization"], device),
            [targets[i] for i in sanity_subset],
            cfg["seed"])
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def mean_heatmaps(cams: np.ndarray, samples: list[Sample], classes: list[str], size: int,
                  lung_frame: bool = True) -> dict:
    """{class: (mean CAM, mean lung mask or None)} in the lung-aligned frame where asked and every
    image of the class has a lung mask, else in the image frame."""
    out = {}
    for c in classes:
        members = [i for i, s in enumerate(samples) if s.label == c]
        if not members:
            continue
        if lung_frame and all(samples[i].lungs is not None and samples[i].lungs.any() for i in members):
            maps = [lung_aligned(cams[i], samples[i].lungs, size) for i in members]
            lungs = [lung_aligned(samples[i].lungs.astype(np.float32), samples[i].lungs, size) for i in members]
            out[c] = (np.mean(maps, axis=0), np.mean(lungs, axis=0))
        else:
            out[c] = (np.mean(cams[members], axis=0), None)
    return out


def example_overlays(cams: np.ndarray, samples: list[Sample], classes: list[str]) -> dict:
    """{class: (image, CAM)} of the first image of each class, for the report's pictures."""
    first = {}
    for i, s in enumerate(samples):
        first.setdefault(s.label, (s.gray, cams[i]))
    return {c: first[c] for c in classes if c in first}


def shortcut_audit(shortcut: dict, control: dict | None, references: list[dict], methods: list[str], cfg: dict,
                   device: torch.device) -> dict:
    """The confounded model, its control (the marker on every class alike) and the clean evaluated
    models of its architecture (all when none has it), on the confounded run's test images that
    carry the marker."""
    meta = shortcut["meta"]
    images = split_images(str(split_file_for(meta, shortcut["path"])), meta["class_names"], cfg["split"],
                          cfg["max_per_class"], cfg["seed"])
    samples, _ = load_samples(images, meta["image_size"])
    marked = [s for s in samples if s.marker is not None and s.marker.any()]
    if not marked:
        raise CxrcamError(f"shortcut_ckpt={shortcut['path']}: its {cfg['split']} images carry no marker "
                          "(no marker_masks/); train it on data.synthetic.marker data, e.g. experiment=shortcut")
    same_arch = [r for r in references if r["meta"]["model_name"] == meta["model_name"]] or references
    roles = [(shortcut, "confounded")] + ([(control, "control")] if control else []) + [(r, "clean")
                                                                                        for r in same_arch]
    at_size = {meta["image_size"]: marked}  # the marked images at each model's input size, loaded once
    for payload, _ in roles:
        size = payload["meta"]["image_size"]
        if size not in at_size:
            at_size[size] = load_samples([(s.path, s.label) for s in marked], size)[0]
    rows = []
    for method in methods:
        for payload, role in roles:
            result = evaluate_model(payload, at_size[payload["meta"]["image_size"]], method,
                                    payload["meta"]["target_layer"], cfg, device, with_checks=False, lung_frame=False)
            rows.append({"role": role, **result})
    return {"n_marked": len(marked), "n_images": len(samples), "rows": rows}


def write_metrics(results: list[dict], out_dir: Path, audit: dict | None) -> None:
    """cam_metrics.json (everything but the arrays) and cam_metrics.csv (one row per number)."""
    def plain(result):
        return {k: v for k, v in result.items() if k != "arrays"}

    payload = {"models": [plain(r) for r in results]}
    if audit:
        payload["shortcut_audit"] = {**audit, "rows": [plain(r) for r in audit["rows"]]}
    (out_dir / "cam_metrics.json").write_text(json.dumps(payload, indent=2))
    with open(out_dir / "cam_metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "model", "method", "layer", "grid", "metric", "class", "mean", "ci_low", "ci_high",
                         "n", "chance"])
        for result in results:
            grid = "x".join(map(str, result["grid"]))
            head = [result["run"], result["model"], result["method"], result["layer"], grid]
            for metric, summary in result["scores"].items():
                for cls, ci in [("all", summary["overall"]), *summary["per_class"].items()]:
                    chance = chance_of(result, metric, cls)
                    writer.writerow(head + [metric, cls, *(f"{ci[k]:.4f}" for k in ("mean", "low", "high")), ci["n"],
                                            "" if chance is None else f"{chance:.4f}"])
            for metric, ci in result.get("faithfulness", {}).items():
                if isinstance(ci, dict):
                    writer.writerow(head + [metric, "all", *(f"{ci[k]:.4f}" for k in ("mean", "low", "high")),
                                            ci["n"], ""])
            for step in result.get("sanity", []):
                for metric in ("rank_correlation", "ssim"):
                    writer.writerow(head + [f"sanity_{metric}@{step['block']}", "all", f"{step[metric]:.4f}", "",
                                            "", "", ""])


def chance_of(result: dict, metric: str, cls: str) -> float | None:
    """The mean chance level of a hit rate, overall or for one class; None for other metrics."""
    key = CHANCE.get(metric)
    if key is None or key not in result["scores"]:
        return None
    summary = result["scores"][key]
    ci = summary["overall"] if cls == "all" else summary["per_class"].get(cls)
    return ci["mean"] if ci else None


def evaluate(cfg: dict, run_dir: Path) -> list[str]:
    """Evaluate every checkpoint (and layer), write metrics and the report; returns unreadable files."""
    validate_evaluate_config(cfg)
    check_patterns(cfg["patterns"])
    payloads = []
    for path in checkpoint_paths(cfg["ckpt"], cfg["sweep"]):
        payloads.append({**load_checkpoint(path), "path": str(path)})
    shortcut, control = ({**load_checkpoint(cfg[key]), "path": cfg[key]} if cfg[key] else None
                         for key in ("shortcut_ckpt", "control_ckpt"))
    if control and not shortcut:
        raise CxrcamError("control_ckpt is the shortcut audit's control: give shortcut_ckpt too")
    device = select_device(cfg["device"], key="device")
    methods = cfg["cam"]["method"] if isinstance(cfg["cam"]["method"], list) else [cfg["cam"]["method"]]
    for payload in payloads:  # a layer that has no CAM stops the call before any image is loaded
        model = model_from_checkpoint(payload)
        for layer_name in layers_for(cfg["cam"]["layer"], payload["meta"]):
            spatial_layer(model, layer_name, payload["meta"]["image_size"])
    split_files = [split_file_for(p["meta"], p["path"], cfg["split_file"]) for p in payloads]
    if len({p["meta"]["split"]["sha256"] for p in payloads}) > 1 and not cfg["split_file"]:
        log.warning("the checkpoints were trained on different splits: each is evaluated on its own %s images",
                    cfg["split"])
    claim_run_dir(run_dir, "evaluate")
    results, failures, loaded = [], [], {}
    for payload, split_file in zip(payloads, split_files, strict=True):
        meta = payload["meta"]
        if missing := [c for c in meta["class_names"] if c not in cfg["patterns"]]:
            log.warning("no expected pattern for class(es) %s: set patterns.<class> in conf/evaluate.yaml", missing)
        # a sweep's runs each hold a copy of the same split.csv: its hash, not its path, says it is the same
        key = (file_sha256(split_file), meta["image_size"])
        if key not in loaded:
            images = split_images(str(split_file), meta["class_names"], cfg["split"], cfg["max_per_class"], cfg["seed"])
            loaded[key] = load_samples(images, meta["image_size"])
            failures += [f for f in loaded[key][1] if f not in failures]
        samples = loaded[key][0]
        if not samples:
            raise CxrcamError(f"none of the {cfg['split']} images of {split_file} could be read")
        for m, method in enumerate(methods):
            for k, layer_name in enumerate(layers_for(cfg["cam"]["layer"], meta)):
                result = {**evaluate_model(payload, samples, method, layer_name, cfg, device, with_checks=m == k == 0),
                          "split_file": str(split_file)}
                print(f"cxrcam.evaluate: {result['model']} {method} at {result['layer']} ({result['n_images']} "
                      f"images): {result['seconds']:.1f} s", flush=True)
                results.append(result)
    audit = shortcut_audit(shortcut, control, payloads, methods, cfg, device) if shortcut else None
    write_metrics(results, run_dir, audit)
    write_report(results, audit, payloads, cfg, run_dir)
    log.info("report: %s", run_dir / "report.html")
    return failures


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run_over_files("cxrcam.evaluate", evaluate, cfg)


if __name__ == "__main__":
    exit_on_bad_arguments("cxrcam.evaluate", config_dir(), "evaluate")
    main()
