"""Shared fixtures: a tiny synthetic dataset and a way to compose the real Hydra configs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from cxrcam.config import config_dir
from cxrcam.data.synthetic import ensure_synthetic
from cxrcam.train import train
from cxrcam.checkpoint import load_checkpoint

from radiography_layout import build_radiography_database

TINY_CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> Path:
    """8 phantoms per class at 64 px, in the database layout (generated once per session)."""
    return ensure_synthetic(tmp_path_factory.mktemp("data") / "synthetic", n_per_class=8, resolution=64, seed=0)


@pytest.fixture(scope="session")
def radiography_database(tmp_path_factory) -> Path:
    """The COVID-19 Radiography Database's own layout in miniature (5 phantoms per class, 299 px
    images, 256 px lung masks, its xlsx and README files): the dataset folder, inside a parent."""
    return build_radiography_database(tmp_path_factory.mktemp("download"))


@pytest.fixture()
def tiny_dataset_copy(tiny_synthetic, tmp_path) -> Path:
    """A private copy of the tiny set, for tests that add or break files."""
    return Path(shutil.copytree(tiny_synthetic, tmp_path / "dataset"))


def compose_hydra_config(name: str, *overrides: str, with_hydra: bool = False) -> DictConfig:
    """One entry point's config (train, explain, evaluate) as Hydra composes it; ``with_hydra`` adds
    the ``hydra`` node (run dir, callbacks) that Hydra's own main would see."""
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        return compose(name, overrides=list(overrides), return_hydra_config=with_hydra)


def compose_config(name: str, *overrides: str) -> dict:
    """The resolved config a stage receives."""
    return OmegaConf.to_container(compose_hydra_config(name, *overrides), resolve=True)


def tiny_train_overrides(root: Path, *extra: str) -> list[str]:
    """Seconds-long real training on a dataset in the database layout: a SimpleCNN unless ``extra``
    names a model, 32 px, 2 epochs, CPU. Later overrides win."""
    model = [] if any(e.startswith("model=") for e in extra) else ["model=simple_cnn"]
    return ["data=covid_radiography", f"data.root={root}", "data.num_workers=0", "data.image_size=32",
            "data.batch_size=8", "data.val_fraction=0.2", "data.test_fraction=0.2", "trainer.epochs=2",
            "device=cpu", "optim.lr=1e-3", *model, *extra]


def tiny_config(root: Path, *extra: str) -> dict:
    return compose_config("train", *tiny_train_overrides(root, *extra))


def run_tiny(root: Path, run_dir: Path, *extra: str) -> dict:
    """A tiny training run in this process; returns train's report."""
    return train(tiny_config(root, *extra), run_dir)


def train_tiny(root: Path, run_dir: Path, *extra: str) -> Path:
    """A 1-epoch tiny run (about a second); returns its best.pt."""
    run_tiny(root, run_dir, "trainer.epochs=1", *extra)
    return run_dir / "checkpoints" / "best.pt"


RESUMED_CASE = ("trainer.epochs=3", "data.batch_size=2")  # 3 epochs of 8 steps: room to stop one midway


@pytest.fixture(scope="session")
def uninterrupted_run(tiny_synthetic, tmp_path_factory) -> Path:
    """RESUMED_CASE trained straight through: what any interrupted and resumed run of it must equal."""
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    run_tiny(tiny_synthetic, run_dir, *RESUMED_CASE)
    return run_dir


def assert_same_training(run_dir: Path, reference: Path) -> None:
    """Bit for bit: every weight of the last epoch, and each epoch's metrics (its timings aside)."""
    last, expected = (load_checkpoint(d / "checkpoints" / "last.pt") for d in (run_dir, reference))
    assert expected["state_dict"].keys() == last["state_dict"].keys()
    for key, tensor in expected["state_dict"].items():
        assert torch.equal(tensor, last["state_dict"][key]), key
    untimed = lambda history: [{k: v for k, v in row.items() if not k.endswith("_s")} for row in history]  # noqa: E731
    assert untimed(last["training"]["history"]) == untimed(expected["training"]["history"])


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", samples: int = 1, **extra) -> Path:
    """A DICOM file of ``pixels`` (16-bit, 12 stored, or 8-bit RGB), tags in ``extra``; skips without pydicom."""
    pydicom = pytest.importorskip("pydicom", reason="the [dicom] extra (pydicom) is not installed")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PhotometricInterpretation = "DX", photometric
    ds.Rows, ds.Columns = pixels.shape[-2:] if samples == 1 else pixels.shape[:2]  # frames first; colour last
    if samples == 1:
        ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 16, 12, 11
    else:
        ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PlanarConfiguration = 3, 8, 8, 7, 0
    ds.PixelRepresentation = 0
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(np.uint16 if samples == 1 else np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def signal_training_after_its_first_epoch(root: Path, run_dir: Path, signum: int, *extra: str) -> tuple[int, str]:
    """``python -m cxrcam.train`` of 200 tiny epochs, sent ``signum`` once its first last.pt exists;
    its exit code and stderr."""
    process = subprocess.Popen([sys.executable, "-m", "cxrcam.train",
                                *tiny_train_overrides(root, "trainer.epochs=200", "data.batch_size=2", *extra),
                                f"hydra.run.dir={run_dir}"],
                               cwd=run_dir.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last = run_dir / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 180
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    return process.returncode, err
