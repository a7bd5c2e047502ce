"""Burned-in markers: the phantoms' text with exact masks, the detector, its CLI, and CAM scores
against detected markers."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cxrcam.data.images import read_grayscale
from cxrcam.data.markers import detect_markers
from cxrcam.data.synthetic import (burn_in_text, draw_devices, ensure_synthetic, marker_fonts, render_phantom)
from cxrcam.errors import CxrcamError
from cxrcam.evaluation.results import score_table
from cxrcam.evaluation.samples import Sample, load_samples
from cxrcam.evaluation.scores import image_scores, summarise
from cxrcam.markers import marker_boxes, scan

from conftest import compose_config, write_dicom

SETTINGS = {"tolerance_px": 0, "peripheral_from": 0.5, "criteria": [],
            "thresholds": {"bilateral_min_ratio": 0.3, "unilateral_min_share": 0.75, "diffuse_min_evenness": 0.7}}


def phantom(seed: int, size: int = 256) -> np.ndarray:
    return render_phantom("Normal", np.random.default_rng(seed), size).image


def as_uint8(image: np.ndarray) -> np.ndarray:
    return (image * 255).round().astype(np.uint8)


def with_text(seed: int, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """A phantom's uint8 pixels with one burned-in annotation, and its mask."""
    image = phantom(seed, size)
    mask = burn_in_text(image, np.random.default_rng([seed, 1]), n_items=1)
    return as_uint8(image), mask


# --- the generator


def test_fonts_are_matplotlibs_own_text_fonts_in_a_fixed_order():
    names = [p.name for p in marker_fonts()]
    assert names == sorted(names) and len(names) == 16
    assert names[0] == "DejaVuSans-Bold.ttf" and "DejaVuSansDisplay.ttf" not in names and "cmex10.ttf" not in names


@pytest.mark.parametrize("seed", range(4))
def test_burned_text_mask_is_exactly_the_pixels_set_to_one_level(seed):
    original = phantom(seed)
    image = original.copy()
    mask = burn_in_text(image, np.random.default_rng([seed, 1]), n_items=1)
    assert mask.any()
    assert np.array_equal(image != original, mask)
    assert len(np.unique(image[mask])) == 1  # one constant level, as a scanner writes it
    assert np.abs(original[mask] - image[mask]).min() >= 0.3


def test_burned_text_is_deterministic_and_varies_with_its_seed():
    first, second, other = phantom(0), phantom(0), phantom(0)
    masks = [burn_in_text(image, np.random.default_rng(seed)) for image, seed in ((first, 7), (second, 7), (other, 8))]
    assert np.array_equal(masks[0], masks[1]) and np.array_equal(first, second)
    assert not np.array_equal(masks[0], masks[2])


def test_devices_add_density_without_touching_the_rest():
    original = phantom(0)
    image = original.copy()
    devices = draw_devices(image, np.random.default_rng(0))
    assert devices.any() and (image >= original).all()  # density is added, never replaces the anatomy
    assert (image - original)[~devices].max() <= 0.05 < (image - original)[devices].max()


def test_synthetic_burned_text_goes_into_marker_masks_on_every_class(tmp_path):
    plain = ensure_synthetic(tmp_path / "plain", 3, 64, 0)
    written = ensure_synthetic(tmp_path / "text", 3, 64, 0, burned_text=1.0)
    with open(written / "metadata.csv") as f:
        assert {row["burned_text"] for row in csv.DictReader(f)} == {"1"}
    for label in ("COVID", "Normal"):
        for i in (1, 2, 3):
            name = f"{label}/images/{label}-{i}.png"
            changed = np.asarray(Image.open(written / name)) != np.asarray(Image.open(plain / name))
            mask = np.asarray(Image.open(written / label / "marker_masks" / f"{label}-{i}.png")) > 0
            assert mask.any() and np.array_equal(changed, mask)


def test_a_text_confounder_is_one_burned_in_annotation_on_the_marked_images_only(tmp_path):
    plain = ensure_synthetic(tmp_path / "plain", 4, 64, 0)
    marker = {"COVID": 1.0, "Normal": 0.0}
    text = ensure_synthetic(tmp_path / "text", 4, 64, 0, marker=marker, marker_style="text")
    box = ensure_synthetic(tmp_path / "box", 4, 64, 0, marker=marker)
    assert json.loads((text / "synthetic.json").read_text())["marker_style"] == "text"
    assert "marker_style" not in json.loads((box / "synthetic.json").read_text())  # older box sets still match
    with open(text / "metadata.csv") as f:
        marked = {row["file"]: row["marker"] for row in csv.DictReader(f)}
    for label, expected in (("COVID", "1"), ("Normal", "0"), ("Lung_Opacity", "0")):
        for i in (1, 2, 3, 4):
            name = f"{label}/images/{label}-{i}.png"
            changed = np.asarray(Image.open(text / name)) != np.asarray(Image.open(plain / name))
            mask = np.asarray(Image.open(text / label / "marker_masks" / f"{label}-{i}.png")) > 0
            assert np.array_equal(changed, mask) and marked[name] == expected and mask.any() == (expected == "1")
            boxed = np.asarray(Image.open(box / label / "marker_masks" / f"{label}-{i}.png")) > 0
            assert not np.array_equal(boxed, mask) or not mask.any()  # a text, not the box
    with pytest.raises(CxrcamError, match=r"data.synthetic.marker_style='circle' is not one of \['box', 'text'\]"):
        ensure_synthetic(tmp_path / "bad", 3, 32, 0, marker=marker, marker_style="circle")


def test_a_burned_text_probability_outside_0_1_is_refused(tmp_path):
    with pytest.raises(CxrcamError, match=r"data.synthetic.burned_text=1.5 must be a probability in \[0, 1\]"):
        ensure_synthetic(tmp_path / "bad", 3, 32, 0, burned_text=1.5)


# --- the detector


@pytest.mark.parametrize("seed", range(6))
def test_detector_covers_burned_in_text(seed):
    pixels, mask = with_text(seed)
    assert detect_markers(pixels)[mask].mean() >= 0.5  # a hit


@pytest.mark.parametrize("seed", range(5))
def test_detector_finds_nothing_on_anatomy_wires_electrodes_or_implants(seed):
    image = phantom(seed)
    assert not detect_markers(as_uint8(image)).any()
    draw_devices(image, np.random.default_rng(seed))
    assert not detect_markers(as_uint8(image)).any()


def test_detector_treats_inverted_and_16_bit_images_alike(tmp_path):
    pixels, mask = with_text(0)
    found = detect_markers(pixels)
    assert np.array_equal(detect_markers(255 - pixels), found)  # MONOCHROME1 stored as is: black text
    Image.fromarray((pixels.astype(np.uint16) * 16 + 300)).save(tmp_path / "x16.png")
    assert np.array_equal(detect_markers(read_grayscale(tmp_path / "x16.png")), found)


def test_detector_scales_with_the_image():
    pixels, mask = with_text(0)
    big = np.kron(pixels, np.ones((4, 4), np.uint8))  # 1024 px: strokes four times wider
    assert detect_markers(big)[np.kron(mask, np.ones((4, 4), bool))].mean() >= 0.5


def test_detector_refuses_what_is_not_a_grayscale_uint8_image():
    with pytest.raises(ValueError, match="uint8"):
        detect_markers(np.zeros((8, 8), np.float32))


def test_marker_boxes_are_inclusive_and_ordered_top_to_bottom():
    mask = np.zeros((20, 30), bool)
    mask[10:12, 2:5] = True
    mask[1:4, 20:30] = True
    assert marker_boxes(mask) == [(20, 1, 29, 3), (2, 10, 4, 11)]


# --- the CLI


@pytest.mark.child_process
def test_cli_writes_masks_at_original_size_and_one_csv_row_per_readable_image(tmp_path):
    folder = tmp_path / "in"
    (folder / "nested").mkdir(parents=True)
    text, _ = with_text(0)
    Image.fromarray(text).save(folder / "a.png")
    Image.fromarray(as_uint8(phantom(1))[:, :200]).save(folder / "nested" / "plain.png")
    write_dicom(folder / "c.dcm", 4095 - with_text(2, 128)[0].astype(np.uint16) * 16, "MONOCHROME1")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    result = subprocess.run([sys.executable, "-m", "cxrcam.markers", f"image={folder}",
                             f"hydra.run.dir={tmp_path / 'out'}"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "HYDRA_FULL_ERROR": "0"})
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"cxrcam.markers: 1 file(s) could not be read: {folder / 'broken.png'}")
    out = tmp_path / "out"
    with open(out / "markers.csv") as f:
        rows = {row["path"]: row for row in csv.DictReader(f)}
    assert sorted(rows) == [str(folder / "a.png"), str(folder / "c.dcm"), str(folder / "nested" / "plain.png")]
    sizes = {"a.png": (256, 256), "c.dcm": (128, 128), "nested/plain.png": (200, 256)}
    for name, size in sizes.items():
        row = rows[str(folder / name)]
        mask = np.asarray(Image.open(out / row["mask"])) > 0
        assert row["mask"] == f"masks/{name.rsplit('.', 1)[0]}.png" and (int(row["width"]), int(row["height"])) == size
        assert mask.shape == size[::-1] and float(row["area_fraction"]) == pytest.approx(mask.mean(), abs=1e-6)
        assert row["boxes"] == ";".join(" ".join(map(str, b)) for b in marker_boxes(mask))
        assert int(row["regions"]) == len(marker_boxes(mask))
    assert rows[str(folder / "nested" / "plain.png")]["regions"] == "0"
    assert int(rows[str(folder / "a.png")]["regions"]) >= 1 and int(rows[str(folder / "c.dcm")]["regions"]) >= 1


def test_scan_without_an_image_says_what_to_pass(tmp_path):
    with pytest.raises(CxrcamError, match=r"say what to scan: image=<file or folder>"):
        scan(compose_config("markers"), tmp_path)
    with pytest.raises(CxrcamError, match="does not exist"):
        scan(compose_config("markers", f"image={tmp_path / 'nothing.png'}"), tmp_path)
    (tmp_path / "in").mkdir()
    with pytest.raises(CxrcamError, match="holds no image file"):
        scan(compose_config("markers", f"image={tmp_path / 'in'}"), tmp_path / "out")
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(CxrcamError, match=r"none of the 1 image\(s\) could be read"):
        scan(compose_config("markers", f"image={tmp_path / 'in'}"), tmp_path / "out")
    assert not (tmp_path / "out" / "markers.csv").exists()


# --- CAMs scored against detected markers


def test_a_cam_all_on_a_detected_marker_scores_share_and_peak_1():
    marker = np.zeros((40, 40), bool)
    marker[2:6, 30:38] = True  # 32 px of 1600
    cam = marker.astype(np.float32)
    sample = Sample("x.png", "Normal", np.zeros((40, 40), np.uint8), None, None, None, detected_marker=marker)
    assert image_scores(cam, sample, SETTINGS) == {
        "detected_marker_share": 1.0, "detected_marker_share_flat": 0.02,
        "detected_marker_peak": 1.0, "detected_marker_peak_chance": 0.02}
    off = np.zeros((40, 40), np.float32)
    off[30, 5] = 3.0
    off[3, 31] = 1.0
    assert image_scores(off, sample, SETTINGS)["detected_marker_share"] == 0.25
    assert image_scores(off, sample, SETTINGS)["detected_marker_peak"] == 0.0


def test_dataset_and_detected_markers_are_scored_side_by_side_with_their_chance():
    marker = np.zeros((40, 40), bool)
    marker[2:6, 30:38] = True
    detected = np.zeros((40, 40), bool)
    detected[2:6, 30:34] = True  # half of it
    sample = Sample("x.png", "Normal", np.zeros((40, 40), np.uint8), None, None, marker, detected_marker=detected)
    scores = image_scores(marker.astype(np.float32), sample, SETTINGS)
    assert scores["marker_share"] == 1.0 and scores["marker_peak"] == 1.0 and scores["marker_peak_chance"] == 0.02
    assert scores["detected_marker_share"] == 0.5 and scores["detected_marker_peak"] == 0.5
    table = score_table(summarise([scores], ["Normal"], ["Normal"], {"n_resamples": 10, "level": 0.95, "seed": 0}))
    assert table["detected_marker_share"].chance.overall.mean == 0.01
    assert table["detected_marker_peak"].chance.overall.mean == 0.01
    assert table["marker_peak"].chance.overall.mean == 0.02
    assert "detected_marker_share_flat" not in table and "detected_marker_peak_chance" not in table


def test_samples_carry_the_markers_detected_at_full_size_then_resized(tmp_path):
    pixels, _ = with_text(0)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    (sample,), failures = load_samples([(str(tmp_path / "a.png"), "Normal")], 64)
    expected = np.asarray(Image.fromarray(detect_markers(pixels).astype(np.uint8)).resize((64, 64),
                                                                                         Image.Resampling.NEAREST)) > 0
    assert failures == [] and sample.detected_marker.any() and np.array_equal(sample.detected_marker, expected)
    assert sample.marker is None


@pytest.mark.slow
def test_evaluate_scores_dataset_and_detected_markers_and_says_which(tmp_path):
    from cxrcam.evaluate import evaluate

    from conftest import train_tiny

    data = ensure_synthetic(tmp_path / "data", 6, 128, 0, burned_text=1.0)
    checkpoint = train_tiny(data, tmp_path / "run")
    evaluate(compose_config("evaluate", f"ckpt={checkpoint}", "device=cpu", "faithfulness.n_images=2",
                            "faithfulness.percentiles=[50]", "sanity.n_images=2", "bootstrap.n_resamples=20"),
             tmp_path / "eval")
    scores = json.loads((tmp_path / "eval" / "cam_metrics.json").read_text())["models"][0]["scores"]
    n_images = scores["lung_share"]["overall"]["n"]
    assert scores["marker_share"]["overall"]["n"] == scores["marker_peak"]["overall"]["n"] == n_images
    assert 0 < scores["detected_marker_share"]["overall"]["n"] <= n_images
    for key in ("marker_share", "marker_peak", "detected_marker_share", "detected_marker_peak"):
        assert scores[key]["chance"] is not None
    assert ("Scored against the dataset's marker masks and markers detected on the images"
            in (tmp_path / "eval" / "report.md").read_text())


def test_an_image_under_128_px_is_not_searched():
    pixels, truth = with_text(0, 128)
    assert detect_markers(pixels).any()
    small = np.asarray(Image.fromarray(pixels).resize((127, 127), Image.Resampling.NEAREST))
    assert not detect_markers(small).any() and detect_markers(small).shape == (127, 127)
