"""FastGradCAM and FastHiResCAM: equal to pytorch-grad-cam's GradCAM and HiResCAM, one target per
image or every class, maps left on the images' device, nothing left behind; make_cam: each cam.method
equal to pytorch-grad-cam's class of that name, as tensors too."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from pytorch_grad_cam import (AblationCAM, EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM,
                              XGradCAM)
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn
from torch.overrides import TorchFunctionMode

from cxrcam.data.batches import to_batch
from cxrcam.data.synthetic import CLASSES, render_phantom
from cxrcam.errors import CxrcamError
from cxrcam.explanation.gradcam import FastGradCAM, FastHiResCAM, scale_to_input
from cxrcam.explanation.methods import PytorchGradCAM, make_cam
from cxrcam.models import DEFAULT_CAM_LAYER, build_model, get_layer


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Three phantoms (COVID, Lung_Opacity, Normal), preprocessed as in training."""
    return to_batch([(render_phantom(label, np.random.default_rng(5), 64).image * 255).round().astype(np.uint8)
                     for label in CLASSES[:3]], {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]})


def host(maps: torch.Tensor) -> np.ndarray:
    """A method's maps as pytorch-grad-cam gives them, after checking that they are what the
    interface promises: float32 tensors (left on the images' device)."""
    assert isinstance(maps, torch.Tensor) and maps.dtype == torch.float32
    return maps.cpu().numpy()


@pytest.mark.slow
@pytest.mark.parametrize("fast, slow", [(FastGradCAM, GradCAM), (FastHiResCAM, HiResCAM)],
                         ids=["gradcam", "hirescam"])
@pytest.mark.parametrize("name", list(DEFAULT_CAM_LAYER))
def test_maps_equal_pytorch_grad_cam_and_lie_in_unit_range(name, fast, slow, images):
    torch.manual_seed(1)
    model = build_model(name, 4, 64).eval()
    layer = get_layer(model, DEFAULT_CAM_LAYER[name])
    targets = [0, 2, 3]
    cam = fast(model, layer)
    cams, logits = cam(images, targets)
    cams = host(cams)
    every_class, class_logits = cam.per_class(images)
    every_class = host(every_class)
    with slow(model, [layer]) as reference:
        expected = reference(images, [ClassifierOutputTarget(t) for t in targets])
        expected_classes = [reference(images, [ClassifierOutputTarget(k)] * 3) for k in range(4)]
    assert cams.shape == (3, 64, 64) and logits.shape == (3, 4) and every_class.shape == (3, 4, 64, 64)
    assert cams.min() >= 0 and cams.max() <= 1
    assert (cams.reshape(3, -1).max(1) > 0.99).sum() >= 2  # not all-zero maps that would match trivially
    assert np.abs(cams - expected).max() <= 1e-4
    for k in range(4):
        assert np.abs(every_class[:, k] - expected_classes[k]).max() <= 1e-4, k
    with torch.no_grad():
        assert torch.allclose(logits, model(images), atol=1e-5) and torch.equal(logits, class_logits)


@pytest.mark.parametrize("layer_size, input_size", [((7, 7), (224, 224)), ((2, 2), (64, 64)), ((3, 5), (50, 37)),
                                                    ((8, 12), (8, 12)), ((1, 1), (16, 16)), ((20, 14), (7, 6))],
                         ids=["resnet50-224", "resnet50-64", "odd-factors", "same-size", "one-pixel", "shrinking"])
def test_scaling_on_the_device_equals_pytorch_grad_cams_scale_and_resize(layer_size, input_size):
    """What pytorch-grad-cam does to one layer's maps (scale, resize with OpenCV, scale again), here
    for maps with several leading dimensions at once; also on constant maps (all zero after scaling)."""
    maps = torch.rand(2, 3, *layer_size, generator=torch.Generator().manual_seed(6)) ** 3
    maps[1, 2] = 0.5
    height, width = input_size
    scaled = scale_to_input(maps, height, width)
    expected = scale_cam_image(scale_cam_image(maps.reshape(6, *layer_size).numpy(), (width, height)))
    assert scaled.shape == (2, 3, height, width) and scaled.dtype == torch.float32
    assert np.abs(scaled.reshape(6, height, width).numpy() - expected).max() <= 1e-6
    assert scaled[1, 2].abs().max() == 0


def test_hirescam_equals_gradcam_behind_a_global_pooling_head_only(images):
    """ResNet50 pools layer4 globally before its linear head, so both maps agree; SimpleCNN's
    flatten + linear head keeps positions, and there they differ."""
    for name, same in (("resnet50", True), ("simple_cnn", False)):
        torch.manual_seed(1)
        model = build_model(name, 4, 64).eval()
        layer = get_layer(model, DEFAULT_CAM_LAYER[name])
        grad, _ = FastGradCAM(model, layer)(images, [0, 1, 2])
        hires, _ = FastHiResCAM(model, layer)(images, [0, 1, 2])
        assert ((grad - hires).abs().max() < 1e-4) == same, name


def test_each_image_is_explained_for_its_own_target(images):
    """A batch with targets [0, 1, 2] gives what three single-image calls give."""
    torch.manual_seed(2)
    model = build_model("simple_cnn", 3, 64).eval()
    cam = FastGradCAM(model, get_layer(model, DEFAULT_CAM_LAYER["simple_cnn"]))
    batch, _ = cam(images, [0, 1, 2])
    for i, target in enumerate([0, 1, 2]):
        single, _ = cam(images[i:i + 1], [target])
        assert (batch[i] - single[0]).abs().max() < 1e-5
    other, _ = cam(images, [1, 1, 1])
    assert (batch - other).abs().max() > 1e-3  # the target really changes the maps
    assert torch.equal(cam(images, torch.tensor([0, 1, 2]))[0], batch)  # targets as a tensor too
    with pytest.raises(ValueError, match="one target class per image"):
        cam(images, [0])


def test_all_classes_from_one_forward_equal_one_call_per_class(images):
    torch.manual_seed(3)
    model = build_model("resnet50", 4, 64).eval()
    cam = FastGradCAM(model, get_layer(model, DEFAULT_CAM_LAYER["resnet50"]))
    maps, logits = cam.per_class(images)
    assert maps.shape == (3, 4, 64, 64)
    for k in range(4):
        single, single_logits = cam(images, [k] * 3)
        assert (maps[:, k] - single).abs().max() < 1e-5 and torch.allclose(logits, single_logits)


class HostReads(TorchFunctionMode):
    """Records every call that brings a tensor's values to the host (on a GPU, each waits for it)."""

    READS = {torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__array__,
             torch.Tensor.__bool__, torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__index__}

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.READS:
            self.seen.append(func.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("fast", [FastGradCAM, FastHiResCAM])
def test_fast_cams_never_read_values_back_to_the_host(fast, images):
    """Maps, scaling and resizing stay with the images, so a GPU runs them without waiting on the host."""
    torch.manual_seed(4)
    model = build_model("simple_cnn", 4, 64).eval()
    cam = fast(model, get_layer(model, DEFAULT_CAM_LAYER["simple_cnn"]))
    with HostReads() as reads:
        cam(images, [0, 1, 2])
        cam(images, torch.tensor([0, 1, 2]))
        cam.per_class(images)
    assert reads.seen == []
    with HostReads() as reads:  # the watch sees such reads
        cam(images, [0, 1, 2])[0].cpu().numpy()
    assert reads.seen == ["cpu", "numpy"]


def test_model_state_is_restored_and_hooks_released(images):
    model = build_model("resnet50", 2, 64).train()
    layer = get_layer(model, DEFAULT_CAM_LAYER["resnet50"])
    with torch.no_grad():  # gradients are switched on inside, whatever the caller's mode
        FastGradCAM(model, layer)(images, [0, 1, 0])
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert not layer._forward_hooks
    assert all(p.grad is None for p in model.parameters())  # nothing accumulated in the weights


# --- make_cam: every method on a tiny model, against pytorch-grad-cam called directly -----------------

METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "hirescam": HiResCAM, "xgradcam": XGradCAM,
           "layercam": LayerCAM, "eigencam": EigenCAM, "scorecam": ScoreCAM, "ablationcam": AblationCAM}


class Tiny(nn.Module):
    """Conv, BatchNorm (so train and eval mode give other logits), conv, and a head that keeps
    positions (so HiResCAM and Grad-CAM differ); non-square input, so width and height cannot swap."""

    def __init__(self, classes: int = 3):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self._build(classes)

    def _build(self, classes: int) -> None:
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                      nn.Conv2d(4, 5, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(5 * 4 * 6, classes))
        with torch.no_grad():
            self.features[1].running_mean.uniform_(-0.5, 0.5)
            self.features[1].running_var.uniform_(0.5, 2)

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture
def tiny() -> Tiny:
    return Tiny().train()  # the CAMs must put it in eval mode themselves


@pytest.fixture(scope="module")
def small_images() -> torch.Tensor:
    return torch.randn(3, 3, 8, 12, generator=torch.Generator().manual_seed(4))


def reference(method, model, images, targets, aug_smooth=False, eigen_smooth=False):
    with METHODS[method](model.eval(), [model.features[3]]) as cam:
        return cam(images, [ClassifierOutputTarget(t) for t in targets], aug_smooth=aug_smooth,
                   eigen_smooth=eigen_smooth)


def eval_logits(model, images):
    with torch.no_grad():
        return model.eval()(images)


def test_make_cam_knows_the_methods_of_pytorch_grad_cam_by_name():
    from cxrcam.explanation.methods import PYTORCH_GRAD_CAM
    assert PYTORCH_GRAD_CAM == METHODS


def test_an_unknown_method_is_named_with_the_known_ones(tiny):
    with pytest.raises(CxrcamError) as exc:
        make_cam("gradcampp", tiny, tiny.features[3])
    assert str(exc.value) == ("cam.method='gradcampp' is not one of ['gradcam', 'gradcam++', 'hirescam', "
                              "'xgradcam', 'layercam', 'eigencam', 'scorecam', 'ablationcam']")


@pytest.mark.parametrize("method, aug_smooth, eigen_smooth, kind",
                         [("gradcam", False, False, FastGradCAM), ("hirescam", False, False, FastHiResCAM),
                          ("gradcam", True, False, PytorchGradCAM), ("gradcam", False, True, PytorchGradCAM),
                          ("hirescam", True, False, PytorchGradCAM), ("hirescam", False, True, PytorchGradCAM),
                          ("gradcam++", False, False, PytorchGradCAM), ("scorecam", False, False, PytorchGradCAM)])
def test_grad_cam_and_hirescam_unsmoothed_take_the_fast_path(tiny, method, aug_smooth, eigen_smooth, kind):
    assert type(make_cam(method, tiny, tiny.features[3], aug_smooth, eigen_smooth)) is kind


def test_smoothing_is_off_unless_asked_for(tiny):
    assert type(make_cam("gradcam", tiny, tiny.features[3])) is FastGradCAM
    cam = make_cam("xgradcam", tiny, tiny.features[3])
    assert (cam.aug_smooth, cam.eigen_smooth) == (False, False)


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_equals_pytorch_grad_cams_class_of_that_name(tiny, small_images, method):
    targets = [0, 2, 1]
    maps, logits = make_cam(method, tiny, tiny.features[3])(small_images, targets)
    maps = host(maps)
    expected = reference(method, Tiny(), small_images, targets)
    assert maps.shape == (3, 8, 12)
    assert np.abs(maps - expected).max() < 1e-5
    assert (maps.reshape(3, -1).max(1) > 0.99).all()  # not all-zero maps that would match trivially
    assert torch.equal(logits, eval_logits(Tiny(), small_images)) and not logits.requires_grad
    assert not tiny.features[3]._forward_hooks and not tiny.features[3]._backward_hooks


def test_the_methods_differ_on_this_model(small_images):
    """So that the comparison above tells them apart: on this model no two methods give the same maps
    (Grad-CAM and HiResCAM differ because the head keeps positions)."""
    maps = {m: reference(m, Tiny(), small_images, [0, 2, 1]) for m in METHODS}
    for i, a in enumerate(METHODS):
        for b in list(METHODS)[i + 1:]:
            assert np.abs(maps[a] - maps[b]).max() > 1e-3, (a, b)


@pytest.mark.parametrize("method, aug_smooth, eigen_smooth",
                         [("gradcam", True, False), ("gradcam", False, True), ("hirescam", False, True),
                          ("gradcam++", True, False), ("layercam", False, True)])
def test_the_smoothing_flags_reach_the_method(tiny, small_images, method, aug_smooth, eigen_smooth):
    """Equal to the method with the same flags, and unlike it without them or with the two swapped."""
    targets = [1, 0, 2]
    maps, _ = make_cam(method, tiny, tiny.features[3], aug_smooth, eigen_smooth)(small_images, targets)
    maps = host(maps)
    assert np.abs(maps - reference(method, Tiny(), small_images, targets, aug_smooth, eigen_smooth)).max() < 1e-5
    for other in ((False, False), (eigen_smooth, aug_smooth)):
        assert np.abs(maps - reference(method, Tiny(), small_images, targets, *other)).max() > 1e-3, other


@pytest.mark.parametrize("method, eigen_smooth", [("gradcam", False), ("gradcam++", False), ("gradcam", True)])
def test_per_class_maps_are_in_class_order(tiny, small_images, method, eigen_smooth):
    maps, logits = make_cam(method, tiny, tiny.features[3], eigen_smooth=eigen_smooth).per_class(small_images)
    maps = host(maps)
    assert maps.shape == (3, 3, 8, 12)
    for k in range(3):
        expected = reference(method, Tiny(), small_images, [k] * 3, eigen_smooth=eigen_smooth)
        assert np.abs(maps[:, k] - expected).max() < 1e-5, k
    assert torch.equal(logits, eval_logits(Tiny(), small_images))


def test_fast_cams_with_a_wrong_number_of_targets_say_how_many(tiny, small_images):
    with pytest.raises(ValueError, match=re.escape("one target class per image: 3 images, 2 targets")):
        FastGradCAM(tiny, tiny.features[3])(small_images, [0, 1])


def test_fast_cams_run_in_float32_under_autocast(tiny, small_images):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        maps, logits = make_cam("gradcam", tiny, tiny.features[3])(small_images, [0, 2, 1])
        slow_maps, slow_logits = make_cam("gradcam++", tiny, tiny.features[3])(small_images, [0, 2, 1])
    maps, slow_maps = host(maps), host(slow_maps)
    assert np.abs(maps - reference("gradcam", Tiny(), small_images, [0, 2, 1])).max() < 1e-5
    assert np.abs(slow_maps - reference("gradcam++", Tiny(), small_images, [0, 2, 1])).max() < 1e-5
    assert logits.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("method", ["gradcam", "hirescam", "gradcam++"])
def test_cams_on_the_gpu_equal_those_on_the_cpu(small_images, method):
    """The target classes follow the logits to their device."""
    cpu = Tiny().eval()
    maps, logits = make_cam(method, cpu, cpu.features[3])(small_images, [0, 2, 1])
    gpu = Tiny().cuda().eval()
    gpu_maps, gpu_logits = make_cam(method, gpu, gpu.features[3])(small_images.cuda(), [0, 2, 1])
    assert gpu_maps.device.type == "cuda" and gpu_maps.dtype == torch.float32
    assert (gpu_maps.cpu() - maps).abs().max() < 1e-4
    if method != "gradcam++":  # pytorch-grad-cam's methods compute on the host; the fast ones never wait for it
        on_gpu = small_images.cuda()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            make_cam(method, gpu, gpu.features[3]).per_class(on_gpu)
            make_cam(method, gpu, gpu.features[3])(on_gpu, [0, 2, 1])
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert torch.allclose(gpu_logits.cpu(), logits, atol=1e-5)
