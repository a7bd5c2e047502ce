"""What the command-line entry points share: one line for a user's error, a list for bad files."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from cxrcam.errors import CxrcamError


def run_over_files(command: str, job: Callable[[dict, Path], list[str]], cfg: DictConfig) -> None:
    """Run ``job(config, run dir)``, which returns the files it could not read: a CxrcamError is one
    line on stderr and exit code 2; unreadable files are listed and give exit code 1."""
    try:
        failures = job(OmegaConf.to_container(cfg, resolve=True), Path(HydraConfig.get().runtime.output_dir))
    except CxrcamError as exc:
        print(f"{command}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    if failures:
        print(f"{command}: {len(failures)} file(s) could not be read: {', '.join(failures)}", file=sys.stderr)
        sys.exit(1)
