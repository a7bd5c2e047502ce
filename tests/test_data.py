from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from cxrcam.data.audit import global_intensity_baseline
from cxrcam.data.dataset import CXRDataset, build_transform
from cxrcam.data.images import load_image
from cxrcam.data.layout import discover_images, find_dataset_dir
from cxrcam.data.split import read_split, stratified_split, write_split
from cxrcam.data.synthetic import CLASSES, MANIFEST, METADATA, ensure_synthetic, render_phantom
from cxrcam.errors import CxrcamError

from conftest import TINY_CLASSES


def _png(path, size=(20, 20), mode="L", value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


# --- layout discovery -----------------------------------------------------------------------

def test_database_layout_finds_images_not_masks(tiny_synthetic):
    items = discover_images(tiny_synthetic, TINY_CLASSES)
    assert len(items) == 4 * 8
    assert all(p.parent.name == "images" for p, _ in items)
    assert {label for _, label in items} == set(TINY_CLASSES)
    for folder in ("masks", "lesion_masks"):  # beside images/, same file names, never read as images
        assert (items[0][0].parent.parent / folder / items[0][0].name).is_file()


def test_parent_of_dataset_folder_is_accepted(tiny_synthetic):
    assert find_dataset_dir(tiny_synthetic.parent, TINY_CLASSES) == tiny_synthetic
    assert len(discover_images(tiny_synthetic.parent, ["COVID", "Normal"])) == 16


def test_generic_layout_is_recursive_and_ignores_non_images(tmp_path):
    _png(tmp_path / "COVID" / "site_a" / "a.png")
    _png(tmp_path / "COVID" / "site_b" / "b.JPG", mode="RGB")
    _png(tmp_path / "Normal" / "c.tif")
    (tmp_path / "Normal" / "notes.txt").write_text("not an image")
    (tmp_path / "Normal" / "Normal.metadata.xlsx").write_bytes(b"PK")
    items = discover_images(tmp_path, ["COVID", "Normal"])
    assert [(p.name, label) for p, label in items] == [("a.png", "COVID"), ("b.JPG", "COVID"), ("c.tif", "Normal")]


def test_missing_class_folder_lists_what_was_found(tmp_path):
    _png(tmp_path / "COVID" / "images" / "a.png")
    _png(tmp_path / "Normal" / "images" / "b.png")
    with pytest.raises(CxrcamError, match=r"\['Viral Pneumonia'\] not found.*found folders: \['COVID', 'Normal'\]"):
        discover_images(tmp_path, ["COVID", "Normal", "Viral Pneumonia"])


def test_empty_class_folder_and_missing_root_are_errors(tmp_path):
    _png(tmp_path / "COVID" / "images" / "a.png")
    (tmp_path / "Normal" / "images").mkdir(parents=True)
    with pytest.raises(CxrcamError, match="Normal has no images"):
        discover_images(tmp_path, ["COVID", "Normal"])
    with pytest.raises(CxrcamError, match="does not exist"):
        discover_images(tmp_path / "nowhere", ["COVID", "Normal"])
    with pytest.raises(CxrcamError, match="no class folder"):
        discover_images(tmp_path, ["Cat", "Dog"])


# --- split ----------------------------------------------------------------------------------

def test_split_is_deterministic_stratified_and_stable_per_class(tiny_synthetic, tmp_path):
    items = discover_images(tiny_synthetic, TINY_CLASSES)
    a = stratified_split(items, 0.25, 0.25, seed=3)
    assert a == stratified_split(list(reversed(items)), 0.25, 0.25, seed=3)
    assert a != stratified_split(items, 0.25, 0.25, seed=4)
    for label in TINY_CLASSES:
        counts = {s: sum(r["label"] == label and r["split"] == s for r in a) for s in ("train", "val", "test")}
        assert counts == {"train": 4, "val": 2, "test": 2}
    # dropping a class leaves the others' assignment untouched
    fewer = stratified_split([i for i in items if i[1] != "Normal"], 0.25, 0.25, seed=3)
    assert sorted(map(tuple, map(dict.values, fewer))) == sorted(
        tuple(r.values()) for r in a if r["label"] != "Normal")
    write_split(a, tmp_path / "split.csv")
    assert read_split(tmp_path / "split.csv", TINY_CLASSES) == a


def test_split_errors(tiny_synthetic, tmp_path):
    items = discover_images(tiny_synthetic, TINY_CLASSES)
    with pytest.raises(CxrcamError, match="too few"):
        stratified_split(items[:2], 0.25, 0.25, seed=0)
    with pytest.raises(CxrcamError, match="fractions"):
        stratified_split(items, 0.5, 0.5, seed=0)
    write_split(stratified_split(items, 0.25, 0.25, 0), tmp_path / "split.csv")
    with pytest.raises(CxrcamError, match=r"labels \['Lung_Opacity', 'Viral Pneumonia'\] not in data.classes"):
        read_split(tmp_path / "split.csv", ["COVID", "Normal"])


def test_dataset_yields_normalised_three_channel_tensors(tiny_synthetic):
    items = discover_images(tiny_synthetic, TINY_CLASSES)[:4]
    transform = build_transform([0.5] * 3, [0.25] * 3)
    lazy = CXRDataset([p for p, _ in items], [0, 1, 2, 3], 32, transform)
    eager = CXRDataset([p for p, _ in items], [0, 1, 2, 3], 32, transform, preload=True)
    x, y = lazy[2]
    pixels = torch.from_numpy(load_image(items[2][0], 32)).float()
    assert x.shape == (3, 32, 32) and y == 2
    assert torch.allclose(x, ((pixels / 255 - 0.5) / 0.25).expand(3, -1, -1), atol=1e-6)
    assert (eager[2][0] == x).all()


# --- synthetic phantoms ---------------------------------------------------------------------

def test_phantoms_are_deterministic_and_findings_sit_where_the_slides_say():
    for label in CLASSES:
        a = render_phantom(label, np.random.default_rng([0, 1]), 128)
        b = render_phantom(label, np.random.default_rng([0, 1]), 128)
        assert np.array_equal(a.image, b.image) and np.array_equal(a.lesion, b.lesion)
        assert a.image.min() >= 0 and a.image.max() <= 1 and a.lungs.mean() > 0.1
        assert not (a.lesion & ~a.lungs).any()
        assert a.lesion.any() == (label != "Normal")
    for seed in range(5):
        covid = render_phantom("COVID", np.random.default_rng([seed, 7]), 128)
        rows, cols = np.nonzero(covid.lesion)
        lung_rows = np.nonzero(covid.lungs)[0]
        assert rows.mean() > np.median(lung_rows)  # lower zones
        assert (cols < 64).any() and (cols >= 64).any()  # bilateral
        vp = render_phantom("Viral Pneumonia", np.random.default_rng([seed, 7]), 128)
        assert np.nonzero(vp.lesion)[0].mean() < lung_rows.mean()  # upper zones
        opacity = render_phantom("Lung_Opacity", np.random.default_rng([seed, 7]), 128)
        cols = np.nonzero(opacity.lesion)[1]
        if opacity.info["side"] == "right":  # the patient's right lung is on the image left
            assert cols.max() < 64
        else:
            assert cols.min() >= 64


def test_synthetic_dataset_is_cached_and_described(tiny_synthetic):
    manifest = json.loads((tiny_synthetic / MANIFEST).read_text())
    assert manifest["n_per_class"] == 8 and manifest["image_size"] == 64
    before = (tiny_synthetic / "COVID" / "images" / "COVID-1.png").stat().st_mtime_ns
    ensure_synthetic(tiny_synthetic, n_per_class=8, image_size=64, seed=0)
    assert (tiny_synthetic / "COVID" / "images" / "COVID-1.png").stat().st_mtime_ns == before
    with open(tiny_synthetic / METADATA) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 32
    normal = [r for r in rows if r["label"] == "Normal"]
    assert all(r["side"] == "none" and float(r["lesion_area_fraction"]) == 0 for r in normal)
    opacity = [r for r in rows if r["label"] == "Lung_Opacity"]
    assert all(r["side"] in ("left", "right") and float(r["lesion_area_fraction"]) > 0 for r in opacity)
    lesion = np.asarray(Image.open(tiny_synthetic / "COVID" / "lesion_masks" / "COVID-1.png"))
    assert lesion.shape == (64, 64) and set(np.unique(lesion)) == {0, 255}


def test_synthetic_never_overwrites_data(tmp_path, tiny_synthetic):
    _png(tmp_path / "mine" / "x.png")
    with pytest.raises(CxrcamError, match="not a cxrcam synthetic dataset"):
        ensure_synthetic(tmp_path / "mine", n_per_class=2, image_size=32, seed=0)
    with pytest.raises(CxrcamError, match="other parameters"):
        ensure_synthetic(tiny_synthetic, n_per_class=9, image_size=64, seed=0)


def test_global_intensity_does_not_give_the_class_away(tmp_path):
    """The README's bar: a global mean/std/histogram classifier stays at or below 0.60 accuracy."""
    root = ensure_synthetic(tmp_path / "synthetic", n_per_class=40, image_size=96, seed=1)
    items = discover_images(root, list(CLASSES))
    accuracy = global_intensity_baseline([p for p, _ in items], [CLASSES.index(c) for _, c in items])
    assert accuracy <= 0.60, accuracy
