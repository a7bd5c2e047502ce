"""One model's CAMs turned into a :class:`CamEvaluation`, and the shortcut audit built from several.

``cfg`` is evaluate's configuration as a plain dict (conf/evaluate.yaml): localisation, zones,
patterns, pattern_thresholds, faithfulness, sanity, bootstrap, mean_heatmap_size, cam, batch_size,
seed, and for the audit split and max_per_class.
"""

from __future__ import annotations

import time

import numpy as np
from tqdm import tqdm

from cxrcam.data.split import split_images
from cxrcam.errors import CxrcamError
from cxrcam.evaluation.anatomy import lung_aligned, single_lung_side
from cxrcam.evaluation.boxes import box_truth
from cxrcam.evaluation.faithfulness import confidence_change, road_scores
from cxrcam.evaluation.results import (AuditRow, CamEvaluation, Faithfulness, Interval, MarkerComparison, MaskCounts,
                                       Pictures, Reliance, Sanity, SanityStep, ShortcutAudit, ZoneProfile,
                                       pattern_agreements, score_table)
from cxrcam.evaluation.reliance import model_probabilities, reliance
from cxrcam.evaluation.samples import Sample, balanced_subset, load_samples
from cxrcam.evaluation.sanity import cascading_randomisation
from cxrcam.evaluation.scores import image_scores, lesion_reference, mean_zone_profiles, summarise
from cxrcam.evaluation.stats import bootstrap_ci
from cxrcam.explanation.methods import make_cam
from cxrcam.loaded_run import LoadedRun
from cxrcam.models import count_parameters, get_layer


def evaluate_cams(run: LoadedRun, samples: list[Sample], split_file: str, method: str, layer_name: str | None,
                  cfg: dict, with_checks: bool = True, lung_frame: bool = True,
                  with_reliance: bool | None = None) -> CamEvaluation:
    """Every measurement of one model's CAMs (of each image's true class) by one method at one
    layer (None: the run's own); with ``with_checks``, also faithfulness and the sanity check on class-balanced subsets.
    Mean heatmaps are in the lung-aligned frame, or the image frame without ``lung_frame``. The causal
    test runs ``with_reliance`` (None: ``with_checks``): it depends on the model, not on the CAM."""
    started = time.perf_counter()
    classes, size = run.class_names, run.image_size
    layer = run.cam_layer(layer_name)
    cam = make_cam(method, run.model, layer.module, cfg["cam"]["aug_smooth"], cfg["cam"]["eigen_smooth"])
    targets = [classes.index(s.label) for s in samples]
    settings = {"tolerance_px": cfg["localisation"]["pointing_tolerance"] * size,
                "peripheral_from": cfg["zones"]["peripheral_from"], "thresholds": cfg["pattern_thresholds"]}

    cams, probs, records = [], [], []
    step = cfg["batch_size"]
    for start in tqdm(range(0, len(samples), step), desc=f"{method} of {run.model_name} at {layer.name}",
                      unit="batch"):
        batch = samples[start:start + step]
        maps, logits = cam(run.batch([s.gray for s in batch]), targets[start:start + step])
        maps = maps.cpu().numpy()  # scored on the host: one copy per batch
        probs.append(logits.float().softmax(1).cpu().numpy())
        cams.append(maps)
        records += [image_scores(m, s, {**settings, "criteria": cfg["patterns"].get(s.label, [])})
                    for m, s in zip(maps, batch, strict=True)]
    cams, probs = np.concatenate(cams), np.concatenate(probs)
    labels = [s.label for s in samples]
    bootstrap = {**cfg["bootstrap"], "seed": cfg["seed"]}
    expected = {c: cfg["patterns"].get(c, []) for c in classes}
    summary = summarise(records, labels, classes, bootstrap)
    faithfulness, sanity = (costly_checks(run, samples, cams, targets, method, layer.name, cfg, bootstrap)
                            if with_checks else (None, None))
    return CamEvaluation(
        run=run.run_dir.name, model=run.model_name, checkpoint=str(run.path), split_file=split_file,
        method=method, layer=layer.name, grid=layer.grid, image_size=size, parameters=count_parameters(run.model),
        n_images=len(samples), accuracy=float(np.mean(probs.argmax(1) == np.array(targets))),
        masks=mask_counts(samples), scores=score_table(summary), expected_patterns=expected,
        patterns=pattern_agreements(summary, expected),
        lesion_patterns=pattern_agreements(lesion_reference(samples, settings, cfg["patterns"], classes, bootstrap),
                                           expected),
        zone_profiles={c: ZoneProfile(**p) for c, p in mean_zone_profiles(records, labels, classes).items()},
        pictures=Pictures(mean_heatmaps(cams, samples, classes, cfg["mean_heatmap_size"], lung_frame),
                          example_overlays(cams, samples, classes)),
        faithfulness=faithfulness, sanity=sanity, box_truth=box_truth(samples, cfg["boxes"]["file"]),
        reliance=(causal_test(run, samples, probs, cfg) if (with_checks if with_reliance is None else with_reliance)
                  else None),
        seconds=round(time.perf_counter() - started, 1))


def causal_test(run: LoadedRun, samples: list[Sample], probs: np.ndarray, cfg: dict) -> Reliance | None:
    """The model's accuracy with the markers removed and on the lungs only, against the images as they
    are, whose class probabilities are ``probs`` (None with causal.enabled false). The markers removed are the dataset's marker masks where it
    has them (exact), else those the detector finds, so that real data without masks is tested too."""
    if not cfg["causal"]["enabled"]:
        return None
    return reliance(model_probabilities(run, cfg["batch_size"]), probs, [s.gray for s in samples],
                    [run.class_names.index(s.label) for s in samples],
                    [s.detected_marker if s.marker is None else s.marker for s in samples],
                    [s.lungs for s in samples], cfg["causal"], {**cfg["bootstrap"], "seed": cfg["seed"]})


def mask_counts(samples: list[Sample]) -> MaskCounts:
    def having(kind: str) -> int:
        return sum(getattr(s, kind) is not None and bool(getattr(s, kind).any()) for s in samples)

    return MaskCounts(having("lungs"), having("lesion"), having("marker"),
                      sum(s.lungs is not None and single_lung_side(s.lungs) is not None for s in samples))


def costly_checks(run: LoadedRun, samples: list[Sample], cams: np.ndarray, targets: list[int], method: str,
                  layer_name: str, cfg: dict, bootstrap: dict) -> tuple[Faithfulness, Sanity]:
    """ROAD and the confidence change, then cascading randomisation, each on its own class-balanced
    subset of the images (whose CAMs and target classes are ``cams`` and ``targets``)."""
    labels = [s.label for s in samples]

    def interval(values) -> Interval:
        return Interval(**bootstrap_ci(values, bootstrap["n_resamples"], bootstrap["level"], bootstrap["seed"]))

    subset = balanced_subset(labels, cfg["faithfulness"]["n_images"], cfg["seed"])
    images = run.batch([samples[i].gray for i in subset])
    percentiles = cfg["faithfulness"]["percentiles"]
    road = road_scores(run.model, images, cams[subset], [targets[i] for i in subset], percentiles, cfg["seed"])
    change = confidence_change(run.model, images, cams[subset], [targets[i] for i in subset])
    faithfulness = Faithfulness(len(subset), percentiles, road["morf"].mean(0).tolist(), road["lerf"].mean(0).tolist(),
                                interval(road["combined"]), interval(change["confidence_drop"]),
                                interval(change["confidence_increase"]))
    subset = balanced_subset(labels, cfg["sanity"]["n_images"], cfg["seed"])
    steps = cascading_randomisation(
        run.model, lambda m: make_cam(method, m, get_layer(m, layer_name), cfg["cam"]["aug_smooth"],
                                      cfg["cam"]["eigen_smooth"]),
        run.batch([samples[i].gray for i in subset]), [targets[i] for i in subset], cfg["seed"])
    return faithfulness, Sanity([SanityStep(**step) for step in steps])


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


def shortcut_audit(shortcut: LoadedRun, control: LoadedRun | None, references: list[LoadedRun], methods: list[str],
                   cfg: dict) -> ShortcutAudit:
    """The confounded model, its control (the marker on every class alike) and the clean evaluated
    models of its architecture (all when none has it), on the confounded run's test images that
    carry the marker; per method, the confounded model's marker share against each other model's."""
    split_file = str(shortcut.split_file())
    samples, _ = load_samples(split_images(split_file, shortcut.class_names, cfg["split"], cfg["max_per_class"],
                                           cfg["seed"]), shortcut.image_size)
    marked = [s for s in samples if s.marker is not None and s.marker.any()]
    if not marked:
        raise CxrcamError(f"shortcut_ckpt={shortcut.path}: its {cfg['split']} images carry no marker "
                          "(no marker_masks/); train it on data.synthetic.marker data, e.g. experiment=shortcut")
    same_arch = [r for r in references if r.model_name == shortcut.model_name] or references
    roles = [(shortcut, "confounded")] + ([(control, "control")] if control else []) + [(r, "clean") for r in same_arch]
    at_size = {shortcut.image_size: marked}  # the marked images at each model's input size, loaded once
    for run, _ in roles:
        if run.image_size not in at_size:
            at_size[run.image_size] = load_samples([(s.path, s.label) for s in marked], run.image_size)[0]
    rows, comparisons = [], []
    for method in methods:
        rows_of_method = [AuditRow(role, evaluate_cams(run, at_size[run.image_size], split_file, method, None, cfg,
                                                       with_checks=False, lung_frame=False,
                                                       with_reliance=method == methods[0]))
                          for run, role in roles]
        confounded = rows_of_method[0].evaluation.scores
        comparisons += [MarkerComparison(method, row.role, row.evaluation.model, confounded["marker_share"].overall,
                                         row.evaluation.scores["marker_share"].overall,
                                         confounded["marker_share"].chance.overall.mean,
                                         confounded["lung_share"].overall, row.evaluation.scores["lung_share"].overall)
                        for row in rows_of_method[1:]]
        rows += rows_of_method
    return ShortcutAudit(len(marked), len(samples), rows, comparisons)
