"""A run dir belongs to one process: it is claimed by creating a claim file exclusively, and a dir
that holds anything cxrcam or Hydra wrote is refused before a byte is written there.

Two starts in the same second would otherwise share the default dir (its name has the time to the
second) and overwrite each other's checkpoints; a rerun into a kept dir would replace its results.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path

from cxrcam.errors import CxrcamError

CLAIM = ".cxrcam-run.json"
# what train, explain, evaluate, segment and a sweep write at the top of their dir
OUTPUTS = ("checkpoints", "split.csv", "metrics.csv", "metrics.json", "test_metrics.json", "test_predictions.csv",
           "predictions.csv", "cams.npz", "overlays", "panels", "comparison.png", "comparison.csv", "comparison.md",
           "cam_metrics.json", "cam_metrics.csv", "report.html", "report.md", "figures", "multirun.yaml",
           "masks", "markers.csv")
ARTIFACTS = (CLAIM, *OUTPUTS)
HYDRA_LOGS = ("train.log", "explain.log", "evaluate.log", "segment.log", "markers.log")
HYDRA_ARTIFACTS = (".hydra", *HYDRA_LOGS)
_PROCESS_TOKEN = uuid.uuid4().hex
_handed_over: set[Path] = set()  # claimed by the entry point before Hydra wrote there, not yet used by a stage


def _absolute(path: str | Path) -> Path:
    """Absolute and normalised as Hydra makes its output dir (``..`` resolved, links kept)."""
    return Path(os.path.abspath(path))


def _existing_artifacts(run_dir: Path, names: tuple[str, ...]) -> list[str]:
    return [name for name in names if (run_dir / name).exists()]


def _holder(run_dir: Path) -> str:
    """Who claimed the dir, for the error message. A claim just created by a process racing for the
    same dir may not hold its text yet: it is read again for a moment."""
    for _ in range(20):
        try:
            claim = json.loads((run_dir / CLAIM).read_text())
            return f"a cxrcam.{claim['stage']} run started {claim['started']} (pid {claim['pid']} on {claim['host']})"
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.05)
    return "another cxrcam run"


def _why_taken(run_dir: Path, include_hydra: bool) -> str | None:
    if (run_dir / CLAIM).exists():
        return f"holds {_holder(run_dir)}"
    found = _existing_artifacts(run_dir, ARTIFACTS + (HYDRA_ARTIFACTS if include_hydra else ()))
    return f"already holds cxrcam outputs ({', '.join(found)})" if found else None


def try_claim(run_dir: str | Path, stage: str, include_hydra: bool = True) -> str | None:
    """Claim ``run_dir`` for this process; None on success, else why it is taken. Creating the claim
    file with O_EXCL makes two processes that race for one dir get one winner."""
    run_dir = _absolute(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CxrcamError(f"cannot create run dir {run_dir}: {exc.strerror}; choose a writable hydra.run.dir") from None
    reason = _why_taken(run_dir, include_hydra)
    if reason is not None:
        return reason
    try:
        fd = os.open(run_dir / CLAIM, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return f"holds {_holder(run_dir)}"
    except OSError as exc:
        raise CxrcamError(f"cannot write in run dir {run_dir}: {exc.strerror}; choose a writable hydra.run.dir") from None
    with os.fdopen(fd, "w") as f:
        json.dump(_claim(stage), f)
    return None


def _claim(stage: str) -> dict:
    return {"stage": stage, "pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "token": _PROCESS_TOKEN,
            "slurm_job": os.environ.get("SLURM_JOB_ID")}


def is_requeue_of_its_claimant(run_dir: str | Path) -> bool:
    """Whether this process is SLURM's requeue of the job that claimed ``run_dir`` (a preempted or
    timed-out job that submitit requeued: the same SLURM_JOB_ID, SLURM_RESTART_COUNT >= 1). Such a
    job runs again in the same dir and may take it over."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job or int(os.environ.get("SLURM_RESTART_COUNT") or 0) < 1:
        return False
    try:
        return json.loads((_absolute(run_dir) / CLAIM).read_text()).get("slurm_job") == job
    except (OSError, ValueError, AttributeError):
        return False


def claim_before_hydra(run_dir: str | Path, stage: str) -> str | None:
    """``try_claim`` by an entry point before Hydra writes ``.hydra/`` there; the stage that runs
    next in this process takes the claim over with :func:`claim_run_dir`."""
    reason = try_claim(run_dir, stage, include_hydra=True)
    if reason is None:
        _handed_over.add(_absolute(run_dir))
    return reason


def claim_run_dir(run_dir: str | Path, stage: str, hint: str = "set hydra.run.dir to a new folder") -> None:
    """Make ``run_dir`` this stage's, or stop with one line: called by every stage before it writes.
    Hydra's own files are allowed here (a sweep's job dirs get them before the job starts)."""
    run_dir = _absolute(run_dir)
    if run_dir in _handed_over:
        _handed_over.discard(run_dir)
        return
    if is_requeue_of_its_claimant(run_dir):
        (run_dir / CLAIM).write_text(json.dumps(_claim(stage)))
        return
    reason = try_claim(run_dir, stage, include_hydra=False)
    if reason is not None:
        raise CxrcamError(f"{run_dir} {reason}; {hint}")


def release_if_unused(run_dir: str | Path) -> None:
    """Give up this process's claim on a dir it wrote nothing to (a run stopped by a user error
    before its first output), with Hydra's files, so that the same command can be run again."""
    run_dir = _absolute(run_dir)
    try:
        ours = json.loads((run_dir / CLAIM).read_text()).get("token") == _PROCESS_TOKEN
    except (OSError, ValueError, AttributeError):
        return
    if not ours or _existing_artifacts(run_dir, OUTPUTS):
        return
    shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
    for name in (CLAIM, *HYDRA_LOGS):
        (run_dir / name).unlink(missing_ok=True)
    _handed_over.discard(run_dir)
