"""FastGradCAM and FastHiResCAM: equal to pytorch-grad-cam's GradCAM and HiResCAM, one target per
image, nothing left behind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM, HiResCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from cxrcam.data.dataset import build_transform
from cxrcam.data.synthetic import CLASSES, render_phantom
from cxrcam.explanation.gradcam import FastGradCAM, FastHiResCAM
from cxrcam.models import MODEL_NAMES, build_model, get_layer

from conftest import compose_config

LAYERS = {name: compose_config("train", f"model={name}")["model"]["target_layer"] for name in MODEL_NAMES}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Three phantoms (COVID, Lung_Opacity, Normal), preprocessed as in training."""
    transform = build_transform([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    return torch.stack([transform(torch.from_numpy((render_phantom(label, np.random.default_rng(5), 64).image * 255)
                                                   .round().astype(np.uint8))[None])
                        for label in CLASSES[:3]])


@pytest.mark.slow
@pytest.mark.parametrize("fast, slow", [(FastGradCAM, GradCAM), (FastHiResCAM, HiResCAM)],
                         ids=["gradcam", "hirescam"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_maps_equal_pytorch_grad_cam_and_lie_in_unit_range(name, fast, slow, images):
    torch.manual_seed(1)
    model = build_model(name, 4, 64).eval()
    layer = get_layer(model, LAYERS[name])
    targets = [0, 2, 3]
    cams, logits = fast(model, layer)(images, targets)
    with slow(model, [layer]) as reference:
        expected = reference(images, [ClassifierOutputTarget(t) for t in targets])
    assert cams.shape == (3, 64, 64) and logits.shape == (3, 4)
    assert cams.min() >= 0 and cams.max() <= 1
    assert (cams.reshape(3, -1).max(1) > 0.99).sum() >= 2  # not all-zero maps that would match trivially
    assert np.abs(cams - expected).max() < 1e-4
    with torch.no_grad():
        assert torch.allclose(logits, model(images), atol=1e-5)


def test_hirescam_equals_gradcam_behind_a_global_pooling_head_only(images):
    """ResNet50 pools layer4 globally before its linear head, so both maps agree; SimpleCNN's
    flatten + linear head keeps positions, and there they differ."""
    for name, same in (("resnet50", True), ("simple_cnn", False)):
        torch.manual_seed(1)
        model = build_model(name, 4, 64).eval()
        layer = get_layer(model, LAYERS[name])
        grad, _ = FastGradCAM(model, layer)(images, [0, 1, 2])
        hires, _ = FastHiResCAM(model, layer)(images, [0, 1, 2])
        assert (np.abs(grad - hires).max() < 1e-4) == same, name


def test_each_image_is_explained_for_its_own_target(images):
    """A batch with targets [0, 1, 2] gives what three single-image calls give."""
    torch.manual_seed(2)
    model = build_model("simple_cnn", 3, 64).eval()
    cam = FastGradCAM(model, get_layer(model, LAYERS["simple_cnn"]))
    batch, _ = cam(images, [0, 1, 2])
    for i, target in enumerate([0, 1, 2]):
        single, _ = cam(images[i:i + 1], [target])
        assert np.abs(batch[i] - single[0]).max() < 1e-5
    other, _ = cam(images, [1, 1, 1])
    assert np.abs(batch - other).max() > 1e-3  # the target really changes the maps
    with pytest.raises(ValueError, match="one target class per image"):
        cam(images, [0])


def test_all_classes_from_one_forward_equal_one_call_per_class(images):
    torch.manual_seed(3)
    model = build_model("resnet50", 4, 64).eval()
    cam = FastGradCAM(model, get_layer(model, LAYERS["resnet50"]))
    maps, logits = cam.per_class(images)
    assert maps.shape == (3, 4, 64, 64)
    for k in range(4):
        single, single_logits = cam(images, [k] * 3)
        assert np.abs(maps[:, k] - single).max() < 1e-5 and torch.allclose(logits, single_logits)


def test_model_state_is_restored_and_hooks_released(images):
    model = build_model("resnet50", 2, 64).train()
    layer = get_layer(model, LAYERS["resnet50"])
    with torch.no_grad():  # gradients are switched on inside, whatever the caller's mode
        FastGradCAM(model, layer)(images, [0, 1, 0])
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert not layer._forward_hooks
    assert all(p.grad is None for p in model.parameters())  # nothing accumulated in the weights
