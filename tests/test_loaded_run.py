"""A loaded run: the checkpoint's model in eval mode on the asked device, its input transform, its
CAM layer and run dir, as explain, evaluate and the benches share them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrcam.checkpoint import build_metadata, save_checkpoint
from cxrcam.data.batches import to_batch
from cxrcam.data.split import file_sha256
from cxrcam.errors import CxrcamError
from cxrcam.loaded_run import load_run, load_runs
from cxrcam.models import build_model

CLASSES = ["COVID", "Normal"]
NORMALIZATION = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}


@pytest.fixture()
def saved(tmp_path):
    """A SimpleCNN checkpoint at 64 px in a run dir, as cxrcam.train writes it."""
    torch.manual_seed(0)
    model = build_model("simple_cnn", len(CLASSES), 64, dropout=0.2)
    split = tmp_path / "run" / "split.csv"
    split.parent.mkdir()
    split.write_text("path,label,split\n")
    meta = build_metadata("simple_cnn", CLASSES, 64, NORMALIZATION["mean"], NORMALIZATION["std"], "features.3",
                          {"model": {"dropout": 0.2, "pooled_size": None}}, str(split), file_sha256(split))
    path = tmp_path / "run" / "checkpoints" / "best.pt"
    save_checkpoint({"state_dict": model.state_dict(), "meta": meta}, path)
    return path, model


def test_a_run_is_its_trained_model_in_eval_mode_with_its_metadata(saved):
    path, model = saved
    run = load_run(path, torch.device("cpu"))
    assert run.path == path and run.run_dir == path.parents[1] and run.split_sha256 == file_sha256(run.split_file())
    assert (run.model_name, run.class_names, run.image_size) == ("simple_cnn", CLASSES, 64)
    assert not run.model.training
    for loaded, trained in zip(run.model.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(loaded, trained)


def test_a_runs_batch_is_its_normalised_input_on_the_models_device(saved):
    run = load_run(saved[0], torch.device("cpu"))
    pixels = [torch.randint(0, 256, (64, 64), dtype=torch.uint8).numpy() for _ in range(3)]
    batch = run.batch(pixels)
    assert torch.equal(batch, to_batch(pixels, NORMALIZATION)) and batch.shape == (3, 3, 64, 64)
    assert batch[0, 2, 0, 0] == pytest.approx((pixels[0][0, 0] / 255 - 0.3) / 0.3, abs=1e-6)


def test_the_cam_layer_defaults_to_the_runs_own_and_must_be_spatial(saved):
    run = load_run(saved[0], torch.device("cpu"))
    own = run.cam_layer()
    assert (own.name, own.grid, own.module) == ("features.3", [4, 4], run.model.features[3])
    assert run.cam_layer("features.1").grid == [16, 16]
    with pytest.raises(CxrcamError, match=r"cam.layer=classifier gives an output of shape \(1, 2\)"):
        run.cam_layer("classifier")


def test_load_runs_reads_every_job_of_a_sweep(saved, tmp_path):
    path, _ = saved
    assert [r.path for r in load_runs(str(path), None, torch.device("cpu"))] == [path]
    assert [r.run_dir.name for r in load_runs(None, str(tmp_path), torch.device("cpu"))] == ["run"]


def test_a_run_lives_on_the_device_it_was_loaded_for(saved):
    (run,) = load_runs(str(saved[0]), None, torch.device("meta"))  # a device other than the CPU, without a GPU
    assert {p.device.type for p in run.model.parameters()} == {"meta"}
    assert run.batch([np.zeros((64, 64), np.uint8)]).device.type == "meta"


def test_a_runs_split_is_its_own_or_the_one_named(saved, tmp_path):
    run = load_run(saved[0], torch.device("cpu"))
    assert run.split_file() == tmp_path / "run" / "split.csv"
    other = tmp_path / "other.csv"
    other.write_text("path,label,split\nx.png,COVID,test\n")
    assert run.split_file(str(other)) == other
    (tmp_path / "run" / "split.csv").write_text("path,label,split\nchanged.png,COVID,test\n")
    with pytest.raises(CxrcamError, match="pass split_file=<that run's split.csv>"):
        run.split_file()
