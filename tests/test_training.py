"""cxrcam.training: metrics against hand-computed values and scikit-learn, checkpoint files on disk,
and the training/prediction loop on a tiny nn.Linear against a step-by-step reference."""

from __future__ import annotations

import copy
import io
import math
import re
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score, roc_auc_score
from torch import nn

from cxrcam import __version__, checkpoint
from cxrcam.checkpoint import (FORMAT_VERSION, build_metadata, checkpoint_paths, git_commit, load_checkpoint,
                               save_checkpoint)
from cxrcam.device import select_device, tune_for
from cxrcam.errors import CxrcamError
from cxrcam.training.loop import (EpochState, predict, probabilities_and_loss, restore_rng_state, rng_state,
                                  train_one_epoch)
from cxrcam.training.metrics import classification_report, macro_auroc, quick_metrics

# --- metrics --------------------------------------------------------------------------------

# 8 images, 4 classes; class 3 is neither present nor predicted (it still counts in macro-F1).
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 2, 2])
Y_PRED = np.array([0, 0, 0, 1, 1, 0, 2, 1])


def _probs_for(y_pred: np.ndarray, n_classes: int = 4) -> np.ndarray:
    """Rows that put 0.7 on the predicted class and spread the rest, with per-row jitter for AUROC."""
    rng = np.random.default_rng(5)
    probs = rng.uniform(0.0, 1.0, (len(y_pred), n_classes))
    probs[np.arange(len(y_pred)), y_pred] = 0
    probs = 0.3 * probs / probs.sum(1, keepdims=True)
    probs[np.arange(len(y_pred)), y_pred] = 0.7
    return probs


def _pairwise_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """AUROC as the Mann-Whitney fraction of (positive, negative) pairs ranked right (ties count 1/2)."""
    pos, neg = scores[positive], scores[~positive]
    return float(np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg]))


def assert_same(actual, expected, path="value"):
    """Nested dicts and lists equal key for key and in type; floats to 1e-12."""
    assert type(actual) is type(expected), f"{path}: {type(actual).__name__} is not {type(expected).__name__}"
    if isinstance(expected, dict):
        assert list(actual) == list(expected), path
        for key in expected:
            assert_same(actual[key], expected[key], f"{path}[{key!r}]")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, f"{path}[{i}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, abs=1e-12), path
    else:
        assert actual == expected, path


def test_quick_metrics_are_the_hand_computed_values_with_absent_classes_in_macro_f1():
    # per-class F1: class 0 P=3/4 R=3/4 -> 0.75; class 1 P=1/3 R=1/2 -> 0.4; class 2 P=1 R=1/2 -> 2/3;
    # class 3 (no image, never predicted) -> 0. Macro over all 4 columns: (0.75 + 0.4 + 2/3 + 0) / 4.
    metrics = quick_metrics(Y_TRUE, _probs_for(Y_PRED))
    assert_same(metrics, {
        "accuracy": 5 / 8,
        "balanced_accuracy": (3 / 4 + 1 / 2 + 1 / 2) / 3,
        "macro_f1": (0.75 + 0.4 + 2 / 3 + 0) / 4,
    })
    # macro is not support-weighted, and the never-seen class counts: both differ here
    weighted = f1_score(Y_TRUE, Y_PRED, average="weighted")
    assert weighted == pytest.approx((4 * 0.75 + 2 * 0.4 + 2 * 2 / 3) / 8)
    assert metrics["macro_f1"] != pytest.approx(weighted)
    assert metrics["macro_f1"] != pytest.approx(f1_score(Y_TRUE, Y_PRED, average="macro"))
    assert metrics["macro_f1"] == pytest.approx(f1_score(Y_TRUE, Y_PRED, average="macro", labels=[0, 1, 2, 3],
                                                          zero_division=0))


def test_macro_f1_of_a_class_with_no_predictions_is_zero_without_warning():
    y_true = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.7, 0.3]])  # always class 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn's UndefinedMetricWarning would mean zero_division is unset
        metrics = quick_metrics(y_true, probs)
        per_class = classification_report(y_true, probs, ["a", "b"])["per_class"]
    assert per_class["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    # class 0: P=1/2 R=1 -> 2/3; class 1: nothing predicted -> 0 (zero_division=0)
    assert_same(metrics, {"accuracy": 0.5, "balanced_accuracy": 0.5, "macro_f1": (2 / 3 + 0) / 2})


def test_macro_auroc_equals_scikit_learn_one_vs_rest_when_all_classes_are_present():
    y_true = np.array([0, 1, 2, 0, 1, 2, 0, 2, 1, 0])
    rng = np.random.default_rng(11)
    probs = rng.dirichlet(np.ones(3), size=len(y_true))
    expected = roc_auc_score(y_true, probs, multi_class="ovr", average="macro")
    assert macro_auroc(y_true, probs) == pytest.approx(expected, abs=1e-12)
    assert type(macro_auroc(y_true, probs)) is float


def test_macro_auroc_averages_only_the_classes_present():
    probs = _probs_for(Y_PRED)
    expected = np.mean([_pairwise_auc(Y_TRUE == k, probs[:, k]) for k in (0, 1, 2)])  # class 3 has no image
    assert macro_auroc(Y_TRUE, probs) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("y_true", "expected"), [([1, 1, 1], None), ([1, 0, 1], 0.5)])
def test_macro_auroc_needs_two_classes(y_true, expected):
    # two classes: class 1 scores 0.8, 0.7 vs 0.75 -> 1/2; class 0 scores 0.25 vs 0.2, 0.3 -> 1/2
    probs = np.array([[0.2, 0.8], [0.25, 0.75], [0.3, 0.7]])
    assert macro_auroc(np.array(y_true), probs) == expected


def test_classification_report_is_the_whole_hand_computed_dict():
    probs = _probs_for(Y_PRED)
    report = classification_report(Y_TRUE, probs, ["A", "B", "C", "D"])
    assert_same(report, {
        "accuracy": 5 / 8,
        "balanced_accuracy": (3 / 4 + 1 / 2 + 1 / 2) / 3,
        "macro_f1": (0.75 + 0.4 + 2 / 3 + 0) / 4,
        "macro_auroc": float(np.mean([_pairwise_auc(Y_TRUE == k, probs[:, k]) for k in (0, 1, 2)])),
        "n_images": 8,
        "per_class": {
            "A": {"precision": 3 / 4, "recall": 3 / 4, "f1": 0.75, "support": 4},
            "B": {"precision": 1 / 3, "recall": 1 / 2, "f1": 0.4, "support": 2},
            "C": {"precision": 1.0, "recall": 1 / 2, "f1": 2 / 3, "support": 2},
            "D": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0},
        },
        "confusion_matrix": [[3, 1, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]],
        "class_names": ["A", "B", "C", "D"],
    })


def test_classification_report_takes_a_tuple_of_names_and_returns_a_list():
    report = classification_report(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]), ("x", "y"))
    assert report["class_names"] == ["x", "y"] and list(report["per_class"]) == ["x", "y"]


# --- checkpoint files -----------------------------------------------------------------------

def test_git_commit_is_the_head_of_the_source_checkout_from_any_working_dir(tmp_path, monkeypatch):
    source_dir = Path(checkpoint.__file__).parent
    head = subprocess.run(["git", "-C", str(source_dir), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("cxrcam is not running from a git checkout")
    monkeypatch.chdir(tmp_path)  # not a git repository: the commit comes from the source tree
    assert git_commit() == head.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{40}", git_commit())


@pytest.mark.parametrize("outcome", ["no git", "timeout", "not a checkout", "empty output"])
def test_git_commit_is_none_when_it_cannot_be_known(monkeypatch, outcome):
    def fake_run(args, **kwargs):
        if outcome == "no git":
            raise FileNotFoundError(2, "No such file or directory: 'git'")
        if outcome == "timeout":
            raise subprocess.TimeoutExpired(args, kwargs.get("timeout"))
        if outcome == "not a checkout":
            return subprocess.CompletedProcess(args, 128, stdout="", stderr="fatal: not a git repository")
        return subprocess.CompletedProcess(args, 0, stdout="  \n", stderr="")

    monkeypatch.setattr(checkpoint.subprocess, "run", fake_run)
    assert git_commit() is None


def test_git_commit_strips_the_newline_of_a_successful_rev_parse(monkeypatch):
    calls = []

    def fake_run(args, **kwargs):
        calls.append((args, kwargs))
        return subprocess.CompletedProcess(args, 0, stdout="abc123\n", stderr="")

    monkeypatch.setattr(checkpoint.subprocess, "run", fake_run)
    assert git_commit() == "abc123"
    assert calls == [(["git", "rev-parse", "HEAD"], {"cwd": Path(checkpoint.__file__).parent,
                                                       "capture_output": True, "text": True, "timeout": 5})]


def test_build_metadata_is_plain_data_with_every_field(monkeypatch):
    monkeypatch.setattr(checkpoint, "git_commit", lambda: "c0ffee")
    meta = build_metadata("resnet18", ("COVID", "Normal"), np.int64(224), [0, 1], np.array([2, 3]),
                          "layer4", {"seed": 0}, Path("/runs/a/split.csv"), "ab" * 32)
    assert meta == {
        "format_version": 1,
        "model_name": "resnet18",
        "class_names": ["COVID", "Normal"],
        "image_size": 224,
        "normalization": {"mean": [0.0, 1.0], "std": [2.0, 3.0]},
        "target_layer": "layer4",
        "config": {"seed": 0},
        "split": {"path": "/runs/a/split.csv", "sha256": "ab" * 32},
        "cxrcam_version": __version__,
        "git_commit": "c0ffee",
        "torch_version": torch.__version__,
    }
    assert FORMAT_VERSION == 1
    # plain Python types only, so weights_only loading accepts them
    assert type(meta["class_names"]) is list and type(meta["image_size"]) is int
    assert all(type(v) is float for v in meta["normalization"]["mean"] + meta["normalization"]["std"])
    assert type(meta["split"]["path"]) is str and type(meta["torch_version"]) is str


def test_build_metadata_records_the_real_git_commit():
    meta = build_metadata("m", ["a"], 8, [0.5], [0.25], "t", {}, "s.csv", "0" * 64)
    assert meta["git_commit"] == git_commit()


def _payload(value: float = 1.0) -> dict:
    return {"state_dict": {"w": torch.full((2, 3), value)},
            "meta": {"format_version": FORMAT_VERSION, "epoch": 3, "names": ["a", "b"]}}


def test_save_then_load_round_trips_into_a_new_nested_folder(tmp_path):
    path = tmp_path / "run" / "checkpoints" / "best.pt"
    save_checkpoint(_payload(1.5), path)
    save_checkpoint(_payload(2.5), str(path))  # again, over it, into the existing folder; str paths too
    loaded = load_checkpoint(str(path))
    assert loaded.keys() == {"state_dict", "meta"} and loaded["meta"] == {"format_version": FORMAT_VERSION, "epoch": 3,
                                                                           "names": ["a", "b"]}
    assert torch.equal(loaded["state_dict"]["w"], torch.full((2, 3), 2.5))
    assert sorted(p.name for p in path.parent.iterdir()) == ["best.pt"]  # no temporary file left
    # the file is a plain weights-only torch file, as promised to other tools
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.full((2, 3), 2.5))


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_failed_save_leaves_the_old_checkpoint_and_no_temporary_file(tmp_path, monkeypatch, error):
    path = tmp_path / "best.pt"
    save_checkpoint(_payload(1.0), path)
    replaced = []

    def failing_replace(src, dst):
        replaced.append((Path(src), Path(dst), Path(src).read_bytes()))
        raise error

    monkeypatch.setattr(checkpoint.os, "replace", failing_replace)
    if isinstance(error, OSError):
        with pytest.raises(CxrcamError) as info:
            save_checkpoint(_payload(9.0), path)
        assert str(info.value) == (f"cannot write checkpoint {path}: No space left on device; free disk space "
                                   "or set hydra.run.dir to a writable folder")
        assert info.value.__cause__ is None and info.value.__suppress_context__
    else:
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(_payload(9.0), path)
    # the new bytes went to a hidden temporary file beside the target, then that file was removed
    (src, dst, data), = replaced
    assert (src, dst) == (tmp_path / ".best.pt.tmp", path)
    assert torch.equal(torch.load(io.BytesIO(data), weights_only=True)["state_dict"]["w"], torch.full((2, 3), 9.0))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.full((2, 3), 1.0))


def test_a_failed_write_of_the_temporary_file_is_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    real_open = open

    def full_disk_open(file, mode="r", *args, **kwargs):
        if Path(file).name == ".last.pt.tmp":
            handle = real_open(file, mode, *args, **kwargs)
            handle.close()
            raise OSError(28, "No space left on device")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", full_disk_open)
    with pytest.raises(CxrcamError, match=re.escape(f"cannot write checkpoint {path}: No space left on device;")):
        save_checkpoint(_payload(), path)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_a_temporary_file_that_cannot_even_be_created_is_the_same_clear_error(tmp_path, monkeypatch):
    """A read-only dir fails at open(): there is no temporary file to remove, and that is no second error."""
    path = tmp_path / "last.pt"
    real_open = open

    def read_only_open(file, mode="r", *args, **kwargs):
        if Path(file).name == ".last.pt.tmp":
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", read_only_open)
    with pytest.raises(CxrcamError) as info:
        save_checkpoint(_payload(), path)
    assert str(info.value) == (f"cannot write checkpoint {path}: Permission denied; free disk space or set "
                               "hydra.run.dir to a writable folder")


def test_a_checkpoint_written_on_a_gpu_loads_on_the_cpu(tmp_path, monkeypatch):
    """Storages tagged cuda:0 (what a GPU run writes) are mapped to the CPU, so any machine can read them."""
    import torch.serialization
    monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
    torch.save(_payload(4.0), tmp_path / "gpu.pt")
    monkeypatch.undo()
    loaded = load_checkpoint(tmp_path / "gpu.pt")
    assert loaded["state_dict"]["w"].device == torch.device("cpu")
    assert torch.equal(loaded["state_dict"]["w"], torch.full((2, 3), 4.0))


@pytest.mark.parametrize("make, state", [(lambda p: None, "does not exist"), (lambda p: p.mkdir(), "is a folder")],
                         ids=["missing", "folder"])
def test_load_checkpoint_says_what_is_at_a_wrong_path(tmp_path, make, state):
    path = tmp_path / "best.pt"
    make(path)
    with pytest.raises(CxrcamError) as info:
        load_checkpoint(str(path))
    assert str(info.value) == (f"checkpoint {path} {state}; pass the best.pt or last.pt that cxrcam.train wrote "
                               "under <run dir>/checkpoints/")


@pytest.mark.parametrize(("content", "kind"), [(b"hello", "KeyError"), (None, "RuntimeError")],
                         ids=["text", "truncated"])
def test_load_checkpoint_names_an_unreadable_file_and_its_error(tmp_path, content, kind):
    if content is None:
        buffer = io.BytesIO()
        torch.save(_payload(), buffer)
        content = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    (tmp_path / "x.pt").write_bytes(content)
    with pytest.raises(CxrcamError) as info:
        load_checkpoint(tmp_path / "x.pt")
    assert str(info.value) == (f"cannot read checkpoint {tmp_path / 'x.pt'} ({kind}); it is truncated or not a "
                               "PyTorch file")
    assert info.value.__suppress_context__


def test_load_checkpoint_refusal_of_pickled_code_is_the_whole_message(tmp_path):
    torch.save({"state_dict": {}, "meta": {}, "when": np.dtype("float32")}, tmp_path / "np.pt")
    with pytest.raises(CxrcamError) as info:
        load_checkpoint(tmp_path / "np.pt")
    assert str(info.value) == (f"refusing checkpoint {tmp_path / 'np.pt'}: it holds pickled objects other than "
                               "tensors and plain data (possibly code), which cxrcam never writes")
    assert info.value.__suppress_context__


@pytest.mark.parametrize("payload", [[1, 2], {"meta": {}}, {"state_dict": {}}], ids=["list", "no-state", "no-meta"])
def test_load_checkpoint_refuses_torch_files_that_are_not_cxrcam_checkpoints(tmp_path, payload):
    torch.save(payload, tmp_path / "other.pt")
    with pytest.raises(CxrcamError) as info:
        load_checkpoint(tmp_path / "other.pt")
    assert str(info.value) == f"{tmp_path / 'other.pt'} is not a cxrcam checkpoint (no state_dict/meta)"


@pytest.mark.parametrize("meta, found, writer", [
    ({"format_version": 2, "cxrcam_version": "9.0"}, "2", "9.0"),
    ({"format_version": "1"}, "'1'", "version unknown"),
    ({}, "None", "version unknown")], ids=["newer", "a-string", "none"])
def test_load_checkpoint_refuses_a_format_it_does_not_know(tmp_path, meta, found, writer):
    torch.save({"state_dict": {}, "meta": meta}, tmp_path / "future.pt")
    with pytest.raises(CxrcamError) as info:
        load_checkpoint(tmp_path / "future.pt")
    assert str(info.value) == (f"checkpoint {tmp_path / 'future.pt'} has format version {found}; this cxrcam "
                               f"({__version__}) reads version {FORMAT_VERSION}: open it with the cxrcam that wrote "
                               f"it ({writer})")


def test_checkpoint_paths_of_a_sweep_are_each_jobs_best_in_order(tmp_path):
    for job in ("1", "0", "2"):
        (tmp_path / job / "checkpoints").mkdir(parents=True)
        (tmp_path / job / "checkpoints" / "best.pt").write_bytes(b"")
    (tmp_path / "2" / "checkpoints" / "last.pt").write_bytes(b"")
    (tmp_path / "3").mkdir()  # a job that died before its first checkpoint
    expected = [tmp_path / j / "checkpoints" / "best.pt" for j in ("0", "1", "2")]
    assert checkpoint_paths(None, str(tmp_path)) == expected
    assert checkpoint_paths("ignored.pt", tmp_path) == expected  # sweep= wins over ckpt=


def test_checkpoint_paths_of_an_empty_sweep_is_an_error(tmp_path):
    with pytest.raises(CxrcamError) as info:
        checkpoint_paths(None, tmp_path)
    assert str(info.value) == (f"sweep={tmp_path} holds no <job>/checkpoints/best.pt; pass a multirun dir of "
                               "cxrcam.train")


@pytest.mark.parametrize(("ckpt", "expected"), [("a/best.pt", [Path("a/best.pt")]),
                                                (["a.pt", "b.pt"], [Path("a.pt"), Path("b.pt")])])
def test_checkpoint_paths_of_ckpt_is_one_or_a_list(ckpt, expected):
    assert checkpoint_paths(ckpt, None) == expected
    assert checkpoint_paths(ckpt, "") == expected


@pytest.mark.parametrize("ckpt", [None, "", []])
def test_checkpoint_paths_needs_ckpt_or_sweep(ckpt):
    with pytest.raises(CxrcamError) as info:
        checkpoint_paths(ckpt, None)
    assert str(info.value) == ("say which model(s) to use: ckpt=<run>/checkpoints/best.pt, ckpt=[a,b] "
                               "or sweep=<dir>")


# --- device and RNG -------------------------------------------------------------------------

def _machine(monkeypatch, cuda: bool, mps: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize(("cuda", "mps", "expected"), [(True, True, "cuda"), (False, True, "mps"),
                                                       (False, False, "cpu")])
def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    _machine(monkeypatch, cuda, mps)
    assert select_device("auto") == torch.device(expected)


@pytest.mark.parametrize("name", ["cpu", "cuda", "cuda:1", "mps"])
def test_a_named_available_device_is_used(monkeypatch, name):
    _machine(monkeypatch, True, True)
    assert select_device(name) == torch.device(name)


@pytest.mark.parametrize(("name", "message"), [
    ("gpu", "device='gpu' is not a torch device; use auto, cpu, cuda, cuda:N or mps"),
    ("cuda:x", "device='cuda:x' is not a torch device; use auto, cpu, cuda, cuda:N or mps"),
    ("cuda", "device='cuda' but no CUDA GPU is available here; use device=auto"),
    ("cuda:0", "device='cuda:0' but no CUDA GPU is available here; use device=auto"),
    ("mps", "device='mps' but MPS is not available here; use device=auto"),
])
def test_an_unusable_device_is_a_clear_error(monkeypatch, name, message):
    _machine(monkeypatch, False, False)
    with pytest.raises(CxrcamError) as info:
        select_device(name)
    assert str(info.value) == message


def test_a_device_of_the_wrong_type_is_a_clear_error():
    with pytest.raises(CxrcamError, match=re.escape("device=3.5 is not a torch device")):
        select_device(3.5)


def test_rng_state_round_trip_replays_the_same_draws(monkeypatch):
    _machine(monkeypatch, False, False)
    torch.manual_seed(123)
    state = rng_state()
    assert list(state) == ["torch"]
    first = torch.rand(5)
    torch.rand(7)  # move on
    restore_rng_state(state)
    assert torch.equal(torch.rand(5), first)
    assert torch.equal(state["torch"], rng_state()["torch"]) is False  # the saved state was not mutated away
    restore_rng_state({"torch": state["torch"], "cuda": ["ignored without a GPU"]})
    assert torch.equal(torch.rand(5), first)


def test_cuda_rng_state_is_saved_and_restored_where_there_is_a_gpu(monkeypatch):
    _machine(monkeypatch, True, False)
    restored = []
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: ["gpu0 state"])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    state = rng_state()
    assert list(state) == ["torch", "cuda"] and state["cuda"] == ["gpu0 state"]
    restore_rng_state(state)
    assert restored == [["gpu0 state"]]
    restore_rng_state({"torch": state["torch"]})  # a CPU run's state resumed on a GPU machine
    assert restored == [["gpu0 state"]]


def test_cuda_rng_state_is_not_restored_on_a_cpu_machine(monkeypatch):
    _machine(monkeypatch, False, False)
    restored = []
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    torch.manual_seed(0)
    restore_rng_state({"torch": torch.get_rng_state(), "cuda": ["gpu0 state"]})
    assert restored == []


# --- training and prediction loop -----------------------------------------------------------

class Recorder(nn.Module):
    """nn.Linear on flattened images that records, per call, train mode and the input's layout."""

    def __init__(self, in_features: int = 12, classes: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(in_features, classes)
        self.calls = []

    def forward(self, x):
        self.calls.append((self.training, x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
                           and not x.is_contiguous()))
        return self.linear(x.flatten(1))


def _batches(sizes, seed=1):
    """(images, labels, augmentation) as SplitBatches yields them; images already float, see _as_is."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 3, 2, 2, generator=g), torch.randint(0, 3, (n,), generator=g), None) for n in sizes]


def _as_is(images, params=None):
    """A ModelInput stand-in that passes the test's float images through."""
    return images


def _epoch(model, batches, optimizer, criterion=None, scheduler=None, **kwargs) -> EpochState:
    return train_one_epoch(model, batches, len(batches), criterion or nn.CrossEntropyLoss(), optimizer, scheduler,
                           _as_is, torch.device("cpu"), kwargs.pop("epoch", 1), **kwargs)


def _reference_epoch(model, batches, lrs, autocast=False):
    """Plain SGD by hand: the loss of each batch before its step, then w -= lr * grad."""
    model = copy.deepcopy(model)
    losses = []
    for (images, labels, _), lr in zip(batches, lrs):
        with torch.autocast("cpu", dtype=torch.float16, enabled=autocast):
            loss = F.cross_entropy(model(images), labels)
        grads = torch.autograd.grad(loss, list(model.parameters()))
        with torch.no_grad():
            for p, g in zip(model.parameters(), grads):
                p -= lr * g
        losses.append(loss.item())
    return losses, model


@pytest.mark.parametrize("sizes", [(3, 1, 2), (1,)], ids=["three-batches", "one-image"])
@pytest.mark.parametrize("with_scheduler", [False, True])
def test_train_one_epoch_returns_the_image_weighted_mean_loss_of_plain_sgd(sizes, with_scheduler):
    model, batches = Recorder(), _batches(sizes)
    model.eval()  # the epoch must switch it to training mode
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 ** step) if with_scheduler else None
    lrs = [0.5 * (0.5 ** i if with_scheduler else 1) for i in range(len(sizes))]
    losses, reference = _reference_epoch(model, batches, lrs)

    state = _epoch(model, batches, optimizer, scheduler=scheduler)
    assert (state.step, state.images) == (len(sizes), sum(sizes))
    assert state.mean_loss() == pytest.approx(sum(loss * n for loss, n in zip(losses, sizes)) / sum(sizes), rel=1e-6)
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    assert model.calls[len(model.calls) - len(sizes):] == [(True, False)] * len(sizes)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * (0.5 ** len(sizes) if with_scheduler else 1))


def test_an_epoch_stopped_and_continued_equals_one_run_straight_through():
    """What a stop signal mid-epoch relies on: the state after step 2 carries the rest exactly."""
    batches = _batches((3, 1, 2, 2))
    straight, parted = Recorder(), Recorder()
    whole = _epoch(straight, batches, torch.optim.SGD(straight.parameters(), lr=0.5))
    optimizer = torch.optim.SGD(parted.parameters(), lr=0.5)
    first = _epoch(parted, batches, optimizer, stop_requested=lambda done: done == 2)
    assert (first.step, first.images) == (2, 4)
    rest = train_one_epoch(parted, batches[2:], 4, nn.CrossEntropyLoss(), optimizer, None, _as_is,
                           torch.device("cpu"), 1, state=first)
    assert (rest.step, rest.images) == (4, 8) and torch.equal(rest.loss_sum, whole.loss_sum)
    assert first.loss_sum < whole.loss_sum  # the continued epoch did not add to the stopped state in place
    for p, q in zip(straight.parameters(), parted.parameters()):
        assert torch.equal(p, q)


def test_train_one_epoch_shows_its_epoch_and_the_running_loss(capsys, monkeypatch):
    monkeypatch.setattr("cxrcam.training.loop.REFRESH_EVERY", 2)
    model, batches = Recorder(), _batches((3, 2, 2, 1, 2))
    state = _epoch(model, batches, torch.optim.SGD(model.parameters(), lr=0.5), epoch=7)
    frames = [f for f in capsys.readouterr().err.split("\r") if f.strip()]
    assert frames[0].startswith("epoch 7 train:   0%|") and frames[0].endswith("| 0/5 [00:00<?, ?batch/s]")
    shown = list(dict.fromkeys(f.rsplit("loss=", 1)[1].rstrip("]") for f in frames if "batch/s, loss=" in f))
    # read from the device every 2 steps and after the last: the running mean after steps 2, 4 and 5
    losses, _ = _reference_epoch(Recorder(), batches, [0.5] * 5)
    sizes = [len(labels) for _, labels, _ in batches]
    running = [sum(loss * n for loss, n in zip(losses[:k], sizes)) / sum(sizes[:k]) for k in (2, 4, 5)]
    assert shown == [f"{mean:.4f}" for mean in running] and shown[-1] == f"{state.mean_loss():.4f}"


def test_train_one_epoch_of_no_batches_is_zero():
    model = Recorder()
    state = _epoch(model, [], torch.optim.SGD(model.parameters(), lr=0.5))
    assert (state.step, state.images, state.mean_loss()) == (0, 0, 0.0)


def test_train_one_epoch_with_a_grad_scaler_runs_mixed_precision_sgd():
    model, batches = Recorder(), _batches((3, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    losses, reference = _reference_epoch(model, batches, [0.5, 0.5], autocast=True)
    state = _epoch(model, batches, optimizer, scaler=torch.amp.GradScaler("cpu", init_scale=256.0))  # no overflow
    assert state.mean_loss() == pytest.approx((3 * losses[0] + 2 * losses[1]) / 5, rel=1e-3)
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(p, q, atol=2e-3)
    # the first batch's loss was computed in float16: it differs from the float32 loss
    with torch.no_grad():
        fp32 = F.cross_entropy(Recorder()(batches[0][0]), batches[0][1]).item()
    assert losses[0] != fp32


def test_train_one_epoch_gives_the_model_what_model_input_makes_of_each_batch():
    model, batches = Recorder(), _batches((2, 2))
    made = []

    def model_input(images, params=None):
        made.append(params)
        return images.contiguous(memory_format=torch.channels_last)

    batches = [(images, labels, f"augmentation {i}") for i, (images, labels, _) in enumerate(batches)]
    train_one_epoch(model, batches, 2, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), None,
                    model_input, torch.device("cpu"), 1)
    assert model.calls == [(True, True), (True, True)] and made == ["augmentation 0", "augmentation 1"]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("refresh", [1, 2, 25])
def test_a_non_finite_loss_stops_the_epoch_naming_its_first_step(bad, refresh, monkeypatch):
    """Checked when the loss is read (every REFRESH_EVERY steps and at the end); the step named is
    the first bad one, even when later ones are bad too."""
    monkeypatch.setattr("cxrcam.training.loop.REFRESH_EVERY", refresh)
    model, batches = Recorder(), _batches((2, 2, 2, 2))
    calls = []

    def criterion(logits, labels):
        calls.append(len(calls))
        loss = F.cross_entropy(logits, labels)
        return loss * bad if len(calls) >= 2 else loss

    with pytest.raises(CxrcamError) as info:
        _epoch(model, batches, torch.optim.SGD(model.parameters(), lr=0.5), criterion=criterion, epoch=7)
    assert str(info.value) == (f"loss became {bad} at epoch 7, step 1; lower optim.lr or check the data. "
                               "The last good checkpoint is kept")
    assert len(calls) == {1: 2, 2: 2, 25: 4}[refresh]


def test_a_non_finite_loss_is_caught_before_a_stop_hands_back_its_state():
    model, batches = Recorder(), _batches((2, 2, 2))
    criterion = lambda logits, labels: F.cross_entropy(logits, labels) * math.nan  # noqa: E731
    with pytest.raises(CxrcamError, match="loss became nan at epoch 1, step 0"):
        _epoch(model, batches, torch.optim.SGD(model.parameters(), lr=0.5), criterion=criterion,
               stop_requested=lambda done: True)


@pytest.mark.parametrize("sizes", [(3, 1), (1,)])
def test_predict_returns_float32_logits_and_labels_in_eval_mode(sizes):
    model, batches = Recorder(), _batches(sizes)
    model.train()
    logits, labels = predict(model, batches, len(batches), _as_is, torch.device("cpu"))
    images, targets = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    with torch.no_grad():
        expected = model.linear(images.flatten(1))
    assert logits.dtype == torch.float32 and torch.allclose(logits, expected, atol=1e-6)
    assert torch.equal(labels, targets)
    assert model.calls == [(False, False)] * len(sizes)  # eval mode (dropout and batch norm frozen)


def test_predict_with_amp_computes_in_float16():
    model, batches = Recorder(), _batches((3, 1))
    logits, _ = predict(model, batches, 2, _as_is, torch.device("cpu"), amp=True)
    images = torch.cat([b[0] for b in batches])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        half = model.linear(images.flatten(1))
    assert half.dtype == torch.float16 and logits.dtype == torch.float32
    assert torch.equal(logits, half.float())


def test_predict_of_no_batches_is_empty():
    logits, labels = predict(Recorder(), [], 0, _as_is, torch.device("cpu"))
    assert logits.numel() == 0 and labels.numel() == 0


def test_probabilities_and_loss_are_the_softmax_labels_and_mean_cross_entropy():
    logits, labels = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]]), torch.tensor([0, 1])
    probs, as_numpy, loss = probabilities_and_loss(logits, labels)
    np.testing.assert_allclose(probs, logits.softmax(1).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(as_numpy, [0, 1])
    expected = -(np.log(probs[0, 0]) + np.log(probs[1, 1])) / 2
    assert loss == pytest.approx(expected, rel=1e-6)
    assert probabilities_and_loss(torch.zeros((0, 3)), torch.zeros(0, dtype=torch.long))[2] == 0.0


@pytest.mark.parametrize("device, benchmark", [("cuda", True), ("cuda:1", True), ("cpu", False), ("mps", False)])
def test_cudnn_times_its_algorithms_on_cuda_only(device, benchmark, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", not benchmark)
    tune_for(torch.device(device))
    assert torch.backends.cudnn.benchmark is benchmark
