"""Where the Hydra configs live, and the checks that stop a bad configuration before any work."""

from __future__ import annotations

from pathlib import Path

import matplotlib

from cxrcam.data.scan import ON_BAD_IMAGE
from cxrcam.data.synthetic import MARKER_STYLES
from cxrcam.errors import CxrcamError
from cxrcam.evaluation.boxes import BOX_COLUMNS
from cxrcam.explanation.methods import PYTORCH_GRAD_CAM
from cxrcam.models import MIN_IMAGE_SIZE, MODEL_NAMES

CLASS_BALANCE_MODES = ("loss", "sampler", "none")
OPTIMIZERS = ("adam", "adamw")
SCHEDULERS = ("none", "onecycle", "cosine")
LUNG_MODES = ("missing", "all")  # evaluate's lungs_mode: predict lung masks where none exist, or for every image
OUTSIDE_LUNGS = ("mean", "black")  # the causal test's fill outside the lungs (cxrcam.evaluation.reliance)
# {old name: new name} of the training keys renamed so that each setting has one name in every stage;
# the command line refuses the old ones, a resumed run reads its checkpoint's config under the new ones
RENAMED_KEYS = {"trainer.device": "device", "model.target_layer": "cam.layer",
                "data.synthetic.image_size": "data.synthetic.resolution"}


def config_dir() -> Path:
    """``conf/`` at the repository root in a checkout; ``cxrcam/conf`` inside an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise RuntimeError(f"cxrcam's configs are missing (looked in {here / 'conf'} and {here.parents[1] / 'conf'}); "
                       "reinstall the package")


def require(ok: bool, message: str) -> None:
    if not ok:
        raise CxrcamError(message)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def require_whole(key: str, value, minimum: int = 1, hint: str = "") -> None:
    """A count: 1.5 epochs or 'abc' images is a typo, not something to round. ``hint`` names what
    else the key accepts."""
    require(isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
            f"{key}={value!r} must be a whole number >= {minimum}{hint}")


def require_number(key: str, value, low: float | None = None, high: float | None = None,
                   low_open: bool = False, high_open: bool = False) -> None:
    ok = _is_number(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if low is not None and high is not None:
        bounds = f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    elif low is not None:
        bounds = f" {'>' if low_open else '>='} {low}"
    elif high is not None:
        bounds = f" {'<' if high_open else '<='} {high}"
    else:
        bounds = ""
    require(ok, f"{key}={value!r} must be a number{bounds}")


def require_choice(key: str, value, choices) -> None:
    require(isinstance(value, str) and value in choices, f"{key}={value!r} is not one of {list(choices)}")


def require_flag(key: str, value) -> None:
    require(isinstance(value, bool), f"{key}={value!r} must be true or false")


def validate_train_config(cfg: dict) -> None:
    data, model, optim, trainer = cfg["data"], cfg["model"], cfg["optim"], cfg["trainer"]
    require_choice("model.name", model["name"], MODEL_NAMES)
    require_choice("optim.name", optim["name"], OPTIMIZERS)
    require_choice("optim.scheduler", optim["scheduler"], SCHEDULERS)
    require_choice("trainer.class_balance", trainer["class_balance"], CLASS_BALANCE_MODES)
    require_choice("data.on_bad_image", data["on_bad_image"], ON_BAD_IMAGE)
    require_whole("seed", cfg["seed"], 0)
    require_whole("trainer.epochs", trainer["epochs"])
    if trainer.get("early_stop_patience") is not None:
        require_whole("trainer.early_stop_patience", trainer["early_stop_patience"], hint=" or null (off)")
    require_whole("data.batch_size", data["batch_size"])
    if data["num_workers"] != "auto":
        require_whole("data.num_workers", data["num_workers"], 0, hint=" or auto")
    require_whole("data.image_size", data["image_size"])
    smallest = MIN_IMAGE_SIZE[model["name"]]
    require(data["image_size"] >= smallest, f"data.image_size={data['image_size']} is too small for {model['name']}: "
            f"its layers shrink the input below one pixel; use {smallest} or more (128+ for useful CAMs)")
    require_number("optim.lr", optim["lr"], 0, low_open=True)
    require_number("optim.weight_decay", optim["weight_decay"], 0)
    require_number("model.dropout", model["dropout"], 0, 1, high_open=True)
    if model.get("pooled_size") is not None:
        require_whole("model.pooled_size", model["pooled_size"])
    layer = cfg["cam"]["layer"]
    require(layer is None or isinstance(layer, str),
            f"cam.layer={layer!r} must be one dotted module name, e.g. layer3.5, or null: the architecture's default")
    require(isinstance(model["pretrained"], (bool, str)),
            f"model.pretrained={model['pretrained']!r} must be false, true or a path to a .pth file")
    require_number("trainer.dist_timeout_min", trainer["dist_timeout_min"], 0, low_open=True)
    for key in ("amp", "channels_last", "compile", "sync_batchnorm"):
        require_flag(f"trainer.{key}", trainer[key])
    require_flag("data.preload", data["preload"])
    if data["split_file"] is not None:
        require(Path(str(data["split_file"])).is_file(),
                f"data.split_file={data['split_file']} does not exist; pass a split.csv written by cxrcam.train")
    validate_data_source(data)
    if "csv" in data:
        validate_table_config(data)
    for key in ("mean", "std"):
        values = data[key]
        require(isinstance(values, list) and len(values) == 3 and all(_is_number(v) for v in values),
                f"data.{key}={values!r} must be three numbers (one per RGB channel)")
    require(all(s > 0 for s in data["std"]), f"data.std={data['std']!r} must be positive")
    augment = data["augment"]
    for key in ("rotation", "brightness", "contrast"):
        require_number(f"data.augment.{key}", augment[key], 0)
    for key in ("translate", "scale"):
        require_number(f"data.augment.{key}", augment[key], 0, 1, high_open=True)
    require_flag("data.augment.hflip", augment.get("hflip", False))


def validate_data_source(data: dict) -> None:
    """The data keys that say which images a stage reads and how it splits them (train, segment)."""
    require(isinstance(data["classes"], list) and len(data["classes"]) >= 2
            and all(isinstance(c, str) for c in data["classes"]) and len(set(data["classes"])) == len(data["classes"]),
            f"data.classes={data['classes']!r} must list at least two distinct class folder names")
    require_number("data.val_fraction", data["val_fraction"], 0, 1, low_open=True, high_open=True)
    require_number("data.test_fraction", data["test_fraction"], 0, 1, low_open=True, high_open=True)
    require(data["val_fraction"] + data["test_fraction"] < 1,
            f"data.val_fraction + data.test_fraction = {data['val_fraction'] + data['test_fraction']} leaves no "
            "training images; keep their sum below 1")
    if data.get("synthetic"):
        synthetic = data["synthetic"]
        require_whole("data.synthetic.n_per_class", synthetic["n_per_class"], 3)
        require_whole("data.synthetic.resolution", synthetic["resolution"], 32)
        require_whole("data.synthetic.seed", synthetic["seed"], 0)
        marker = synthetic.get("marker") or {}
        require(isinstance(marker, dict) and all(_is_number(p) and 0 <= p <= 1 for p in marker.values()),
                f"data.synthetic.marker={marker!r} must map class names to probabilities in [0, 1], "
                "e.g. {COVID: 0.95, Normal: 0.05}")
        require_choice("data.synthetic.marker_style", synthetic.get("marker_style", "box"), MARKER_STYLES)
        if synthetic.get("burned_text") is not None:
            require_number("data.synthetic.burned_text", synthetic["burned_text"], 0, 1)


def validate_table_config(data: dict) -> None:
    """The keys of data=csv; the file and its columns are checked when it is read (a resumed run
    never reads it)."""
    for key in ("csv", "path_column", "label_column"):
        require(isinstance(data[key], str) and data[key] != "", f"data.{key}={data[key]!r} must be a non-empty string")
    for key in ("root", "image_dir"):
        require(data[key] is None or isinstance(data[key], str),
                f"data.{key}={data[key]!r} must be a folder, or null: the CSV's folder")
    require(isinstance(data["path_suffix"], str), f"data.path_suffix={data['path_suffix']!r} must be a string, "
            "e.g. .dcm, or '' (none)")
    split_column = data["split_column"]
    require(split_column is None or (isinstance(split_column, str) and split_column != ""),
            f"data.split_column={split_column!r} must be a column name, or null: draw a stratified split")
    label_map = data["label_map"]
    require(label_map is None or (isinstance(label_map, dict) and all(isinstance(c, str) for c in label_map.values())),
            f"data.label_map={label_map!r} must map raw labels to class names, e.g. {{0: Normal, 1: Lung_Opacity}}, "
            "or be null")
    unknown = sorted({c for c in (label_map or {}).values() if c not in data["classes"]})
    require(not unknown, f"data.label_map maps to {unknown}, not in data.classes={data['classes']!r}; "
            "map raw labels to class names only")


def validate_segment_config(cfg: dict) -> None:
    data, model, trainer = cfg["data"], cfg["model"], cfg["trainer"]
    require("csv" not in data, f"data={data['name']} lists images in a CSV, without lung masks; cxrcam.segment trains "
            "on <class>/masks/ beside <class>/images/: use data=covid_radiography, data=folder or data=synthetic")
    validate_data_source(data)
    require_whole("seed", cfg["seed"], 0)
    require_whole("model.depth", model["depth"], 1)
    require_whole("model.base_channels", model["base_channels"])
    step = 2 ** model["depth"]
    require(isinstance(data["image_size"], int) and not isinstance(data["image_size"], bool)
            and data["image_size"] >= step and data["image_size"] % step == 0,
            f"data.image_size={data['image_size']!r} must be a multiple of {step} (2**model.depth): the U-Net halves "
            f"it {model['depth']} times and joins the halves again")
    require_whole("data.batch_size", data["batch_size"])
    require_whole("trainer.epochs", trainer["epochs"])
    require_number("trainer.lr", trainer["lr"], 0, low_open=True)
    require_number("trainer.weight_decay", trainer["weight_decay"], 0)


def validate_cam_config(cam: dict, methods: list) -> None:
    """The cam group explain and evaluate share; ``methods`` are the method names asked for."""
    for method in methods:
        require_choice("cam.method", method, PYTORCH_GRAD_CAM)
    require(isinstance(cam["colormap"], str) and cam["colormap"] in matplotlib.colormaps,
            f"cam.colormap={cam['colormap']!r} is not a matplotlib colormap; use e.g. jet, turbo, inferno or viridis")
    require_number("cam.alpha", cam["alpha"], 0, 1)
    require_choice("cam.overlay_size", cam["overlay_size"], ("model", "original"))
    for key in ("aug_smooth", "eigen_smooth"):
        require_flag(f"cam.{key}", cam[key])


def validate_explain_config(cfg: dict) -> None:
    validate_cam_config(cfg["cam"], [cfg["cam"]["method"]])
    require_whole("batch_size", cfg["batch_size"])
    if cfg["split"] is not None:
        require_choice("split", cfg["split"], ("train", "val", "test"))
    if cfg["per_class"] is not None:
        require_whole("per_class", cfg["per_class"])


def validate_evaluate_config(cfg: dict) -> None:
    methods = cfg["cam"]["method"] if isinstance(cfg["cam"]["method"], list) else [cfg["cam"]["method"]]
    require(bool(methods), "cam.method=[] names no method; use e.g. cam.method=gradcam or [gradcam,hirescam]")
    validate_cam_config(cfg["cam"], methods)
    require_choice("split", cfg["split"], ("train", "val", "test"))
    require_whole("batch_size", cfg["batch_size"])
    require_whole("seed", cfg["seed"], 0)
    if cfg["max_per_class"] is not None:
        require_whole("max_per_class", cfg["max_per_class"])
    for key in ("faithfulness", "sanity"):
        require_whole(f"{key}.n_images", cfg[key]["n_images"])
    percentiles = cfg["faithfulness"]["percentiles"]
    require(isinstance(percentiles, list) and bool(percentiles) and all(_is_number(p) and 0 < p < 100 for p in percentiles),
            f"faithfulness.percentiles={percentiles!r} must be a list of numbers in (0, 100)")
    require_whole("bootstrap.n_resamples", cfg["bootstrap"]["n_resamples"])
    require_number("bootstrap.level", cfg["bootstrap"]["level"], 0, 1, low_open=True, high_open=True)
    require_whole("mean_heatmap_size", cfg["mean_heatmap_size"], 2)
    require_number("localisation.pointing_tolerance", cfg["localisation"]["pointing_tolerance"], 0, 1, high_open=True)
    require_number("zones.peripheral_from", cfg["zones"]["peripheral_from"], 0, 1, low_open=True, high_open=True)
    for key, value in cfg["pattern_thresholds"].items():
        require_number(f"pattern_thresholds.{key}", value, 0, 1)
    require_choice("lungs_mode", cfg["lungs_mode"], LUNG_MODES)
    lungs = cfg["lungs"]
    require(lungs is None or (isinstance(lungs, str) and Path(lungs).is_file()),
            f"lungs={lungs} is not a file; pass the checkpoints/best.pt that python -m cxrcam.segment wrote")
    require(lungs is not None or cfg["lungs_mode"] == "missing",
            f"lungs_mode={cfg['lungs_mode']} needs a segmenter: add lungs=<segment run>/checkpoints/best.pt")
    validate_boxes_config(cfg["boxes"])
    require_flag("causal.enabled", cfg["causal"]["enabled"])
    require_whole("causal.marker_dilation_px", cfg["causal"]["marker_dilation_px"], 0)
    require_choice("causal.outside_lungs", cfg["causal"]["outside_lungs"], OUTSIDE_LUNGS)


def validate_boxes_config(boxes: dict) -> None:
    """The boxes group's keys; the file's own columns and rows are checked as it is read."""
    file, columns, label_column = boxes["file"], boxes["columns"], boxes["label_column"]
    require(file is None or (isinstance(file, str) and bool(file)),
            f"boxes.file={file!r} must be the path of a box CSV, or null (no boxes)")
    require_choice("boxes.format", boxes["format"], BOX_COLUMNS)
    require(columns is None or (isinstance(columns, list) and len(columns) == 5
                                and all(isinstance(c, str) and c for c in columns)),
            f"boxes.columns={columns!r} must be five column names, the image path's then the four coordinates' in "
            "boxes.format order (e.g. [patientId,x,y,width,height]), or null: the format's defaults")
    require(isinstance(boxes["path_suffix"], str),
            f"boxes.path_suffix={boxes['path_suffix']!r} must be text added to each row's path, e.g. .dcm, or ''")
    require(label_column is None or (isinstance(label_column, str) and bool(label_column)),
            f"boxes.label_column={label_column!r} must be a column name, or null (every box counts)")
