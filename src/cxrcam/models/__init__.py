"""Model registry: the three architectures of the seed, each with its Grad-CAM target layer."""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm

from cxrcam.errors import CxrcamError
from cxrcam.models.simple_cnn import SimpleCNN

MODEL_NAMES = ("resnet50", "densenet121", "simple_cnn")
# the Grad-CAM layer a run stores when cam.layer is null
DEFAULT_CAM_LAYER = {
    "resnet50": "layer4.2",  # the last bottleneck of layer4, a map of input/32 (7x7 at 224 px, 4x4 at 128 px)
    # the final feature norm, a map of input/32. cxrcam's DenseNet121 applies the ReLU after it out of
    # place, so a CAM hook sees the activation torchvision would overwrite
    "densenet121": "features.norm5",
    "simple_cnn": "features.3",  # the last conv block (conv, ReLU, max-pool), a map of input/16
}
# the smallest input each model maps to at least one cell at its last layer (SimpleCNN: 4 poolings;
# DenseNet121's pooling transitions fail below 31 px; ResNet50: input/32)
MIN_IMAGE_SIZE = {"resnet50": 32, "densenet121": 32, "simple_cnn": 16}
_LEGACY_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")
_IMAGENET_WEIGHTS = {"resnet50": tvm.ResNet50_Weights.IMAGENET1K_V2,
                     "densenet121": tvm.DenseNet121_Weights.IMAGENET1K_V1}


class DenseNet121(tvm.DenseNet):
    """torchvision's DenseNet121 with an out-of-place final ReLU.

    torchvision applies ``F.relu(features, inplace=True)`` to the output of ``features.norm5``, the
    usual Grad-CAM layer; in place, it overwrites the activation a CAM hook has just captured.
    """

    def __init__(self, num_classes: int):
        super().__init__(growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64,
                         num_classes=num_classes)

    def forward(self, x):
        out = F.relu(self.features(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def imagenet_weights_path(name: str) -> Path:
    """Where torch's hub cache keeps the ImageNet weights file of a torchvision model."""
    url = _IMAGENET_WEIGHTS[name].url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _load_imagenet_backbone(model: nn.Module, name: str, pretrained: bool | str) -> None:
    if name not in _IMAGENET_WEIGHTS:
        raise CxrcamError(f"model.pretrained is set but there are no ImageNet weights for {name}; "
                          f"use it with {sorted(_IMAGENET_WEIGHTS)} or set model.pretrained=false")
    path = imagenet_weights_path(name) if pretrained is True else Path(pretrained)
    if not path.is_file():
        raise CxrcamError(f"ImageNet weights for {name} not found at {path}; download "
                          f"{_IMAGENET_WEIGHTS[name].url} and put it there, or set model.pretrained=/path/to/file.pth")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a text file, a truncated download, a pickle with code: many types
        raise CxrcamError(f"model.pretrained={path} is not a PyTorch weights file ({type(exc).__name__}); "
                          f"pass torchvision's {name} ImageNet .pth file") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CxrcamError(f"model.pretrained={path} holds no state dict of tensors; pass torchvision's {name} "
                          "ImageNet .pth file")
    if name == "densenet121":  # torchvision's own file names 'denselayer1.norm.1', the module 'norm1'
        state = {_LEGACY_DENSENET_KEY.sub(r"\1\2", k): v for k, v in state.items()}
    head = "fc." if name == "resnet50" else "classifier."
    backbone = {k: v for k, v in state.items() if not k.startswith(head)}
    try:
        missing, unexpected = model.load_state_dict(backbone, strict=False)
        detail = f"unexpected keys {unexpected[:3]}, missing {missing[:3]}"
    except RuntimeError:  # the same names with other shapes: another architecture of the family
        missing, unexpected, detail = [], [None], "its tensors have other shapes"
    if unexpected or any(not k.startswith(head) for k in missing):
        raise CxrcamError(f"model.pretrained={path} does not hold {name} ImageNet weights ({detail}); "
                          f"pass torchvision's {name} file")


def build_model(name: str, num_classes: int, image_size: int, dropout: float = 0.5,
                pretrained: bool | str = False, pooled_size: int | None = None) -> nn.Module:
    """``pooled_size`` (SimpleCNN only) defaults to the seed's geometry: the map at image_size/16."""
    if name == "simple_cnn":
        model = SimpleCNN(num_classes, dropout=dropout, pooled_size=pooled_size or max(1, image_size // 16))
    elif name == "resnet50":
        model = tvm.resnet50(weights=None, zero_init_residual=True)
        model.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(model.fc.in_features, num_classes))
    elif name == "densenet121":
        model = DenseNet121(num_classes)
        model.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1024, num_classes))
    else:
        raise CxrcamError(f"model.name={name!r} is not known; choose one of {list(MODEL_NAMES)}")
    if pretrained:
        _load_imagenet_backbone(model, name, pretrained)
    return model


def model_from_checkpoint(payload: dict) -> nn.Module:
    """The trained model of a cxrcam checkpoint, in eval mode, from its metadata and weights alone."""
    meta = payload["meta"]
    options = meta["config"]["model"]
    model = build_model(meta["model_name"], len(meta["class_names"]), meta["image_size"],
                        dropout=options["dropout"], pooled_size=options.get("pooled_size"))
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        detail = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise CxrcamError(f"the checkpoint's weights do not fit a {meta['model_name']} for "
                          f"{len(meta['class_names'])} classes, as its metadata says ({detail[:160]}); "
                          "it was altered or written by another program") from None
    return model.eval()


def get_layer(model: nn.Module, dotted_name: str) -> nn.Module:
    """The submodule a config names, e.g. ``layer4.2`` or ``features.norm5``."""
    try:
        return model.get_submodule(dotted_name)
    except AttributeError:
        raise CxrcamError(f"layer {dotted_name!r} does not exist in {type(model).__name__}; "
                          "use a dotted module name as printed by print(model)") from None


def spatial_layer(model: nn.Module, dotted_name: str, image_size: int) -> tuple[nn.Module, list[int]]:
    """The layer a CAM is taken at and its map's (height, width), from one forward pass of a blank
    image: a layer whose output is not a (N, C, H, W) map, such as the classifier, has no CAM."""
    layer, shape = get_layer(model, dotted_name), {}

    def record(module, inputs, output):
        shape["output"] = tuple(output.shape) if isinstance(output, torch.Tensor) else None

    handle = layer.register_forward_hook(record)
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
    finally:
        handle.remove()
    if shape.get("output") is None or len(shape["output"]) != 4:
        raise CxrcamError(f"cam.layer={dotted_name} gives an output of shape {shape.get('output')}, not a spatial map "
                          "(N, C, H, W); name a convolutional block, as printed by print(model)")
    return layer, list(shape["output"][-2:])


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
