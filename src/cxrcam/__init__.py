"""cxrcam: train CNNs on chest X-rays and measure, with Grad-CAM, where they look."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cxrcam")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
