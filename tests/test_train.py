"""Real, tiny training runs: seconds each, no mocks of torch."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxrcam.checkpoint import load_checkpoint
from cxrcam.cli import renamed_key, uncomposable_override, unknown_group_option
from cxrcam.config import RENAMED_KEYS, config_dir
from cxrcam.data.batches import to_batch
from cxrcam.data.images import load_image
from cxrcam.errors import CxrcamError
from cxrcam.models import build_model, count_parameters
from cxrcam.data.batches import epoch_plan
from cxrcam.train import (best_epoch_index, class_weights, epochs_without_improvement, make_batches,
                          sampling_weights, train)
from cxrcam.training.distributed import Processes
from cxrcam.training.metrics import classification_report

from conftest import RESUMED_CASE, assert_same_training, compose_config, run_tiny, tiny_config, tiny_train_overrides

RUN_FILES = ("split.csv", "metrics.csv", "test_metrics.json", "test_predictions.csv",
             "confusion_matrix.png", "roc.png", "training_curves.png",
             "checkpoints/best.pt", "checkpoints/last.pt")


@pytest.mark.slow
def test_tiny_training_run_writes_every_artifact(tiny_synthetic, tmp_path):
    report = run_tiny(tiny_synthetic, tmp_path)
    for name in RUN_FILES:
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "test_metrics.json").read_text())
    assert saved == json.loads(json.dumps(report))
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "macro_auroc", "per_class", "confusion_matrix",
                "epochs", "train_wall_s", "num_parameters"):
        assert key in saved
    assert np.asarray(saved["confusion_matrix"]).sum() == saved["n_images"] == 8
    with open(tmp_path / "metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2]
    assert (saved["early_stop_patience"], saved["stopped_early"], saved["epochs_run"]) == (None, False, 2)
    with open(tmp_path / "split.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["split"] for r in rows} == {"train", "val", "test"} and len(rows) == 32


@pytest.mark.slow
def test_default_synthetic_data_is_generated_on_first_use(tmp_path):
    cfg = compose_config("train", "model=simple_cnn", "data.synthetic.n_per_class=6", "data.synthetic.resolution=48",
                               f"paths.data_dir={tmp_path / 'data'}", "data.image_size=32", "trainer.epochs=1",
                               "device=cpu")
    assert cfg["data"]["root"] == str(tmp_path / "data" / "synthetic-6x48px-seed0")
    report = train(cfg, tmp_path / "run")
    assert report["n_images"] == 4 and (tmp_path / "data" / "synthetic-6x48px-seed0" / "synthetic.json").is_file()


@pytest.mark.slow
def test_checkpoint_is_weights_only_and_carries_what_explain_needs(tiny_synthetic, tmp_path):
    run_tiny(tiny_synthetic, tmp_path, "model=resnet50", "trainer.epochs=1")
    payload = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    meta = payload["meta"]
    assert meta["model_name"] == "resnet50" and meta["class_names"] == ["COVID", "Lung_Opacity", "Normal",
                                                                         "Viral Pneumonia"]
    assert meta["image_size"] == 32 and meta["target_layer"] == "layer4.2"
    assert meta["normalization"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert meta["config"]["optim"]["lr"] == 1e-3 and meta["split"]["path"] == str(tmp_path / "split.csv")
    assert len(meta["split"]["sha256"]) == 64 and meta["cxrcam_version"]
    assert "training" not in payload and "training" in torch.load(tmp_path / "checkpoints" / "last.pt",
                                                                   weights_only=True)
    # rebuild from the metadata alone and reproduce the test predictions
    model = build_model(meta["model_name"], len(meta["class_names"]), meta["image_size"]).eval()
    model.load_state_dict(payload["state_dict"])
    with open(tmp_path / "test_predictions.csv") as f:
        first = next(csv.DictReader(f))
    with torch.no_grad():
        probs = model(to_batch([load_image(first["path"], 32)], meta["normalization"])).softmax(1)[0]
    assert probs[0].item() == pytest.approx(float(first["p_COVID"]), abs=1e-5)


@pytest.mark.slow
def test_cam_layer_names_the_layer_the_checkpoint_carries(tiny_synthetic, tmp_path):
    """cam.layer, as explain and evaluate call it; the run checks it fits and stores it for them."""
    run_tiny(tiny_synthetic, tmp_path, "trainer.epochs=1", "device=cpu", "cam.layer=features.2")
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["meta"]["target_layer"] == "features.2"


@pytest.mark.slow
def test_resume_reproduces_an_uninterrupted_run_bitwise(tiny_synthetic, uninterrupted_run, tmp_path):
    """1 epoch, then resume to 3, equals 3 straight: sampling, augmentation and dropout included."""
    run_tiny(tiny_synthetic, tmp_path / "part", *RESUMED_CASE, "trainer.epochs=1")
    run_tiny(tiny_synthetic, tmp_path / "resumed", *RESUMED_CASE, f"resume={tmp_path / 'part/checkpoints/last.pt'}")
    assert_same_training(tmp_path / "resumed", uninterrupted_run)


def test_epochs_without_improvement_count_from_the_first_best_epoch():
    """best.pt is replaced only by a strictly better val macro-F1, so a tie is one more epoch without
    improvement, and the count is derived from the history alone (a resumed run has last.pt's)."""
    def history(*f1):
        return [{"epoch": i + 1, "val_macro_f1": v} for i, v in enumerate(f1)]

    assert epochs_without_improvement([]) == 0
    assert epochs_without_improvement(history(0.5)) == 0
    assert epochs_without_improvement(history(0.5, 0.6, 0.6, 0.55)) == 2
    assert best_epoch_index(history(0.5, 0.6, 0.6, 0.55)) == 1
    assert epochs_without_improvement(history(0.5, 0.6, 0.6, 0.7)) == 0
    assert epochs_without_improvement(history(0.0, 0.0, 0.0)) == 2


# at lr 1e-12 the weights, and so the val predictions, stay put: epoch 1 is the best and every later
# epoch ties it, so patience 2 ends the 10-epoch run after epoch 3
NO_PROGRESS = ("optim.lr=1e-12", "trainer.epochs=10", "trainer.early_stop_patience=2")


@pytest.mark.slow
def test_early_stop_ends_the_run_after_patience_epochs_without_a_better_val_macro_f1(tiny_synthetic, tmp_path,
                                                                                     caplog):
    with caplog.at_level(logging.INFO, logger="cxrcam.train"):
        report = run_tiny(tiny_synthetic, tmp_path, *NO_PROGRESS)
    saved = json.loads((tmp_path / "test_metrics.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert {k: saved[k] for k in ("epochs", "early_stop_patience", "stopped_early", "epochs_run", "best_epoch")} == {
        "epochs": 10, "early_stop_patience": 2, "stopped_early": True, "epochs_run": 3, "best_epoch": 1}
    with open(tmp_path / "metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3]
    assert "early stop after epoch 3: no better val macro-F1 for 2 epochs; best epoch 1" in caplog.messages


@pytest.mark.slow
def test_a_run_resumed_mid_patience_stops_where_the_uninterrupted_run_stops(tiny_synthetic, tmp_path):
    """2 epochs (1 without improvement), then resumed to a cap of 10: the count comes back from
    last.pt's history, so it stops after epoch 3 with the straight run's weights. Patience may change
    on resume (it decides only where the trajectory ends): 1 stops it before any further epoch."""
    straight = run_tiny(tiny_synthetic, tmp_path / "straight", *NO_PROGRESS)
    part = run_tiny(tiny_synthetic, tmp_path / "part", *NO_PROGRESS, "trainer.epochs=2")
    assert (part["stopped_early"], part["epochs_run"]) == (False, 2)
    last = tmp_path / "part/checkpoints/last.pt"
    resumed = run_tiny(tiny_synthetic, tmp_path / "resumed", *NO_PROGRESS, f"resume={last}")
    keys = ("stopped_early", "epochs_run", "best_epoch", "best_val_macro_f1")
    assert {k: resumed[k] for k in keys} == {k: straight[k] for k in keys}
    assert resumed["epochs_run"] == 3
    assert_same_training(tmp_path / "resumed", tmp_path / "straight")
    impatient = run_tiny(tiny_synthetic, tmp_path / "impatient", *NO_PROGRESS, "trainer.early_stop_patience=1",
                         f"resume={last}")
    assert (impatient["stopped_early"], impatient["epochs_run"], impatient["best_epoch"]) == (True, 2, 1)


@pytest.mark.slow
def test_resume_needs_training_state_and_the_same_model(tiny_synthetic, tmp_path):
    run_tiny(tiny_synthetic, tmp_path / "a", "trainer.epochs=1")
    with pytest.raises(CxrcamError, match="no training state"):
        run_tiny(tiny_synthetic, tmp_path / "b", f"resume={tmp_path / 'a/checkpoints/best.pt'}")
    with pytest.raises(CxrcamError, match="model.name='resnet50': the checkpoint was trained with model.name='simple_cnn'"):
        run_tiny(tiny_synthetic, tmp_path / "c", "model=resnet50", f"resume={tmp_path / 'a/checkpoints/last.pt'}")
    run_tiny(tiny_synthetic, tmp_path / "d", "trainer.epochs=1", "optim.scheduler=onecycle")
    with pytest.raises(CxrcamError, match="onecycle schedule spans the checkpoint's trainer.epochs=1"):
        run_tiny(tiny_synthetic, tmp_path / "e", "trainer.epochs=3", "optim.scheduler=onecycle",
                 f"resume={tmp_path / 'd/checkpoints/last.pt'}")
    with pytest.raises(CxrcamError, match="holds a cxrcam.train run started"):
        run_tiny(tiny_synthetic, tmp_path / "a")


@pytest.mark.slow
def test_split_file_override_trains_on_the_same_images(tiny_synthetic, tmp_path):
    run_tiny(tiny_synthetic, tmp_path / "a", "trainer.epochs=1")
    run_tiny(tiny_synthetic, tmp_path / "b", "trainer.epochs=1", "seed=5",
             f"data.split_file={tmp_path / 'a/split.csv'}")
    assert (tmp_path / "a/split.csv").read_bytes() == (tmp_path / "b/split.csv").read_bytes()


@pytest.mark.parametrize("override, message", [
    ("optim.lr=-1", "optim.lr=-1"),
    ("trainer.epochs=0", "trainer.epochs=0"),
    ("data.batch_size=0", "data.batch_size=0"),
    ("trainer.class_balance=magic", "trainer.class_balance='magic'"),
    ("data.classes=[COVID]", "at least two"),
    ("device=gpu0", "device='gpu0' is not a torch device"),
])
def test_bad_config_stops_before_any_work(tiny_synthetic, tmp_path, override, message):
    with pytest.raises(CxrcamError, match=message.replace("[", r"\[")):
        run_tiny(tiny_synthetic, tmp_path, override)
    assert not any(tmp_path.iterdir())


def test_the_balancing_sampler_draws_each_class_equally_often(tiny_synthetic):
    """12 COVID and 3 Normal training images: the sampler draws Normal about half the time, plain
    shuffling a fifth (exactly 3 of every 15)."""
    images = {label: sorted((tiny_synthetic / label / "images").glob("*.png")) for label in ("COVID", "Normal")}
    rows = [{"path": str(p), "label": "COVID", "split": "train"} for p in images["COVID"] + images["COVID"][:4]]
    rows += [{"path": str(p), "label": "Normal", "split": "train"} for p in images["Normal"][:3]]
    data = tiny_config(tiny_synthetic)["data"]
    batches = make_batches(rows, "train", ["COVID", "Normal"], data, torch.device("cpu"), Processes())
    drawn = {}
    for mode in ("sampler", "none"):
        weights = sampling_weights(batches, 2, mode)
        plans = [epoch_plan(len(batches), 4, 0, epoch, None, weights=weights)[0] for epoch in range(1, 41)]
        drawn[mode] = torch.cat([labels for plan in plans for _, labels, _ in batches(plan)])
    assert drawn["none"].float().mean().item() == pytest.approx(3 / 15)
    assert drawn["sampler"].numel() == 40 * 15
    assert drawn["sampler"].float().mean().item() == pytest.approx(0.5, abs=0.05)


@pytest.mark.slow
def test_real_database_layout_with_mixed_images_and_a_class_subset(tmp_path):
    """Any class subset, mixed modes and sizes, PNG and JPEG, masks beside images."""
    rng = np.random.default_rng(0)
    for label in ("COVID", "Normal"):
        for i in range(6):
            size = int(rng.integers(40, 90))
            pixels = (rng.random((size, size + 7)) * 255).astype(np.uint8)
            image = Image.fromarray(pixels).convert(["L", "RGB", "RGBA"][i % 3])
            folder = tmp_path / "COVID-19_Radiography_Dataset" / label
            (folder / "images").mkdir(parents=True, exist_ok=True)
            (folder / "masks").mkdir(exist_ok=True)
            if i % 2:
                image.convert("RGB").save(folder / "images" / f"{label}-{i}.jpg")
            else:
                image.save(folder / "images" / f"{label}-{i}.png")
            Image.new("L", (16, 16), 255).save(folder / "masks" / f"{label}-{i}.png")
    cfg = tiny_config(tmp_path, "data.classes=[COVID,Normal]", "trainer.epochs=1")
    report = train(cfg, tmp_path / "run")
    assert report["class_names"] == ["COVID", "Normal"] and report["n_images"] == 2  # 1 test image per class


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "cxrcam.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240)


@pytest.mark.child_process
def test_cli_prints_the_composed_config_from_any_directory(tmp_path):
    result = _cli("--cfg", "job", "model=densenet121", "optim.lr=3e-4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "name: densenet121" in result.stdout and "lr: 0.0003" in result.stdout


@pytest.mark.child_process
def test_cli_user_error_is_one_line_and_exit_code_2(tmp_path):
    result = _cli("data=covid_radiography", f"data.root={tmp_path / 'missing'}",
                  f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("cxrcam.train: error: data.root=")
    assert "Traceback" not in result.stderr


@pytest.mark.child_process
def test_unknown_group_option_is_one_line_naming_the_options(tmp_path):
    result = _cli("-m", "model=resnet50,resnet_50", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 2 and not (tmp_path / "sweep").exists()
    assert result.stderr.strip() == ("cxrcam.train: error: model=resnet_50 is not one of "
                                     "['densenet121', 'resnet50', 'simple_cnn']")


@pytest.mark.parametrize("argv, reason", [
    (["trainer.device=cpu"], "trainer.device is now device: use device=cpu"),
    (["+trainer.device=cpu"], "trainer.device is now device: use device=cpu"),  # device exists: no + to add it
    (["++trainer.device=cuda:1"], "trainer.device is now device: use ++device=cuda:1"),
    (["~trainer.device"], "trainer.device is now device: use ~device"),
    (["-m", "model.target_layer=layer3.5,layer4.1"],
     "model.target_layer is now cam.layer: use cam.layer=layer3.5,layer4.1"),
    (["data.synthetic.image_size=64"],
     "data.synthetic.image_size is now data.synthetic.resolution: use data.synthetic.resolution=64"),
    (["device=cpu", "cam.layer=layer3.5", "data.synthetic.resolution=64", "trainer.devices=cpu"], None),
])
def test_a_key_by_its_old_name_is_one_line_naming_the_new_one(argv, reason):
    assert renamed_key(argv, RENAMED_KEYS) == reason


@pytest.mark.child_process
@pytest.mark.parametrize("override, line", [
    ("trainer.device=cpu", "trainer.device is now device: use device=cpu"),
    ("model.target_layer=layer3.5", "model.target_layer is now cam.layer: use cam.layer=layer3.5"),
    ("data.synthetic.image_size=64",
     "data.synthetic.image_size is now data.synthetic.resolution: use data.synthetic.resolution=64"),
])
def test_cli_refuses_an_old_key_name_in_one_line_before_hydra(tmp_path, override, line):
    result = _cli(override, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2 and not (tmp_path / "run").exists()
    assert result.stderr.strip() == f"cxrcam.train: error: {line}"


@pytest.mark.parametrize("argv, reason", [
    (["data=folder", "model=simple_cnn", "optim.lr=1e-3", "experiment=demo"], None),
    (["data=synthtic"],
     "data=synthtic is not one of ['covid_radiography', 'csv', 'folder', 'rsna_pneumonia', 'synthetic']"),
    (["experiment=null"], "experiment=null is not one of ['demo', 'seed', 'shortcut', 'shortcut_control']"),
    (["model=glob(*)", "split=test"], None),  # sweep functions and plain keys are Hydra's to judge
    (["--config-dir=/my/conf", "model=mine"], None),  # a user's own configs may add options
    (["-cp", "/my/conf", "model=mine"], None),
    (["-m", "hydra/launcher=slurm"], None),  # a nested group: ours in conf/hydra/launcher/ ...
    (["hydra/launcher=local", "hydra/launcher=basic"], None),  # ... and Hydra's own
    (["hydra/job_logging=disabled"], None),
    (["hydra/job_logging=nne"], "hydra/job_logging=nne is not one of ['default', 'disabled', 'none', 'stdout']"),
    (["no/such_group=x"], None),  # Hydra's to judge
])
def test_unknown_group_option_judges_only_what_it_can(argv, reason):
    assert unknown_group_option(argv, config_dir()) == reason


def test_an_unknown_launcher_lists_ours_and_hydras():
    """The plugin's own options (submitit_slurm, submitit_local) follow when the [slurm] extra is installed."""
    reason = unknown_group_option(["-m", "hydra/launcher=slrum"], config_dir())
    assert reason.startswith("hydra/launcher=slrum is not one of ['basic', 'local', 'slurm'")


@pytest.mark.parametrize("argv, reason", [
    (["trainer.epoch=3"], "Could not override 'trainer.epoch'; To append to your config use +trainer.epoch=3"),
    (["-m", "model=simple_cnn,resnet50", "optim.lrr=1e-3"],
     "Could not override 'optim.lrr'; To append to your config use +optim.lrr=1e-3"),
    (["data.classes=[COVID"], "no viable alternative at input '[COVID'"),
    (["-m", "optim.lr=1e-3,1e-4", "+note=mine", "hydra.run.dir=/tmp/x", "--cfg", "job"], None),
    (["--config-dir=/my/conf", "trainer.epoch=3"], None),  # a user's own configs may add keys
])
def test_an_override_hydra_cannot_compose_is_judged_before_hydra_starts(argv, reason):
    assert uncomposable_override(argv, config_dir(), "train") == reason


@pytest.mark.child_process
def test_tiny_multirun_writes_the_comparison_table(tiny_synthetic, tmp_path):
    result = _cli("-m", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                  *tiny_train_overrides(tiny_synthetic, "model=simple_cnn,resnet50", "trainer.epochs=1"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "sweep" / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["simple_cnn", "resnet50"]
    for row, name in zip(rows, ("simple_cnn", "resnet50")):
        run = json.loads((tmp_path / "sweep" / row["run"] / "test_metrics.json").read_text())
        assert float(row["test_accuracy"]) == pytest.approx(run["accuracy"], abs=1e-4)
        assert float(row["macro_f1"]) == pytest.approx(run["macro_f1"], abs=1e-4)
        assert int(row["parameters"]) == count_parameters(build_model(name, 4, 32))
    table = (tmp_path / "sweep" / "comparison.md").read_text()
    assert "| model |" in table and "| 0_simple_cnn | simple_cnn |" in table
    assert (tmp_path / "sweep" / "1_resnet50" / "checkpoints" / "best.pt").is_file()


def test_class_weights_are_inverse_frequency_over_the_train_split():
    rows = ([{"label": "Normal", "split": "train"}] * 30 + [{"label": "COVID", "split": "train"}] * 10
            + [{"label": "COVID", "split": "test"}] * 50)
    assert class_weights(rows, ["COVID", "Normal"]).tolist() == pytest.approx([2.0, 2 / 3])


def test_report_keeps_accuracy_next_to_balanced_accuracy():
    """90 Normal, 10 COVID, a model that always says Normal: 0.9 accuracy, 0.5 balanced accuracy."""
    y_true = np.array([1] * 90 + [0] * 10)
    probs = np.tile([0.2, 0.8], (100, 1))
    probs[:5] = [0.3, 0.7]  # some ranking signal for AUROC, same decisions
    report = classification_report(y_true, probs, ["COVID", "Normal"])
    assert report["accuracy"] == pytest.approx(0.9) and report["balanced_accuracy"] == pytest.approx(0.5)
    assert report["per_class"]["COVID"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 10}
    assert report["confusion_matrix"] == [[0, 10], [0, 90]]
    # one-vs-rest, ties count half: COVID's 10 scores tie with 85 of the 90 Normal ones and lose to 5, and
    # the same holds for Normal's scores against COVID's: (85 / 2) / 90 for each class
    assert report["macro_auroc"] == pytest.approx(85 / 180)
