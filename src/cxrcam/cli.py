"""What the command-line entry points share: one line for a user's error, a list for bad files,
and a run dir of their own."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn, TypeVar

from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, OverrideParseException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from cxrcam.errors import CxrcamError, StoppedBySignal, interrupt_raises
from cxrcam.rundir import claim_before_hydra, release_if_unused, try_claim

T = TypeVar("T")

# model=a,b or hydra/launcher=slurm; no sweep functions
GROUP_CHOICE = re.compile(r"^(?P<group>[A-Za-z_]+(?:/[A-Za-z_]+)*)=(?P<options>[\w.,-]*)$")
LAUNCHER_PLUGIN = "hydra_plugins.hydra_submitit_launcher"  # what the [slurm] extra installs
# key=value, +key=value, ++key=value or ~key[=value]
OVERRIDE = re.compile(r"^(?P<prefix>~|\+\+|\+)?(?P<key>[\w.]+)(?:=(?P<value>.*))?$", re.DOTALL)


def _names_config_dirs(argv: Sequence[str]) -> bool:
    """Whether the user adds config dirs of their own, whose options only Hydra knows."""
    return any(arg.startswith(("--config-dir", "-cd", "--config-path", "-cp", "hydra.searchpath")) for arg in argv)


def _group_options(group: str, config_dir: Path) -> list[str]:
    """The options of a config group. A nested one (hydra/launcher) also has Hydra's and its plugins'
    (basic, submitit_slurm), which only Hydra's config loader lists."""
    if "/" not in group:
        return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir)):
        return sorted(GlobalHydra.instance().config_loader().get_group_options(group))


def unknown_group_option(argv: Sequence[str], config_dir: Path) -> str | None:
    """Why a ``group=option`` argument names no config of that group, or None.

    Hydra's own message for this is a page with the search path; this is the one line before it.
    Arguments it cannot judge (sweep functions, a user's extra config dir) are left to Hydra."""
    if _names_config_dirs(argv):
        return None
    for arg in argv:
        match = GROUP_CHOICE.match(arg)
        known = _group_options(match["group"], config_dir) if match else []
        if not known:  # a plain key=value, or no group Hydra knows: its own error says so
            continue
        for option in match["options"].split(","):
            if option not in known:
                return f"{match['group']}={option} is not one of {known}"
    return None


def renamed_key(argv: Sequence[str], renamed: Mapping[str, str]) -> str | None:
    """Why an override names a key by its old name (``renamed`` maps old names to new ones), in one
    line that gives the override with the new name, or None. Hydra would say the key is not in the
    config, or with ``+`` add it where nothing reads it."""
    for arg in argv:
        match = OVERRIDE.match(arg)
        if match is None or match["key"] not in renamed:
            continue
        new = renamed[match["key"]]
        prefix = "" if match["prefix"] == "+" else match["prefix"] or ""  # the new key exists: no append
        value = "" if match["value"] is None else f"={match['value']}"
        return f"{match['key']} is now {new}: use {prefix}{new}{value}"
    return None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing too (hydra_plugins comes with plugins only)
        return False


def unusable_launcher(argv: Sequence[str], config_dir: Path) -> str | None:
    """Why a launcher of ours (``hydra/launcher=slurm`` or ``local``) cannot run this command, in one
    line, or None. Without the plugin Hydra's message is a page; without -m Hydra ignores the launcher
    and trains right here; without srun submitit stops with a traceback once the sweep dir is taken."""
    try:
        args = get_args_parser().parse_args(list(argv))
    except SystemExit:  # a malformed Hydra flag: argparse has said so
        return None
    ours = [match["options"] for match in map(GROUP_CHOICE.match, args.overrides)
            if match and match["group"] == "hydra/launcher"
            and (config_dir / "hydra" / "launcher" / f"{match['options']}.yaml").is_file()]
    if not ours:
        return None
    launcher = ours[-1]
    if not _installed(LAUNCHER_PLUGIN):
        return f"hydra/launcher={launcher} needs the submitit launcher plugin: pip install 'cxrcam[slurm]'"
    if args.cfg or args.info or args.help or args.hydra_help or args.shell_completion:
        return None
    if not (args.multirun or "hydra.mode=MULTIRUN" in args.overrides):
        return f"hydra/launcher={launcher} launches the jobs of a sweep: add -m (one run is a sweep of one)"
    if launcher == "slurm" and shutil.which("srun") is None:
        return ("hydra/launcher=slurm submits with SLURM's srun, which is not on PATH here: run it on the "
                "cluster's login node (hydra/launcher=local runs the same jobs on this machine)")
    return None


def exit_with_error(command: str, message: object) -> NoReturn:
    """The one line every entry point prints for a user's error, and exit code 2."""
    print(f"{command}: error: {message}", file=sys.stderr)
    sys.exit(2)


def uncomposable_override(argv: Sequence[str], config_dir: Path, config_name: str) -> str | None:
    """Why Hydra cannot compose the config from these arguments (a key that does not exist, an
    override it cannot parse), in one line; None when it can. Hydra's own message is a page with
    exit code 1. Sweeps are judged by their other arguments, a user's extra config dir not at all."""
    if _names_config_dirs(argv):
        return None
    try:
        args = get_args_parser().parse_args(list(argv))
        if args.config_name or args.experimental_rerun:
            return None
        overrides = OverridesParser.create().parse_overrides(args.overrides)
        with initialize_config_dir(version_base="1.3", config_dir=str(config_dir)):
            compose(config_name, overrides=[o.input_line for o in overrides if not o.is_sweep_override()])
    except SystemExit:  # a malformed Hydra flag: argparse has said so
        return None
    except (ConfigCompositionException, OverrideParseException) as exc:
        lines = [line.strip().rstrip(".") for line in str(exc).splitlines()]
        return "; ".join(line for line in lines if line and "hydra.cc/docs" not in line)
    return None


def exit_on_bad_arguments(command: str, config_dir: Path, config_name: str,
                          renamed: Mapping[str, str] | None = None) -> None:
    """One line and exit code 2, before Hydra starts, for a key by its old name (``renamed``: {old:
    new}), an unknown group option or key, or a launcher that cannot run here."""
    argv = sys.argv[1:]
    reason = (renamed_key(argv, renamed or {}) or unknown_group_option(argv, config_dir)
              or unusable_launcher(argv, config_dir) or uncomposable_override(argv, config_dir, config_name))
    if reason is not None:
        exit_with_error(command, reason)


def run_stage(command: str, job: Callable[[dict, Path], T], cfg: DictConfig,
              after_interrupt: Callable[[Path], str]) -> T:
    """Run ``job(config, run dir)`` so that a user sees one line, never a traceback: a CxrcamError
    or an I/O error (a read-only dir, a full disk) gives exit code 2, Ctrl-C exit code 130 with
    ``after_interrupt(run dir)`` saying what to do next, a stop signal the job saved its state for
    128 + its number."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        try:
            with interrupt_raises():
                return job(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True), run_dir)
        except BaseException:  # a run that wrote nothing gives its dir back, whatever stopped it
            release_if_unused(run_dir)
            raise
    except MissingMandatoryValue as exc:
        exit_with_error(command, f"{exc.full_key} is not set; pass {exc.full_key}=<value>")
    except OmegaConfBaseException as exc:  # e.g. an interpolation ${...} that names no key
        exit_with_error(command, f"{exc.full_key}: {str(exc).splitlines()[0]}")
    except StoppedBySignal as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        sys.exit(128 + exc.signum)  # the shell's code for a process ended by that signal
    except CxrcamError as exc:
        exit_with_error(command, exc)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        exit_with_error(command, f"{exc.strerror or exc}{where}; free disk space or choose a writable hydra.run.dir")
    except KeyboardInterrupt:
        print(f"{command}: interrupted; {after_interrupt(run_dir)}", file=sys.stderr)
        sys.exit(130)


def incomplete_outputs(run_dir: Path) -> str:
    return f"the outputs in {run_dir} are incomplete: run again into a new dir"


def run_over_files(command: str, job: Callable[[dict, Path], list[str]], cfg: DictConfig) -> None:
    """``run_stage`` for a job that returns the files it could not read: they are listed and give
    exit code 1."""
    failures = run_stage(command, job, cfg, incomplete_outputs)
    if failures:
        print(f"{command}: {len(failures)} file(s) could not be read: {', '.join(failures)}", file=sys.stderr)
        sys.exit(1)


class RunDirClaim(Callback):
    """Claims the run dir (or a sweep's dir) for this process before Hydra writes ``.hydra/`` there.

    A dir the user named with hydra.run.dir / hydra.sweep.dir that is taken stops the run with one
    line; the default dir (named after the second the run started) that another run took in the
    same second becomes ``<dir>-2``, ``-3``, ...
    """

    def __init__(self, stage: str):
        self.stage = stage

    def _claim(self, config: DictConfig, kind: str, claim: Callable[[str, str], str | None]) -> None:
        node = config.hydra[kind]
        wanted = str(node.dir)
        named = any(o.lstrip("+").startswith(f"hydra.{kind}.dir=") for o in config.hydra.overrides.hydra)
        candidate, n = wanted, 1
        try:
            while (reason := claim(candidate, self.stage)) is not None:
                if named:
                    exit_with_error(f"cxrcam.{self.stage}", f"{candidate} {reason}; set hydra.{kind}.dir to a new "
                                    "folder" + (" (to continue a run: resume=<that run>/checkpoints/last.pt)"
                                                if self.stage == "train" else ""))
                n += 1
                candidate = f"{wanted}-{n}"
        except CxrcamError as exc:
            exit_with_error(f"cxrcam.{self.stage}", exc)
        if candidate != wanted:
            print(f"cxrcam.{self.stage}: {wanted} is taken; this run writes to {candidate}", file=sys.stderr)
            quoted = candidate.replace("\\", "\\\\").replace("'", "\\'")
            with read_write(config.hydra):
                node.dir = candidate
                # a sweep's jobs compose their config anew from these overrides
                config.hydra.overrides.hydra.append(f"hydra.{kind}.dir='{quoted}'")

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._claim(config, "run", claim_before_hydra)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._claim(config, "sweep", lambda path, stage: try_claim(path, f"{stage} sweep"))
