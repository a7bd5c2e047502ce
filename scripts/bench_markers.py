"""The burned-in marker detector on held-out phantoms: hit rate, false-positive area and speed.

Each phantom gets 0-3 burned-in annotations (synthetic.burn_in_text: circled laterality letters,
positioning words, IDs, dates, scanner labels) and half of them ECG electrodes, wires and implants
(synthetic.draw_devices), at 256-2048 px (anatomy drawn at up to 768 px and enlarged, text and
devices drawn at full size), cropped to a random width, and stored as an 8-bit PNG, a JPEG
(quality 60-95), a 12-bit value range in a 16-bit PNG, an inverted PNG (bright air), an 8-bit
PNG halved in size (text anti-aliased by the resampling) or, from 512 px, one blurred by a
Gaussian of 1 px (a resampled copy; a lead marker's unsharpness), then read back with read_grayscale, as cxrcam reads
any file.

A marker is hit when the detection covers >= 50 % of its pixels. A false positive is a detected
pixel outside every marker's box grown by 1 % of the image side; its area is given as a share of
the image, and inside the lungs as a share of the lung area. Seed 0 was used for tuning and seed 1
for one check; the default, seed 2, draws phantoms the detector was never run on while tuning.

    python scripts/bench_markers.py                     # 200 held-out phantoms
    python scripts/bench_markers.py --n 50 --json markers.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from cxrcam.data.images import read_grayscale
from cxrcam.data.markers import detect_markers
from cxrcam.data.synthetic import CLASSES, burn_in_text, draw_devices, render_phantom

SIZES = (256, 512, 1024, 2048)
FORMATS = ("png8", "jpeg", "png16", "inverted", "halved", "blurred")
BLURRED_FROM = 512  # px: at 256 px a 1 px blur smears letters 7 px high beyond reading (none is found)
HIT_SHARE = 0.5
BOX_MARGIN = 0.01


def make_case(rng: np.random.Generator, index: int) -> dict:
    """One phantom with its marker masks (one per annotation), lungs and devices, and its format."""
    size = int(rng.choice(SIZES))
    phantom = render_phantom(CLASSES[index % len(CLASSES)], rng, min(size, 768))
    image = cv2.resize(phantom.image, (size, size), interpolation=cv2.INTER_LINEAR)
    lungs = cv2.resize(phantom.lungs.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
    devices = draw_devices(image, rng) if rng.random() < 0.5 else np.zeros_like(lungs)
    width = round(size * rng.uniform(0.8, 1.0))
    image, lungs, devices = (a[:, :width].copy() for a in (image, lungs, devices))
    markers = []
    for _ in range(int(rng.integers(0, 4))):
        item = burn_in_text(image, rng, n_items=1)
        markers = [m & ~item for m in markers] + [item]  # a later label drawn over an earlier one hides it
    kind = str(rng.choice(FORMATS))
    if kind == "blurred" and size < BLURRED_FROM:
        kind = "png8"
    if kind == "halved":  # a dataset's smaller copy: text anti-aliased by the resampling
        half = (round(image.shape[1] / 2), round(image.shape[0] / 2))
        image, lungs, devices, *markers = (cv2.resize(a.astype(np.float32), half, interpolation=cv2.INTER_AREA)
                                           for a in (image, lungs, devices, *markers))
        lungs, devices, markers = lungs >= 0.5, devices >= 0.5, [m >= 0.5 for m in markers]
    if kind == "blurred":  # a resampled copy, or a lead marker's unsharpness: edges spread over ~3 px
        image = cv2.GaussianBlur(image, (0, 0), 1.0)
    return {"pixels": (image * 255).round().astype(np.uint8), "markers": [m for m in markers if m.any()],
            "lungs": lungs, "devices": devices, "format": kind, "quality": int(rng.integers(60, 96))}


def stored_and_read(case: dict, folder: Path) -> np.ndarray:
    """The pixels written in the case's format and read back as cxrcam reads any file."""
    pixels, kind = case["pixels"], case["format"]
    path = folder / ("x.jpg" if kind == "jpeg" else "x.png")
    if kind == "jpeg":
        Image.fromarray(pixels).save(path, quality=case["quality"])
    elif kind == "png16":
        Image.fromarray((pixels.astype(np.int32) * 16 + 300).astype(np.uint16)).save(path)
    else:
        Image.fromarray(255 - pixels if kind == "inverted" else pixels).save(path)
    return read_grayscale(path)


def score(case: dict, detected: np.ndarray) -> dict:
    side = max(detected.shape)
    margin = round(BOX_MARGIN * side)
    allowed = np.zeros_like(detected)
    hits = []
    for marker in case["markers"]:
        rows, cols = np.nonzero(marker)
        allowed[max(0, rows.min() - margin):rows.max() + margin + 1,
                max(0, cols.min() - margin):cols.max() + margin + 1] = True
        hits.append(float(detected[marker].mean()) >= HIT_SHARE)
    false = detected & ~allowed
    return {"hits": hits, "fp_image": float(false.mean()),
            "fp_lungs": float(false[case["lungs"]].mean()) if case["lungs"].any() else 0.0,
            "fp_devices": bool((false & case["devices"]).any()), "has_devices": bool(case["devices"].any()),
            "any_fp": bool(false.any())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="phantoms")
    parser.add_argument("--seed", type=int, default=2, help="0 is the tuning set")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--show", type=Path, help="write the misses and false positives here as PNGs")
    args = parser.parse_args()
    rows, seconds = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in tqdm(range(args.n), desc="phantoms", unit="img"):
            case = make_case(np.random.default_rng([args.seed, i]), i)
            pixels = stored_and_read(case, Path(tmp))
            started = time.perf_counter()
            detected = detect_markers(pixels)
            seconds.append(time.perf_counter() - started)
            rows.append(score(case, detected) | {"format": case["format"], "size": pixels.shape})
            if args.show and (not all(rows[-1]["hits"]) or rows[-1]["any_fp"]):
                args.show.mkdir(parents=True, exist_ok=True)
                overlay = np.dstack([pixels, pixels, pixels])
                overlay[detected] = (overlay[detected] * 0.5 + [127, 0, 0]).astype(np.uint8)
                for m in case["markers"]:
                    overlay[m & ~detected] = [0, 255, 0]
                Image.fromarray(overlay).save(args.show / f"{i:03d}_{case['format']}.png")
    hits = [h for r in rows for h in r["hits"]]
    with_devices = [r for r in rows if r["has_devices"]]
    result = {
        "phantoms": args.n, "seed": args.seed, "markers": len(hits), "hit_rate": float(np.mean(hits)),
        "fp_area_image_percent": 100 * float(np.mean([r["fp_image"] for r in rows])),
        "fp_area_lungs_percent": 100 * float(np.mean([r["fp_lungs"] for r in rows])),
        "images_with_fp_percent": 100 * float(np.mean([r["any_fp"] for r in rows])),
        "images_with_fp_on_devices_percent": 100 * float(np.mean([r["fp_devices"] for r in with_devices])),
        "hit_rate_per_format": {f: float(np.mean([h for r in rows if r["format"] == f for h in r["hits"]]))
                                for f in FORMATS},
        "hit_rate_per_side": {s: float(np.mean([h for r in rows if max(r["size"]) == s for h in r["hits"]]))
                              for s in sorted({max(r["size"]) for r in rows if r["hits"]})},
        "blurred_hit_rate_per_side": {s: float(np.mean([h for r in rows if max(r["size"]) == s
                                                         and r["format"] == "blurred" for h in r["hits"]]))
                                      for s in sorted({max(r["size"]) for r in rows
                                                       if r["hits"] and r["format"] == "blurred"})},
        "seconds_per_image": float(np.mean(seconds)),
        "seconds_per_image_by_side": {s: float(np.mean([t for t, r in zip(seconds, rows, strict=True)
                                                        if r["size"][0] == s])) for s in SIZES
                                      if any(r["size"][0] == s for r in rows)},
    }
    for key, value in result.items():
        print(f"{key}: {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
