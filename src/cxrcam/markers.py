"""``python -m cxrcam.markers``: the burned-in markers (laterality letters, positioning words,
labels) that :func:`cxrcam.data.markers.detect_markers` finds on each image, as masks and a table.

    python -m cxrcam.markers image=some.dcm
    python -m cxrcam.markers image=folder/        # recursive

Writes into its run dir ``masks/<image stem>.png`` (white: marker, at the image's original size;
under a folder, in the image's relative subfolder) and ``markers.csv``, one row per image: path,
mask, width, height, regions, area_fraction and boxes, each box ``x_min y_min x_max y_max`` in
original pixels (inclusive), boxes separated by ``;``.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from cxrcam.cli import exit_on_bad_arguments, run_over_files
from cxrcam.config import config_dir
from cxrcam.data.images import read_grayscale
from cxrcam.data.layout import IMAGE_EXTENSIONS, images_under
from cxrcam.data.markers import detect_markers
from cxrcam.errors import CxrcamError
from cxrcam.rundir import claim_run_dir

log = logging.getLogger("cxrcam.markers")
CSV_FIELDS = ("path", "mask", "width", "height", "regions", "area_fraction", "boxes")


def images_to_scan(image: str | None) -> list[tuple[Path, Path]]:
    """(image, its mask's path relative to masks/) for a file or every image under a folder."""
    if not image:
        raise CxrcamError("say what to scan: image=<file or folder>")
    path = Path(image)
    if path.is_dir():
        found = images_under(path)
        if not found:
            raise CxrcamError(f"image={path} holds no image file ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                              "nothing to scan")
        return [(p, p.relative_to(path).with_suffix(".png")) for p in found]
    if path.is_file():
        return [(path, Path(path.stem + ".png"))]
    raise CxrcamError(f"image={path} does not exist; pass an image file or a folder")


def marker_boxes(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(x_min, y_min, x_max, y_max), inclusive, of each connected marker region, top to bottom."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    boxes = [(s[1].start, s[0].start, s[1].stop - 1, s[0].stop - 1) for s in ndimage.find_objects(labels, n)]
    return sorted(boxes, key=lambda b: (b[1], b[0]))


def scan(cfg: dict, run_dir: Path) -> list[str]:
    """Detect and write the markers of every image; returns the files that could not be read."""
    images = images_to_scan(cfg["image"])
    claim_run_dir(run_dir, "markers")
    rows, failures = [], []
    for path, mask_name in tqdm(images, desc="finding burned-in markers", unit="img"):
        try:
            pixels = read_grayscale(path)
        except CxrcamError as exc:
            log.error("%s", exc)
            failures.append(str(path))
            continue
        mask = detect_markers(pixels)
        out = run_dir / "masks" / mask_name
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask.astype(np.uint8) * 255).save(out)
        boxes = marker_boxes(mask)
        rows.append({"path": str(path), "mask": str(out.relative_to(run_dir)), "width": mask.shape[1],
                     "height": mask.shape[0], "regions": len(boxes), "area_fraction": f"{mask.mean():.6f}",
                     "boxes": ";".join(" ".join(map(str, box)) for box in boxes)})
    if not rows:
        raise CxrcamError(f"none of the {len(images)} image(s) could be read ({', '.join(failures[:3])}"
                          f"{', ...' if len(failures) > 3 else ''}); nothing was scanned")
    with open(run_dir / "markers.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    log.info("%d of %d image(s) carry burned-in markers; masks and markers.csv in %s",
             sum(r["regions"] > 0 for r in rows), len(rows), run_dir)
    return failures


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="markers")
def main(cfg: DictConfig) -> None:
    run_over_files("cxrcam.markers", scan, cfg)


if __name__ == "__main__":
    exit_on_bad_arguments("cxrcam.markers", config_dir(), "markers")
    main()
