"""Radiologists' bounding boxes as localisation ground truth: reading, matching, rasterising, the
synthetic set's lesion_boxes.csv, and evaluate's box_* scores end to end."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from cxrcam.cli import unknown_group_option
from cxrcam.config import config_dir, validate_boxes_config
from cxrcam.data.synthetic import LESION_BOXES, MANIFEST, ensure_synthetic, write_lesion_boxes
from cxrcam.errors import CxrcamError
from cxrcam.evaluate import evaluate
from cxrcam.evaluation.anatomy import read_mask
from cxrcam.evaluation.boxes import BoxFile, add_boxes, box_region, box_truth, match_images, read_boxes
from cxrcam.evaluation.localisation import localisation_scores
from cxrcam.evaluation.results import CHANCE, BoxTruth
from cxrcam.evaluation.samples import Sample, load_samples
from cxrcam.evaluation.scores import image_scores

from conftest import compose_config, train_tiny
from test_evaluate import compose_evaluate_config

NONE = {"file": None, "format": "xyxy", "columns": None, "path_suffix": "", "label_column": None}


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def boxes_of(path: Path, **settings) -> dict:
    return read_boxes({**NONE, "file": str(path), **settings}).boxes


def sample(path: str, label: str = "COVID", shape: tuple[int, int] = (40, 80), size: int = 20) -> Sample:
    return Sample(path, label, np.zeros((size, size), np.uint8), None, None, None, shape=shape)


def refusal(call, *args) -> str:
    with pytest.raises(CxrcamError) as info:
        call(*args)
    return str(info.value)


# --- rasterising -------------------------------------------------------------------------------------

def test_a_box_is_stretched_with_its_image_and_covers_the_pixels_whose_centre_it_holds():
    # 80 x 40 px original -> 20 x 20: x shrinks 4x, y 2x; (8, 4)-(24, 16) is columns 2..5, rows 2..7
    region, clipped = box_region([(8, 4, 24, 16)], (40, 80), 20)
    expected = np.zeros((20, 20), bool)
    expected[2:8, 2:6] = True
    assert clipped == 0 and np.array_equal(region, expected)
    # output column 2 samples original column 10 (centre 10.5): a box holds it when 10.5 is in [x_min, x_max)
    assert box_region([(10.5, 4, 10.6, 6)], (40, 80), 20)[0][2:3, 2].all()
    assert not box_region([(10.6, 4, 12, 6)], (40, 80), 20)[0].any()
    assert not box_region([(8, 4, 10.5, 6)], (40, 80), 20)[0].any()  # right edge excluded


@pytest.mark.parametrize("shape, size, rect", [((48, 64), 32, (10, 30, 7, 41)), ((40, 90), 33, (3, 39, 50, 89)),
                                               ((37, 23), 50, (0, 37, 5, 6)), ((120, 70), 17, (61, 95, 0, 70))])
def test_a_box_around_a_rectangular_mask_lands_on_the_pixels_of_the_mask(tmp_path, shape, size, rect):
    top, bottom, left, right = rect  # rows top..bottom-1, columns left..right-1
    mask = np.zeros(shape, np.uint8)
    mask[top:bottom, left:right] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    lesion = read_mask(tmp_path / "mask.png", size)
    region, clipped = box_region([(left, top, right, bottom)], shape, size)
    assert clipped == 0 and region.any() and np.array_equal(region, lesion)
    cam = np.random.default_rng(0).random((size, size)).astype(np.float32)
    assert localisation_scores(cam, region, None, 3.0) == localisation_scores(cam, lesion, None, 3.0)


def test_several_boxes_are_one_region_and_boxes_outside_are_clipped_with_one_warning(caplog):
    region, clipped = box_region([(0, 0, 8, 4), (4, 2, 12, 6)], (20, 20), 20)
    expected = np.zeros((20, 20), bool)
    expected[0:4, 0:8] = expected[2:6, 4:12] = True
    assert clipped == 0 and np.array_equal(region, expected)
    boxes = BoxFile("b.csv", 3, {"a.png": [(None, (-5, -2, 4, 2)), (None, (90, 0, 99, 9))],
                                 "b.png": [(None, (0, 38, 8, 41))]})
    samples = [sample("/d/a.png"), sample("/d/b.png")]
    with caplog.at_level(logging.WARNING, logger="cxrcam.evaluation.boxes"):
        add_boxes(samples, boxes)
    assert [r.getMessage() for r in caplog.records] == ["3 box(es) of b.csv reach outside their image: clipped to it"]
    expected = np.zeros((20, 20), bool)
    expected[0:1, 0:1] = True  # columns 0..3 and rows 0..1 of the 80 x 40 original
    assert np.array_equal(samples[0].boxes, expected)
    expected = np.zeros((20, 20), bool)
    expected[19:20, 0:2] = True
    assert np.array_equal(samples[1].boxes, expected)


def test_loading_an_image_records_its_original_shape_that_box_coordinates_refer_to(tmp_path):
    Image.fromarray(np.zeros((30, 50), np.uint8)).save(tmp_path / "wide.png")
    (loaded,), failures = load_samples([(str(tmp_path / "wide.png"), "COVID")], 16)
    assert failures == [] and loaded.shape == (30, 50) and loaded.gray.shape == (16, 16) and loaded.boxes is None


# --- matching ----------------------------------------------------------------------------------------

def test_a_box_path_names_the_image_whose_path_ends_in_it():
    images = ["/data/nih/images_001/images/00000001_000.png", "/data/nih/images_002/images/00000002_000.png",
              "/data/rsna/p1.dcm"]
    assert match_images(["00000001_000.png", "images_002/images/00000002_000.png", "p1.dcm", "00000001_000",
                         "other/00000001_000.png", "images/00000009_000.png"], images) == {
        images[0]: ["00000001_000.png"], images[1]: ["images_002/images/00000002_000.png"], images[2]: ["p1.dcm"]}


def test_a_box_path_that_names_two_evaluated_images_is_refused():
    images = ["/a/COVID/images/x.png", "/b/COVID/images/x.png"]
    assert match_images(["a/COVID/images/x.png"], images) == {images[0]: ["a/COVID/images/x.png"]}
    assert refusal(match_images, ["images/x.png"], images) == (
        "box path 'images/x.png' names 2 evaluated images, /a/COVID/images/x.png and /b/COVID/images/x.png; give the "
        "box file's paths with their folders so that each names one")


def test_a_box_file_that_names_no_evaluated_image_is_refused():
    boxes = BoxFile("b.csv", 2, {"p1.dcm": [(None, None)], "p2.dcm": [(None, (1, 1, 2, 2))]})
    assert refusal(add_boxes, [sample("/d/images/p1.png")], boxes) == (
        "boxes.file=b.csv: none of its 2 rows names an evaluated image (e.g. row path 'p1.dcm', image "
        "/d/images/p1.png); its paths (+ boxes.path_suffix) must be the images' file names or their last folders "
        "and file names")


def test_empty_rows_are_no_finding_an_unlisted_image_has_no_box_truth_and_labels_filter_boxes():
    boxes = BoxFile("b.csv", 5, {"neg.png": [(None, None), (None, None)], "pos.png": [(None, (0, 0, 8, 4))],
                                 "cov.png": [("COVID", (0, 0, 8, 4)), ("Normal", (40, 20, 80, 40))],
                                 "other.png": [("Normal", (0, 0, 80, 40))]})
    samples = [sample(f"/d/{name}.png") for name in ("neg", "pos", "cov", "other", "unlisted")]
    add_boxes(samples, boxes)
    neg, pos, cov, other, unlisted = samples
    assert neg.boxes is not None and not neg.boxes.any() and unlisted.boxes is None
    assert pos.boxes.sum() == 2 * 2 and np.array_equal(cov.boxes, pos.boxes)  # the Normal box is another class's
    assert other.boxes is not None and not other.boxes.any()
    assert box_truth(samples, "b.csv") == BoxTruth("b.csv", 2, 2, 1) and box_truth(samples, None) is None
    cam = np.random.default_rng(0).random((20, 20)).astype(np.float32)
    settings = {"tolerance_px": 2.0, "peripheral_from": 0.5, "criteria": [], "thresholds": {}}
    assert image_scores(cam, neg, settings) == {} and image_scores(cam, unlisted, settings) == {}
    scores = image_scores(cam, pos, settings)
    assert scores == {f"box_{k}": v for k, v in localisation_scores(cam, pos.boxes, None, 2.0).items()}
    assert {k: CHANCE[k] for k in CHANCE if k.startswith("box_")} == {
        "box_pointing": "box_pointing_chance", "box_pointing_tolerant": "box_pointing_tolerant_chance",
        "box_energy": "box_pointing_chance", "box_zone_hit": "box_zone_hit_chance"}


# --- reading a box file ------------------------------------------------------------------------------

def preset(name: str, file: Path) -> dict:
    return compose_config("evaluate", f"boxes={name}", f"boxes.file={file}")["boxes"]


def test_the_rsna_preset_reads_its_labels_file(tmp_path):
    file = write_csv(tmp_path / "stage_2_train_labels.csv",
                     "patientId,x,y,width,height,Target\np1,10,20,30,40,1\np1,50.5,60,5,5,1\np2,,,,,0\n")
    assert read_boxes(preset("rsna", file)) == BoxFile(str(file), 3, {
        "p1.dcm": [(None, (10, 20, 40, 60)), (None, (50.5, 60, 55.5, 65))], "p2.dcm": [(None, None)]})


def test_the_nih_preset_reads_its_literal_bbox_columns(tmp_path):
    file = write_csv(tmp_path / "BBox_List_2017.csv", "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
                     "00013118_008.png,Atelectasis,225.08,547.02,86.78,79.19,,,\n"
                     "00014716_007.png,Effusion,686,357,100,200,,,\n")
    boxes = boxes_of(file, **{k: v for k, v in preset("nih", file).items() if k != "file"})
    assert boxes == {"00013118_008.png": [(None, (225.08, 547.02, 225.08 + 86.78, 547.02 + 79.19))],
                     "00014716_007.png": [(None, (686, 357, 786, 557))]}
    labelled = read_boxes({**preset("nih", file), "label_column": "Finding Label"}).boxes
    assert [label for rows in labelled.values() for label, _ in rows] == ["Atelectasis", "Effusion"]


def test_the_vindr_preset_reads_every_readers_boxes_and_no_finding_rows(tmp_path):
    file = write_csv(tmp_path / "annotations_train.csv",
                     "image_id,rad_id,class_name,x_min,y_min,x_max,y_max\n"
                     "a1,R1,Aortic enlargement,691,1375,1653,1831\na1,R2,Aortic enlargement,690,1370,1650,1830\n"
                     "b2,R3,No finding,,,,\n")
    assert read_boxes(preset("vindr", file)).boxes == {
        "a1.dicom": [(None, (691, 1375, 1653, 1831)), (None, (690, 1370, 1650, 1830))], "b2.dicom": [(None, None)]}


def test_columns_and_path_suffix_can_be_set_and_a_byte_order_mark_is_no_part_of_a_name(tmp_path):
    file = write_csv(tmp_path / "b.csv", "\ufeffname,left,top,right,bottom\nimg1,1,2,3,4\n")
    assert boxes_of(file, columns=["name", "left", "top", "right", "bottom"], path_suffix=".png") == {
        "img1.png": [(None, (1, 2, 3, 4))]}


BAD_FILES = [
    ("path,x_min,y_min,x_max,y_max\n", {}, "boxes.file={f} has a header but no rows; it needs one row per box (or "
     "image without a finding)"),
    ("", {}, "boxes.file={f} is empty; it needs a header row naming its columns, then one row per box (or image "
     "without a finding)"),
    ("path,x,y,w,h\na.png,1,2,3,4\n", {}, "boxes.file={f} has no column(s) ['x_min', 'y_min', 'x_max', 'y_max'] "
     "(boxes.columns / boxes.label_column); its columns: ['path', 'x', 'y', 'w', 'h']"),
    ("path,x,y,w,h\na.png,1,2,3,4\n", {"format": "xywh", "label_column": "finding"},
     "boxes.file={f} has no column(s) ['finding'] (boxes.columns / boxes.label_column); its columns: "
     "['path', 'x', 'y', 'w', 'h']"),
    ("path,x,y,w,h\na.png,1,2,3,4\nb.png,1,two,3,4\n", {"format": "xywh"},
     "boxes.file={f} line 3: coordinates {'x': '1', 'y': 'two', 'w': '3', 'h': '4'} are not four numbers (leave "
     "all four empty for an image without a finding)"),
    ("path,x,y,w,h\nb.png,1,,3,4\n", {"format": "xywh"},
     "boxes.file={f} line 2: coordinates {'x': '1', 'y': '', 'w': '3', 'h': '4'} are not four numbers (leave "
     "all four empty for an image without a finding)"),
    ("path,x,y,w,h\nb.png,1,inf,3,4\n", {"format": "xywh"},
     "boxes.file={f} line 2: coordinates {'x': '1', 'y': 'inf', 'w': '3', 'h': '4'} are not four numbers (leave "
     "all four empty for an image without a finding)"),
    ("path,x,y,w,h\nb.png,1,2,-3,4\n", {"format": "xywh"},
     "boxes.file={f} line 2: negative width or height {'w': '-3', 'h': '4'}"),
    ("path,x,y,w,h\nb.png,1,2,3,-0.5\n", {"format": "xywh"},
     "boxes.file={f} line 2: negative width or height {'w': '3', 'h': '-0.5'}"),
    ("path,x_min,y_min,x_max,y_max\nb.png,10,20,5,40\n", {},
     "boxes.file={f} line 2: a negative width or height (x_max < x_min or y_max < y_min: {'x_min': '10', "
     "'y_min': '20', 'x_max': '5', 'y_max': '40'}); is it boxes.format=xywh?"),
    ("path,x_min,y_min,x_max,y_max\nb.png,1,20,5,19\n", {},
     "boxes.file={f} line 2: a negative width or height (x_max < x_min or y_max < y_min: {'x_min': '1', "
     "'y_min': '20', 'x_max': '5', 'y_max': '19'}); is it boxes.format=xywh?"),
    ("path,x_min,y_min,x_max,y_max\n ,1,2,3,4\n", {},
     "boxes.file={f} line 2: empty 'path'; every row needs an image path"),
]


@pytest.mark.parametrize("text, settings, message", BAD_FILES, ids=[m[:50] for _, _, m in BAD_FILES])
def test_a_bad_box_file_is_refused_with_one_line_naming_the_row(tmp_path, text, settings, message):
    file = write_csv(tmp_path / "b.csv", text)
    assert refusal(lambda: boxes_of(file, **settings)) == message.replace("{f}", str(file))


def test_a_box_file_that_is_not_utf8_is_refused_in_one_line(tmp_path):
    file = tmp_path / "b.csv"
    file.write_bytes(b"path,x_min,y_min,x_max,y_max\n\xff\xfe.png,1,2,3,4\n")  # a spreadsheet's Latin-1 export
    assert refusal(lambda: boxes_of(file)) == (
        f"boxes.file={file} is not a UTF-8 CSV file ('utf-8' codec can't decode byte 0xff in position 29: invalid "
        "start byte); export it as CSV")


def test_a_missing_box_file_is_refused(tmp_path):
    assert refusal(boxes_of, tmp_path / "nope.csv") == (
        f"boxes.file={tmp_path / 'nope.csv'} does not exist; pass the box CSV, e.g. boxes=rsna "
        "boxes.file=<path to stage_2_train_labels.csv>")


BAD_SETTINGS = [
    ("format", "xxyy", "boxes.format='xxyy' is not one of ['xyxy', 'xywh']"),
    ("file", "", "boxes.file='' must be the path of a box CSV, or null (no boxes)"),
    ("file", 3, "boxes.file=3 must be the path of a box CSV, or null (no boxes)"),
    ("columns", ["path", "x", "y", "w"], "boxes.columns=['path', 'x', 'y', 'w'] must be five column names, the "
     "image path's then the four coordinates' in boxes.format order (e.g. [patientId,x,y,width,height]), or null: "
     "the format's defaults"),
    ("columns", ["path", "x", "y", "w", ""], "boxes.columns=['path', 'x', 'y', 'w', ''] must be five column "
     "names, the image path's then the four coordinates' in boxes.format order (e.g. [patientId,x,y,width,height]), "
     "or null: the format's defaults"),
    ("columns", "path,x,y,w,h", "boxes.columns='path,x,y,w,h' must be five column names, the image path's then the "
     "four coordinates' in boxes.format order (e.g. [patientId,x,y,width,height]), or null: the format's defaults"),
    ("path_suffix", None, "boxes.path_suffix=None must be text added to each row's path, e.g. .dcm, or ''"),
    ("label_column", "", "boxes.label_column='' must be a column name, or null (every box counts)"),
]


@pytest.mark.parametrize("key, value, message", BAD_SETTINGS, ids=[f"{k}={v!r}" for k, v, _ in BAD_SETTINGS])
def test_a_bad_boxes_setting_is_refused_with_one_line(key, value, message):
    assert refusal(validate_boxes_config, {**NONE, key: value}) == message


def test_every_preset_passes_the_checks_and_an_unknown_one_is_named():
    for name in ("none", "rsna", "nih", "vindr", "synthetic"):
        validate_boxes_config(compose_config("evaluate", f"boxes={name}")["boxes"])
    assert compose_config("evaluate")["boxes"] == NONE
    assert unknown_group_option(["boxes=chexpert"], config_dir()) == (
        "boxes=chexpert is not one of ['nih', 'none', 'rsna', 'synthetic', 'vindr']")


# --- the synthetic set's lesion_boxes.csv ------------------------------------------------------------

def component_boxes(lesion: np.ndarray) -> set[tuple[int, int, int, int]]:
    """Each connected part's extent, from its pixel coordinates."""
    parts, n = ndimage.label(lesion)
    boxes = set()
    for i in range(1, n + 1):
        rows, cols = np.nonzero(parts == i)
        boxes.add((cols.min(), rows.min(), cols.max() + 1, rows.max() + 1))
    return boxes


def test_the_synthetic_lesion_boxes_are_the_bounding_boxes_of_each_lesion_part(tiny_synthetic):
    with open(tiny_synthetic / LESION_BOXES, newline="") as f:
        rows = list(csv.DictReader(f))
    masks = sorted(tiny_synthetic.glob("*/lesion_masks/*.png"))
    assert len(masks) == 32 and {r["path"] for r in rows} == {f"{m.parts[-3]}/images/{m.name}" for m in masks}
    for mask_path in masks:
        lesion = np.asarray(Image.open(mask_path)) > 0
        listed = [r for r in rows if r["path"] == f"{mask_path.parts[-3]}/images/{mask_path.name}"]
        assert {r["label"] for r in listed} == {mask_path.parts[-3]}
        if not lesion.any():
            assert [[r[k] for k in ("x_min", "y_min", "x_max", "y_max")] for r in listed] == [["", "", "", ""]]
            continue
        assert {tuple(int(r[k]) for k in ("x_min", "y_min", "x_max", "y_max")) for r in listed} == \
            component_boxes(lesion) and len(listed) == len(component_boxes(lesion))
    assert {r["label"] for r in rows if not r["x_min"]} == {"Normal"}


def test_a_cache_without_lesion_boxes_gets_them_when_evaluate_asks_and_is_otherwise_untouched(tiny_dataset_copy):
    expected = (tiny_dataset_copy / LESION_BOXES).read_text()
    (tiny_dataset_copy / LESION_BOXES).unlink()  # a set generated before the generator wrote its boxes
    before = {p: p.stat().st_mtime_ns for p in tiny_dataset_copy.rglob("*")}
    assert ensure_synthetic(tiny_dataset_copy, n_per_class=8, resolution=64, seed=0) == tiny_dataset_copy
    assert read_boxes({**NONE, "file": str(tiny_dataset_copy / LESION_BOXES)}).n_rows == len(expected.splitlines()) - 1
    assert (tiny_dataset_copy / LESION_BOXES).read_text() == expected
    assert {p: p.stat().st_mtime_ns for p in tiny_dataset_copy.rglob("*") if p.name != LESION_BOXES} == before


# --- end to end --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tiny_synthetic, tmp_path_factory) -> Path:
    return train_tiny(tiny_synthetic, tmp_path_factory.mktemp("run"))


def rectangle_lesions(dataset: Path) -> None:
    """Each lesion mask replaced by its bounding rectangle, so that its box is exactly the mask."""
    for mask_path in dataset.glob("*/lesion_masks/*.png"):
        lesion = np.asarray(Image.open(mask_path)) > 0
        if lesion.any():
            rows, cols = np.nonzero(lesion)
            lesion[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
            Image.fromarray(lesion.astype(np.uint8) * 255).save(mask_path)
    write_lesion_boxes(dataset)


@pytest.mark.slow
def test_boxes_equal_to_rectangular_lesion_masks_score_exactly_as_the_masks(checkpoint, tiny_synthetic,
                                                                            tiny_dataset_copy, tmp_path):
    rectangle_lesions(tiny_dataset_copy)
    split = (checkpoint.parents[1] / "split.csv").read_text()
    (tmp_path / "split.csv").write_text(split.replace(str(tiny_synthetic.resolve()), str(tiny_dataset_copy.resolve())))
    out = tmp_path / "eval"
    assert evaluate(compose_evaluate_config(f"ckpt={checkpoint}", f"split_file={tmp_path / 'split.csv'}",
                                            f"boxes.file={tiny_dataset_copy / LESION_BOXES}"), out) == []
    (result,) = json.loads((out / "cam_metrics.json").read_text())["models"]
    assert result["box_truth"] == {"file": str(tiny_dataset_copy / LESION_BOXES), "with_boxes": 6,
                                   "without_finding": 2, "not_listed": 0}
    scores = result["scores"]
    for metric in ("pointing", "pointing_tolerant", "zone_hit", "energy", "otsu_iou"):
        assert scores[f"box_{metric}"] == scores[metric], metric  # intervals, chance levels and verdicts alike
    assert scores["box_pointing"]["overall"]["n"] == 6 and scores["box_pointing"]["chance"] is not None
    with open(out / "cam_metrics.csv") as f:
        rows = {(r["metric"], r["class"]): r for r in csv.DictReader(f)}
    assert {k: v for k, v in rows["box_energy", "all"].items() if k != "metric"} == \
        {k: v for k, v in rows["energy", "all"].items() if k != "metric"}
    report = (out / "report.md").read_text()
    assert (f"Localisation ground truth: both lesion masks (6 images with a lesion) and boxes from "
            f"{tiny_dataset_copy / LESION_BOXES} (6 images with a box, 2 listed without a finding, 0 not listed).") \
        in report
    assert "## Localisation against radiologists' boxes" in report and "| boxes |" in report


@pytest.mark.slow
def test_boxes_alone_are_the_ground_truth_where_there_are_no_lesion_masks(checkpoint, tiny_synthetic,
                                                                          tiny_dataset_copy, tmp_path):
    for folder in tiny_dataset_copy.glob("*/lesion_masks"):
        shutil.rmtree(folder)
    split = (checkpoint.parents[1] / "split.csv").read_text()
    (tmp_path / "split.csv").write_text(split.replace(str(tiny_synthetic.resolve()), str(tiny_dataset_copy.resolve())))
    with open(tmp_path / "split.csv") as f:
        tested = {r["label"]: Path(r["path"]).name for r in csv.DictReader(f) if r["split"] == "test"}
    # the upper half of one COVID image (64 x 64 px), and a Normal one without a finding
    (tmp_path / "boxes.csv").write_text(f"image,x,y,w,h\n{tested['COVID']},0,0,64,32\n{tested['Normal']},,,,\n")
    out = tmp_path / "eval"
    evaluate(compose_evaluate_config(f"ckpt={checkpoint}", f"split_file={tmp_path / 'split.csv'}",
                                     f"boxes.file={tmp_path / 'boxes.csv'}", "boxes.format=xywh",
                                     "boxes.columns=[image,x,y,w,h]"), out)
    (result,) = json.loads((out / "cam_metrics.json").read_text())["models"]
    assert result["masks"]["lesion"] == 0 and "pointing" not in result["scores"]
    assert result["box_truth"] == {"file": str(tmp_path / "boxes.csv"), "with_boxes": 1, "without_finding": 1,
                                   "not_listed": 6}
    chance = result["scores"]["box_pointing"]["chance"]["overall"]
    assert result["scores"]["box_pointing"]["overall"]["n"] == 1 and chance["mean"] == 0.5
    report = (out / "report.md").read_text()
    assert (f"Localisation ground truth: boxes from {tmp_path / 'boxes.csv'} (1 images with a box, 1 listed without "
            "a finding, 6 not listed); no evaluated image has a lesion mask.") in report
    assert "against the boxes of" in report
