"""Shared fixtures: a tiny synthetic dataset and a way to compose the real Hydra configs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from cxrcam.config import config_dir
from cxrcam.data.synthetic import ensure_synthetic
from cxrcam.train import train

TINY_CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> Path:
    """8 phantoms per class at 64 px, in the database layout (generated once per session)."""
    return ensure_synthetic(tmp_path_factory.mktemp("data") / "synthetic", n_per_class=8, image_size=64, seed=0)


@pytest.fixture()
def tiny_dataset_copy(tiny_synthetic, tmp_path) -> Path:
    """A private copy of the tiny set, for tests that add or break files."""
    return Path(shutil.copytree(tiny_synthetic, tmp_path / "dataset"))


def compose_config(name: str, *overrides: str) -> dict:
    """The resolved config of one entry point (train, explain, evaluate), as its Hydra main sees it."""
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        return OmegaConf.to_container(compose(name, overrides=list(overrides)), resolve=True)


def compose_train_config(*overrides: str) -> dict:
    return compose_config("train", *overrides)


def tiny_train_overrides(root: Path, *extra: str) -> list[str]:
    """Seconds-long real training on a dataset in the database layout: 32 px, 2 epochs, CPU."""
    return ["data=covid_radiography", f"data.root={root}", "data.num_workers=0", "data.image_size=32",
            "data.batch_size=8", "data.val_fraction=0.2",
            "data.test_fraction=0.2", "trainer.epochs=2", "trainer.device=cpu", "optim.lr=1e-3", *extra]


def train_tiny(root: Path, run_dir: Path, *extra: str) -> Path:
    """A 1-epoch SimpleCNN at 32 px (about a second); returns its best.pt."""
    train(compose_train_config(*tiny_train_overrides(root, "model=simple_cnn", "trainer.epochs=1", *extra)), run_dir)
    return run_dir / "checkpoints" / "best.pt"
