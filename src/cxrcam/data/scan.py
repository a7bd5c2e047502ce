"""Every image is decoded once before training, so that a truncated download or a corrupt file is
found before it stops a run at epoch 7, and a run never trains on fewer images without saying
which ones it left out."""

from __future__ import annotations

import logging

from tqdm import tqdm

from cxrcam.data.images import read_grayscale
from cxrcam.errors import CxrcamError

log = logging.getLogger(__name__)
ON_BAD_IMAGE = ("skip", "error")


def unreadable_images(paths: list[str], on_bad_image: str) -> list[str]:
    """The paths that cannot be decoded, each logged on one line (``skip``); with ``error``, the
    first one stops the run."""
    if on_bad_image not in ON_BAD_IMAGE:
        raise CxrcamError(f"data.on_bad_image={on_bad_image!r} is not one of {list(ON_BAD_IMAGE)}")
    bad = []
    for path in tqdm(paths, desc="checking images", unit="img"):
        try:
            read_grayscale(path)
        except CxrcamError as exc:
            if on_bad_image == "error":
                raise CxrcamError(f"{exc} (data.on_bad_image=skip leaves such files out)") from None
            log.warning("skipping %s", exc)
            bad.append(str(path))
    return bad
