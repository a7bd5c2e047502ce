"""cxrcam: train CNNs on chest X-rays and measure, with Grad-CAM, where they look."""

import os
import sys

from cxrcam.errors import exit_quietly_on_interrupt

if int(os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or 0) > 0:
    os.environ.setdefault("TQDM_DISABLE", "1")  # one set of progress bars per job, rank 0's; before tqdm loads

if sys.argv[:1] == ["-m"]:  # being run as python -m cxrcam.<stage>: argv[0] is '-m' while it loads
    exit_quietly_on_interrupt(next((a for a in sys.orig_argv if a.startswith("cxrcam.")), "cxrcam"))

from importlib.metadata import PackageNotFoundError, version  # noqa: E402  (after the handler: it takes time)

try:
    __version__ = version("cxrcam")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
