"""The evaluation report: one document, rendered as a self-contained HTML page (figures embedded)
and a Markdown twin (figures beside it), in the order of the seed's slides: data, models, metrics,
per-class CAMs, model comparison, zone profiles, localisation, faithfulness, sanity check, shortcut
audit, conclusions. Every sentence of the conclusions is computed from the numbers above it.
"""

from __future__ import annotations

import base64
import html
import json
from collections import Counter
from pathlib import Path

from cxrcam.data.split import read_split
from cxrcam.evaluation.results import (BOX_PREFIX, PASS_RANK_CORRELATION, Alteration, CamEvaluation, Interval,
                                       PredictedLungs, ShortcutAudit, loss_against)
from cxrcam.loaded_run import LoadedRun
from cxrcam.reporting import evaluation_figures as figures

FAITHFULNESS = {"faithful": "the pixels it marks matter to the model",
                "indistinguishable": "not distinguishable from a map the model ignores",
                "inverted": "removing its least relevant pixels hurts more than its most relevant ones"}


def ci_text(ci: Interval | None, percent: bool = False) -> str:
    if not ci or not ci.n:
        return "n/a"
    f = (lambda v: f"{v:.1%}") if percent else (lambda v: f"{v:.2f}")
    return f"{f(ci.mean)} [{f(ci.low)}, {f(ci.high)}]"


def _ci(result: CamEvaluation, metric: str, cls: str | None = None) -> Interval | None:
    """A score's interval, overall (cls None) or for one class; None where it was not scored."""
    score = result.scores.get(metric)
    return score.of(cls) if score else None


def _hit(result: CamEvaluation, metric: str, cls: str | None = None) -> str:
    """A score with its CI and, where it has one, its chance level, e.g. '0.74 [0.66, 0.81] (chance 0.06)'."""
    score = result.scores.get(metric)
    value = score.of(cls) if score else None
    if not value:
        return "n/a"
    return ci_text(value) + (f" (chance {score.chance.of(cls).mean:.2f})" if score.chance else "")


class Document:
    """Blocks of a report: headings, paragraphs, tables and figures, rendered twice."""

    def __init__(self, title: str):
        self.title, self.blocks = title, []

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def bullets(self, items: list[str]) -> None:
        self.blocks.append(("ul", items))

    def table(self, header: list[str], rows: list[list]) -> None:
        self.blocks.append(("table", header, [[str(c) for c in row] for row in rows]))

    def figure(self, path: Path, caption: str) -> None:
        self.blocks.append(("img", path, caption))

    def html(self) -> str:
        out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>",
               f"<style>{CSS}</style></head><body><h1>{html.escape(self.title)}</h1>"]
        for block in self.blocks:
            kind = block[0]
            if kind == "h2":
                out.append(f"<h2>{html.escape(block[1])}</h2>")
            elif kind == "p":
                out.append(f"<p>{html.escape(block[1])}</p>")
            elif kind == "ul":
                out.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in block[1]) + "</ul>")
            elif kind == "table":
                head = "".join(f"<th>{html.escape(h)}</th>" for h in block[1])
                body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                               for row in block[2])
                table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
                out.append(f"<div class='wide'>{table}</div>")
            else:
                data = base64.b64encode(block[1].read_bytes()).decode()
                out.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(block[2])}'>"
                           f"<figcaption>{html.escape(block[2])}</figcaption></figure>")
        return "\n".join(out + ["</body></html>"])

    def markdown(self, base: Path) -> str:
        out = [f"# {self.title}", ""]
        for block in self.blocks:
            kind = block[0]
            if kind == "h2":
                out += [f"## {block[1]}", ""]
            elif kind == "p":
                out += [block[1], ""]
            elif kind == "ul":
                out += [f"- {item}" for item in block[1]] + [""]
            elif kind == "table":
                out += ["| " + " | ".join(block[1]) + " |", "|" + "---|" * len(block[1])]
                out += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in block[2]] + [""]
            else:
                out += [f"![{block[2]}]({block[1].relative_to(base).as_posix()})", "", f"*{block[2]}*", ""]
        return "\n".join(out)


CSS = """body{font-family:system-ui,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.8em 0;font-size:.85em}th,td{border:1px solid #ccc;padding:.3em .6em;
text-align:left}th{background:#f2f2f2}tr:nth-child(even) td{background:#fafafa}
figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
li{margin:.25em 0}.wide{overflow-x:auto}"""


def write_report(results: list[CamEvaluation], audit: ShortcutAudit | None, runs: list[LoadedRun], cfg: dict,
                 out_dir: Path, lungs: PredictedLungs | None = None) -> None:
    """report.html (self-contained) and report.md (figures in figures/) for one run or a sweep."""
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    classes = runs[0].class_names
    doc = Document(f"cxrcam evaluation: {', '.join(dict.fromkeys(r.model for r in results))}")
    methods = ", ".join(dict.fromkeys(r.method for r in results))
    doc.para(f"CAM method(s): {methods}; every CAM is the map of the image's true class on the {cfg['split']} "
             "split. Intervals are 95 % percentile-bootstrap confidence intervals over images "
             f"({cfg['bootstrap']['n_resamples']} resamples, seed {cfg['seed']}).")
    _data_section(doc, results, classes)
    if lungs:
        _predicted_lungs_para(doc, lungs)
    _models_section(doc, results, runs)
    _cams_section(doc, results, classes, fig_dir)
    _comparison_section(doc, results)
    _zones_section(doc, results, classes, fig_dir)
    _localisation_section(doc, results, classes, fig_dir, cfg)
    _box_section(doc, results, classes)
    _faithfulness_section(doc, results, fig_dir)
    _sanity_section(doc, results, fig_dir)
    _markers_section(doc, results, classes)
    if audit:
        _shortcut_section(doc, audit, fig_dir)
    _causal_section(doc, results, audit)
    doc.heading("Conclusions")
    doc.bullets(conclusions(results, audit))
    (out_dir / "report.html").write_text(doc.html())
    (out_dir / "report.md").write_text(doc.markdown(out_dir))


def _data_section(doc: Document, results: list[CamEvaluation], classes: list[str]) -> None:
    doc.heading("Data")
    first = results[0]
    counts = Counter((r["label"], r["split"]) for r in read_split(first.split_file, classes))
    doc.para(f"Split file {first.split_file}; classes {', '.join(classes)}.")
    doc.table(["class", "train", "val", "test"], [[c] + [counts[(c, s)] for s in ("train", "val", "test")]
                                                  for c in classes])
    masks = first.masks
    doc.para(f"Of the {first.n_images} evaluated images, {masks.lungs} have a lung mask, "
             f"{masks.lesion} a non-empty lesion mask and {masks.marker} a burned-in marker mask. "
             "Localisation is scored on images with a lesion mask, lung-relative measures on images with "
             "a lung mask."
             + (f" {masks.one_lung} lung mask(s) hold one lung only (a pneumonectomy, a collapsed or fully "
                "opaque lung, or a partial mask): they are scored as one lung with the other side empty, so they "
                "cannot meet 'bilateral'." if masks.one_lung else ""))
    doc.para(ground_truth(first))


def _predicted_lungs_para(doc: Document, lungs: PredictedLungs) -> None:
    which = ("the images without a lung mask of their own" if lungs.mode == "missing"
             else "every image, in place of the dataset's own lung masks")
    test = f", test {lungs.test_dice:.3f}" if lungs.test_dice is not None else ""
    agreement = (f" Against the dataset's own lung masks of {lungs.agreement.n} images the predictions reach a mean "
                 f"Dice of {ci_text(lungs.agreement)}." if lungs.agreement else "")
    doc.para(f"Lung masks are predicted for {lungs.n_predicted} of the {lungs.n_images} evaluated images "
             f"(lungs_mode={lungs.mode}: {which}) by the segmenter {lungs.checkpoint}, a U-Net at "
             f"{lungs.image_size} px trained from scratch on {lungs.trained_on} data (Dice on its validation "
             f"split {lungs.val_dice:.3f}{test}). Lung-relative measures of those images rest on predicted, not "
             f"drawn, masks.{agreement}")


def _models_section(doc: Document, results: list[CamEvaluation], runs: list[LoadedRun]) -> None:
    doc.heading("Models and classification metrics")
    rows = []
    for run in runs:
        metrics_file = run.run_dir / "test_metrics.json"
        m = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        rows.append([run.run_dir.name, run.model_name, run.image_size,
                     m.get("epochs", "n/a"), *(f"{m[k]:.3f}" if k in m else "n/a"
                                              for k in ("accuracy", "balanced_accuracy", "macro_f1", "macro_auroc"))])
    doc.table(["run", "model", "input px", "epochs", "test accuracy", "balanced acc.", "macro F1", "macro AUROC"],
              rows)
    doc.table(["model @ layer", "parameters", "CAM grid", "accuracy on evaluated images", "evaluation time"],
              [[r.label, f"{r.parameters / 1e6:.1f}M", "x".join(map(str, r.grid)), f"{r.accuracy:.3f}",
                f"{r.seconds:.0f} s"] for r in results])


def _cams_section(doc: Document, results: list[CamEvaluation], classes: list[str], fig_dir: Path) -> None:
    doc.heading("Per-class CAMs")
    figures.plot_examples(results, classes, fig_dir / "examples.png")
    doc.figure(fig_dir / "examples.png", "CAM of the true class on the first test image of each class")
    figures.plot_mean_heatmaps(results, classes, fig_dir / "mean_heatmaps.png")
    doc.figure(fig_dir / "mean_heatmaps.png", "Mean CAM per class over the evaluated images, lung-aligned")


def _comparison_section(doc: Document, results: list[CamEvaluation]) -> None:
    doc.heading("Model comparison")
    doc.para("Hit rates with 95 % CIs and their chance level (the share of the image where a random point "
             "scores a hit). Lung share: CAM mass inside the lungs (chance: the lungs' share of the image).")
    rows = []
    for r in results:
        rows.append([r.label, _hit(r, "pointing"), _hit(r, "zone_hit"), _hit(r, "energy"), ci_text(_ci(r, "otsu_iou")),
                     _hit(r, "lung_share"), ci_text(r.faithfulness.road_combined if r.faithfulness else None),
                     f"{r.sanity.steps[-1].rank_correlation:.2f}" if r.sanity else "n/a"])
    doc.table(["model @ layer (grid)", "pointing game", "zone-level hit", "energy in lesion", "Otsu IoU",
               "lung share", "ROAD combined", "rank corr. fully randomised"], rows)


def _zones_section(doc: Document, results: list[CamEvaluation], classes: list[str], fig_dir: Path) -> None:
    doc.heading("Zone profiles and expected patterns")
    doc.para("Zones are thirds of each lung's height, its medial and lateral halves, and the patient's side, "
             "measured on each lung's own extent. A height or depth criterion agrees when the CAM puts more "
             "mass there than the zones' share of lung area.")
    figures.plot_zone_profiles(results, classes, fig_dir / "zone_profiles.png")
    doc.figure(fig_dir / "zone_profiles.png", "CAM mass per lung zone (red) against lung area (grey)")
    figures.plot_pattern_agreement(results, classes, fig_dir / "pattern_agreement.png")
    doc.figure(fig_dir / "pattern_agreement.png", "Share of each class's images whose CAM shows the expected "
                                                  "pattern (seed: Lung Disease Features)")
    columns = [(c, criterion) for c in classes for criterion in results[0].expected_patterns.get(c, [])]
    reference = bool(results[0].lesion_patterns)  # none without lesion masks, as in the real database
    rows = [["lesion masks (reference)"] + [_agreement(results[0], *col, reference=True) for col in columns]
            ] if reference else []
    rows += [[r.label] + [_agreement(r, *col) for col in columns] for r in results]
    doc.para("Each cell: share of images agreeing [95 % CI] (in brackets: the mean value it was judged on, a "
             "share of lung mass, a left/right ratio or an evenness)."
             + (" The first row scores the lesion masks as if they were CAMs: a criterion they meet is reachable "
                "on this data." if reference else ""))
    doc.table(["model @ layer (grid)", *(f"{c}: {criterion}" for c, criterion in columns)], rows)


def _agreement(result: CamEvaluation, cls: str, criterion: str, reference: bool = False) -> str:
    found = result.pattern(cls, criterion, reference)
    return "n/a" if not found else f"{ci_text(found.agrees)} ({found.value.mean:.2f})"


def _localisation_section(doc: Document, results: list[CamEvaluation], classes: list[str], fig_dir: Path,
                          cfg: dict) -> None:
    doc.heading("Localisation against lesion masks")
    if not any("pointing" in r.scores for r in results):
        doc.para("No evaluated image has a lesion mask (<class>/lesion_masks/ beside images/): localisation "
                 "was not scored.")
        return
    doc.para("Pointing game: the CAM's peak inside the lesion; tolerant: within "
             f"{cfg['localisation']['pointing_tolerance']:.1%} of the image side of it; zone-level: the peak in a "
             "lung zone that holds at least 10 % of the lesion; energy: the share of CAM mass inside the lesion; "
             "Otsu IoU: the Otsu-thresholded CAM against the lesion (CheXlocalize). The CAM grid is the "
             "target layer's resolution: a 4x4 map cannot point inside a small lesion.")
    figures.plot_localisation(results, classes, fig_dir / "localisation.png")
    doc.figure(fig_dir / "localisation.png", "Localisation per class with 95 % CIs; black ticks: chance level")
    doc.table(["model @ layer (grid)", "class", "images", "pointing game", "pointing, tolerant", "zone-level hit",
               "energy in lesion", "Otsu IoU"], _localisation_rows(results, classes))


def _localisation_rows(results: list[CamEvaluation], classes: list[str], prefix: str = "") -> list[list]:
    """Per model and class (and all), the localisation scores of one ground truth: lesion masks, or
    with ``prefix`` BOX_PREFIX the boxes."""
    rows = []
    for r in results:
        for c in ["all"] + classes:
            cls = None if c == "all" else c
            pointing = _ci(r, prefix + "pointing", cls)
            if pointing is None:
                continue
            rows.append([r.label, c, pointing.n, *(_hit(r, prefix + m, cls) for m in ("pointing", "pointing_tolerant",
                                                                                       "zone_hit")),
                         *(ci_text(_ci(r, prefix + m, cls)) for m in ("energy", "otsu_iou"))])
    return rows


def ground_truth(result: CamEvaluation) -> str:
    """Which localisation ground truth the scores are against, with how many images have each."""
    masks = f"lesion masks ({result.masks.lesion} images with a lesion)"
    truth = result.box_truth
    boxes = truth and (f"boxes from {truth.file} ({truth.with_boxes} images with a box, {truth.without_finding} "
                       f"listed without a finding, {truth.not_listed} not listed)")
    if boxes and result.masks.lesion:
        return f"Localisation ground truth: both {masks} and {boxes}."
    if boxes:
        return f"Localisation ground truth: {boxes}; no evaluated image has a lesion mask."
    if result.masks.lesion:
        return f"Localisation ground truth: {masks}."
    return "Localisation ground truth: none (no lesion mask, no boxes.file): localisation is not scored."


def _box_section(doc: Document, results: list[CamEvaluation], classes: list[str]) -> None:
    truth = results[0].box_truth
    if not truth:
        return
    doc.heading("Localisation against radiologists' boxes")
    doc.para(f"Boxes from {truth.file}, in pixels of the original image: a box covers the pixels whose centre lies "
             "inside it, and that region is stretched to each model's input as a lesion mask is; the boxes of an "
             "image (several findings or readers) form one region. The scores are the lesion masks' (box_* in "
             "cam_metrics), the region taking the lesion's place; an image listed without a box has no finding and, "
             "like a Normal image, no score.")
    rows = _localisation_rows(results, classes, BOX_PREFIX)
    if not rows:
        doc.para("No evaluated image has a box: localisation against boxes was not scored.")
        return
    doc.table(["model @ layer (grid)", "class", "images", "pointing game", "pointing, tolerant", "zone-level hit",
               "energy in boxes", "Otsu IoU"], rows)
    both = [r for r in results if "pointing" in r.scores and BOX_PREFIX + "pointing" in r.scores]
    if both:
        doc.para("The same CAMs against both ground truths (all images that have each):")
        doc.table(["model @ layer (grid)", "ground truth", "images", "pointing game", "pointing, tolerant",
                   "energy inside", "Otsu IoU"],
                  [[r.label, name, r.scores[prefix + "pointing"].overall.n, _hit(r, prefix + "pointing"),
                    _hit(r, prefix + "pointing_tolerant"), ci_text(_ci(r, prefix + "energy")),
                    ci_text(_ci(r, prefix + "otsu_iou"))]
                   for r in both for name, prefix in (("lesion masks", ""), ("boxes", BOX_PREFIX))])


def _faithfulness_section(doc: Document, results: list[CamEvaluation], fig_dir: Path) -> None:
    checked = [r for r in results if r.faithfulness]
    if not checked:
        return
    doc.heading("Faithfulness")
    doc.para("ROAD (pytorch-grad-cam): pixels are removed by noisy linear imputation, most or least relevant "
             "first; combined = mean over thresholds of (least-first change - most-first change) / 2, above 0 "
             "when the CAM's pixels matter to the model. Confidence drop: relative fall of the true-class "
             "probability when the image is multiplied by its CAM (Average Drop, lower is better).")
    figures.plot_road(checked, fig_dir / "road.png")
    doc.figure(fig_dir / "road.png", "ROAD: true-class probability change against the share of pixels removed")
    doc.table(["model @ layer (grid)", "images", "ROAD combined", "confidence drop", "confidence increase rate"],
              [[r.label, r.faithfulness.n_images, ci_text(r.faithfulness.road_combined),
                ci_text(r.faithfulness.confidence_drop), ci_text(r.faithfulness.confidence_increase)]
               for r in checked])


def _sanity_section(doc: Document, results: list[CamEvaluation], fig_dir: Path) -> None:
    checked = [r for r in results if r.sanity]
    if not checked:
        return
    doc.heading("Sanity check: cascading model-parameter randomisation")
    doc.para("Blocks are re-initialised from the output end, one more at each step (Adebayo et al. 2018); each "
             "CAM is compared with the trained model's on the same images. A CAM that depends on the learned "
             f"weights falls: the check passes when the rank correlation ends below {PASS_RANK_CORRELATION}.")
    figures.plot_sanity(checked, fig_dir / "sanity.png")
    doc.figure(fig_dir / "sanity.png", "Similarity to the trained model's CAM as blocks are randomised")
    doc.table(["model @ layer (grid)", "blocks", "rank corr. after the top block", "rank corr. fully randomised",
               "SSIM fully randomised", "passes"],
              [[r.label, len(r.sanity.steps) - 1, f"{r.sanity.steps[1].rank_correlation:.2f}",
                f"{r.sanity.steps[-1].rank_correlation:.2f}", f"{r.sanity.steps[-1].ssim:.2f}",
                "yes" if r.sanity.passes else "no"] for r in checked])


MARKER_MASKS = {"marker": "the dataset's marker masks", "detected_marker": "markers detected on the images"}


def markers_used(result: CamEvaluation) -> list[str]:
    """Which marker masks a result was scored against: marker (the dataset's), detected_marker, both."""
    return [key for key in MARKER_MASKS if f"{key}_share" in result.scores]


def _markers_section(doc: Document, results: list[CamEvaluation], classes: list[str]) -> None:
    """CAM mass and peaks on burned-in markers, for every model and method, where any were found."""
    rows = [(r, key) for r in results for key in markers_used(r)]
    if not rows:
        return
    used = " and ".join(dict.fromkeys(MARKER_MASKS[key] for _, key in rows))
    doc.heading("Shortcuts: burned-in markers")
    doc.para(f"Scored against {used} (cxrcam.data.markers: strokes of constant level with sharp edges). "
             "Mass: the share of CAM mass on the markers (chance: their share of the image); peak: the share "
             "of images whose CAM peak sits on a marker (chance: the same area share). A model that reads a "
             "marker puts more there than chance; per class, since a shortcut is a class's.")
    doc.table(["model @ layer (grid)", "masks", "images with markers", "mass on markers", "peak on a marker",
               *(f"mass, {c}" for c in classes)],
              [[r.label, MARKER_MASKS[key], r.scores[f"{key}_share"].overall.n, _hit(r, f"{key}_share", None),
                _hit(r, f"{key}_peak", None), *(ci_text(_ci(r, f"{key}_share", c)) for c in classes)]
               for r, key in rows])


def _shortcut_section(doc: Document, audit: ShortcutAudit, fig_dir: Path) -> None:
    doc.heading("Shortcut audit: a burned-in marker")
    doc.para(f"Confounded: trained on data where a burned-in marker goes with some classes more than "
             f"others. Control (when given): the same training with the marker on every class alike. Clean: the "
             f"evaluated model(s) of the same architecture. All on the {audit.n_marked} test images (of "
             f"{audit.n_images}) of "
             "the confounded run that carry the marker. Marker share: CAM mass on the marker (chance: its share "
             "of the image); per class, since the shortcut is a class's. Detected: the same against the markers "
             "cxrcam.data.markers finds on those images, as on data that comes without marker masks.")
    figures.plot_shortcut(audit, fig_dir / "shortcut.png")
    doc.figure(fig_dir / "shortcut.png", "Where the confounded and the clean model look on marked images")
    classes = list(audit.rows[0].evaluation.scores["marker_share"].per_class)
    doc.table(["role", "model @ layer (grid)", "marker share, all", *(f"marker share, {c}" for c in classes),
               "detected-marker share, all", "lung share", "accuracy on marked images"],
              [[row.role, row.evaluation.label, _hit(row.evaluation, "marker_share"),
                *(ci_text(_ci(row.evaluation, "marker_share", c)) for c in classes),
                _hit(row.evaluation, "detected_marker_share"), _hit(row.evaluation, "lung_share"),
                f"{row.evaluation.accuracy:.3f}"] for row in audit.rows])


def conclusions(results: list[CamEvaluation], audit: ShortcutAudit | None) -> list[str]:
    """The evaluation's verdicts in words: localisation against chance, lung share, patterns, sanity,
    faithfulness and the shortcut audit."""
    out = []
    located = [r for r in results if "pointing" in r.scores]
    if located:
        best = max(located, key=lambda r: r.scores["pointing"].overall.mean)
        out.append(f"Best localisation: {best.label} puts its CAM peak inside the lesion on "
                   f"{_hit(best, 'pointing')} of lesion images, and within the pointing "
                   f"game's tolerance on {_hit(best, 'pointing_tolerant')}.")
        for r in located:
            point, zone = r.scores["pointing"], r.scores.get("zone_hit")
            text = f"{r.label}: pointing game {point.versus_chance} chance ({point.overall.mean:.2f})"
            if zone:
                text += f", zone-level hit {zone.versus_chance} chance ({zone.overall.mean:.2f})"
            if r.grid_too_coarse:
                text += f"; its {'x'.join(map(str, r.grid))} CAM grid is too coarse to point inside a lesion"
            out.append(text + ".")
    for r in results:
        lung = r.scores.get("lung_share")
        if lung and lung.versus_chance == "below":
            out.append(f"{r.label} puts {lung.overall.mean:.0%} of its CAM mass in the lungs, less than a flat "
                       f"map ({lung.chance.overall.mean:.0%}): it looks outside the lungs; check it for shortcuts.")
        elif lung:
            out.append(f"{r.label} puts {lung.overall.mean:.0%} of its CAM mass in the lungs "
                       f"(a flat map: {lung.chance.overall.mean:.0%}).")
        shown = [f"{p.cls} {p.criterion} ({p.agrees.mean:.0%})" for p in r.patterns if p.shown]
        missed = [f"{p.cls} {p.criterion} ({p.agrees.mean:.0%})" for p in r.patterns if not p.shown]
        if r.patterns:
            out.append(f"{r.label} shows the expected pattern for most images in {len(shown)} of "
                       f"{len(r.patterns)} criteria" + (f"; not for {', '.join(missed)}." if missed else "."))
        if r.sanity:
            out.append(f"{r.label} {'passes' if r.sanity.passes else 'fails'} the randomisation sanity check: rank "
                       f"correlation {r.sanity.steps[-1].rank_correlation:.2f} once every block is randomised.")
        if r.faithfulness:
            out.append(f"{r.label} ROAD combined {ci_text(r.faithfulness.road_combined)}: "
                       f"{FAITHFULNESS[r.faithfulness.verdict]}.")
    out += _box_findings(results)
    if audit:
        out += _shortcut_findings(audit)
    return out + _causal_findings(results, audit)


def _box_findings(results: list[CamEvaluation]) -> list[str]:
    """Each model's pointing game against the radiologists' boxes, against chance."""
    out = []
    for r in results:
        point = r.scores.get(BOX_PREFIX + "pointing")
        if point:
            out.append(f"{r.label} against the boxes of {r.box_truth.file}: pointing game {point.versus_chance} chance "
                       f"({_hit(r, BOX_PREFIX + 'pointing')}), energy inside the boxes "
                       f"{ci_text(_ci(r, BOX_PREFIX + 'energy'))}.")
    return out


def _shortcut_findings(audit: ShortcutAudit) -> list[str]:
    """Per CAM method, the confounded model's marker share against each other model's, and lung shares."""
    confounded = audit.rows[0].evaluation.model
    return [f"Shortcut audit, {c.method}: the confounded {confounded} puts {ci_text(c.confounded, True)} of its CAM "
            f"mass on the marker, {c.difference} than the {c.role} {c.model} ({ci_text(c.other, True)}; flat map "
            f"{c.flat:.1%}), and {c.confounded_lungs.mean:.0%} in the lungs against {c.other_lungs.mean:.0%}."
            for c in audit.comparisons]


EDITS = {"markers_removed": "markers removed", "lungs_only": "lungs only"}


def _causal_rows(label: str, alteration: Alteration) -> list:
    a = alteration
    return [label, EDITS[a.edit], a.n_images, f"{a.accuracy:.3f} -> {a.edited_accuracy:.3f}",
            ci_text(a.accuracy_change), f"{a.balanced_accuracy:.3f} -> {a.edited_balanced_accuracy:.3f}",
            ci_text(a.balanced_accuracy_change), ci_text(a.true_class_probability_change), a.verdict]


def _causal_section(doc: Document, results: list[CamEvaluation], audit: ShortcutAudit | None) -> None:
    tested = [r for r in results if r.reliance and r.reliance.alterations]
    audited = [row for row in audit.rows if row.evaluation.reliance] if audit else []
    if not tested and not any(row.evaluation.reliance.alterations for row in audited):
        return
    doc.heading("Causal test: markers removed, lungs only")
    doc.para("Where a CAM's heat sits is not what the decision needs. Each model is scored again on its images "
             "edited: markers removed (the marker mask, the dataset's where it has them, else the detected "
             "markers; dilated, inpainted from its surroundings by the linear "
             "imputation ROAD uses, without noise) and lungs only (everything outside the lung mask one constant). "
             "Each edit takes only the images that have its mask. Changes are edited less original on the same "
             "images, with paired bootstrap intervals; a model relies on what an edit removes when its accuracy "
             "change lies below 0. Lungs only takes the images far from those the model learned on: a loss there "
             "says it needs the image around the lungs, not which part of it; read it against the other models'.")
    header = ["model", "edit", "images", "accuracy", "accuracy change", "balanced acc.", "balanced acc. change",
              "true-class probability change", "verdict"]
    if tested:
        doc.table(header, [_causal_rows(r.model, a) for r in tested for a in r.reliance.alterations])
    if audited:
        doc.para("Shortcut audit: the same test on the confounded run's marked test images.")
        doc.table(["role", *header], [[row.role, *_causal_rows(row.evaluation.model, a)]
                                      for row in audited for a in row.evaluation.reliance.alterations])


def _causal_findings(results: list[CamEvaluation], audit: ShortcutAudit | None) -> list[str]:
    """Per model and edit, the accuracy change and its verdict; in the audit, the confounded model's
    loss without the markers against each other model's."""
    out = [f"Causal test, {r.model}, {EDITS[a.edit]} ({a.n_images} images): accuracy {a.accuracy:.3f} -> "
           f"{a.edited_accuracy:.3f}, change {ci_text(a.accuracy_change)}: {a.verdict}."
           for r in results if r.reliance for a in r.reliance.alterations]
    rows = [row for row in audit.rows if row.evaluation.reliance] if audit else []
    if rows and rows[0].evaluation.reliance.markers_removed:
        confounded = rows[0].evaluation.reliance.markers_removed
        out += [f"Causal test, shortcut audit: with the markers removed the confounded {rows[0].evaluation.model}'s "
                f"accuracy changes by {ci_text(confounded.accuracy_change)}, {loss_against(confounded, other)} "
                f"than the {row.role} {row.evaluation.model}'s {ci_text(other.accuracy_change)}: "
                f"the confounded model {confounded.verdict}."
                for row in rows[1:] if (other := row.evaluation.reliance.markers_removed)]
    return out
