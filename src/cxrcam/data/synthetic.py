"""Synthetic chest X-ray phantoms: the built-in dataset, written in the COVID-19 Radiography
Database layout so that the loader used for real data is the one that runs.

No real CXR may ship with the project, yet every stage needs images whose findings sit at a known
place. Each phantom has chest anatomy (body, lungs, mediastinum, spine, heart on the image right,
ribs, clavicles, vessels), per-image variation of anatomy, exposure and contrast, and one of four
findings modelled on the seed's "Lung Disease Features" slides. Besides the image, each sample gets
its lung mask (``masks/``), a lesion mask (``lesion_masks/``, empty for Normal) and a metadata row:
the ground truth that later scores where Grad-CAM looks.

Optionally burned-in annotations as scanners write them (circled laterality letters, positioning
words, IDs, dates) go on any phantom with a chosen probability, their exact masks in
``marker_masks/``: the ground truth for the marker detector (cxrcam.data.markers). Optionally a
confounder is planted: a burned-in corner marker (a letter in a box, as hospitals'
side markers and text labels are) drawn with a chosen probability per class, with its mask in
``marker_masks/``. A model trained on such data can reach high accuracy by reading the marker, as
DeGrave et al. (2021) found real COVID-19 classifiers doing; the shortcut audit must catch it.

Sides are given as the patient's side (radiological convention): the patient's right lung is on
the image left.
"""

from __future__ import annotations

import csv
import fcntl
import json
import logging
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy.ndimage import find_objects, gaussian_filter, zoom
from scipy.ndimage import label as connected_parts
from tqdm import tqdm

from cxrcam.errors import CxrcamError

log = logging.getLogger(__name__)
CLASSES = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
GENERATOR_VERSION = 1
MANIFEST = "synthetic.json"
METADATA = "metadata.csv"
METADATA_FIELDS = (
    "file", "label", "side", "zone", "n_lesions", "lesion_area_fraction", "amplitude",
    "gain", "offset", "gamma",
)
MARKER_FOLDER = "marker_masks"
LESION_BOXES = "lesion_boxes.csv"  # the lesion masks as boxes, for evaluate's boxes.file= (see write_lesion_boxes)
LESION_BOX_FIELDS = ("path", "label", "x_min", "y_min", "x_max", "y_max")
# burned-in annotations as real CXRs carry them: laterality letters in a circle, positioning words,
# technologist and scanner labels (English and Spanish departments)
LATERALITY_LETTERS = ("L", "R", "D", "I")
POSITION_WORDS = ("AP", "PA", "PORTABLE", "PORTATIL", "SUPINE", "SENTADO", "SEMI-SENTADO", "DECUB")
TEXT_CONTRAST = 0.3  # the least difference between burned-in text and any pixel it covers
TEXT_TRIES = 5
MARKER_STYLES = ("box", "text")  # the confounder data.synthetic.marker draws


@dataclass
class Phantom:
    image: np.ndarray  # float32 in [0, 1], air dark, bone and tissue bright
    lungs: np.ndarray  # bool
    lesion: np.ndarray  # bool, all False for Normal
    info: dict  # side, zone, n_lesions, amplitude, exposure; a row of metadata.csv


@dataclass
class _Anatomy:
    density: np.ndarray
    lungs: list[np.ndarray]  # [patient right (image left), patient left (image right)]
    lung_soft: np.ndarray
    x: np.ndarray
    y: np.ndarray


def _lung_relative_height(lung: np.ndarray, y: np.ndarray) -> np.ndarray:
    """0 at the lung apex, 1 at its base, so zones follow each lung's own extent."""
    rows = np.flatnonzero(lung.any(axis=1))
    top, bottom = rows[0] / lung.shape[0], (rows[-1] + 1) / lung.shape[0]
    return (y - top) / (bottom - top)


def _lung_relative_laterality(lung: np.ndarray, x: np.ndarray, side: int) -> np.ndarray:
    """0 at the lung's medial border, 1 at its lateral (peripheral) border."""
    cols = np.flatnonzero(lung.any(axis=0))
    left, right = cols[0] / lung.shape[1], (cols[-1] + 1) / lung.shape[1]
    rel = (x - left) / (right - left)
    return 1.0 - rel if side == 0 else rel


def _smooth_noise(rng: np.random.Generator, size: int, sigma_px: float) -> np.ndarray:
    """Unit-variance noise correlated over ~sigma_px, drawn on a coarse grid and upsampled (fast)."""
    coarse = max(4, round(2 * size / sigma_px))
    field_ = zoom(gaussian_filter(rng.standard_normal((coarse, coarse)), 1.0), size / coarse, order=1)
    field_ = field_[:size, :size]
    return (field_ - field_.mean()) / (field_.std() + 1e-8)


def _vessels(rng: np.random.Generator, size: int, hila: list[tuple[float, float]]) -> np.ndarray:
    """Branching vessel trees: random walks from each hilum, fading towards the periphery."""
    canvas = np.zeros((size, size), np.float32)
    step = 1.0 / size
    for side, (hx, hy) in enumerate(hila):
        outward = -1.0 if side == 0 else 1.0
        for _ in range(rng.integers(12, 18)):
            angle = np.arctan2(rng.uniform(-1.0, 1.0), outward * rng.uniform(0.3, 1.0))
            n_steps = int(rng.uniform(0.12, 0.24) * size)
            angles = angle + np.cumsum(rng.normal(0, 0.08, n_steps))
            xs = hx + np.cumsum(np.cos(angles)) * step
            ys = hy + np.cumsum(np.sin(angles)) * step
            weights = np.linspace(1.0, 0.2, n_steps)
            # one side branch per vessel, leaving at a random point
            start = rng.integers(n_steps // 4, max(n_steps // 4 + 1, 3 * n_steps // 4))
            n_branch = n_steps - start
            b_angles = angles[start] + rng.choice([-0.6, 0.6]) + np.cumsum(rng.normal(0, 0.08, n_branch))
            bxs = xs[start] + np.cumsum(np.cos(b_angles)) * step
            bys = ys[start] + np.cumsum(np.sin(b_angles)) * step
            all_x = np.concatenate([xs, bxs])
            all_y = np.concatenate([ys, bys])
            all_w = np.concatenate([weights, weights[start:] * 0.7])
            cols = np.clip((all_x * size).astype(int), 0, size - 1)
            rows = np.clip((all_y * size).astype(int), 0, size - 1)
            np.add.at(canvas, (rows, cols), all_w)
    return np.clip(gaussian_filter(canvas, 0.6 * size / 256), 0, None)


def _anatomy(rng: np.random.Generator, size: int) -> _Anatomy:
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    x, y = np.meshgrid(c, c, indexing="xy")
    px = size / 256  # blur widths are tuned at 256 px

    bx, by = 0.5 + rng.normal(0, 0.01), 0.60 + rng.normal(0, 0.01)
    ax, ay = rng.uniform(0.40, 0.47), rng.uniform(0.52, 0.60)
    body = (np.abs((x - bx) / ax) ** 3 + np.abs((y - by) / ay) ** 3) < 1
    body |= (np.abs(x - 0.5) < 0.09) & (y < 0.2)  # neck
    mediastinum = (np.abs(x - 0.5) < rng.uniform(0.055, 0.075)) & (y < 0.8)

    heart_cx, heart_cy = 0.5 + rng.uniform(0.04, 0.08), rng.uniform(0.64, 0.70)
    heart_ax, heart_ay = rng.uniform(0.12, 0.16), rng.uniform(0.10, 0.13)
    heart = ((x - heart_cx) / heart_ax) ** 2 + ((y - heart_cy) / heart_ay) ** 2 < 1

    lungs, lung_any = [], np.zeros_like(body)
    cy, ah = rng.uniform(0.44, 0.50), rng.uniform(0.24, 0.29)
    for sign in (-1.0, 1.0):  # the patient's right lung sits on the image left
        cx = 0.5 + sign * rng.uniform(0.15, 0.19)
        aw = rng.uniform(0.11, 0.14)
        dx, dy = (x - cx) / aw, (y - (cy + rng.normal(0, 0.01))) / ah
        dy_base = dy * (1 - 0.18 * sign * dx)  # costophrenic angle lower than the medial base
        shape = np.where(dy < 0, dx**2 + dy**2, np.abs(dx) ** 2.2 + np.abs(dy_base) ** 4) < 1
        lung_any |= shape
        lungs.append(shape & ~heart)

    soft_tissue = (rng.uniform(0.48, 0.62) * body + 0.14 * mediastinum
                   + rng.uniform(0.18, 0.28) * heart - rng.uniform(0.30, 0.40) * lung_any)
    density = gaussian_filter(soft_tissue.astype(np.float32), 2.7 * px)
    lung_soft = gaussian_filter(lung_any.astype(np.float32), 2.5 * px)

    # bones: spine with vertebral bodies, posterior ribs arching down laterally, clavicles
    dist = np.abs(x - 0.5)
    vertebrae = 0.5 + 0.5 * np.sin(2 * np.pi * y * rng.uniform(13, 16))
    bones = ((dist < 0.032) & body) * (0.08 + 0.05 * vertebrae)
    rib_top, spacing = rng.uniform(0.17, 0.21), rng.uniform(0.055, 0.065)
    arch = rng.uniform(1.2, 1.8)
    ribs = np.zeros_like(body)
    for k in range(10):
        curve = rib_top + k * spacing + arch * (dist - 0.05) ** 2 - 0.15 * (dist - 0.05)
        ribs |= np.abs(y - curve) < rng.uniform(0.008, 0.012)
    bones += 0.07 * (ribs & body & (dist > 0.04) & (dist < 0.38))
    for sign in (-1.0, 1.0):
        t = (x - 0.5) * sign
        bones += 0.10 * ((t > 0.05) & (t < 0.30) & (np.abs(y - (0.16 - 0.12 * (t - 0.05))) < 0.012))
    density += gaussian_filter(bones.astype(np.float32), 0.9 * px)

    hila = [(0.5 - rng.uniform(0.07, 0.09), cy + rng.normal(0, 0.02)),
            (0.5 + rng.uniform(0.07, 0.09), cy + rng.normal(0, 0.02))]
    density += rng.uniform(0.07, 0.10) * _vessels(rng, size, hila) * lung_soft
    density += 0.025 * _smooth_noise(rng, size, size / 16) * body
    return _Anatomy(density, lungs, lung_soft, x, y)


def _covid(rng: np.random.Generator, a: _Anatomy, size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Hazy ground-glass opacities, bilateral, peripheral and lower zones."""
    field_ = np.zeros_like(a.density)
    n_per_lung = [rng.integers(2, 5), rng.integers(2, 5)]
    for side, lung in enumerate(a.lungs):
        height = _lung_relative_height(lung, a.y)
        lateral = _lung_relative_laterality(lung, a.x, side)
        candidates = np.argwhere(lung & (height > 0.5) & (lateral > 0.6))
        for _ in range(n_per_lung[side]):
            r, c = candidates[rng.integers(len(candidates))]
            sx, sy = rng.uniform(0.04, 0.06, 2) * size
            rr, cc = np.ogrid[:size, :size]
            field_ += np.exp(-0.5 * (((cc - c) / sx) ** 2 + ((rr - r) / sy) ** 2))
    texture = 0.75 + 0.25 * _smooth_noise(rng, size, size / 64)
    amplitude = rng.uniform(0.28, 0.38)
    lung_any = a.lungs[0] | a.lungs[1]
    opacity = amplitude * np.clip(field_, 0, 1) * np.clip(texture, 0, None) * a.lung_soft
    lesion = (field_ > 0.35) & lung_any
    return opacity, lesion, dict(side="bilateral", zone="lower-peripheral", n_lesions=int(sum(n_per_lung)),
                                 amplitude=amplitude)


def _viral_pneumonia(rng: np.random.Generator, a: _Anatomy, size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Diffuse net-like (reticular) haze in both lungs, heavier in the upper zones."""
    px = size / 256
    white = rng.standard_normal((size, size))
    band = gaussian_filter(white, 3.5 * px) - gaussian_filter(white, 7 * px)
    net = np.exp(-((band / (0.25 * band.std())) ** 2))  # thin lines along the zero crossings
    envelope = np.zeros_like(a.density)
    for lung in a.lungs:
        height = _lung_relative_height(lung, a.y)
        envelope += lung * np.clip(1.1 - 0.9 * height, 0.15, 1.0) * rng.uniform(0.8, 1.0)
    envelope = gaussian_filter(envelope, 4 * px)
    haze = np.clip(0.6 + 0.4 * _smooth_noise(rng, size, size / 32), 0, None)
    amplitude = rng.uniform(0.28, 0.36)
    opacity = amplitude * envelope * (0.7 * net + 0.3 * haze)
    lesion = (envelope > 0.5) & (a.lungs[0] | a.lungs[1])
    return opacity, lesion, dict(side="bilateral", zone="upper-diffuse", n_lesions=2, amplitude=amplitude)


def _lung_opacity(rng: np.random.Generator, a: _Anatomy, size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """A dense, sharp-edged patch in one lung."""
    side = int(rng.integers(2))
    lung = a.lungs[side]
    height = _lung_relative_height(lung, a.y)
    candidates = np.argwhere(lung & (height > 0.15) & (height < 0.85))
    r, c = candidates[rng.integers(len(candidates))]
    rr, cc = np.mgrid[:size, :size]
    theta = np.arctan2(rr - r, cc - c)
    radius = rng.uniform(0.08, 0.11) * size
    wobble = 1 + sum(rng.uniform(-0.15, 0.15) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    patch = np.hypot(rr - r, cc - c) < radius * wobble
    lesion = patch & lung
    amplitude = rng.uniform(0.35, 0.45)
    edge = gaussian_filter(lesion.astype(np.float32), 0.5 * size / 256)
    opacity = amplitude * edge * (0.9 + 0.1 * _smooth_noise(rng, size, size / 64))
    zone = ("upper", "middle", "lower")[min(2, int(height[r, c] * 3))]
    return opacity, lesion, dict(side=("right", "left")[side], zone=zone, n_lesions=1, amplitude=amplitude)


_FINDINGS = {"COVID": _covid, "Viral Pneumonia": _viral_pneumonia, "Lung_Opacity": _lung_opacity}


def render_phantom(label: str, rng: np.random.Generator, size: int = 256) -> Phantom:
    if label not in CLASSES:
        raise CxrcamError(f"synthetic phantoms exist for {list(CLASSES)}, not {label!r}")
    a = _anatomy(rng, size)
    density = a.density
    lesion = np.zeros((size, size), bool)
    info = dict(side="none", zone="none", n_lesions=0, amplitude=0.0)
    if label in _FINDINGS:
        opacity, lesion, info = _FINDINGS[label](rng, a, size)
        density = density + opacity

    # exposure and contrast vary per image so that global intensity does not give the class away
    gain, offset, gamma = rng.uniform(0.8, 1.2), rng.uniform(-0.08, 0.08), rng.uniform(0.7, 1.4)
    image = np.clip(offset + gain * density, 0, 1) ** gamma
    image = np.clip(image + rng.normal(0, 0.015, image.shape), 0, 1).astype(np.float32)
    info.update(gain=gain, offset=offset, gamma=gamma, lesion_area_fraction=float(lesion.mean()))
    return Phantom(image=image, lungs=a.lungs[0] | a.lungs[1], lesion=lesion, info=info)


def burn_in_marker(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw a white 'L' in a box into the upper image-left corner (outside the body) in place;
    returns the marker's mask (its box)."""
    size = image.shape[0]
    side = max(6, round(rng.uniform(0.09, 0.12) * size))
    top, left = (round(rng.uniform(0.03, 0.07) * size) for _ in range(2))
    stroke = max(1, side // 6)
    mask = np.zeros(image.shape, bool)
    mask[top:top + side, left:left + side] = True
    box = mask.copy()  # its outline: the inside cleared
    box[top + stroke:top + side - stroke, left + stroke:left + side - stroke] = False
    letter = np.zeros_like(mask)
    inner, end = top + 2 * stroke, top + side - 2 * stroke
    letter[inner:end, left + 2 * stroke:left + 3 * stroke] = True  # the L's upright
    letter[end - stroke:end, left + 2 * stroke:left + side - 2 * stroke] = True  # and its foot
    image[box | letter] = 1.0
    return mask


@lru_cache(maxsize=1)
def marker_fonts() -> tuple[Path, ...]:
    """The text fonts matplotlib ships (DejaVu and STIX General, sorted): the same glyphs on every
    machine, unlike system fonts."""
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return tuple(sorted(p for p in folder.glob("*.ttf")
                        if (p.name.startswith("DejaVu") and "Display" not in p.name) or p.name.startswith("STIXGeneral")))


def _label_text(rng: np.random.Generator) -> tuple[str, bool]:
    """A burned-in annotation and whether it is a laterality letter drawn in a circle."""
    kind = rng.choice(["letter", "word", "id", "date", "scanner"], p=[0.3, 0.35, 0.12, 0.12, 0.11])
    if kind == "letter":
        return str(rng.choice(LATERALITY_LETTERS)), True
    if kind == "word":
        return str(rng.choice(POSITION_WORDS)), False
    if kind == "id":
        return f"{rng.choice(['ID', 'TEC', 'OP'])} {rng.integers(100, 9999)}", False
    if kind == "date":
        return f"{rng.integers(1, 29):02d}/{rng.integers(1, 13):02d}/{rng.integers(2015, 2024)}", False
    scanner = f"{rng.choice(['DR', 'CR', 'DX'])}-{rng.integers(1, 9)}"
    return f"{scanner} {rng.integers(0, 24):02d}:{rng.integers(0, 60):02d}", False


def _text_item(shape: tuple[int, int], rng: np.random.Generator, fonts: tuple[Path, ...], stamp: bool = False) -> np.ndarray:
    """One annotation's strokes (and circle ring) as a bool mask, rasterised without anti-aliasing
    so that the mask is exactly the pixels drawn; mostly near a border, sometimes over anatomy. A
    ``stamp`` is what one source's unit writes on all its images: a positioning word, large, in the
    upper image-left corner."""
    height, width = shape
    side = max(shape)
    text, circled = (str(rng.choice(POSITION_WORDS)), False) if stamp else _label_text(rng)
    # letter height in px; real ones are 1-4 % of the side, a stamp 5-7 % (a model must be able to read it)
    cap = rng.uniform(0.05, 0.07) * side if stamp else max(7.0, rng.uniform(0.018, 0.045) * side)
    font = ImageFont.truetype(str(fonts[rng.integers(len(fonts))]), round(cap / 0.72))
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    draw.fontmode = "1"  # aliased: every pixel is text or not
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = round(0.35 * (bottom - top)) if circled else 0
    ring = max(1, round(rng.uniform(0.07, 0.12) * (bottom - top))) if circled else 0
    box_w, box_h = right - left + 2 * (pad + ring), bottom - top + 2 * (pad + ring)
    span_x, span_y = max(1, width - box_w), max(1, height - box_h)
    if stamp:
        x, y = rng.uniform(0.02, 0.06) * side, rng.uniform(0.02, 0.06) * side
    elif rng.random() < 0.8:  # near one border: within 15 % of the side from it
        band = 0.15 * side
        x, y = rng.uniform(0, span_x), rng.uniform(0, span_y)
        edge = rng.integers(4)
        if edge == 0:
            y = rng.uniform(0, min(band, span_y))
        elif edge == 1:
            y = rng.uniform(max(0, span_y - band), span_y)
        elif edge == 2:
            x = rng.uniform(0, min(band, span_x))
        else:
            x = rng.uniform(max(0, span_x - band), span_x)
    else:
        x, y = rng.uniform(0, span_x), rng.uniform(0, span_y)
    x, y = round(x), round(y)
    draw.text((x + pad + ring - left, y + pad + ring - top), text, font=font, fill=255)
    if circled:
        draw.ellipse((x, y, x + box_w - 1, y + box_h - 1), outline=255, width=ring)
    return np.asarray(canvas) > 0


def _text_level(under: np.ndarray, rng: np.random.Generator) -> float | None:
    """A level at least TEXT_CONTRAST from every pixel ``under`` the text: white or black (mostly
    white), saturated or not; None where neither polarity has room."""
    saturated, step = rng.random() < 0.6, rng.uniform(TEXT_CONTRAST, 0.5)
    low, high = float(under.min()), float(under.max())
    levels = {True: 1.0 if saturated else high + step, False: 0.0 if saturated else low - step}
    room = {True: levels[True] <= 1 and levels[True] - high >= TEXT_CONTRAST,
            False: levels[False] >= 0 and low - levels[False] >= TEXT_CONTRAST}
    bright = rng.random() < 0.75
    for polarity in (bright, not bright):
        if room[polarity]:
            return levels[polarity]
    return None


def burn_in_text(image: np.ndarray, rng: np.random.Generator, n_items: int | None = None,
                 stamp: bool = False) -> np.ndarray:
    """Burn 1-3 annotations (or ``n_items``; a ``stamp``: see :func:`_text_item`) into ``image``
    (float in [0, 1]) in place, as a scanner or PACS writes them: pixels replaced by one constant
    level, at least 0.3 from each pixel it covers; returns their mask, exactly the pixels that
    changed. An annotation that finds no free place with room for a level in a few tries is left out."""
    fonts = marker_fonts()
    mask = np.zeros(image.shape, bool)
    for _ in range(int(rng.integers(1, 4)) if n_items is None else n_items):
        for _ in range(TEXT_TRIES):
            item = _text_item(image.shape, rng, fonts, stamp)
            level = _text_level(image[item], rng) if item.any() and not (item & mask).any() else None
            if level is not None:
                image[item] = level
                mask |= item
                break
    return mask


def draw_devices(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add what lies in the beam but is no annotation, in place: ECG electrodes, their wires and
    sometimes an implant (a port or pacemaker can and sternal wire loops), as added density with
    blurred edges; returns their mask (density above 0.05). The marker detector must leave them."""
    size = image.shape[0]
    rr, cc = np.mgrid[:size, :size].astype(np.float32) / size
    density = np.zeros(image.shape, np.float32)
    electrodes = [(rng.uniform(0.2, 0.8), rng.uniform(0.15, 0.85)) for _ in range(rng.integers(2, 5))]
    for ex, ey in electrodes:
        radius = rng.uniform(0.012, 0.02)
        distance = np.hypot(cc - ex, rr - ey)
        density += rng.uniform(0.2, 0.35) * (distance < radius) + 0.3 * (distance < radius / 3)
        # its wire: a smooth random curve from the electrode out of the image
        angle, x, y = rng.uniform(0, 2 * np.pi), ex, ey
        canvas = np.zeros_like(density)
        for _ in range(3 * size):
            angle += rng.normal(0, 0.02)
            x, y = x + np.cos(angle) / size, y + np.sin(angle) / size
            if not (0 <= x < 1 and 0 <= y < 1):
                break
            canvas[int(y * size), int(x * size)] = 1.0
        width = rng.uniform(0.002, 0.004) * size
        density += rng.uniform(0.15, 0.3) * np.clip(gaussian_filter(canvas, width) * width * 2.5, 0, 1)
    if rng.random() < 0.5:
        px, py = rng.uniform(0.25, 0.75), rng.uniform(0.12, 0.3)
        density += 0.8 * ((np.abs(cc - px) < 0.035) & (np.abs(rr - py) < 0.025))
    if rng.random() < 0.5:
        for k in range(rng.integers(3, 6)):
            loop = np.hypot((cc - 0.5) / 0.012, (rr - 0.3 - 0.06 * k) / 0.008)
            density += 0.7 * (np.abs(loop - 1) < 0.35)
    density = gaussian_filter(density, 0.0025 * size)
    image += density
    np.clip(image, 0, 1, out=image)
    return density > 0.05


def _save_mask(mask: np.ndarray, path: Path) -> None:
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


def _write_sample(task: tuple[Path, int, str, int, int, int, float | None, str, float]) -> dict:
    root, class_index, label, i, resolution, seed, marker_probability, marker_style, text_probability = task
    phantom = render_phantom(label, np.random.default_rng([seed, class_index, i]), resolution)
    name = f"{label}-{i}.png"
    marker = np.zeros_like(phantom.lungs)
    if marker_probability is not None:  # its own RNG: the phantom is the same with or without a marker
        marker_rng = np.random.default_rng([seed, class_index, i, 1])
        if marker_rng.random() < marker_probability:
            marker = (burn_in_text(phantom.image, marker_rng, n_items=1, stamp=True) if marker_style == "text"
                      else burn_in_marker(phantom.image, marker_rng))
        phantom.info["marker"] = int(marker.any())  # a text that found no place is no marker
    if text_probability:  # the same for every class: text that tells nothing about the label
        text_rng = np.random.default_rng([seed, class_index, i, 2])
        written = bool(text_rng.random() < text_probability)
        if written:
            marker |= burn_in_text(phantom.image, text_rng)
        phantom.info["burned_text"] = int(written)
    if marker_probability is not None or text_probability:
        _save_mask(marker, root / label / MARKER_FOLDER / name)
    Image.fromarray((phantom.image * 255).round().astype(np.uint8)).save(root / label / "images" / name)
    _save_mask(phantom.lungs, root / label / "masks" / name)
    _save_mask(phantom.lesion, root / label / "lesion_masks" / name)
    return {"file": f"{label}/images/{name}", "label": label, **phantom.info}


def lesion_boxes(lesion: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(x_min, y_min, x_max, y_max) of each connected part of a lesion mask, in pixel edges: a part
    spanning columns c0..c1 has x_min = c0 and x_max = c1 + 1."""
    parts, _ = connected_parts(lesion)
    return [(cols.start, rows.start, cols.stop, rows.stop) for rows, cols in find_objects(parts)]


def write_lesion_boxes(root: Path) -> Path:
    """``<root>/lesion_boxes.csv`` from the lesion masks on disk: a box per connected lesion part,
    in pixels of the stored image, path relative to ``root``; an image without a lesion is one row
    with empty coordinates, as RSNA's and VinDr-CXR's negatives are. Written whole or not at all."""
    rows = []
    for mask_path in sorted(Path(root).glob("*/lesion_masks/*.png")):
        cls = mask_path.parent.parent.name
        with Image.open(mask_path) as mask:
            boxes = lesion_boxes(np.asarray(mask) > 0) or [("", "", "", "")]
        rows += [(f"{cls}/images/{mask_path.name}", cls, *box) for box in boxes]
    path = Path(root) / LESION_BOXES
    tmp = path.with_name(f"{LESION_BOXES}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows([LESION_BOX_FIELDS, *rows])
    os.replace(tmp, path)
    return path


def generate_dataset(root: Path, n_per_class: int, resolution: int, seed: int,
                     classes: tuple[str, ...] = CLASSES, marker: dict[str, float] | None = None,
                     burned_text: float = 0.0, marker_style: str = "box") -> None:
    """Write the phantoms into ``root``; each sample's RNG depends only on (seed, class, index).
    ``marker``: {class: probability} of a burned-in marker (classes left out: 0), in ``marker_style``
    box (an 'L' in a box in the upper corner) or text (a positioning word stamped in that corner);
    ``burned_text``: probability of burned-in annotations (:func:`burn_in_text`) on any phantom.
    Both go into ``marker_masks/``."""
    folders = ("images", "masks", "lesion_masks") + ((MARKER_FOLDER,) if marker or burned_text else ())
    for label in classes:
        for folder in folders:
            (root / label / folder).mkdir(parents=True)
    tasks = [(root, ci, label, i, resolution, seed, marker.get(label, 0.0) if marker else None, marker_style,
              burned_text)
             for ci, label in enumerate(classes) for i in range(1, n_per_class + 1)]
    # spawn, not fork: the caller may hold torch's thread pools, which do not survive a fork
    with ProcessPoolExecutor(max_workers=min(4, os.cpu_count() or 1),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        rows = list(tqdm(pool.map(_write_sample, tasks, chunksize=8), total=len(tasks),
                         desc="generating synthetic CXRs", unit="img"))
    with open(root / METADATA, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METADATA_FIELDS + (("marker",) if marker else ())
                                + (("burned_text",) if burned_text else ()))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.5f}" if isinstance(v, float) else v) for k, v in row.items()})
    write_lesion_boxes(root)


def ensure_synthetic(root: str | Path, n_per_class: int, resolution: int, seed: int,
                     marker: dict[str, float] | None = None, burned_text: float | None = None,
                     marker_style: str = "box") -> Path:
    """Generate the dataset on first use and reuse it afterwards; ``resolution`` is the side in px
    the phantoms are drawn and stored at (a model resizes them to its own data.image_size).

    A folder generated with other parameters is refused, never replaced: earlier runs' split files
    point at its images.
    """
    root = Path(root)
    unknown = sorted(set(marker or {}) - set(CLASSES))
    if unknown or not all(0 <= p <= 1 for p in (marker or {}).values()):
        raise CxrcamError(f"data.synthetic.marker={marker} must map classes of {list(CLASSES)} to probabilities "
                          "in [0, 1]")
    if burned_text is not None and not 0 <= burned_text <= 1:
        raise CxrcamError(f"data.synthetic.burned_text={burned_text} must be a probability in [0, 1]")
    if marker_style not in MARKER_STYLES:
        raise CxrcamError(f"data.synthetic.marker_style={marker_style!r} is not one of {list(MARKER_STYLES)}")
    # the manifest's key stays image_size: the folders generated before the rename still match
    params = dict(version=GENERATOR_VERSION, n_per_class=n_per_class, image_size=resolution,
                  seed=seed, classes=list(CLASSES))
    if marker:
        params["marker"] = {k: float(v) for k, v in sorted(marker.items())}
    if burned_text:  # absent when off, so that folders generated before it still match
        params["burned_text"] = float(burned_text)
    if marker and marker_style != "box":  # likewise
        params["marker_style"] = marker_style
    if _matches(root, params):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.with_name(root.name + ".lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another process is generating this set: wait for it, then use its result
            log.info("waiting for another process that is generating %s", root)
            fcntl.flock(lock, fcntl.LOCK_EX)
        if _matches(root, params):
            return root
        tmp = root.with_name(root.name + ".generating")
        shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted generation
        generate_dataset(tmp, n_per_class, resolution, seed, marker=marker, burned_text=burned_text or 0.0,
                         marker_style=marker_style)
        (tmp / MANIFEST).write_text(json.dumps(params, indent=2))
        shutil.rmtree(root, ignore_errors=True)  # an empty folder
        tmp.rename(root)
    return root


def _matches(root: Path, params: dict) -> bool:
    """Whether ``root`` holds the synthetic set of ``params`` (False: nothing there yet); a folder
    with other contents is refused."""
    manifest = root / MANIFEST
    if manifest.is_file():
        found = json.loads(manifest.read_text())
        if found == params:
            return True
        raise CxrcamError(f"data.root={root} holds synthetic data made with other parameters ({found}); "
                          "set data.root to a new folder")
    if root.exists() and any(root.iterdir()):
        raise CxrcamError(f"data.root={root} holds files that are not a cxrcam synthetic dataset; "
                          "point data.root at an empty or new folder")
    return False
