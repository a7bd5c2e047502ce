"""Grad-CAM pictures: an overlay per image, a per-class panel, and the model-comparison grid.

Overlays and panels are drawn on arrays (a colormap lookup table, text with PIL) and written by
:func:`png_bytes`: explain draws one or two per image, and a matplotlib figure per image made it
take minutes.
The comparison grid, one per call, stays a matplotlib figure.
"""

from __future__ import annotations

import struct
import zlib
from functools import lru_cache
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"  # DejaVu Sans ships with matplotlib
TILE = 256  # smallest side of a panel tile, px: a 128 px input is shown twice as large, as matplotlib did
MARGIN, GAP, FRAME = 12, 16, 3  # px: around the panel, between tiles, the predicted tile's frame
TITLE_PX, CAPTION_PX, MIN_PX = 17, 15, 9  # font sizes; text that does not fit shrinks down to MIN_PX
INK, FRAME_COLOR, PAPER = (0, 0, 0), (0, 0, 0), (255, 255, 255)


@lru_cache(maxsize=8)
def blend_table(colormap: str, alpha: float) -> np.ndarray:
    """(256 * 256, 3) uint8: the overlay colour for each (gray level, CAM level) pair, so that an
    overlay is one table lookup per pixel; entry g * 256 + c is
    round(255 * ((1 - alpha) * g / 255 + alpha * colormap(c / 255)))."""
    heat = matplotlib.colormaps[colormap](np.linspace(0, 1, 256))[:, :3]
    gray = np.arange(256)[:, None, None] / 255
    blended = np.clip((1 - alpha) * gray + alpha * heat[None], 0, 1)
    return (blended * 255).round().astype(np.uint8).reshape(-1, 3)


def cam_levels(cam: np.ndarray) -> np.ndarray:
    """uint8 colormap levels of a CAM in [0, 1]: floor(cam * 256), 1.0 → 255, which is the entry
    matplotlib's 256-colour colormaps pick for the same value."""
    return np.clip(cam * 256, 0, 255).astype(np.uint8)


def overlay_rgb(gray: np.ndarray, cam: np.ndarray, colormap: str = "jet", alpha: float = 0.45) -> np.ndarray:
    """uint8 RGB: the uint8 grayscale image with the CAM (same shape, values in [0, 1]) blended on top."""
    if gray.shape != cam.shape:
        raise ValueError(f"image {gray.shape} and CAM {cam.shape} must have the same shape")
    if gray.dtype != np.uint8:
        raise ValueError(f"the image must be uint8 grayscale, not {gray.dtype}")
    codes = (gray.astype(np.intp) << 8) | cam_levels(cam)
    return np.take(blend_table(colormap, float(alpha)), codes, axis=0)


def resize_cam(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a CAM to an image's size: the model saw the image stretched to a square,
    so stretching the map back puts every value over the pixels it was computed from."""
    return np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize((width, height),
                                                                               Image.Resampling.BILINEAR))


def resize_gray(gray: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(gray).resize((side, side), Image.Resampling.BILINEAR))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(rgb: np.ndarray) -> bytes:
    """A PNG of a uint8 RGB array: rows Up-filtered with NumPy, deflated by zlib at level 1 with
    run-length matching. PIL's encoder tries four filters on every row and took 2-3x as long on
    multi-megapixel overlays, most of the time an original-size overlay takes."""
    height, width, _ = rgb.shape
    flat = rgb.reshape(height, width * 3)
    rows = np.empty((height, width * 3 + 1), np.uint8)
    rows[:, 0] = 2  # filter Up: each byte minus the one above it (above the first row: zeros)
    rows[0, 1:] = flat[0]
    np.subtract(flat[1:], flat[:-1], out=rows[1:, 1:])
    deflate = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    pixels = deflate.compress(rows) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, not interlaced
    return PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", pixels) + png_chunk(b"IEND", b"")


def save_png(rgb: np.ndarray | Image.Image, path: Path) -> None:
    Path(path).write_bytes(png_bytes(np.asarray(rgb)))


def save_overlay(gray: np.ndarray, cam: np.ndarray, path: Path, colormap: str, alpha: float) -> None:
    save_png(overlay_rgb(gray, cam, colormap, alpha), path)


@lru_cache(maxsize=32)
def font(px: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT_DIR / ("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf")), px)


def line_height(px: int) -> int:
    return round(px * 1.3)


def fitting_size(lines: list[str], width: int, px: int, bold: bool = False) -> int:
    """The largest font size up to ``px`` (at least MIN_PX) at which every line fits ``width``:
    captions shrink together, so a long class name never runs into its neighbour's."""
    return next((size for size in range(px, MIN_PX, -1)
                 if all(font(size, bold).getlength(line) <= width for line in lines)), MIN_PX)


def ellipsized(text: str, typeface: ImageFont.FreeTypeFont, width: int) -> str:
    """The text, its end replaced by an ellipsis where it is still wider than ``width``."""
    if typeface.getlength(text) <= width:
        return text
    while text and typeface.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def panel_captions(probs: np.ndarray, class_names: list[str]) -> list[tuple[tuple[str, str], bool]]:
    """Per tile, the input first: its two caption lines and whether it is the predicted class
    (set in bold, its tile framed)."""
    predicted = int(np.argmax(probs))
    return [(("input", ""), False)] + [
        ((name, f"p={probs[k]:.2f}" + (" (predicted)" if k == predicted else "")), k == predicted)
        for k, name in enumerate(class_names)]


def panel_layout(title: str, captions: list[tuple[tuple[str, str], bool]], side: int) -> dict:
    """Font sizes and geometry of a panel of ``side`` px tiles: ``tiles_top``, ``tile_left`` (x of
    each tile), ``width``, ``height``, ``title_px``, ``caption_px``."""
    tile_left = [MARGIN + i * (side + GAP) for i in range(len(captions))]
    width = tile_left[-1] + side + MARGIN
    title_px = fitting_size([title], width - 2 * MARGIN, TITLE_PX)
    caption_px = fitting_size([line for lines, _ in captions for line in lines], side, CAPTION_PX, bold=True)
    tiles_top = MARGIN + line_height(title_px) + GAP // 2 + 2 * line_height(caption_px) + 2 * FRAME
    return {"tiles_top": tiles_top, "tile_left": tile_left, "width": width, "height": tiles_top + side + MARGIN,
            "title_px": title_px, "caption_px": caption_px}


def panel_tiles(gray: np.ndarray, cams: np.ndarray, side: int, colormap: str, alpha: float) -> list[np.ndarray]:
    """The input and its per-class overlays, each drawn at ``side`` px (bilinear, the CAM before
    the colormap so that its colours stay smooth)."""
    big = resize_gray(gray, side)
    return [np.repeat(big[..., None], 3, axis=2)] + [overlay_rgb(big, resize_cam(cam, side, side), colormap, alpha)
                                                    for cam in cams]


def class_panel(gray: np.ndarray, cams: np.ndarray, probs: np.ndarray, class_names: list[str], title: str,
                colormap: str, alpha: float) -> Image.Image:
    """The square image as the model saw it, then one CAM overlay per class with that class's
    probability; the predicted class's caption is bold and its tile framed."""
    side = max(TILE, *gray.shape)
    captions = panel_captions(probs, class_names)
    layout = panel_layout(title, captions, side)
    top = layout["tiles_top"]
    canvas = np.full((layout["height"], layout["width"], 3), PAPER, np.uint8)
    for left, tile, (_, predicted) in zip(layout["tile_left"], panel_tiles(gray, cams, side, colormap, alpha),
                                          captions, strict=True):
        if predicted:
            canvas[top - FRAME:top + side + FRAME, left - FRAME:left + side + FRAME] = FRAME_COLOR
        canvas[top:top + side, left:left + side] = tile
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    title_font = font(layout["title_px"])
    draw.text((layout["width"] // 2, MARGIN), ellipsized(title, title_font, layout["width"] - 2 * MARGIN),
              font=title_font, fill=INK, anchor="ma")
    for left, (lines, predicted) in zip(layout["tile_left"], captions, strict=True):
        caption_font = font(layout["caption_px"], predicted)
        for j, line in enumerate(lines):
            y = top - 2 * FRAME - (len(lines) - j) * line_height(layout["caption_px"])
            draw.text((left + side // 2, y), ellipsized(line, caption_font, side), font=caption_font, fill=INK,
                      anchor="ma")
    return image


def save_class_panel(gray: np.ndarray, cams: np.ndarray, probs: np.ndarray, class_names: list[str], path: Path,
                     title: str, colormap: str, alpha: float) -> None:
    save_png(class_panel(gray, cams, probs, class_names, title, colormap, alpha), path)


def plot_model_comparison(rows: list[dict], model_names: list[str], path: Path, colormap: str,
                          alpha: float) -> None:
    """Rows = samples, columns = models; each cell the overlay for that model's predicted class.

    Each row dict: ``label`` (row title), ``gray`` (image per model, as that model saw it) and
    ``cells``: per model a dict with ``cam``, ``predicted``, ``probability``.
    """
    fig, axes = plt.subplots(len(rows), len(model_names), figsize=(2.9 * len(model_names), 3.0 * len(rows)),
                             squeeze=False)
    for r, row in enumerate(rows):
        for m, name in enumerate(model_names):
            cell, ax = row["cells"][m], axes[r, m]
            ax.imshow(overlay_rgb(row["gray"][m], cell["cam"], colormap, alpha))
            ax.set_title(f"{name}\npred {cell['predicted']} ({cell['probability']:.2f})", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            if m == 0:
                ax.set_ylabel(row["label"], fontsize=10)
    fig.suptitle("Grad-CAM of the predicted class, per model", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
