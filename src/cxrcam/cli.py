"""What the command-line entry points share: one line for a user's error, a list for bad files."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from cxrcam.errors import CxrcamError

GROUP_CHOICE = re.compile(r"^(?P<group>[A-Za-z_]+)=(?P<options>[\w.,-]*)$")  # model=a,b; no sweep functions


def unknown_group_option(argv: Sequence[str], config_dir: Path) -> str | None:
    """Why a ``group=option`` argument names no config in ``config_dir/<group>/``, or None.

    Hydra's own message for this is a page with the search path; this is the one line before it.
    Arguments it cannot judge (sweep functions, a user's extra config dir) are left to Hydra."""
    if any(arg.startswith(("--config-dir", "-cd", "--config-path", "-cp", "hydra.searchpath")) for arg in argv):
        return None
    for arg in argv:
        match = GROUP_CHOICE.match(arg)
        if match is None or not (config_dir / match["group"]).is_dir():
            continue
        known = sorted(p.stem for p in (config_dir / match["group"]).glob("*.yaml"))
        for option in match["options"].split(","):
            if option not in known:
                return f"{match['group']}={option} is not one of {known}"
    return None


def exit_with_error(command: str, message: object) -> NoReturn:
    """The one line every entry point prints for a user's error, and exit code 2."""
    print(f"{command}: error: {message}", file=sys.stderr)
    sys.exit(2)


def exit_on_unknown_group_option(command: str, config_dir: Path) -> None:
    reason = unknown_group_option(sys.argv[1:], config_dir)
    if reason is not None:
        exit_with_error(command, reason)


def run_over_files(command: str, job: Callable[[dict, Path], list[str]], cfg: DictConfig) -> None:
    """Run ``job(config, run dir)``, which returns the files it could not read: a CxrcamError is one
    line on stderr and exit code 2; unreadable files are listed and give exit code 1."""
    try:
        failures = job(OmegaConf.to_container(cfg, resolve=True), Path(HydraConfig.get().runtime.output_dir))
    except CxrcamError as exc:
        exit_with_error(command, exc)
    if failures:
        print(f"{command}: {len(failures)} file(s) could not be read: {', '.join(failures)}", file=sys.stderr)
        sys.exit(1)
