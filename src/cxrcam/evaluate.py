"""``python -m cxrcam.evaluate``: Grad-CAMs turned into measurements and one report.

    python -m cxrcam.evaluate ckpt=RUN/checkpoints/best.pt                # its own test split
    python -m cxrcam.evaluate ckpt=RUN/checkpoints/best.pt cam.layer=[layer3.5,layer4.2]
    python -m cxrcam.evaluate ckpt=RUN/checkpoints/best.pt cam.method=[gradcam,hirescam]
    python -m cxrcam.evaluate ckpt=RUN/checkpoints/best.pt boxes=rsna boxes.file=stage_2_train_labels.csv  # + boxes
    python -m cxrcam.evaluate sweep=MULTIRUN_DIR 'cam.layer={resnet50:[layer4.2,layer3.5]}'
    python -m cxrcam.evaluate sweep=MULTIRUN_DIR                          # every model, one report
    python -m cxrcam.evaluate sweep=MULTIRUN_DIR shortcut_ckpt=CONFOUNDED/checkpoints/best.pt \
        control_ckpt=CONTROL/checkpoints/best.pt                          # + the shortcut audit
    python -m cxrcam.evaluate ckpt=RUN/checkpoints/best.pt lungs=SEGMENT_RUN/checkpoints/best.pt
                                                   # lung masks predicted where the dataset has none

Per model, CAM method and layer: localisation against lesion masks, lung-relative attribution and zone
profile, agreement with each class's expected pattern, faithfulness (ROAD, confidence drop) and the
cascading randomisation sanity check; written to cam_metrics.json / .csv, figures/ and
report.html / report.md.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from cxrcam.cli import exit_on_bad_arguments, run_over_files
from cxrcam.config import config_dir, validate_evaluate_config
from cxrcam.data.split import file_sha256, split_images
from cxrcam.device import select_device
from cxrcam.errors import CxrcamError
from cxrcam.evaluation.attribution import CRITERIA
from cxrcam.evaluation.boxes import add_boxes, read_boxes
from cxrcam.evaluation.evaluator import evaluate_cams, shortcut_audit
from cxrcam.evaluation.samples import LungPrediction, load_samples, predicted_lungs
from cxrcam.loaded_run import load_run, load_runs
from cxrcam.reporting.evaluation_report import write_report
from cxrcam.reporting.metrics_files import write_metrics
from cxrcam.rundir import claim_run_dir
from cxrcam.segmentation.segmenter import load_segmenter

log = logging.getLogger("cxrcam.evaluate")


def layers_for(option, model_name: str) -> list[str | None]:
    """The layers cam.layer names for one model: null (None: the run's own CAM layer), a name, a list,
    or a mapping from model name to any of these, so that a sweep can compare layers per model."""
    if isinstance(option, dict):
        option = option.get(model_name)
    return option if isinstance(option, list) else [option]


def check_patterns(patterns: dict) -> None:
    for label, criteria in patterns.items():
        unknown = sorted(set(criteria) - set(CRITERIA))
        if unknown:
            raise CxrcamError(f"patterns.{label} names {unknown}; known criteria: {list(CRITERIA)}")


def evaluate(cfg: dict, run_dir: Path) -> list[str]:
    """Evaluate every checkpoint (and layer), write metrics and the report; returns unreadable files."""
    validate_evaluate_config(cfg)
    check_patterns(cfg["patterns"])
    device = select_device(cfg["device"])
    runs = load_runs(cfg["ckpt"], cfg["sweep"], device)
    shortcut, control = (load_run(cfg[key], device) if cfg[key] else None for key in ("shortcut_ckpt", "control_ckpt"))
    if control and not shortcut:
        raise CxrcamError("control_ckpt is the shortcut audit's control: give shortcut_ckpt too")
    lungs = LungPrediction(load_segmenter(cfg["lungs"], device), cfg["lungs_mode"]) if cfg["lungs"] else None
    methods = cfg["cam"]["method"] if isinstance(cfg["cam"]["method"], list) else [cfg["cam"]["method"]]
    for run in runs:  # a layer that has no CAM stops the call before any image is loaded
        for layer_name in layers_for(cfg["cam"]["layer"], run.model_name):
            run.cam_layer(layer_name)
    split_files = [run.split_file(cfg["split_file"]) for run in runs]
    if len({run.split_sha256 for run in runs}) > 1 and not cfg["split_file"]:
        log.warning("the checkpoints were trained on different splits: each is evaluated on its own %s images",
                    cfg["split"])
    box_file = read_boxes(cfg["boxes"]) if cfg["boxes"]["file"] else None
    claim_run_dir(run_dir, "evaluate")
    results, failures, loaded = [], [], {}
    for run, split_file in zip(runs, split_files, strict=True):
        if missing := [c for c in run.class_names if c not in cfg["patterns"]]:
            log.warning("no expected pattern for class(es) %s: set patterns.<class> in conf/evaluate.yaml", missing)
        # a sweep's runs each hold a copy of the same split.csv: its hash, not its path, says it is the same
        key = (file_sha256(split_file), run.image_size)
        if key not in loaded:
            images = split_images(str(split_file), run.class_names, cfg["split"], cfg["max_per_class"], cfg["seed"])
            loaded[key] = load_samples(images, run.image_size, lungs)
            if box_file and loaded[key][0]:
                add_boxes(loaded[key][0], box_file)
            failures += [f for f in loaded[key][1] if f not in failures]
        samples = loaded[key][0]
        if not samples:
            raise CxrcamError(f"none of the {cfg['split']} images of {split_file} could be read")
        for m, method in enumerate(methods):
            for k, layer_name in enumerate(layers_for(cfg["cam"]["layer"], run.model_name)):
                result = evaluate_cams(run, samples, str(split_file), method, layer_name, cfg, with_checks=m == k == 0)
                print(f"cxrcam.evaluate: {result.model} {method} at {result.layer} ({result.n_images} "
                      f"images): {result.seconds:.1f} s", flush=True)
                results.append(result)
    audit = shortcut_audit(shortcut, control, runs, methods, cfg) if shortcut else None
    # each image once, though a sweep loads it at every model's size: its Dice is taken at the segmenter's
    evaluated = list({s.path: s for samples, _ in loaded.values() for s in samples}.values())
    predicted = predicted_lungs(evaluated, lungs, {**cfg["bootstrap"], "seed": cfg["seed"]}) if lungs else None
    write_metrics(results, audit, run_dir, predicted)
    write_report(results, audit, runs, cfg, run_dir, predicted)
    log.info("report: %s", run_dir / "report.html")
    return failures


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run_over_files("cxrcam.evaluate", evaluate, cfg)


if __name__ == "__main__":
    exit_on_bad_arguments("cxrcam.evaluate", config_dir(), "evaluate")
    main()
