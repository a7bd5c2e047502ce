"""No run overwrites or mixes another, every stage verifies what it reads, every user error is one
line (README: "Data hygiene and failure behaviour"). Each case is made here and the promised
behaviour asserted, so that each test fails when that behaviour breaks."""

from __future__ import annotations

import csv
import json
import multiprocessing
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from cxrcam.cli import RunDirClaim
from cxrcam.data.synthetic import ensure_synthetic
from cxrcam.errors import CxrcamError
from cxrcam.evaluate import evaluate
from cxrcam.evaluation.anatomy import mask_problem, read_mask, single_lung_side, split_lungs, zone_map
from cxrcam.explain import explain
from cxrcam.models import build_model
from cxrcam.rundir import ARTIFACTS, CLAIM, claim_before_hydra, claim_run_dir
from cxrcam.train import train
from cxrcam.checkpoint import load_checkpoint, save_checkpoint

from conftest import (compose_config, compose_hydra_config, run_tiny, signal_training_after_its_first_epoch, tiny_config,
                      tiny_train_overrides, train_tiny)

CHEAP_EVALUATE = ["device=cpu", "faithfulness.n_images=4", "faithfulness.percentiles=[50]", "sanity.n_images=4",
                  "bootstrap.n_resamples=50"]


def cli(stage: str, *args: str, cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"cxrcam.{stage}", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def one_line_error(result: subprocess.CompletedProcess, stage: str) -> str:
    """The error line of a failed call, after checking the contract: exit 2, no traceback."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"cxrcam.{stage}: error: ")
    return line


@pytest.fixture(scope="module")
def trained(tiny_synthetic, tmp_path_factory) -> Path:
    """A finished tiny run dir (made through the CLI, so it holds Hydra's files too)."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    result = cli("train", *tiny_train_overrides(tiny_synthetic, "trainer.epochs=1"),
                 f"hydra.run.dir={run_dir}", cwd=run_dir.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- 1. a run dir belongs to one process ---------------------------------------------------------

@pytest.mark.parametrize("artifact", [a for a in ARTIFACTS if a != CLAIM])
def test_any_cxrcam_output_in_a_dir_refuses_a_stage_before_it_writes(tmp_path, artifact):
    (tmp_path / artifact).write_text("an earlier result")
    with pytest.raises(CxrcamError, match=f"already holds cxrcam outputs \\({artifact}\\)"):
        claim_run_dir(tmp_path, "train")
    assert sorted(p.name for p in tmp_path.iterdir()) == [artifact]


def test_a_dir_with_hydra_files_is_refused_before_hydra_writes_but_not_a_sweep_job_dir(tmp_path):
    (tmp_path / ".hydra").mkdir()
    assert claim_before_hydra(tmp_path, "explain") == "already holds cxrcam outputs (.hydra)"
    claim_run_dir(tmp_path, "train")  # a sweep's job dir: Hydra wrote there just before the job
    assert json.loads((tmp_path / CLAIM).read_text())["stage"] == "train"
    with pytest.raises(CxrcamError, match="holds a cxrcam.train run started"):
        claim_run_dir(tmp_path, "train")


def test_two_starts_in_the_same_second_get_two_dirs(tmp_path):
    first = compose_hydra_config("train", f"paths.output_dir={tmp_path}", with_hydra=True)
    second = compose_hydra_config("train", f"paths.output_dir={tmp_path}", with_hydra=True)
    OmegaConf.copy_cache(from_config=first, to_config=second)  # the same ${now:} second
    assert first.hydra.run.dir == second.hydra.run.dir
    default_dir = first.hydra.run.dir
    RunDirClaim("train").on_run_start(first)
    RunDirClaim("train").on_run_start(second)
    assert first.hydra.run.dir == default_dir and second.hydra.run.dir == f"{default_dir}-2"
    assert (Path(default_dir) / CLAIM).is_file() and (Path(f"{default_dir}-2") / CLAIM).is_file()


def test_a_sweep_dir_taken_in_the_same_second_moves_its_jobs_too(tmp_path):
    first = compose_hydra_config("train", f"paths.output_dir={tmp_path}", with_hydra=True)
    second = compose_hydra_config("train", f"paths.output_dir={tmp_path}", with_hydra=True)
    OmegaConf.copy_cache(from_config=first, to_config=second)
    RunDirClaim("train").on_multirun_start(first)
    RunDirClaim("train").on_multirun_start(second)
    assert second.hydra.sweep.dir == f"{first.hydra.sweep.dir}-2"
    assert f"hydra.sweep.dir='{first.hydra.sweep.dir}-2'" in second.hydra.overrides.hydra  # jobs recompose from these


def test_a_moved_sweep_dir_with_grammar_characters_reaches_its_jobs(tmp_path):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    odd = tmp_path / "o(1), it's=[x]"
    first = compose_hydra_config("train", f'paths.output_dir="{odd}"', with_hydra=True)
    second = compose_hydra_config("train", f'paths.output_dir="{odd}"', with_hydra=True)
    OmegaConf.copy_cache(from_config=first, to_config=second)
    RunDirClaim("train").on_multirun_start(first)
    RunDirClaim("train").on_multirun_start(second)
    (override,) = OverridesParser.create().parse_overrides([second.hydra.overrides.hydra[-1]])
    assert override.key_or_group == "hydra.sweep.dir" and override.value() == f"{first.hydra.sweep.dir}-2"


def test_a_dir_named_with_dots_is_the_dir_hydra_runs_in(tmp_path):
    (tmp_path / "a").mkdir()
    assert claim_before_hydra(f"{tmp_path}/a/../run", "train") is None
    claim_run_dir(tmp_path / "run", "train")  # as Hydra hands it over: normalised
    assert json.loads((tmp_path / "run" / CLAIM).read_text())["stage"] == "train"


@pytest.mark.child_process
def test_concurrent_trainings_into_one_named_dir_one_runs_the_other_stops(tiny_synthetic, tmp_path):
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "cxrcam.train", *tiny_train_overrides(tiny_synthetic, "trainer.epochs=1"),
            f"hydra.run.dir={run_dir}"]
    first = subprocess.Popen([*args, "optim.lr=1e-3"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    second = subprocess.Popen([*args, "optim.lr=3e-4"], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    results = [(p, *p.communicate(timeout=240)) for p in (first, second)]
    codes = sorted(p.returncode for p, _, _ in results)
    assert codes == [0, 2], [err[-1000:] for _, _, err in results]
    winner = next(p for p, _, _ in results if p.returncode == 0)
    loser_err = next(err for p, _, err in results if p.returncode == 2)
    assert f"{run_dir} holds a cxrcam.train run started" in loser_err.strip().splitlines()[-1]
    lr = 1e-3 if winner is first else 3e-4
    for name in ("best.pt", "last.pt"):  # every file of the dir is the winner's
        assert torch.load(run_dir / "checkpoints" / name, weights_only=True)["meta"]["config"]["optim"]["lr"] == lr
    assert OmegaConf.load(run_dir / ".hydra" / "config.yaml").optim.lr == lr


@pytest.mark.child_process
def test_a_refused_rerun_and_explain_or_evaluate_leave_a_training_run_untouched(trained, tmp_path):
    before = snapshot(trained)
    line = one_line_error(cli("train", "model=simple_cnn", f"hydra.run.dir={trained}", cwd=tmp_path), "train")
    assert "holds a cxrcam.train run started" in line and "resume=" in line
    for stage, extra in (("explain", ["split=test"]), ("evaluate", [])):
        line = one_line_error(cli(stage, f"ckpt={trained / 'checkpoints/best.pt'}", *extra, "device=cpu",
                                  f"hydra.run.dir={trained}", cwd=tmp_path), stage)
        assert "holds a cxrcam.train run started" in line
    assert snapshot(trained) == before  # .hydra/config.yaml and overrides.yaml included


@pytest.mark.child_process
def test_explain_twice_into_one_dir_is_refused_and_a_user_error_leaves_the_dir_reusable(trained, tmp_path):
    out = tmp_path / "explain"
    ckpt = f"ckpt={trained / 'checkpoints/best.pt'}"
    line = one_line_error(cli("explain", ckpt, "split=test", "per_class=0", f"hydra.run.dir={out}", cwd=tmp_path),
                          "explain")
    assert line.endswith("per_class=0 must be a whole number >= 1")
    assert list(out.iterdir()) == []  # nothing of the failed call is left, so the same command can run again
    assert cli("explain", ckpt, "split=test", "per_class=1", f"hydra.run.dir={out}", cwd=tmp_path).returncode == 0
    before = snapshot(out)
    line = one_line_error(cli("explain", ckpt, "split=test", "per_class=2", f"hydra.run.dir={out}", cwd=tmp_path),
                          "explain")
    assert "holds a cxrcam.explain run started" in line
    assert snapshot(out) == before


# --- 2. every stage verifies what it reads -------------------------------------------------------

@pytest.mark.slow
def test_a_moved_run_is_explained_evaluated_and_resumed_with_its_own_split(tiny_synthetic, tmp_path):
    first = tmp_path / "runA"
    train_tiny(tiny_synthetic, first, "optim.scheduler=none")
    moved = tmp_path / "runA_moved"
    first.rename(moved)
    train_tiny(tiny_synthetic, first, "seed=7")  # a new run where the checkpoint says its split is
    assert (first / "split.csv").read_bytes() != (moved / "split.csv").read_bytes()
    with open(moved / "split.csv") as f:
        own_test = sorted(r["path"] for r in csv.DictReader(f) if r["split"] == "test")

    explain(compose_config("explain", f"ckpt={moved / 'checkpoints/best.pt'}", "split=test", "per_class=null",
                           "device=cpu"), tmp_path / "explained")
    with open(tmp_path / "explained" / "predictions.csv") as f:
        assert sorted(r["path"] for r in csv.DictReader(f)) == own_test
    evaluate(compose_config("evaluate", *CHEAP_EVALUATE, f"ckpt={moved / 'checkpoints/best.pt'}"),
             tmp_path / "evaluated")
    result = json.loads((tmp_path / "evaluated" / "cam_metrics.json").read_text())["models"][0]
    assert result["split_file"] == str(moved / "split.csv") and result["n_images"] == len(own_test)
    run_tiny(tiny_synthetic, tmp_path / "resumed", "trainer.epochs=2", "optim.scheduler=none",
             f"resume={moved / 'checkpoints/last.pt'}")
    assert (tmp_path / "resumed" / "split.csv").read_bytes() == (moved / "split.csv").read_bytes()

    (moved / "split.csv").rename(moved / "kept.csv")
    for run in (lambda: explain(compose_config("explain", f"ckpt={moved / 'checkpoints/best.pt'}", "split=test",
                                               "device=cpu"), tmp_path / "e2"),
                lambda: evaluate(compose_config("evaluate", *CHEAP_EVALUATE, f"ckpt={moved / 'checkpoints/best.pt'}"),
                                 tmp_path / "e3")):
        with pytest.raises(CxrcamError, match=f"{first / 'split.csv'} holds another split; .*does not exist\\); "
                                              "pass split_file="):
            run()
    explain(compose_config("explain", f"ckpt={moved / 'checkpoints/best.pt'}", "split=test", "per_class=null",
                           f"split_file={moved / 'kept.csv'}", "device=cpu"), tmp_path / "e4")
    with open(tmp_path / "e4" / "predictions.csv") as f:
        assert sorted(r["path"] for r in csv.DictReader(f)) == own_test


@pytest.mark.slow
def test_resume_finds_its_split_through_data_split_file_and_needs_no_pretrained_file(tiny_synthetic, tmp_path):
    weights = tmp_path / "simple.pth"
    run = tmp_path / "run"
    torch.save(build_model("resnet50", 4, 32).state_dict(), weights)
    run_tiny(tiny_synthetic, run, "model=resnet50", "trainer.epochs=1", f"model.pretrained={weights}")
    kept = tmp_path / "kept_split.csv"
    (run / "split.csv").rename(kept)
    weights.unlink()  # the weights now come from the checkpoint
    resume = [f"resume={run / 'checkpoints/last.pt'}", "trainer.epochs=2"]
    overrides = tiny_train_overrides(tiny_synthetic, "model=resnet50", f"model.pretrained={weights}", *resume)
    with pytest.raises(CxrcamError, match="pass data.split_file=<that run's split.csv>"):
        train(compose_config("train", *overrides), tmp_path / "r1")
    assert not (tmp_path / "r1").exists()
    report = train(compose_config("train", *overrides, f"data.split_file={kept}"), tmp_path / "r2")
    assert report["epochs"] == 2 and (tmp_path / "r2" / "split.csv").read_bytes() == kept.read_bytes()


@pytest.mark.slow
def test_split_file_of_another_split_is_used_with_a_warning(trained, tiny_synthetic, tmp_path, caplog):
    other = tmp_path / "other"
    train_tiny(tiny_synthetic, other, "seed=3")
    explain(compose_config("explain", f"ckpt={trained / 'checkpoints/best.pt'}", "split=test", "per_class=1",
                           f"split_file={other / 'split.csv'}", "device=cpu"), tmp_path / "out")
    assert f"split_file={other / 'split.csv'} is not the split" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("override, key", [
    ("data.batch_size=4", "data.batch_size"), ("optim.lr=0.5", "optim.lr"), ("optim.scheduler=cosine", "optim.scheduler"),
    ("data.augment.rotation=20", "data.augment.rotation"), ("data.augment.hflip=true", "data.augment.hflip"),
    ("model.dropout=0.1", "model.dropout"), ("trainer.class_balance=sampler", "trainer.class_balance"),
    ("data.image_size=48", "data.image_size"), ("data.val_fraction=0.3", "data.val_fraction"),
    ("seed=9", "seed"),  # each epoch's order and augmentation are drawn from (seed, epoch)
    ("trainer.sync_batchnorm=true", "trainer.sync_batchnorm"),
])
def test_resume_refuses_any_override_that_changes_the_trajectory(trained, tiny_synthetic, tmp_path, override, key):
    cfg = tiny_config(tiny_synthetic, "trainer.epochs=1", f"resume={trained / 'checkpoints/last.pt'}", override)
    with pytest.raises(CxrcamError, match=f"cannot resume with {key}=.*the checkpoint was trained with {key}="):
        train(cfg, tmp_path / "resumed")
    assert not (tmp_path / "resumed").exists()


@pytest.mark.slow
def test_resume_may_change_where_the_data_is_and_how_fast_it_runs(trained, tiny_synthetic, tmp_path):
    copy = shutil.copytree(tiny_synthetic, tmp_path / "elsewhere")
    cfg = tiny_config(copy, "trainer.epochs=2", "data.preload=false", "trainer.channels_last=false",
                      "data.num_workers=auto", "trainer.dist_timeout_min=1", f"resume={trained / 'checkpoints/last.pt'}")
    report = train(cfg, tmp_path / "resumed")
    assert report["epochs"] == 2 and report["best_epoch"] in (1, 2)


@pytest.mark.slow
def test_resume_reads_a_checkpoint_config_written_before_keys_were_renamed(trained, tiny_synthetic, tmp_path):
    """A last.pt whose config still says trainer.device and model.target_layer resumes: the old names
    are read as device and cam.layer, not taken for settings that changed."""
    old = shutil.copytree(trained / "checkpoints", tmp_path / "old" / "checkpoints")
    checkpoint = torch.load(old / "last.pt", weights_only=True)
    config = checkpoint["meta"]["config"]
    config["trainer"]["device"] = config.pop("device")
    config["model"]["target_layer"] = config.pop("cam")["layer"] or "features.3"
    save_checkpoint(checkpoint, old / "last.pt")
    report = train(tiny_config(tiny_synthetic, "trainer.epochs=2", f"resume={old / 'last.pt'}"), tmp_path / "resumed")
    assert report["epochs"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("override, layer", [(None, "features.2"), ("cam.layer=features.1", "features.1")])
def test_a_resumed_run_keeps_its_cam_layer_unless_told_otherwise(trained, tiny_synthetic, tmp_path, override, layer):
    """cam.layer does not change training, so a resume may change it; left unset, the checkpoints keep
    naming the layer the run was trained with, not the architecture's default."""
    old = shutil.copytree(trained / "checkpoints", tmp_path / "old" / "checkpoints")
    checkpoint = torch.load(old / "last.pt", weights_only=True)
    checkpoint["meta"]["target_layer"] = checkpoint["meta"]["config"]["cam"]["layer"] = "features.2"
    save_checkpoint(checkpoint, old / "last.pt")
    overrides = ["trainer.epochs=2", f"resume={old / 'last.pt'}"] + ([override] if override else [])
    train(tiny_config(tiny_synthetic, *overrides), tmp_path / "resumed")
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["meta"]["target_layer"] == layer


# --- 3. masks ------------------------------------------------------------------------------------

def _save_mask(path: Path, inside: np.ndarray, encoding: str) -> None:
    if encoding == "0/1":
        Image.fromarray(inside.astype(np.uint8)).save(path)
    elif encoding == "0/255":
        Image.fromarray(inside.astype(np.uint8) * 255).save(path)
    elif encoding == "bool":
        Image.fromarray(inside).save(path)  # mode "1"
    elif encoding == "16-bit 0/65535":
        Image.fromarray(inside.astype(np.uint16) * 65535).save(path)
    elif encoding == "16-bit 0/1":
        Image.fromarray(inside.astype(np.uint16)).save(path)
    elif encoding == "palette":
        image = Image.fromarray(inside.astype(np.uint8), mode="P")
        image.putpalette([0, 0, 0, 255, 255, 255])
        image.save(path)
    elif encoding == "RGB":
        Image.fromarray(np.repeat(inside[..., None].astype(np.uint8) * 255, 3, axis=2)).save(path)


@pytest.mark.parametrize("encoding", ["0/1", "0/255", "bool", "16-bit 0/65535", "16-bit 0/1", "palette", "RGB"])
def test_binary_masks_in_any_common_encoding_read_alike(tmp_path, encoding):
    inside = np.zeros((40, 40), bool)
    inside[5:30, 8:20] = True
    _save_mask(tmp_path / "mask.png", inside, encoding)
    assert Image.open(tmp_path / "mask.png").mode == {"bool": "1", "16-bit 0/65535": "I;16", "16-bit 0/1": "I;16",
                                                     "palette": "P", "RGB": "RGB"}.get(encoding, "L")
    np.testing.assert_array_equal(read_mask(tmp_path / "mask.png", 40), inside)


def _lung(shape: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[rows, cols] = True
    return mask


def test_a_one_lung_mask_is_one_lung_on_its_own_side():
    right_only = _lung((64, 64), slice(10, 50), slice(8, 28))  # patient's right = image left
    right, left = split_lungs(right_only)
    assert np.array_equal(right, right_only) and not left.any()
    assert single_lung_side(right_only) == 0 and single_lung_side(right_only[:, ::-1]) == 1
    zones = zone_map(right_only)
    assert set(np.unique(zones[right_only])) == set(range(6)) and (zones[:, 32:] == -1).all()  # no left zones
    both = right_only | _lung((64, 64), slice(10, 50), slice(36, 56))
    assert single_lung_side(both) is None and [p.sum() for p in split_lungs(both)] == [800, 800]
    touching = _lung((64, 64), slice(10, 50), slice(8, 56))  # one part across the midline: two lungs
    assert single_lung_side(touching) is None and [p.sum() for p in split_lungs(touching)] == [960, 960]


def test_a_label_map_with_one_value_per_lung_reads_both_lungs(tmp_path):
    labels = np.zeros((64, 64), np.uint8)
    labels[10:50, 8:28], labels[10:50, 36:56] = 1, 2
    Image.fromarray(labels).save(tmp_path / "labels.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "labels.png", 64), labels > 0)
    soft = (labels > 0).astype(np.float64) * 200 + np.random.default_rng(0).integers(0, 40, labels.shape)
    Image.fromarray(soft.astype(np.uint8)).save(tmp_path / "soft.png")  # many gray levels: half the maximum
    np.testing.assert_array_equal(read_mask(tmp_path / "soft.png", 64), labels > 0)


def test_a_small_remnant_on_the_other_side_is_a_lung_a_speck_is_not():
    lung = _lung((64, 64), slice(10, 50), slice(8, 28))  # 800 px
    remnant = lung | _lung((64, 64), slice(30, 36), slice(40, 44))  # 24 px on the image right: 3 %
    assert single_lung_side(remnant) is None and [p.sum() for p in split_lungs(remnant)] == [800, 24]
    speck = lung | _lung((64, 64), slice(30, 31), slice(40, 41))  # 1 px
    right, left = split_lungs(speck)
    assert single_lung_side(speck) == 0 and right.sum() == 800 and not left.any()
    assert (zone_map(speck)[:, 32:] == -1).all()  # the speck does not stretch the lung's zones


def test_degenerate_masks_are_named(tmp_path):
    assert "all white" in mask_problem(np.ones((32, 32), bool), "lung")
    assert "all white" in mask_problem(np.ones((32, 32), bool), "lesion")
    assert mask_problem(np.zeros((32, 32), bool), "lung") == "is empty (no lung drawn)"
    assert mask_problem(np.zeros((32, 32), bool), "lesion") is None  # a Normal image has no lesion
    assert "inverted" in mask_problem(~_lung((32, 32), slice(2, 10), slice(2, 10)), "lung")
    assert "one lung only" in mask_problem(_lung((64, 64), slice(10, 50), slice(8, 28)), "lung")
    two = _lung((64, 64), slice(10, 50), slice(8, 28)) | _lung((64, 64), slice(10, 50), slice(36, 56))
    assert mask_problem(two, "lung") is None


@pytest.mark.slow
def test_evaluate_scores_one_lung_masks_as_one_lung_warns_and_counts_them(tiny_dataset_copy, tmp_path, caplog):
    ckpt = train_tiny(tiny_dataset_copy, tmp_path / "run")
    with open(tmp_path / "run" / "split.csv") as f:
        test_image = Path(next(r["path"] for r in csv.DictReader(f) if r["split"] == "test"))
    lung_mask = test_image.parent.parent / "masks" / test_image.name
    pixels = np.asarray(Image.open(lung_mask).convert("L")).copy()
    pixels[:, pixels.shape[1] // 2:] = 0  # the patient's left lung is gone
    Image.fromarray((pixels > 127).astype(np.uint8)).save(lung_mask)  # and stored as 0/1
    evaluate(compose_config("evaluate", *CHEAP_EVALUATE, f"ckpt={ckpt}"), tmp_path / "evaluated")
    result = json.loads((tmp_path / "evaluated" / "cam_metrics.json").read_text())["models"][0]
    assert result["masks"]["lungs"] == result["n_images"] and result["masks"]["one_lung"] == 1
    assert f"lung mask {lung_mask} holds one lung only" in caplog.text
    assert "1 lung mask(s) hold one lung only" in (tmp_path / "evaluated" / "report.html").read_text()


# --- 4. nothing to do is an error ----------------------------------------------------------------

@pytest.mark.slow
def test_explain_with_nothing_to_explain_stops(trained, tmp_path):
    ckpt = f"ckpt={trained / 'checkpoints/best.pt'}"
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "notes.txt").write_text("no image")
    for folder in ("empty", "texts"):
        with pytest.raises(CxrcamError, match=f"image={tmp_path / folder} holds no image file .*nothing to explain"):
            explain(compose_config("explain", ckpt, f"image={tmp_path / folder}", "device=cpu"), tmp_path / "out")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"not a png")
    with pytest.raises(CxrcamError, match="none of the 1 image\\(s\\) could be read .*nothing was explained"):
        explain(compose_config("explain", ckpt, f"image={tmp_path / 'broken'}", "device=cpu"), tmp_path / "out2")


# --- 5. every user error is one line -------------------------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("trainer.epochs=1.5", "trainer.epochs=1.5 must be a whole number >= 1"),
    ("data.batch_size=2.5", "data.batch_size=2.5 must be a whole number >= 1"),
    ("data.val_fraction=abc", "data.val_fraction='abc' must be a number in (0, 1)"),
    ("seed=abc", "seed='abc' must be a whole number >= 0"),
    ("model.dropout=2", "model.dropout=2 must be a number in [0, 1)"),
    ("data.num_workers=-1", "data.num_workers=-1 must be a whole number >= 0 or auto"),
    ("data.image_size=8", "data.image_size=8 is too small for simple_cnn: its layers shrink the input below one "
                          "pixel; use 16 or more (128+ for useful CAMs)"),
    ("data.augment.translate=1.5", "data.augment.translate=1.5 must be a number in [0, 1)"),
    ("data.std=[0.2,0,0.2]", "data.std=[0.2, 0, 0.2] must be positive"),
    ("trainer.amp=maybe", "trainer.amp='maybe' must be true or false"),
    ("cam.layer=classifier", "cam.layer=classifier gives an output of shape (1, 4), not a spatial map (N, C, H, W); "
                             "name a convolutional block, as printed by print(model)"),
])
def test_bad_training_values_are_one_line_before_any_work(tiny_synthetic, tmp_path, override, message):
    with pytest.raises(CxrcamError) as info:
        run_tiny(tiny_synthetic, tmp_path / "r", override)
    assert str(info.value) == message
    assert not (tmp_path / "r").exists()


def test_a_marker_that_is_not_a_probability_is_refused_before_generating(tmp_path):
    cfg = compose_config("train", "data.synthetic.marker={COVID:abc}", f"paths.data_dir={tmp_path / 'data'}")
    with pytest.raises(CxrcamError) as info:
        train(cfg, tmp_path / "run")
    assert str(info.value) == ("data.synthetic.marker={'COVID': 'abc'} must map class names to probabilities in "
                               "[0, 1], e.g. {COVID: 0.95, Normal: 0.05}")
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("model, size", [("densenet121", 16), ("densenet121", 8), ("simple_cnn", 8)])
def test_an_input_too_small_for_the_model_is_refused_before_data_is_loaded(tmp_path, model, size):
    cfg = compose_config("train", f"model={model}", f"data.image_size={size}", "data=covid_radiography",
                               f"data.root={tmp_path / 'no data here'}")
    with pytest.raises(CxrcamError, match=f"data.image_size={size} is too small for {model}"):
        train(cfg, tmp_path / "run")


@pytest.mark.slow
def test_a_checkpoint_option_naming_a_folder_says_so(trained, tmp_path):
    with pytest.raises(CxrcamError, match=f"checkpoint {trained} is a folder; pass the best.pt or last.pt"):
        explain(compose_config("explain", f"ckpt={trained}", "split=test"), tmp_path / "out")


@pytest.mark.slow
def test_pretrained_files_that_are_not_the_models_weights_are_one_line(tmp_path):
    (tmp_path / "notes.pth").write_text("hello")
    torch.save(build_model("densenet121", 4, 32).state_dict(), tmp_path / "densenet.pth")
    torch.save({k: v[..., :1] if v.ndim == 4 else v for k, v in build_model("resnet50", 4, 32).state_dict().items()},
               tmp_path / "shapes.pth")
    for name, message in (("notes.pth", "is not a PyTorch weights file"),
                          ("densenet.pth", "does not hold resnet50 ImageNet weights \\(unexpected keys"),
                          ("shapes.pth", "does not hold resnet50 ImageNet weights \\(its tensors have other shapes")):
        with pytest.raises(CxrcamError, match=f"model.pretrained={tmp_path / name} {message}") as info:
            build_model("resnet50", 4, 32, pretrained=str(tmp_path / name))
        assert "\n" not in str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize("stage, override, message", [
    ("explain", "per_class=-1", "per_class=-1 must be a whole number >= 1"),
    ("explain", "per_class=abc", "per_class='abc' must be a whole number >= 1"),
    ("explain", "batch_size=0", "batch_size=0 must be a whole number >= 1"),
    ("explain", "cam.layer=classifier", "cam.layer=classifier gives an output of shape (1, 4)"),
    ("explain", "cam.colormap=rainbowz", "cam.colormap='rainbowz' is not a matplotlib colormap"),
    ("explain", "device=gpu", "device='gpu' is not a torch device"),
    ("explain", "cam.method=[gradcam,hirescam]", "cam.method=['gradcam', 'hirescam'] is not one of"),
    ("explain", "cam.colormap=[jet]", "cam.colormap=['jet'] is not a matplotlib colormap"),
    ("evaluate", "batch_size=0", "batch_size=0 must be a whole number >= 1"),
    ("evaluate", "faithfulness.n_images=0", "faithfulness.n_images=0 must be a whole number >= 1"),
    ("evaluate", "cam.layer=classifier", "cam.layer=classifier gives an output of shape (1, 4)"),
    ("evaluate", "device=cuda:7", "device='cuda:7' but no CUDA GPU is available here; use device=auto"),
])
def test_bad_explain_and_evaluate_values_are_one_line(trained, tmp_path, stage, override, message):
    overrides = [f"ckpt={trained / 'checkpoints/best.pt'}", override]
    if stage == "explain":
        overrides.append("split=test")
    job = explain if stage == "explain" else evaluate
    with pytest.raises(CxrcamError) as info:
        job(compose_config(stage, *overrides), tmp_path / "out")
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.child_process
def test_cli_error_families_are_one_line_and_exit_2(tiny_synthetic, trained, tmp_path):
    tiny = tiny_train_overrides(tiny_synthetic)
    for stage, args, expected in (
        ("train", [*tiny, "model=densenet121", "data.image_size=16"], "data.image_size=16 is too small for densenet121"),
        ("explain", [f"ckpt={trained / 'checkpoints/best.pt'}", "split=test", "cam.colormap=nope"], "cam.colormap="),
        ("evaluate", [f"ckpt={trained / 'checkpoints/best.pt'}", "seed=${nope}"], "seed: Interpolation key 'nope' not found"),
        ("train", ["data=covid_radiography"], "data.root is not set; pass data.root=<value>"),
        ("train", ["trainer.epoch=3"], "Could not override 'trainer.epoch'; To append to your config use +trainer.epoch=3"),
    ):
        line = one_line_error(cli(stage, *args, f"hydra.run.dir={tmp_path / stage}", cwd=tmp_path), stage)
        assert line.startswith(f"cxrcam.{stage}: error: {expected}")


@pytest.mark.child_process
def test_a_read_only_output_dir_is_one_line(tiny_synthetic, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not permitted here (needs root on ext4)")
    try:
        result = cli("train", *tiny_train_overrides(tiny_synthetic),
                     f"hydra.run.dir={locked / 'run'}", cwd=tmp_path)
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=True)
    line = one_line_error(result, "train")
    assert line == (f"cxrcam.train: error: cannot create run dir {locked / 'run'}: Operation not permitted; "
                    "choose a writable hydra.run.dir")


@pytest.mark.child_process
def test_a_full_disk_names_the_checkpoint_and_leaves_no_temporary_file(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs is not permitted here (needs root)")
    try:
        payload = {"state_dict": {"w": torch.zeros(100_000)}, "meta": {}}  # 400 kB into 64 kB
        with pytest.raises(CxrcamError) as info:
            save_checkpoint(payload, disk / "checkpoints" / "best.pt")
        assert str(info.value) == (f"cannot write checkpoint {disk / 'checkpoints' / 'best.pt'}: No space left on "
                                   "device; free disk space or set hydra.run.dir to a writable folder")
        assert list((disk / "checkpoints").iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.child_process
def test_ctrl_c_exits_130_with_one_line_saying_how_to_resume(tiny_synthetic, tmp_path):
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.pt"
    returncode, err = signal_training_after_its_first_epoch(tiny_synthetic, run_dir, signal.SIGINT)
    assert returncode == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("cxrcam.train: interrupted; to continue: python -m cxrcam.train "
                                            f"<the same overrides> resume={last} (into a new run dir: drop or "
                                            "change hydra.run.dir)")


@pytest.mark.child_process
@pytest.mark.parametrize("after_s", [0.3, 0.5, 0.8, 1.2])  # importing torch (its C++ part too), Hydra, composing
def test_ctrl_c_while_starting_up_is_one_line_too(tmp_path, after_s):
    process = subprocess.Popen([sys.executable, "-m", "cxrcam.train", "--cfg", "job"], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(after_s)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and err.strip() == "cxrcam.train: interrupted"


def _generate(root: str) -> None:
    ensure_synthetic(root, n_per_class=6, resolution=64, seed=0)


@pytest.mark.slow
def test_concurrent_generation_of_one_synthetic_set_waits_instead_of_racing(tmp_path):
    root = tmp_path / "synthetic"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_generate, args=(str(root),)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=240)
    assert [w.exitcode for w in workers] == [0, 0]
    assert json.loads((root / "synthetic.json").read_text())["n_per_class"] == 6
    assert len(list(root.rglob("images/*.png"))) == 24 and not (tmp_path / "synthetic.generating").exists()
