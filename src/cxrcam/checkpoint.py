"""Checkpoints as weights-only files: tensors plus plain metadata, nothing that unpickles code.

``torch.load(path, weights_only=True)`` reads every checkpoint cxrcam writes, so a checkpoint
received from someone else can be opened without running their code.
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
from pathlib import Path

import torch

from cxrcam import __version__
from cxrcam.errors import CxrcamError

FORMAT_VERSION = 1


def git_commit() -> str | None:
    """The commit of the source tree cxrcam runs from, when it runs from a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def provenance() -> dict:
    """What every checkpoint records about the code that wrote it, a classifier's or a segmenter's."""
    return {"format_version": FORMAT_VERSION, "cxrcam_version": __version__, "git_commit": git_commit(),
            "torch_version": str(torch.__version__)}


def build_metadata(model_name: str, class_names: list[str], image_size: int, mean: list[float],
                   std: list[float], target_layer: str, config: dict, split_path: str,
                   split_sha256: str) -> dict:
    return {
        **provenance(),
        "model_name": model_name,
        "class_names": list(class_names),
        "image_size": int(image_size),
        "normalization": {"mean": [float(m) for m in mean], "std": [float(s) for s in std]},
        "target_layer": target_layer,
        "config": config,
        "split": {"path": str(split_path), "sha256": split_sha256},
    }


def save_checkpoint(payload: dict, path: str | Path) -> None:
    """Write to a temporary file and rename, so a kill mid-save never leaves a broken file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    buffer = io.BytesIO()  # serialised in memory: torch's file writer reports a full disk as a cryptic RuntimeError
    torch.save(payload, buffer)
    try:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
        os.replace(tmp, path)
    except BaseException as exc:  # a full disk, a read-only dir, Ctrl-C: no half-written temporary file stays
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise CxrcamError(f"cannot write checkpoint {path}: {exc.strerror}; free disk space or set "
                              "hydra.run.dir to a writable folder") from None
        raise


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "does not exist"
        raise CxrcamError(f"checkpoint {path} {state}; pass the best.pt or last.pt "
                          "that cxrcam.train wrote under <run dir>/checkpoints/")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CxrcamError(f"refusing checkpoint {path}: it holds pickled objects other than tensors "
                          "and plain data (possibly code), which cxrcam never writes") from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, ... for truncated or foreign files
        raise CxrcamError(f"cannot read checkpoint {path} ({type(exc).__name__}); it is truncated "
                          "or not a PyTorch file") from None
    if not isinstance(payload, dict) or "state_dict" not in payload or "meta" not in payload:
        raise CxrcamError(f"{path} is not a cxrcam checkpoint (no state_dict/meta)")
    meta = payload["meta"] if isinstance(payload["meta"], dict) else {}
    if meta.get("format_version") != FORMAT_VERSION:
        raise CxrcamError(f"checkpoint {path} has format version {meta.get('format_version')!r}; this cxrcam "
                          f"({__version__}) reads version {FORMAT_VERSION}: open it with the cxrcam that wrote it "
                          f"({meta.get('cxrcam_version', 'version unknown')})")
    return payload


def checkpoint_paths(ckpt, sweep) -> list[Path]:
    """The checkpoints a ckpt= (one path or a list) or sweep= (a multirun dir) option names."""
    if sweep:
        paths = sorted(Path(sweep).glob("*/checkpoints/best.pt"))
        if not paths:
            raise CxrcamError(f"sweep={sweep} holds no <job>/checkpoints/best.pt; pass a multirun dir of cxrcam.train")
        return paths
    if not ckpt:
        raise CxrcamError("say which model(s) to use: ckpt=<run>/checkpoints/best.pt, ckpt=[a,b] or sweep=<dir>")
    return [Path(p) for p in (ckpt if isinstance(ckpt, list) else [ckpt])]
