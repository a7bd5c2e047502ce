"""Overlays and per-class panels drawn on arrays: their pixels are what the figures promise."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pytest
from PIL import Image

from cxrcam.reporting.overlays import (
    CAPTION_PX,
    FRAME_COLOR,
    MIN_PX,
    PAPER,
    TILE,
    class_panel,
    ellipsized,
    fitting_size,
    font,
    line_height,
    overlay_rgb,
    panel_captions,
    panel_layout,
    panel_tiles,
    png_bytes,
    save_overlay,
)

CLASSES = ["COVID", "Lung_Opacity", "Normal"]


@pytest.mark.parametrize(("colormap", "alpha"), [("jet", 0.45), ("viridis", 0.7), ("gray", 0.0)])
def test_overlay_is_alpha_colormap_plus_one_minus_alpha_image(colormap, alpha):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (24, 31), dtype=np.uint8)
    cam = rng.random((24, 31), dtype=np.float32)
    cam[0, :5] = [0, 1, 0.5, -0.3, 1.7]  # the ends, a level boundary, and values outside [0, 1] (clipped)
    rgb = overlay_rgb(gray, cam, colormap, alpha)
    heat = matplotlib.colormaps[colormap](np.clip(cam, 0, 1))[..., :3] * 255
    expected = alpha * heat + (1 - alpha) * gray[..., None]
    assert rgb.dtype == np.uint8 and rgb.shape == (24, 31, 3)
    assert np.abs(rgb - expected).max() <= 0.5 + 1e-6  # rounding only


def test_overlay_refuses_a_mismatched_or_non_uint8_image():
    with pytest.raises(ValueError, match="same shape"):
        overlay_rgb(np.zeros((4, 4), np.uint8), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="uint8"):
        overlay_rgb(np.zeros((4, 4), np.float32), np.zeros((4, 4)))


def test_saved_overlay_holds_the_overlay_pixels(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    cam = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    save_overlay(gray, cam, tmp_path / "o.png", "jet", 0.45)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), overlay_rgb(gray, cam, "jet", 0.45))


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (40, 33)])
def test_png_bytes_decode_to_the_same_pixels(shape):
    rgb = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    rgb[-1] = rgb[0]  # a repeated row: the Up filter's zeros
    with Image.open(io.BytesIO(png_bytes(rgb))) as image:
        image.verify()  # every chunk's CRC
    with Image.open(io.BytesIO(png_bytes(rgb))) as image:
        assert image.mode == "RGB" and np.array_equal(np.asarray(image), rgb)


def hot_corner_panel(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A flat 32 px image, and CAMs of which only COVID's is hot, in the top-left quarter."""
    gray = np.full((32, 32), 120, np.uint8)
    cams = np.zeros((3, 32, 32), np.float32)
    cams[0, :16, :16] = 1
    panel = np.asarray(class_panel(gray, cams, probs, CLASSES, "x.png: true COVID", "jet", 0.45))
    return gray, cams, panel


def test_panel_frames_the_predicted_class_only_and_names_it():
    probs = np.array([0.2, 0.1, 0.7])
    _, _, panel = hot_corner_panel(probs)
    captions = panel_captions(probs, CLASSES)
    assert captions == [(("input", ""), False), (("COVID", "p=0.20"), False), (("Lung_Opacity", "p=0.10"), False),
                        (("Normal", "p=0.70 (predicted)"), True)]
    layout = panel_layout("x.png: true COVID", captions, TILE)
    top = layout["tiles_top"]
    assert panel.shape == (layout["height"], layout["width"], 3)
    for left, (_, predicted) in zip(layout["tile_left"], captions, strict=True):
        band = panel[top - 2, left + TILE // 2], panel[top + 10, left - 2]  # above the tile, left of it
        assert all(tuple(px) == (FRAME_COLOR if predicted else PAPER) for px in band)


def test_panel_tiles_are_the_input_then_each_class_overlay_in_order():
    probs = np.array([0.2, 0.5, 0.3])
    gray, cams, panel = hot_corner_panel(probs)
    layout = panel_layout("x.png: true COVID", panel_captions(probs, CLASSES), TILE)
    top = layout["tiles_top"]
    tiles = [panel[top:top + TILE, left:left + TILE] for left in layout["tile_left"]]
    expected = panel_tiles(gray, cams, TILE, "jet", 0.45)
    assert all(np.array_equal(tile, want) for tile, want in zip(tiles, expected, strict=True))
    assert np.array_equal(tiles[0][..., 0], np.full((TILE, TILE), 120))  # the input, gray
    red = [tile[:TILE // 4, :TILE // 4, 0].mean() - tile[-TILE // 4:, -TILE // 4:, 0].mean() for tile in tiles[1:]]
    assert red[0] > 40 and abs(red[1]) < 1 and abs(red[2]) < 1  # only COVID's tile is hot, top left


def caption_ink(probs: np.ndarray, line: int) -> list[int]:
    """Dark pixels per tile in caption line ``line`` (0 or 1) above the tiles."""
    _, _, panel = hot_corner_panel(probs)
    layout = panel_layout("x.png: true COVID", panel_captions(probs, CLASSES), TILE)
    bottom = layout["tiles_top"] - 6 - (1 - line) * line_height(layout["caption_px"])
    band = panel[bottom - line_height(layout["caption_px"]):bottom]
    return [int((band[:, left:left + TILE] < 100).all(axis=2).sum()) for left in layout["tile_left"]]


def test_panel_captions_are_drawn_above_each_tile_the_predicted_one_bold():
    first = caption_ink(np.array([0.2, 0.1, 0.7]), 0)
    assert all(n > 20 for n in first)  # "input", then the class names
    assert all(n > 20 for n in caption_ink(np.array([0.2, 0.1, 0.7]), 1)[1:])  # the probabilities
    bold = caption_ink(np.array([0.7, 0.1, 0.2]), 0)  # the same words; COVID's now in bold
    assert bold[1] > 1.2 * first[1] and bold[3] < first[3] / 1.2


def test_long_text_shrinks_then_ends_in_an_ellipsis():
    names = ["a very long class name indeed", "b"]
    px = fitting_size([*names, "p=0.50 (predicted)"], TILE, CAPTION_PX, bold=True)
    assert MIN_PX <= px < CAPTION_PX
    assert font(px, True).getlength(names[0]) <= TILE
    title = "x" * 400
    cut = ellipsized(title, font(MIN_PX), 300)
    assert cut.endswith("…") and font(MIN_PX).getlength(cut) <= 300 and len(cut) > 20
    assert ellipsized("short", font(MIN_PX), 300) == "short"
