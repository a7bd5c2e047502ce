"""Bad input, interrupted runs and untrusted checkpoints: each case is made here, on the fly, and
the documented behaviour is asserted (README: "Data hygiene and failure behaviour")."""

from __future__ import annotations

import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxrcam.data.images import MAX_PIXELS, load_image, read_grayscale
from cxrcam.data.layout import discover_images
from cxrcam.errors import CxrcamError
from cxrcam.models import model_from_checkpoint
from cxrcam.checkpoint import load_checkpoint

from conftest import RESUMED_CASE, TINY_CLASSES, assert_same_training, run_tiny, tiny_train_overrides, write_dicom


def first_image(root: Path, label: str = "COVID") -> Path:
    return sorted((root / label / "images").glob("*.png"))[0]


# --- image formats --------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P", "1", "I;16", "I", "F"])
def test_any_mode_loads_as_grayscale_uint8(tmp_path, mode):
    gradient = np.tile(np.linspace(0, 1, 40, dtype=np.float32), (30, 1))
    if mode in ("I;16", "I"):
        image = Image.fromarray((gradient * 4095).astype(np.uint16 if mode == "I;16" else np.int32))
    elif mode == "F":
        image = Image.fromarray(gradient * 1000)
    else:
        image = Image.fromarray((gradient * 255).astype(np.uint8)).convert(mode)
    assert image.mode == mode
    path = tmp_path / ("x.tif" if mode in ("I", "F") else "x.png")
    image.save(path)
    pixels = load_image(path, 16)
    assert pixels.shape == (16, 16) and pixels.dtype == np.uint8
    if mode != "1":  # a 1-bit image keeps only its threshold
        assert pixels[:, 0].mean() < 40 and pixels[:, -1].mean() > 215  # left dark, right bright
    if mode in ("I;16", "I", "F"):  # 12-bit data in a wider container is stretched, not left black
        assert pixels.max() >= 240  # dividing 4095 by 65535 would leave it below 20


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("L", (40, 20), 0)
    image.paste(255, (0, 0, 20, 20))  # left half bright
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90° clockwise turn
    image.save(tmp_path / "x.jpg", exif=exif, quality=95)
    pixels = load_image(tmp_path / "x.jpg", 20)
    assert pixels[:10].mean() > 200 and pixels[10:].mean() < 50  # bright half now on top


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 10, b"not an image at all"],
                         ids=["zero-byte", "truncated-header", "text"])
def test_unreadable_image_is_a_one_line_error_naming_the_file(tmp_path, content):
    (tmp_path / "broken.png").write_bytes(content)
    with pytest.raises(CxrcamError, match="broken.png") as info:
        load_image(tmp_path / "broken.png", 16)
    assert "\n" not in str(info.value)


def _png_claiming(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header claims width x height (a decompression bomb's signature)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    _png_claiming(tmp_path / "big.png", 9_000, 9_000)  # over cxrcam's limit, under Pillow's
    assert 9_000 * 9_000 > MAX_PIXELS
    with pytest.raises(CxrcamError, match="refusing image .*big.png: 9000 x 9000 pixels is over"):
        read_grayscale(tmp_path / "big.png")
    _png_claiming(tmp_path / "bomb.png", 20_000, 20_000)  # Pillow itself refuses this one at open
    with pytest.raises(CxrcamError, match="bomb.png: .*decompression bomb"):
        read_grayscale(tmp_path / "bomb.png")


def test_dicom_monochrome1_with_voi_lut_and_multiframe_refusal(tmp_path):
    # a 12-bit gradient, dark to bright left to right in stored values, in MONOCHROME1: bright = low values
    stored = np.tile(np.linspace(0, 4095, 64), (32, 1)).astype(np.uint16)
    write_dicom(tmp_path / "mono1.dcm", stored, "MONOCHROME1", WindowCenter=1024, WindowWidth=2048)
    pixels = read_grayscale(tmp_path / "mono1.dcm")
    assert pixels.shape == (32, 64) and pixels.dtype == np.uint8
    assert pixels[:, 0].mean() > 250 and pixels[:, -1].mean() < 5  # inverted: low stored values shown bright
    # the window (0..2048) saturates everything above 2048: the right half is flat after windowing
    assert np.ptp(pixels[:, 40:]) == 0 and np.ptp(pixels[:, :28]) > 100
    write_dicom(tmp_path / "cine.dcm", np.stack([stored, stored]), "MONOCHROME2", NumberOfFrames=2)
    with pytest.raises(CxrcamError, match="cine.dcm: it has 2 frames"):
        read_grayscale(tmp_path / "cine.dcm")
    assert load_image(tmp_path / "mono1.dcm", 16).shape == (16, 16)


# --- dataset scan ---------------------------------------------------------------------------

@pytest.mark.slow
def test_bad_images_are_skipped_listed_and_counted_or_stop_the_run(tiny_dataset_copy, tmp_path):
    truncated, empty = first_image(tiny_dataset_copy, "COVID"), first_image(tiny_dataset_copy, "Normal")
    truncated.write_bytes(truncated.read_bytes()[:200])
    empty.write_bytes(b"")
    for stray in ("notes.xlsx", ".DS_Store", "readme.txt"):
        (tiny_dataset_copy / "COVID" / "images" / stray).write_bytes(b"\x00\x01")
    found = {str(p) for p, _ in discover_images(tiny_dataset_copy, TINY_CLASSES)}
    assert len(found) == 32 and not any(p.endswith((".xlsx", ".DS_Store", ".txt")) for p in found)

    report = run_tiny(tiny_dataset_copy, tmp_path / "skip", "trainer.epochs=1")
    assert sorted(report["skipped_images"]) == sorted([str(truncated.resolve()), str(empty.resolve())])
    assert json.loads((tmp_path / "skip" / "test_metrics.json").read_text())["skipped_images"] == \
        report["skipped_images"]
    split = (tmp_path / "skip" / "split.csv").read_text()
    assert truncated.name not in split and len(split.strip().splitlines()) == 1 + 30

    with pytest.raises(CxrcamError, match=f"cannot read image .*{truncated.name}.*on_bad_image=skip"):
        run_tiny(tiny_dataset_copy, tmp_path / "error", "trainer.epochs=1", "data.on_bad_image=error")
    with pytest.raises(CxrcamError, match="data.on_bad_image='ignore' is not one of"):
        run_tiny(tiny_dataset_copy, tmp_path / "bad", "data.on_bad_image=ignore")


def test_missing_class_folder_names_what_was_found(tiny_dataset_copy, tmp_path):
    (tiny_dataset_copy / "Normal").rename(tiny_dataset_copy / "normal_old")
    with pytest.raises(CxrcamError, match=r"class folder\(s\) \['Normal'\] not found .*normal_old"):
        run_tiny(tiny_dataset_copy, tmp_path / "run")
    assert not (tmp_path / "run" / "split.csv").exists()


# --- checkpoints ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tiny_synthetic, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    run_tiny(tiny_synthetic, run_dir, "trainer.epochs=1")
    return run_dir


class Payload:
    """Runs a shell command when unpickled: what a malicious checkpoint carries."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_checkpoint_with_pickled_code_is_refused_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"state_dict": {}, "meta": {}, "extra": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CxrcamError, match="refusing checkpoint .*evil.pt: it holds pickled objects"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "PWNED").exists()
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump(Payload(), f)
    with pytest.raises(CxrcamError, match="refusing"):
        load_checkpoint(tmp_path / "plain.pkl")
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.slow
def test_truncated_and_foreign_checkpoints_are_clear_errors(tiny_run, tmp_path):
    data = (tiny_run / "checkpoints" / "best.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CxrcamError, match="cut.pt .*truncated"):
        load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "notes.pt").write_text("hello")
    with pytest.raises(CxrcamError, match="notes.pt"):
        load_checkpoint(tmp_path / "notes.pt")


@pytest.mark.slow
@pytest.mark.parametrize("change", ["architecture", "classes"])
def test_checkpoint_for_another_architecture_or_class_count_is_a_clear_error(tiny_run, change):
    payload = load_checkpoint(tiny_run / "checkpoints" / "best.pt")
    if change == "architecture":
        payload["meta"]["model_name"] = "resnet50"
    else:
        payload["meta"]["class_names"] = payload["meta"]["class_names"][:3]
    with pytest.raises(CxrcamError, match="weights do not fit") as info:
        model_from_checkpoint(payload)
    assert "\n" not in str(info.value)


SAVE_FOREVER = """
import sys, torch
from cxrcam.checkpoint import save_checkpoint
for i in range(1_000_000):
    save_checkpoint({"state_dict": {"w": torch.full((4_000_000,), float(i))},
                     "meta": {"format_version": 1, "i": i}}, sys.argv[1])
"""


@pytest.mark.child_process
def test_kill_mid_save_never_leaves_a_broken_checkpoint(tmp_path):
    """A process that rewrites a 16 MB checkpoint over and over is SIGKILLed at moments spread over
    its saves: the file is always one whole save (the old one or the new one), never a mix or a cut."""
    path = tmp_path / "checkpoints" / "last.pt"
    for delay in (0.0, 0.013, 0.029, 0.047, 0.071):
        process = subprocess.Popen([sys.executable, "-c", SAVE_FOREVER, str(path)])
        deadline = time.monotonic() + 120
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        payload = load_checkpoint(path)
        weights = payload["state_dict"]["w"]
        assert weights.numel() == 4_000_000 and bool((weights == payload["meta"]["i"]).all())
        assert [p.name for p in path.parent.iterdir() if p.name != "last.pt"] in ([], [".last.pt.tmp"])


# --- interrupted training -------------------------------------------------------------------

@pytest.mark.child_process
def test_sigkill_mid_training_then_resume_equals_an_uninterrupted_run(tiny_synthetic, uninterrupted_run, tmp_path):
    """Bitwise on CPU: every random draw comes from torch's global RNG, saved with each epoch."""
    killed = tmp_path / "killed"
    args = [sys.executable, "-m", "cxrcam.train", *tiny_train_overrides(tiny_synthetic, *RESUMED_CASE),
            f"hydra.run.dir={killed}"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = killed / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 180
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)  # epoch 1 is saved; epoch 2 has just begun
    assert process.wait() == -signal.SIGKILL
    assert load_checkpoint(last)["training"]["epoch"] < 3

    run_tiny(tiny_synthetic, tmp_path / "resumed", *RESUMED_CASE, f"resume={last}")
    assert_same_training(tmp_path / "resumed", uninterrupted_run)


# --- output safety --------------------------------------------------------------------------

@pytest.mark.slow
def test_a_run_dir_holding_a_run_is_never_overwritten(tiny_run, tiny_synthetic):
    before = (tiny_run / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(CxrcamError, match="holds a cxrcam.train run started"):
        run_tiny(tiny_synthetic, tiny_run, "trainer.epochs=1")
    assert (tiny_run / "checkpoints" / "last.pt").read_bytes() == before
