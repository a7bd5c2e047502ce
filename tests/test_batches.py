"""The input pipeline: epoch plans, per-image augmentation applied a batch at a time, the model's
input, and batches from memory or from disk."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from conftest import TINY_CLASSES

from cxrcam.data import batches as batches_module
from cxrcam.data.batches import (
    ANGLE,
    BRIGHTNESS,
    CONTRAST,
    FLIP,
    SCALE,
    SHIFT_X,
    SHIFT_Y,
    ModelInput,
    SplitBatches,
    augment,
    auto_num_workers,
    draw_augmentation,
    epoch_plan,
    shard,
    to_batch,
)
from cxrcam.data.dataset import CXRDataset
from cxrcam.data.layout import discover_images

AUGMENT = {"rotation": 7, "translate": 0.05, "scale": 0.08, "brightness": 0.2, "contrast": 0.3, "hflip": False}


def _identity(n: int = 1) -> torch.Tensor:
    params = torch.zeros(n, 7)
    params[:, [SCALE, BRIGHTNESS, CONTRAST]] = 1
    return params


def _image(size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(seed))


# --- the draw -------------------------------------------------------------------------------

def test_the_draw_covers_the_configured_ranges_and_no_more():
    params = draw_augmentation(20_000, AUGMENT, torch.Generator().manual_seed(0))
    expected = {ANGLE: (-7, 7), SHIFT_X: (-0.05, 0.05), SHIFT_Y: (-0.05, 0.05), SCALE: (0.92, 1.08),
                BRIGHTNESS: (0.8, 1.2), CONTRAST: (0.7, 1.3)}
    for column, (low, high) in expected.items():
        values = params[:, column]
        assert low <= values.min() < low + 0.01 * (high - low) and high - 0.01 * (high - low) < values.max() <= high
        assert values.mean().item() == pytest.approx((low + high) / 2, abs=0.01 * (high - low))
    assert (params[:, FLIP] == 0).all()
    assert not torch.equal(params[:, SHIFT_X], params[:, SHIFT_Y])  # drawn apart


def test_brightness_and_contrast_factors_stop_at_zero_like_colorjitter():
    params = draw_augmentation(5_000, {**AUGMENT, "brightness": 1.5, "contrast": 2}, torch.Generator().manual_seed(1))
    assert params[:, BRIGHTNESS].min() >= 0 and params[:, BRIGHTNESS].max() > 2.4
    assert params[:, CONTRAST].min() >= 0 and params[:, CONTRAST].max() > 2.9


def test_flips_are_drawn_half_the_time_only_when_asked():
    flips = draw_augmentation(4_000, {**AUGMENT, "hflip": True}, torch.Generator().manual_seed(2))[:, FLIP]
    assert set(flips.tolist()) == {0.0, 1.0} and flips.mean().item() == pytest.approx(0.5, abs=0.03)


def test_the_same_generator_state_draws_the_same_parameters():
    a, b = (draw_augmentation(8, AUGMENT, torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(a, b) and a.dtype == torch.float32
    assert not torch.equal(a, draw_augmentation(8, AUGMENT, torch.Generator().manual_seed(4)))


# --- the augmentation -----------------------------------------------------------------------

def test_identity_parameters_leave_the_image_as_it_was():
    image = _image()
    assert torch.allclose(augment(image.clone(), _identity()), image, atol=1e-6)


def test_a_flip_mirrors_left_and_right():
    image, params = _image(), _identity()
    params[:, FLIP] = 1
    assert torch.allclose(augment(image.clone(), params), image.flip(-1), atol=1e-6)


@pytest.mark.parametrize("pixels", [1, 3, -2])
def test_a_shift_by_whole_pixels_moves_the_image_and_fills_black(pixels):
    image, params = _image(), _identity()
    params[:, SHIFT_X] = pixels / 16
    params[:, SHIFT_Y] = -pixels / 16 * 2
    moved = augment(image.clone(), params)
    expected = torch.zeros_like(image)
    rows, cols = slice(max(-2 * pixels, 0), 16 + min(-2 * pixels, 0)), slice(max(pixels, 0), 16 + min(pixels, 0))
    src_rows = slice(max(2 * pixels, 0), 16 + min(2 * pixels, 0))
    src_cols = slice(max(-pixels, 0), 16 + min(-pixels, 0))
    expected[..., rows, cols] = image[..., src_rows, src_cols]
    assert torch.allclose(moved, expected, atol=1e-5)


@pytest.mark.parametrize("angle", [90, 30, -12])
def test_an_angle_turns_the_image_as_torchvision_turns_it_by_minus_that_angle(angle):
    """The draw is symmetric (rotation ± data.augment.rotation), so only the sign convention differs
    from torchvision's rotate (positive: counter-clockwise); pinned so it cannot flip unnoticed."""
    image, params = _image(), _identity()
    params[:, ANGLE] = angle
    expected = TF.rotate(image, -angle, interpolation=TF.InterpolationMode.BILINEAR)
    assert torch.allclose(augment(image.clone(), params)[..., 4:12, 4:12], expected[..., 4:12, 4:12], atol=1e-5)


def test_a_quarter_turn_is_rot90_and_scale_two_magnifies_the_centre():
    image, params = _image(), _identity()
    params[:, ANGLE] = 90
    turned = augment(image.clone(), params)
    # +90 degrees turns the picture one way, -90 the other: both are a quarter turn of the pixels
    assert any(torch.allclose(turned, torch.rot90(image, k, dims=(2, 3)), atol=1e-5) for k in (1, 3))
    params[:, ANGLE] = -90
    assert not torch.allclose(augment(image.clone(), params), turned, atol=1e-3)
    params[:, ANGLE], params[:, SCALE] = 0, 2
    centre = torch.zeros(1, 1, 16, 16)
    centre[..., 3:13, 3:13] = 1  # the centre half (pixel centres 3.75 to 11.25), magnified twice, fills the image
    assert torch.allclose(augment(centre, params), torch.ones(1, 1, 16, 16), atol=1e-6)
    centre[..., 3, :] = 0
    assert augment(centre, params)[..., 0, :].max() < 1 and augment(centre, params)[..., 1:, :].min() == 1


def test_brightness_and_contrast_match_torchvision():
    image, params = _image(seed=5), _identity()
    params[:, BRIGHTNESS], params[:, CONTRAST] = 1.3, 0.6
    expected = TF.adjust_contrast(TF.adjust_brightness(image, 1.3), 0.6)
    assert torch.allclose(augment(image.clone(), params), expected, atol=1e-6)
    params[:, BRIGHTNESS], params[:, CONTRAST] = 0.7, 1.5
    expected = TF.adjust_contrast(TF.adjust_brightness(image, 0.7), 1.5)
    assert torch.allclose(augment(image.clone(), params), expected, atol=1e-6)


def test_each_image_of_a_batch_gets_its_own_parameters():
    images = torch.cat([_image(seed=s) for s in range(3)])
    params = draw_augmentation(3, {**AUGMENT, "hflip": True}, torch.Generator().manual_seed(6))
    together = augment(images.clone(), params)
    for i in range(3):
        assert torch.allclose(together[i:i + 1], augment(images[i:i + 1].clone(), params[i:i + 1]), atol=1e-6)
    assert not torch.allclose(together[0], augment(images[:1].clone(), params[1:2])[0], atol=1e-3)


# --- the model's input ----------------------------------------------------------------------

def test_model_input_scales_and_normalises_into_three_channels():
    pixels = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    x = ModelInput(mean, std)(pixels)
    expected = torch.stack([(pixels[:, 0].float() / 255 - m) / s for m, s in zip(mean, std, strict=True)], dim=1)
    assert x.shape == (2, 3, 8, 8) and x.dtype == torch.float32 and torch.allclose(x, expected, atol=1e-6)
    assert x.is_contiguous() and not ModelInput(mean, std, channels_last=False)(pixels).is_contiguous(
        memory_format=torch.channels_last)
    last = ModelInput(mean, std, channels_last=True)(pixels)
    assert torch.equal(last, x) and last.is_contiguous(memory_format=torch.channels_last)


def test_model_input_augments_before_it_normalises():
    pixels = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    params = draw_augmentation(3, AUGMENT, torch.Generator().manual_seed(7))
    x = ModelInput([0.5] * 3, [0.25] * 3)(pixels, params)
    expected = (augment(pixels.float() / 255, params) - 0.5) / 0.25
    assert torch.allclose(x, expected.expand(-1, 3, -1, -1), atol=1e-5)


def test_to_batch_is_the_model_input_of_load_image_pixels():
    pixels = [np.full((4, 4), v, dtype=np.uint8) for v in (0, 255)]
    x = to_batch(pixels, {"mean": [0.5] * 3, "std": [0.5] * 3})
    assert x.shape == (2, 3, 4, 4) and (x[0] == -1).all() and (x[1] == 1).all()


# --- the epoch's plan -----------------------------------------------------------------------

def test_one_process_sees_a_permutation_seeded_by_seed_and_epoch():
    order, params = epoch_plan(10, 4, seed=0, epoch=1, augment=AUGMENT)
    assert sorted(order.tolist()) == list(range(10)) and params.shape == (10, 7)
    again, same = epoch_plan(10, 4, seed=0, epoch=1, augment=AUGMENT)
    assert torch.equal(order, again) and torch.equal(params, same)
    assert not torch.equal(order, epoch_plan(10, 4, seed=0, epoch=2, augment=AUGMENT)[0])
    assert not torch.equal(order, epoch_plan(10, 4, seed=1, epoch=1, augment=AUGMENT)[0])
    assert epoch_plan(10, 4, 0, 1, None)[1] is None and torch.equal(epoch_plan(10, 4, 0, 1, None)[0], order)


@pytest.mark.parametrize("n, world", [(10, 2), (11, 2), (10, 3), (7, 4)])
def test_processes_together_see_the_global_batches_of_one_process(n, world):
    """Like DistributedSampler: padded to a multiple of the world, every world-th position each, so
    that step k of all processes is step k of one process with a world times larger batch."""
    per_process = 2
    single, single_params = epoch_plan(n, per_process * world, 3, 2, AUGMENT)
    padded = math.ceil(n / world) * world
    expected = torch.cat([single, single[:padded - n]])
    expected_params = torch.cat([single_params, single_params[:padded - n]])
    shares = [epoch_plan(n, per_process, 3, 2, AUGMENT, rank, world) for rank in range(world)]
    assert all(len(order) == padded // world for order, _ in shares)
    for step in range(math.ceil(padded / world / per_process)):
        batch = slice(step * per_process, (step + 1) * per_process)
        together = sorted(int(i) for order, _ in shares for i in order[batch])
        start = step * per_process * world
        assert together == sorted(expected[start:start + per_process * world].tolist())
    for rank, (order, params) in enumerate(shares):
        assert torch.equal(order, expected[rank::world]) and torch.equal(params, expected_params[rank::world])


def test_weights_draw_with_replacement_in_proportion():
    weights = torch.tensor([1.0] * 9 + [9.0])
    orders = torch.cat([epoch_plan(10, 2, 0, epoch, None, weights=weights)[0] for epoch in range(400)])
    assert orders.numel() == 4000 and (orders == 9).float().mean().item() == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("n, world", [(10, 1), (10, 3), (2, 4)])
def test_shards_cover_a_split_once(n, world):
    shards = [shard(n, rank, world) for rank in range(world)]
    assert sorted(torch.cat(shards).tolist()) == list(range(n))
    assert all(torch.equal(s, torch.arange(n)[rank::world]) for rank, s in enumerate(shards))


@pytest.mark.parametrize("cores, processes, expected", [(1, 1, 0), (2, 1, 0), (3, 1, 2), (4, 1, 3), (16, 1, 8),
                                                        (64, 1, 8), (16, 4, 3), (16, 8, 0)])
def test_auto_num_workers_leaves_a_core_to_the_trainer_and_none_on_small_machines(monkeypatch, cores, processes,
                                                                                  expected):
    monkeypatch.setattr(batches_module.os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert auto_num_workers(processes) == expected


# --- batches from memory and from disk ------------------------------------------------------

@pytest.fixture
def dataset_files(tiny_synthetic):
    items = discover_images(tiny_synthetic, TINY_CLASSES)[:10]
    return [str(p) for p, _ in items], [TINY_CLASSES.index(c) for _, c in items]


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_batches_equal_preloaded_ones(dataset_files, workers):
    paths, labels = dataset_files
    preloaded = SplitBatches(CXRDataset(paths, labels, 32, preload=True), batch_size=4)
    streamed = SplitBatches(CXRDataset(paths, labels, 32), batch_size=4, num_workers=workers)
    order, params = epoch_plan(10, 4, 0, 1, AUGMENT)
    for epoch in range(2):  # persistent workers read the next epoch's order
        order, params = epoch_plan(10, 4, 0, epoch + 1, AUGMENT)
        a, b = list(preloaded(order, params)), list(streamed(order, params))
        assert [len(labels) for _, labels, _ in a] == [4, 4, 2] and len(a) == len(b) == preloaded.steps(10)
        for (x, y, p), (u, v, q) in zip(a, b, strict=True):
            assert torch.equal(x, u) and torch.equal(y, v) and torch.equal(p, q) and x.dtype == torch.uint8
        assert torch.equal(torch.cat([y for _, y, _ in a]), torch.tensor(labels)[order])
        assert torch.equal(torch.cat([p for _, _, p in a]), params)
        assert torch.equal(a[1][0][0], preloaded.dataset.pixels[order[4]])


def test_batches_can_start_at_a_later_step(dataset_files):
    paths, labels = dataset_files
    batches = SplitBatches(CXRDataset(paths, labels, 32, preload=True), batch_size=4)
    order, params = epoch_plan(10, 4, 0, 1, AUGMENT)
    whole, rest = list(batches(order, params)), list(batches(order, params, start_step=1))
    assert len(rest) == 2
    for (x, y, p), (u, v, q) in zip(whole[1:], rest, strict=True):
        assert torch.equal(x, u) and torch.equal(y, v) and torch.equal(p, q)
    assert [p for _, _, p in batches(order)] == [None] * 3
