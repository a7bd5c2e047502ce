from __future__ import annotations

import re

import pytest
import torch
from torchvision import models as tvm

from cxrcam.errors import CxrcamError
from cxrcam.models import DEFAULT_CAM_LAYER, MODEL_NAMES, build_model, get_layer, imagenet_weights_path

CAM_STRIDE = {"resnet50": 32, "densenet121": 32, "simple_cnn": 16}


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("size", [64, 96])
def test_each_model_runs_at_two_sizes_with_its_cam_layer(name, size):
    torch.manual_seed(0)
    model = build_model(name, 3, size).eval()
    captured = {}
    hook = get_layer(model, DEFAULT_CAM_LAYER[name]).register_forward_hook(
        lambda module, inputs, output: captured.setdefault("map", output))
    with torch.no_grad():
        logits = model(torch.randn(2, 3, size, size))
    hook.remove()
    assert logits.shape == (2, 3)
    assert captured["map"].shape[-2:] == (size // CAM_STRIDE[name],) * 2


def test_simple_cnn_matches_the_seed_at_224_and_accepts_other_sizes():
    model = build_model("simple_cnn", 4, 224)
    assert model.classifier[1].in_features == 256 * 14 * 14  # the seed's Linear(256 * 14 * 14, 512)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 160, 160)).shape == (1, 4)


def test_densenet_cam_layer_output_is_not_overwritten_by_relu():
    """torchvision's in-place ReLU would leave the hooked norm5 output with no negative values."""
    model = build_model("densenet121", 2, 64).eval()
    captured = {}
    get_layer(model, "features.norm5").register_forward_hook(lambda m, i, o: captured.setdefault("map", o))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert (captured["map"] < 0).any()


def test_missing_imagenet_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    expected = imagenet_weights_path("resnet50")
    assert expected.parent == tmp_path / "hub" / "checkpoints"
    with pytest.raises(CxrcamError, match=f"not found at {expected}.*download https://"):
        build_model("resnet50", 4, 64, pretrained=True)
    with pytest.raises(CxrcamError, match="no ImageNet weights for simple_cnn"):
        build_model("simple_cnn", 4, 64, pretrained=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "densenet121"])
def test_imagenet_weights_load_from_a_local_file(tmp_path, name):
    reference = tvm.resnet50() if name == "resnet50" else tvm.densenet121()
    state = reference.state_dict()
    if name == "densenet121":  # the published file uses the legacy names 'denselayer1.norm.1'
        state = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v for k, v in state.items()}
        assert "features.denseblock1.denselayer1.norm.1.weight" in state
    torch.save(state, tmp_path / "weights.pth")
    model = build_model(name, 4, 64, pretrained=str(tmp_path / "weights.pth"))
    own, ref = model.state_dict(), reference.state_dict()
    backbone = [k for k in ref if not k.startswith(("fc.", "classifier."))]
    assert all(torch.equal(own[k], ref[k]) for k in backbone)
    with pytest.raises(CxrcamError, match="does not hold"):
        torch.save({"something": torch.zeros(1)}, tmp_path / "other.pth")
        build_model(name, 4, 64, pretrained=str(tmp_path / "other.pth"))
