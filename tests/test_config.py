"""The config checks, called directly: each bad value gets its exact one-line message, and the last
accepted value next to each first refused one passes."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

import cxrcam.config as config_module
from conftest import compose_config
from cxrcam.config import (config_dir, require, require_choice, require_flag, require_number, require_whole,
                           validate_cam_config, validate_evaluate_config, validate_explain_config,
                           validate_train_config)
from cxrcam.errors import CxrcamError


class _Delete:
    def __repr__(self) -> str:  # a stable test id (mutmut reruns tests by id in other processes)
        return "<deleted>"


DELETE = _Delete()  # as a value: remove the key
METHODS = "['gradcam', 'gradcam++', 'hirescam', 'xgradcam', 'layercam', 'eigencam', 'scorecam', 'ablationcam']"
SPLITS = "['train', 'val', 'test']"
MARKER_HINT = "must map class names to probabilities in [0, 1], e.g. {COVID: 0.95, Normal: 0.05}"


@pytest.fixture(scope="module")
def composed() -> dict:
    return {name: compose_config(name) for name in ("train", "explain", "evaluate")}


def changed(cfg: dict, *edits: tuple[str, object]) -> dict:
    """A deep copy of ``cfg`` with each dotted ``path`` set to its value (or removed, for DELETE)."""
    cfg = copy.deepcopy(cfg)
    for path, value in edits:
        *parents, key = path.split(".")
        node = cfg
        for parent in parents:
            node = node[parent]
        if value is DELETE:
            del node[key]
        else:
            node[key] = value
    return cfg


def refusal(check, cfg: dict) -> str:
    with pytest.raises(CxrcamError) as info:
        check(cfg)
    return str(info.value)


def test_the_composed_defaults_pass_every_check(composed):
    validate_train_config(composed["train"])
    validate_explain_config(composed["explain"])
    validate_evaluate_config(composed["evaluate"])


# --- the helpers -------------------------------------------------------------------------------------

def test_require_raises_the_message_only_when_not_ok():
    require(True, "unused")
    with pytest.raises(CxrcamError) as info:
        require(False, "x is wrong; do y")
    assert str(info.value) == "x is wrong; do y"


@pytest.mark.parametrize("value, minimum, message", [
    (0, None, "k=0 must be a whole number >= 1"),  # the default minimum is 1
    (2, 3, "k=2 must be a whole number >= 3"),
    (-1, 0, "k=-1 must be a whole number >= 0"),
    (1.0, 0, "k=1.0 must be a whole number >= 0"),
    (True, 0, "k=True must be a whole number >= 0"),
    ("3", 0, "k='3' must be a whole number >= 0"),
    (None, 0, "k=None must be a whole number >= 0"),
])
def test_require_whole_refuses_non_counts_and_counts_below_the_minimum(value, minimum, message):
    with pytest.raises(CxrcamError) as info:
        require_whole("k", value) if minimum is None else require_whole("k", value, minimum)
    assert str(info.value) == message


@pytest.mark.parametrize("value, minimum", [(1, None), (3, 3), (0, 0), (10**9, 1)])
def test_require_whole_accepts_counts_from_the_minimum_up(value, minimum):
    require_whole("k", value) if minimum is None else require_whole("k", value, minimum)


@pytest.mark.parametrize("value, bounds, message", [
    (-0.5, dict(low=0), "k=-0.5 must be a number >= 0"),
    (0, dict(low=0, low_open=True), "k=0 must be a number > 0"),
    (1, dict(low=0, high=1, high_open=True), "k=1 must be a number in [0, 1)"),
    (0, dict(low=0, high=1, low_open=True), "k=0 must be a number in (0, 1]"),
    (1.5, dict(low=0, high=1), "k=1.5 must be a number in [0, 1]"),
    (0, dict(low=0, high=1, low_open=True, high_open=True), "k=0 must be a number in (0, 1)"),
    (1, dict(low=0, high=1, low_open=True, high_open=True), "k=1 must be a number in (0, 1)"),
    (2, dict(high=1), "k=2 must be a number <= 1"),
    (1, dict(high=1, high_open=True), "k=1 must be a number < 1"),
    ("x", dict(), "k='x' must be a number"),
    (True, dict(low=0), "k=True must be a number >= 0"),
    (None, dict(low=0, high=1), "k=None must be a number in [0, 1]"),
])
def test_require_number_refuses_non_numbers_and_values_outside_the_bounds(value, bounds, message):
    with pytest.raises(CxrcamError) as info:
        require_number("k", value, **bounds)
    assert str(info.value) == message


@pytest.mark.parametrize("value, bounds", [
    (0, dict(low=0)), (0.0, dict(low=0, high=1)), (1, dict(low=0, high=1)), (1e-12, dict(low=0, low_open=True)),
    (1 - 1e-12, dict(low=0, high=1, high_open=True)), (1, dict(high=1)), (-5, dict(high=1)), (0.9, dict(high=1, high_open=True)),
    (-3.5, dict()), (7, dict()),
])
def test_require_number_accepts_values_on_a_closed_bound_and_inside_the_range(value, bounds):
    require_number("k", value, **bounds)


def test_require_choice_names_the_choices_and_refuses_non_strings():
    require_choice("k", "b", ("a", "b"))
    for value, message in [("c", "k='c' is not one of ['a', 'b']"), (["a"], "k=['a'] is not one of ['a', 'b']"),
                           (None, "k=None is not one of ['a', 'b']")]:
        with pytest.raises(CxrcamError) as info:
            require_choice("k", value, ("a", "b"))
        assert str(info.value) == message
    with pytest.raises(CxrcamError) as info:  # a non-string among a dict's keys: refused, not a TypeError
        require_choice("k", ["a"], {"a": 1})
    assert str(info.value) == "k=['a'] is not one of ['a']"


def test_require_flag_accepts_only_booleans():
    require_flag("k", True)
    require_flag("k", False)
    for value in (1, 0, "true", None):
        with pytest.raises(CxrcamError) as info:
            require_flag("k", value)
        assert str(info.value) == f"k={value!r} must be true or false"


# --- train -------------------------------------------------------------------------------------------

TRAIN_REFUSED = [
    ("model.name", "vgg16", "model.name='vgg16' is not one of ['resnet50', 'densenet121', 'simple_cnn']"),
    ("optim.name", "sgd", "optim.name='sgd' is not one of ['adam', 'adamw']"),
    ("optim.scheduler", "step", "optim.scheduler='step' is not one of ['none', 'onecycle', 'cosine']"),
    ("trainer.class_balance", "weights", "trainer.class_balance='weights' is not one of ['loss', 'sampler', 'none']"),
    ("data.on_bad_image", "ignore", "data.on_bad_image='ignore' is not one of ['skip', 'error']"),
    ("seed", -1, "seed=-1 must be a whole number >= 0"),
    ("seed", True, "seed=True must be a whole number >= 0"),
    ("trainer.epochs", 0, "trainer.epochs=0 must be a whole number >= 1"),
    ("trainer.epochs", 1.5, "trainer.epochs=1.5 must be a whole number >= 1"),
    ("trainer.early_stop_patience", 0, "trainer.early_stop_patience=0 must be a whole number >= 1 or null (off)"),
    ("trainer.early_stop_patience", 2.5, "trainer.early_stop_patience=2.5 must be a whole number >= 1 or null (off)"),
    ("trainer.early_stop_patience", True, "trainer.early_stop_patience=True must be a whole number >= 1 or null (off)"),
    ("trainer.early_stop_patience", "5", "trainer.early_stop_patience='5' must be a whole number >= 1 or null (off)"),
    ("data.batch_size", 0, "data.batch_size=0 must be a whole number >= 1"),
    ("data.num_workers", -1, "data.num_workers=-1 must be a whole number >= 0 or auto"),
    ("data.image_size", 0, "data.image_size=0 must be a whole number >= 1"),
    ("data.image_size", 31, "data.image_size=31 is too small for resnet50: its layers shrink the input below one "
                            "pixel; use 32 or more (128+ for useful CAMs)"),
    ("optim.lr", 0, "optim.lr=0 must be a number > 0"),
    ("optim.lr", "1e-3", "optim.lr='1e-3' must be a number > 0"),
    ("optim.weight_decay", -0.01, "optim.weight_decay=-0.01 must be a number >= 0"),
    ("model.dropout", -0.1, "model.dropout=-0.1 must be a number in [0, 1)"),
    ("model.dropout", 1, "model.dropout=1 must be a number in [0, 1)"),
    ("model.pooled_size", 0, "model.pooled_size=0 must be a whole number >= 1"),
    ("cam.layer", ["layer3.5", "layer4.2"], "cam.layer=['layer3.5', 'layer4.2'] must be one dotted module name, "
                                            "e.g. layer3.5, or null: the architecture's default"),
    ("cam.layer", 3, "cam.layer=3 must be one dotted module name, e.g. layer3.5, or null: the architecture's default"),
    ("model.pretrained", 1, "model.pretrained=1 must be false, true or a path to a .pth file"),
    ("model.pretrained", None, "model.pretrained=None must be false, true or a path to a .pth file"),
    ("trainer.amp", "yes", "trainer.amp='yes' must be true or false"),
    ("trainer.channels_last", 1, "trainer.channels_last=1 must be true or false"),
    ("data.preload", "no", "data.preload='no' must be true or false"),
    ("data.classes", ["COVID"], "data.classes=['COVID'] must list at least two distinct class folder names"),
    ("data.classes", ["COVID", "COVID"], "data.classes=['COVID', 'COVID'] must list at least two distinct class "
                                         "folder names"),
    ("data.classes", ["COVID", 1], "data.classes=['COVID', 1] must list at least two distinct class folder names"),
    ("data.classes", "COVID,Normal", "data.classes='COVID,Normal' must list at least two distinct class folder names"),
    ("data.val_fraction", 0, "data.val_fraction=0 must be a number in (0, 1)"),
    ("data.val_fraction", 1, "data.val_fraction=1 must be a number in (0, 1)"),
    ("data.test_fraction", 0, "data.test_fraction=0 must be a number in (0, 1)"),
    ("data.test_fraction", 1.0, "data.test_fraction=1.0 must be a number in (0, 1)"),
    ("data.mean", [0.5, 0.5], "data.mean=[0.5, 0.5] must be three numbers (one per RGB channel)"),
    ("data.mean", [0.5, 0.5, 0.5, 0.5], "data.mean=[0.5, 0.5, 0.5, 0.5] must be three numbers (one per RGB channel)"),
    ("data.mean", (0.5, 0.5, 0.5), "data.mean=(0.5, 0.5, 0.5) must be three numbers (one per RGB channel)"),
    ("data.mean", [0.5, "0.5", 0.5], "data.mean=[0.5, '0.5', 0.5] must be three numbers (one per RGB channel)"),
    ("data.std", [0.2, 0.2, True], "data.std=[0.2, 0.2, True] must be three numbers (one per RGB channel)"),
    ("data.std", [0.2, 0, 0.2], "data.std=[0.2, 0, 0.2] must be positive"),
    ("data.std", [0.2, 0.2, -0.1], "data.std=[0.2, 0.2, -0.1] must be positive"),
    ("data.augment.rotation", -1, "data.augment.rotation=-1 must be a number >= 0"),
    ("data.augment.brightness", -0.1, "data.augment.brightness=-0.1 must be a number >= 0"),
    ("data.augment.contrast", "high", "data.augment.contrast='high' must be a number >= 0"),
    ("data.augment.translate", 1, "data.augment.translate=1 must be a number in [0, 1)"),
    ("data.augment.translate", -0.05, "data.augment.translate=-0.05 must be a number in [0, 1)"),
    ("data.augment.scale", 1, "data.augment.scale=1 must be a number in [0, 1)"),
    ("data.augment.hflip", "yes", "data.augment.hflip='yes' must be true or false"),
    ("data.augment.hflip", None, "data.augment.hflip=None must be true or false"),
    ("data.synthetic.n_per_class", 2, "data.synthetic.n_per_class=2 must be a whole number >= 3"),
    ("data.synthetic.resolution", 31, "data.synthetic.resolution=31 must be a whole number >= 32"),
    ("data.synthetic.seed", -1, "data.synthetic.seed=-1 must be a whole number >= 0"),
    ("data.synthetic.marker", {"COVID": 1.01}, f"data.synthetic.marker={{'COVID': 1.01}} {MARKER_HINT}"),
    ("data.synthetic.marker", {"COVID": 0.5, "Normal": -0.01},
     f"data.synthetic.marker={{'COVID': 0.5, 'Normal': -0.01}} {MARKER_HINT}"),
    ("data.synthetic.marker", {"COVID": "abc"}, f"data.synthetic.marker={{'COVID': 'abc'}} {MARKER_HINT}"),
    ("data.synthetic.marker", {"COVID": True}, f"data.synthetic.marker={{'COVID': True}} {MARKER_HINT}"),
    ("data.synthetic.marker", ["COVID"], f"data.synthetic.marker=['COVID'] {MARKER_HINT}"),
    ("data.synthetic.burned_text", 1.5, "data.synthetic.burned_text=1.5 must be a number in [0, 1]"),
    ("data.synthetic.burned_text", "some", "data.synthetic.burned_text='some' must be a number in [0, 1]"),
    ("data.synthetic.marker_style", "circle", "data.synthetic.marker_style='circle' is not one of ['box', 'text']"),
]


@pytest.mark.parametrize("path, value, message", TRAIN_REFUSED, ids=[f"{p}={v!r}" for p, v, _ in TRAIN_REFUSED])
def test_a_bad_training_value_is_refused_with_its_one_line_message(composed, path, value, message):
    assert refusal(validate_train_config, changed(composed["train"], (path, value))) == message


@pytest.mark.parametrize("edits, message", [
    ([("model.name", "simple_cnn"), ("data.image_size", 15)],
     "data.image_size=15 is too small for simple_cnn: its layers shrink the input below one pixel; "
     "use 16 or more (128+ for useful CAMs)"),
    ([("model.name", "densenet121"), ("data.image_size", 16)],
     "data.image_size=16 is too small for densenet121: its layers shrink the input below one pixel; "
     "use 32 or more (128+ for useful CAMs)"),
    ([("data.val_fraction", 0.5), ("data.test_fraction", 0.5)],
     "data.val_fraction + data.test_fraction = 1.0 leaves no training images; keep their sum below 1"),
    ([("data.val_fraction", 0.75), ("data.test_fraction", 0.5)],
     "data.val_fraction + data.test_fraction = 1.25 leaves no training images; keep their sum below 1"),
    ([("data.synthetic", DELETE), ("data.augment.translate", 2)], "data.augment.translate=2 must be a number in [0, 1)"),
], ids=["simple_cnn-15", "densenet121-16", "fractions-sum-1", "fractions-sum-1.25", "no-synthetic-section"])
def test_a_bad_combination_of_training_values_is_refused(composed, edits, message):
    assert refusal(validate_train_config, changed(composed["train"], *edits)) == message


TRAIN_ACCEPTED = [
    [("model.name", "densenet121"), ("data.image_size", 32)],
    [("model.name", "simple_cnn"), ("data.image_size", 16)],
    [("data.image_size", 32)],
    [("optim.name", "adamw"), ("optim.scheduler", "onecycle"), ("trainer.class_balance", "sampler"),
     ("data.on_bad_image", "error")],
    [("optim.scheduler", "cosine"), ("trainer.class_balance", "none")],
    [("seed", 0), ("trainer.epochs", 1), ("data.batch_size", 1), ("data.num_workers", 0)],
    [("trainer.early_stop_patience", 1)],
    [("trainer.early_stop_patience", None)],
    [("trainer.early_stop_patience", DELETE)],  # a config from before early stopping: off
    [("optim.lr", 1e-12), ("optim.weight_decay", 0), ("model.dropout", 0)],
    [("model.dropout", 0.999)],
    [("model.pooled_size", 1)],
    [("model.pooled_size", None)],
    [("cam.layer", "layer3.5")],
    [("cam.layer", None)],
    [("model.pretrained", True)],
    [("model.pretrained", "weights/resnet50.pth")],
    [("trainer.amp", False), ("trainer.channels_last", False), ("data.preload", False)],
    [("data.classes", ["COVID", "Normal"])],
    [("data.val_fraction", 1e-9), ("data.test_fraction", 1e-9)],
    [("data.val_fraction", 0.5), ("data.test_fraction", 0.4999)],
    [("data.mean", [0, -1, 2]), ("data.std", [1, 1e-9, 3])],
    [("data.augment.rotation", 0), ("data.augment.brightness", 0), ("data.augment.contrast", 0),
     ("data.augment.translate", 0), ("data.augment.scale", 0.999)],
    [("data.augment.hflip", True)],
    [("data.augment.hflip", DELETE)],  # an older config without the key: no flip
    [("data.synthetic.n_per_class", 3), ("data.synthetic.resolution", 32), ("data.synthetic.seed", 0)],
    [("data.synthetic.marker", {"COVID": 1, "Normal": 0, "Lung_Opacity": 0.5})],
    [("data.synthetic.marker", {})],
    [("data.synthetic", DELETE)],  # data=covid_radiography has no synthetic section
    [("data.synthetic", None)],
    [("data.synthetic", {})],
]


@pytest.mark.parametrize("edits", TRAIN_ACCEPTED, ids=[" ".join(f"{p}={v!r}" for p, v in e) for e in TRAIN_ACCEPTED])
def test_training_values_on_the_edge_of_each_range_are_accepted(composed, edits):
    validate_train_config(changed(composed["train"], *edits))


def test_early_stopping_is_off_by_default(composed):
    """Only experiment=seed turns it on: every other run trains its trainer.epochs, as before."""
    assert composed["train"]["trainer"]["early_stop_patience"] is None


@pytest.mark.parametrize("model, pretrained", [("resnet50", True), ("densenet121", True), ("simple_cnn", False)])
def test_experiment_seed_composes_the_seeds_recipe_for_each_model(model, pretrained):
    """The seed's optimiser, batch and size; ImageNet weights where they exist (SimpleCNN has none,
    and model.pretrained=true would stop it); our epoch cap and patience (the slides give none)."""
    cfg = compose_config("train", "experiment=seed", f"model={model}", "data=covid_radiography", "data.root=/data")
    validate_train_config(cfg)
    assert cfg["model"]["name"] == model and cfg["model"]["pretrained"] is pretrained
    assert (cfg["data"]["image_size"], cfg["data"]["batch_size"]) == (224, 32)
    assert cfg["optim"] == {"name": "adam", "lr": 1e-4, "weight_decay": 0.0, "scheduler": "none"}
    assert (cfg["trainer"]["epochs"], cfg["trainer"]["early_stop_patience"]) == (30, 5)
    assert cfg["model"]["dropout"] == 0.5


def test_experiment_seed_lets_the_command_line_override_pretrained():
    """A weights file elsewhere: model.pretrained=<path> wins over the experiment's per-model mapping."""
    cfg = compose_config("train", "experiment=seed", "model=densenet121", "model.pretrained=/w/densenet121.pth")
    assert cfg["model"]["pretrained"] == "/w/densenet121.pth"


def test_data_split_file_must_name_an_existing_file(composed, tmp_path):
    split = tmp_path / "split.csv"
    split.write_text("path,label,split\n")
    validate_train_config(changed(composed["train"], ("data.split_file", str(split))))
    validate_train_config(changed(composed["train"], ("data.split_file", split)))
    for missing in (tmp_path / "nope.csv", tmp_path, 5):  # a folder is not a split file; nor is a number
        message = refusal(validate_train_config, changed(composed["train"], ("data.split_file", missing)))
        assert message == f"data.split_file={missing} does not exist; pass a split.csv written by cxrcam.train"


# --- cam, explain, evaluate ------------------------------------------------------------------------------

CAM_REFUSED = [
    ("cam.method", "magic", f"cam.method='magic' is not one of {METHODS}"),
    ("cam.method", ["gradcam"], f"cam.method=['gradcam'] is not one of {METHODS}"),  # explain takes one method
    ("cam.colormap", "nope", "cam.colormap='nope' is not a matplotlib colormap; use e.g. jet, turbo, inferno or viridis"),
    ("cam.colormap", ["jet"], "cam.colormap=['jet'] is not a matplotlib colormap; use e.g. jet, turbo, inferno or "
                              "viridis"),
    ("cam.alpha", -0.01, "cam.alpha=-0.01 must be a number in [0, 1]"),
    ("cam.alpha", 1.01, "cam.alpha=1.01 must be a number in [0, 1]"),
    ("cam.overlay_size", "big", "cam.overlay_size='big' is not one of ['model', 'original']"),
    ("cam.aug_smooth", "no", "cam.aug_smooth='no' must be true or false"),
    ("cam.eigen_smooth", 0, "cam.eigen_smooth=0 must be true or false"),
    ("batch_size", 0, "batch_size=0 must be a whole number >= 1"),
    ("split", "all", f"split='all' is not one of {SPLITS}"),
    ("per_class", 0, "per_class=0 must be a whole number >= 1"),
]


@pytest.mark.parametrize("path, value, message", CAM_REFUSED, ids=[f"{p}={v!r}" for p, v, _ in CAM_REFUSED])
def test_a_bad_explain_value_is_refused_with_its_one_line_message(composed, path, value, message):
    assert refusal(validate_explain_config, changed(composed["explain"], (path, value))) == message


EXPLAIN_ACCEPTED = [
    [("cam.method", "ablationcam"), ("cam.colormap", "viridis"), ("cam.alpha", 0), ("cam.overlay_size", "original")],
    [("cam.alpha", 1), ("cam.aug_smooth", True), ("cam.eigen_smooth", True)],
    [("batch_size", 1), ("split", "test"), ("per_class", 1)],
    [("split", "train"), ("per_class", None)],
    [("split", "val")],
]


@pytest.mark.parametrize("edits", EXPLAIN_ACCEPTED, ids=[" ".join(f"{p}={v!r}" for p, v in e) for e in EXPLAIN_ACCEPTED])
def test_explain_values_on_the_edge_of_each_range_are_accepted(composed, edits):
    validate_explain_config(changed(composed["explain"], *edits))


def test_validate_cam_config_checks_every_method_asked_for(composed):
    cam = composed["explain"]["cam"]
    validate_cam_config(cam, ["gradcam", "scorecam"])
    validate_cam_config(cam, [])
    with pytest.raises(CxrcamError) as info:
        validate_cam_config(cam, ["gradcam", "gradcam+"])
    assert str(info.value) == f"cam.method='gradcam+' is not one of {METHODS}"


EVALUATE_REFUSED = [
    ("cam.method", [], "cam.method=[] names no method; use e.g. cam.method=gradcam or [gradcam,hirescam]"),
    ("cam.method", ["gradcam", "magic"], f"cam.method='magic' is not one of {METHODS}"),
    ("cam.method", "magic", f"cam.method='magic' is not one of {METHODS}"),
    ("cam.alpha", 2, "cam.alpha=2 must be a number in [0, 1]"),
    ("split", None, f"split=None is not one of {SPLITS}"),
    ("split", "all", f"split='all' is not one of {SPLITS}"),
    ("batch_size", 0, "batch_size=0 must be a whole number >= 1"),
    ("seed", -1, "seed=-1 must be a whole number >= 0"),
    ("max_per_class", 0, "max_per_class=0 must be a whole number >= 1"),
    ("faithfulness.n_images", 0, "faithfulness.n_images=0 must be a whole number >= 1"),
    ("sanity.n_images", 0, "sanity.n_images=0 must be a whole number >= 1"),
    ("faithfulness.percentiles", [], "faithfulness.percentiles=[] must be a list of numbers in (0, 100)"),
    ("faithfulness.percentiles", [0, 50], "faithfulness.percentiles=[0, 50] must be a list of numbers in (0, 100)"),
    ("faithfulness.percentiles", [50, 100], "faithfulness.percentiles=[50, 100] must be a list of numbers in (0, 100)"),
    ("faithfulness.percentiles", [50, "60"], "faithfulness.percentiles=[50, '60'] must be a list of numbers in "
                                             "(0, 100)"),
    ("faithfulness.percentiles", [True], "faithfulness.percentiles=[True] must be a list of numbers in (0, 100)"),
    ("faithfulness.percentiles", 50, "faithfulness.percentiles=50 must be a list of numbers in (0, 100)"),
    ("faithfulness.percentiles", (50,), "faithfulness.percentiles=(50,) must be a list of numbers in (0, 100)"),
    ("bootstrap.n_resamples", 0, "bootstrap.n_resamples=0 must be a whole number >= 1"),
    ("bootstrap.level", 0, "bootstrap.level=0 must be a number in (0, 1)"),
    ("bootstrap.level", 1, "bootstrap.level=1 must be a number in (0, 1)"),
    ("mean_heatmap_size", 1, "mean_heatmap_size=1 must be a whole number >= 2"),
    ("localisation.pointing_tolerance", -0.01, "localisation.pointing_tolerance=-0.01 must be a number in [0, 1)"),
    ("localisation.pointing_tolerance", 1, "localisation.pointing_tolerance=1 must be a number in [0, 1)"),
    ("zones.peripheral_from", 0, "zones.peripheral_from=0 must be a number in (0, 1)"),
    ("zones.peripheral_from", 1, "zones.peripheral_from=1 must be a number in (0, 1)"),
    ("pattern_thresholds.bilateral_min_ratio", -0.1, "pattern_thresholds.bilateral_min_ratio=-0.1 must be a number "
                                                     "in [0, 1]"),
    ("pattern_thresholds.diffuse_min_evenness", 1.1, "pattern_thresholds.diffuse_min_evenness=1.1 must be a number "
                                                     "in [0, 1]"),
    ("causal.enabled", "yes", "causal.enabled='yes' must be true or false"),
    ("causal.marker_dilation_px", -1, "causal.marker_dilation_px=-1 must be a whole number >= 0"),
    ("causal.marker_dilation_px", 1.5, "causal.marker_dilation_px=1.5 must be a whole number >= 0"),
    ("causal.outside_lungs", "grey", "causal.outside_lungs='grey' is not one of ['mean', 'black']"),
]


@pytest.mark.parametrize("path, value, message", EVALUATE_REFUSED, ids=[f"{p}={v!r}" for p, v, _ in EVALUATE_REFUSED])
def test_a_bad_evaluate_value_is_refused_with_its_one_line_message(composed, path, value, message):
    assert refusal(validate_evaluate_config, changed(composed["evaluate"], (path, value))) == message


EVALUATE_ACCEPTED = [
    [("cam.method", ["gradcam", "hirescam"])],
    [("cam.method", "eigencam"), ("cam.alpha", 1)],
    [("split", "train"), ("batch_size", 1), ("seed", 0), ("max_per_class", 1)],
    [("split", "val"), ("max_per_class", None)],
    [("faithfulness.n_images", 1), ("sanity.n_images", 1), ("bootstrap.n_resamples", 1), ("mean_heatmap_size", 2)],
    [("faithfulness.percentiles", [0.001, 99.999])],
    [("faithfulness.percentiles", [50])],
    [("bootstrap.level", 1e-9)],
    [("bootstrap.level", 1 - 1e-9)],
    [("localisation.pointing_tolerance", 0)],
    [("localisation.pointing_tolerance", 0.999)],
    [("zones.peripheral_from", 1e-9)],
    [("zones.peripheral_from", 0.999)],
    [("pattern_thresholds.bilateral_min_ratio", 0), ("pattern_thresholds.unilateral_min_share", 1)],
    [("pattern_thresholds", {})],
    [("causal.enabled", False), ("causal.marker_dilation_px", 0), ("causal.outside_lungs", "black")],
]


@pytest.mark.parametrize("edits", EVALUATE_ACCEPTED,
                         ids=[" ".join(f"{p}={v!r}" for p, v in e) for e in EVALUATE_ACCEPTED])
def test_evaluate_values_on_the_edge_of_each_range_are_accepted(composed, edits):
    validate_evaluate_config(changed(composed["evaluate"], *edits))


# --- config_dir ----------------------------------------------------------------------------------------

def test_config_dir_is_the_checkouts_conf_folder():
    assert config_dir() == Path(__file__).resolve().parents[1] / "conf"
    assert (config_dir() / "train.yaml").is_file()


@pytest.mark.parametrize("beside_package, at_root, expected", [
    (True, True, "package"),  # an installed wheel's own configs come first
    (True, False, "package"),
    (False, True, "root"),
])
def test_config_dir_prefers_the_packages_own_conf_then_the_repository_root(tmp_path, monkeypatch, beside_package,
                                                                           at_root, expected):
    root = tmp_path.resolve()
    package = root / "site" / "cxrcam"
    places = {"package": package / "conf", "root": root / "conf"}
    for name, wanted in (("package", beside_package), ("root", at_root)):
        places[name].mkdir(parents=True)
        if wanted:
            (places[name] / "train.yaml").write_text("seed: 0\n")
    monkeypatch.setattr(config_module, "__file__", str(package / "config.py"))
    assert config_dir() == places[expected]


def test_config_dir_without_configs_says_where_it_looked(tmp_path, monkeypatch):
    package = tmp_path.resolve() / "site" / "cxrcam"
    (package / "conf" / "train.yaml").mkdir(parents=True)  # a folder named train.yaml is not a config
    monkeypatch.setattr(config_module, "__file__", str(package / "config.py"))
    with pytest.raises(RuntimeError) as info:
        config_dir()
    assert str(info.value) == (f"cxrcam's configs are missing (looked in {package / 'conf'} and "
                               f"{tmp_path.resolve() / 'conf'}); reinstall the package")
