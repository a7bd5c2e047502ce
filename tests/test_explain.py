"""python -m cxrcam.explain on tiny checkpoints trained here (seconds each)."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from cxrcam.data.batches import to_batch
from cxrcam.data.images import load_image
from cxrcam.data.layout import images_under
from cxrcam.errors import CxrcamError
from cxrcam.explain import explain, layout_label, panel_title, select_samples
from cxrcam.loaded_run import LoadedRun
from cxrcam.models import get_layer, model_from_checkpoint
from cxrcam.reporting.overlays import overlay_rgb, resize_cam
from cxrcam.checkpoint import load_checkpoint

from conftest import TINY_CLASSES, compose_config, train_tiny


@pytest.fixture(scope="module")
def checkpoints(tiny_synthetic, tmp_path_factory) -> list[Path]:
    """best.pt of a SimpleCNN and a ResNet50, 1 epoch at 32 px."""
    return [train_tiny(tiny_synthetic, tmp_path_factory.mktemp(name), f"model={name}")
            for name in ("simple_cnn", "resnet50")]


@pytest.mark.slow
def test_test_split_gives_overlays_panels_predictions_and_raw_cams(checkpoints, tmp_path):
    failures = explain(compose_config("explain", f"ckpt={checkpoints[0]}", "split=test", "per_class=1",
                                              "device=cpu"), tmp_path)
    assert failures == []
    with open(tmp_path / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["label"] for r in rows) == sorted(TINY_CLASSES)
    assert all(abs(sum(float(r[f"p_{c}"]) for c in TINY_CLASSES) - 1) < 1e-4 for r in rows)
    assert len(list((tmp_path / "overlays").glob("*.png"))) == 4  # predicted class only
    assert len(list((tmp_path / "panels").glob("*.png"))) == 4
    saved = np.load(tmp_path / "cams.npz")
    assert saved["cams"].shape == (4, 4, 32, 32) and saved["cams"].dtype == np.float16
    assert list(saved["paths"]) == [r["path"] for r in rows] and str(saved["layer"]) == "features.3"
    payload = load_checkpoint(checkpoints[0])
    model = model_from_checkpoint(payload).eval()
    images = to_batch([load_image(p, 32) for p in saved["paths"]], payload["meta"]["normalization"])
    with GradCAM(model, [get_layer(model, "features.3")]) as reference:  # an independent implementation
        for c in range(4):  # cams[i, c]: image i's map for class c, in the checkpoint's class order
            expected = reference(images, [ClassifierOutputTarget(c)] * 4)
            assert np.abs(saved["cams"][:, c] - expected).max() < 2e-3  # float16 on disk
    assert list(saved["labels"]) == [r["label"] for r in rows] and list(saved["class_names"]) == TINY_CLASSES


@pytest.mark.slow
def test_cam_target_and_method_options(checkpoints, tmp_path):
    base = (f"ckpt={checkpoints[0]}", "split=test", "per_class=1", "device=cpu")
    explain(compose_config("explain", *base, "cam.target=all"), tmp_path / "all")
    assert len(list((tmp_path / "all" / "overlays").glob("*.png"))) == 16
    explain(compose_config("explain", *base, "cam.target=Normal", "cam.method=gradcam++"), tmp_path / "normal")
    assert all(p.stem.endswith("_Normal") for p in (tmp_path / "normal" / "overlays").glob("*.png"))
    explain(compose_config("explain", *base, "cam.layer=features.2", "cam.eigen_smooth=true"), tmp_path / "layer")
    saved = np.load(tmp_path / "layer" / "cams.npz")
    assert str(saved["layer"]) == "features.2" and saved["cams"].shape == (4, 4, 32, 32)
    with pytest.raises(CxrcamError, match="layer 'features.9' does not exist"):
        explain(compose_config("explain", *base, "cam.layer=features.9"), tmp_path / "nolayer")
    with pytest.raises(CxrcamError, match="cam.target='Cat'"):
        explain(compose_config("explain", *base, "cam.target=Cat"), tmp_path / "cat")
    with pytest.raises(CxrcamError, match="cam.method='magic'"):
        explain(compose_config("explain", *base, "cam.method=magic"), tmp_path / "magic")


@pytest.mark.slow
def test_two_checkpoints_give_a_comparison_figure(checkpoints, tmp_path):
    explain(compose_config("explain", f"ckpt=[{checkpoints[0]},{checkpoints[1]}]", "split=test", "per_class=1",
                                   "device=cpu"), tmp_path)
    assert (tmp_path / "0_simple_cnn" / "cams.npz").is_file() and (tmp_path / "1_resnet50" / "cams.npz").is_file()
    width, height = Image.open(tmp_path / "comparison.png").size
    assert height > width  # four rows (one per true class), two columns


@pytest.mark.child_process
def test_folder_with_a_corrupt_file_explains_the_rest_and_fails(checkpoints, tmp_path):
    folder = tmp_path / "in"
    (folder / "nested").mkdir(parents=True)
    gray = (np.random.default_rng(0).random((70, 50)) * 255).astype(np.uint8)
    Image.fromarray(gray).save(folder / "a.png")
    Image.fromarray(gray).save(folder / "nested" / "b.jpg")
    Image.fromarray(gray).convert("RGBA").save(folder / "c.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    (folder / "notes.txt").write_text("not an image")
    result = subprocess.run([sys.executable, "-m", "cxrcam.explain", f"ckpt={checkpoints[0]}", f"image={folder}",
                             "cam.overlay_size=original", "device=cpu", f"hydra.run.dir={tmp_path / 'out'}"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HYDRA_FULL_ERROR": "0"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"cxrcam.explain: 1 file(s) could not be read: {folder / 'broken.png'}")
    overlays = sorted((tmp_path / "out" / "overlays").glob("*.png"))
    assert len(overlays) == 3
    assert {Image.open(p).size for p in overlays} == {(50, 70)}  # over the original, not the 32 px input


def test_overlay_heat_sits_where_the_cam_is_high():
    gray = np.full((40, 60), 100, np.uint8)
    cam = np.zeros((40, 60), np.float32)
    cam[:10, :15] = 1  # top-left corner
    rgb = overlay_rgb(gray, cam, "jet", 0.5).astype(int)
    assert rgb[:10, :15, 0].mean() > rgb[20:, 30:, 0].mean() + 60  # red where the map is hot
    square = np.zeros((32, 32), np.float32)
    square[:8, :8] = 1  # the model saw a 32 px square; the original is 40 x 60
    stretched = resize_cam(square, 40, 60)
    assert stretched.shape == (40, 60)
    assert stretched[:8, :12].mean() > 0.9 and stretched[15:, 20:].max() < 1e-6


@pytest.mark.slow
def test_nothing_to_explain_is_a_clear_error(checkpoints, tmp_path):
    with pytest.raises(CxrcamError, match="say what to explain"):
        explain(compose_config("explain", f"ckpt={checkpoints[0]}"), tmp_path)
    with pytest.raises(CxrcamError, match="say which model"):
        explain(compose_config("explain", "split=test"), tmp_path)
    with pytest.raises(CxrcamError, match="does not exist"):
        explain(compose_config("explain", f"ckpt={checkpoints[0]}", f"image={tmp_path / 'nope.png'}"), tmp_path)


def test_layout_label_is_the_class_folder_above_images(tmp_path):
    root = tmp_path / "set"
    assert layout_label(root / "COVID" / "images" / "a.png", TINY_CLASSES) == "COVID"
    assert layout_label(root / "Viral Pneumonia" / "images" / "sub" / "b.png", TINY_CLASSES) == "Viral Pneumonia"
    assert layout_label(Path("Normal/images/c.png"), TINY_CLASSES) == "Normal"  # relative to any cwd
    for outside in ("Cat/images/a.png", "COVID/a.png", "images/a.png", "COVID/masks/a.png", "a.png"):
        assert layout_label(root / outside, TINY_CLASSES) is None, outside


def class_layout_folder(tiny_synthetic: Path, folder: Path) -> Path:
    """Two images in the class layout, one under a folder that is no class, one loose."""
    source = images_under(tiny_synthetic / "COVID" / "images")[0]
    for name, where in (("covid.png", "COVID/images"), ("normal.png", "Normal/images"), ("cat.png", "Cat/images"),
                        ("loose.png", ".")):
        (folder / where).mkdir(parents=True, exist_ok=True)
        shutil.copy(source, folder / where / name)
    return folder


def test_folder_and_file_samples_carry_the_layout_label(tiny_synthetic, tmp_path):
    folder = class_layout_folder(tiny_synthetic, tmp_path / "in")
    run = LoadedRun(tmp_path / "best.pt", {"class_names": TINY_CLASSES}, torch.nn.Identity())
    found = select_samples({"image": str(folder)}, run)
    assert {Path(p).name: label for p, label in found} == {"covid.png": "COVID", "normal.png": "Normal",
                                                           "cat.png": None, "loose.png": None}
    single = folder / "Normal" / "images" / "normal.png"
    assert select_samples({"image": str(single)}, run) == [(str(single), "Normal")]
    assert panel_title(str(single), "Normal", "COVID", "cnn") == "normal.png: true Normal, predicted COVID (cnn)"
    assert panel_title("x/loose.png", None, "COVID", "cnn") == "loose.png: true ?, predicted COVID (cnn)"


@pytest.mark.slow
def test_folder_in_the_class_layout_writes_true_labels(checkpoints, tiny_synthetic, tmp_path):
    folder = class_layout_folder(tiny_synthetic, tmp_path / "in")
    explain(compose_config("explain", f"ckpt={checkpoints[0]}", f"image={folder}", "cam.target=true", "device=cpu"),
            tmp_path / "out")
    with open(tmp_path / "out" / "predictions.csv") as f:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(f)}
    assert {name: r["label"] for name, r in rows.items()} == {"covid.png": "COVID", "normal.png": "Normal",
                                                              "cat.png": "", "loose.png": ""}
    overlays = {p.stem.split("_", 1)[1] for p in (tmp_path / "out" / "overlays").glob("*.png")}
    assert {"covid_COVID", "normal_Normal"} <= overlays  # cam.target=true: the true class's map
    assert {f"{name[:-4]}_{rows[name]['predicted']}" for name in ("cat.png", "loose.png")} <= overlays
    assert sorted(np.load(tmp_path / "out" / "cams.npz")["labels"]) == ["", "", "COVID", "Normal"]
