"""Where the Hydra configs live, and the checks that stop a bad configuration before any work."""

from __future__ import annotations

from pathlib import Path

from cxrcam.data.scan import ON_BAD_IMAGE
from cxrcam.errors import CxrcamError
from cxrcam.models import MODEL_NAMES

CLASS_BALANCE_MODES = ("loss", "sampler", "none")
OPTIMIZERS = ("adam", "adamw")
SCHEDULERS = ("none", "onecycle", "cosine")


def config_dir() -> Path:
    """``conf/`` at the repository root in a checkout; ``cxrcam/conf`` inside an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise RuntimeError(f"cxrcam's configs are missing (looked in {here / 'conf'} and {here.parents[1] / 'conf'}); "
                       "reinstall the package")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise CxrcamError(message)


def validate_train_config(cfg: dict) -> None:
    data, model, optim, trainer = cfg["data"], cfg["model"], cfg["optim"], cfg["trainer"]
    _require(model["name"] in MODEL_NAMES, f"model.name={model['name']!r} is not one of {list(MODEL_NAMES)}")
    _require(optim["name"] in OPTIMIZERS, f"optim.name={optim['name']!r} is not one of {list(OPTIMIZERS)}")
    _require(optim["scheduler"] in SCHEDULERS,
             f"optim.scheduler={optim['scheduler']!r} is not one of {list(SCHEDULERS)}")
    _require(trainer["class_balance"] in CLASS_BALANCE_MODES,
             f"trainer.class_balance={trainer['class_balance']!r} is not one of {list(CLASS_BALANCE_MODES)}")
    for key, value in (("optim.lr", optim["lr"]), ("trainer.epochs", trainer["epochs"]),
                       ("data.batch_size", data["batch_size"]), ("data.image_size", data["image_size"])):
        _require(isinstance(value, (int, float)) and value > 0, f"{key}={value!r} must be a positive number")
    _require(isinstance(data["classes"], list) and len(data["classes"]) >= 2
             and len(set(data["classes"])) == len(data["classes"]),
             f"data.classes={data['classes']!r} must list at least two distinct class folder names")
    _require(data["on_bad_image"] in ON_BAD_IMAGE,
             f"data.on_bad_image={data['on_bad_image']!r} is not one of {list(ON_BAD_IMAGE)}")
    _require(0 < data["val_fraction"] < 1,
             f"data.val_fraction={data['val_fraction']!r} must be in (0, 1): the best checkpoint is chosen on it")
