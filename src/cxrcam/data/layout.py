"""Finding the images of each class on disk.

Two layouts are read: the COVID-19 Radiography Database as distributed
(``<root>/<class>/images/*.png`` with lung masks in ``<class>/masks/``) and a generic
``<root>/<class>/**/*.<ext>`` for any other CXR collection. ``root`` may be the dataset folder or
its parent (the archive unpacks into ``COVID-19_Radiography_Dataset/``).
"""

from __future__ import annotations

from pathlib import Path

from cxrcam.errors import CxrcamError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom"})
IMAGES_FOLDER = "images"
MASK_FOLDERS = ("masks", "lesion_masks", "marker_masks")  # siblings of images/, same file names


def _subfolders(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def find_dataset_dir(root: str | Path, classes: list[str]) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise CxrcamError(f"data.root={root} does not exist or is not a folder; "
                          "point it at the folder that holds one subfolder per class")
    if any((root / c).is_dir() for c in classes):
        return root
    children = [root / name for name in _subfolders(root)]
    holders = [child for child in children if any((child / c).is_dir() for c in classes)]
    if len(holders) == 1:
        return holders[0]
    raise CxrcamError(f"no class folder of data.classes={list(classes)} in {root}; "
                      f"found folders: {_subfolders(root)}. Set data.root or data.classes to match")


def images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                  and not p.name.startswith(".")
                  and not set(p.relative_to(folder).parts[:-1]) & set(MASK_FOLDERS))


def discover_images(root: str | Path, classes: list[str]) -> list[tuple[Path, str]]:
    """(image path, class name) for every image of every class, in a stable order."""
    dataset_dir = find_dataset_dir(root, classes)
    found = _subfolders(dataset_dir)
    missing = [c for c in classes if not (dataset_dir / c).is_dir()]
    if missing:
        raise CxrcamError(f"class folder(s) {missing} not found in {dataset_dir}; found folders: {found}. "
                          "Set data.classes to the class folder names you have")
    items: list[tuple[Path, str]] = []
    for label in classes:
        class_dir = dataset_dir / label
        image_dir = class_dir / IMAGES_FOLDER if (class_dir / IMAGES_FOLDER).is_dir() else class_dir
        paths = images_under(image_dir)
        if not paths:
            raise CxrcamError(f"class folder {class_dir} has no images "
                              f"({', '.join(sorted(IMAGE_EXTENSIONS))}); found folders: {found}")
        items.extend((p.resolve(), label) for p in paths)
    return items

