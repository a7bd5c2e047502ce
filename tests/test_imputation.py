"""Our noisy linear imputation against pytorch-grad-cam's NoisyLinearImputer, the reference it
replaces, and against sums done by hand.

Both draw their noise from torch's global RNG, (channels x removed pixels) standard normals in the
same order, so seeding torch before each call makes them draw the same numbers: the outputs must
then agree to rounding, the noise included, and leave the RNG in the same state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam.metrics.road import NoisyLinearImputer

from cxrcam.evaluation.imputation import nested_dissection, noisy_linear_imputation

TOLERANCE = 1e-5  # the promise is 1e-4; both solve the same float64 system and round it to float32


def removed_mask(shape: tuple[int, int], *cells: tuple) -> torch.Tensor:
    """pytorch-grad-cam's mask: 1 kept, 0 removed at the given (row, column) indices or slices."""
    mask = torch.ones(shape)
    for cell in cells:
        mask[cell] = 0
    return mask


def random_mask(shape: tuple[int, int], share: float, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.float32(np.random.default_rng(seed).random(shape) >= share))


def blob_mask(shape: tuple[int, int], percentile: float, seed: int) -> torch.Tensor:
    """ROAD's kind of mask: a smooth map (a 4 x 4 grid upsampled, like a CAM) kept below its percentile."""
    grid = torch.from_numpy(np.random.default_rng(seed).random((1, 1, 4, 4)))
    cam = torch.nn.functional.interpolate(grid, size=shape, mode="bilinear")[0, 0].numpy()
    return torch.from_numpy(np.float32(cam < np.percentile(cam, percentile)))


def image(channels: int, shape: tuple[int, int], seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(channels, *shape)).astype(np.float32))


def both(img: torch.Tensor, mask: torch.Tensor, noise: float, seed: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """(ours, pytorch-grad-cam's) from the same seed; the RNG must be left in the same state."""
    torch.manual_seed(seed)
    ours = noisy_linear_imputation(img, mask, noise)
    after_ours = torch.rand(3)
    torch.manual_seed(seed)
    reference = NoisyLinearImputer(noise=noise)(img, mask)
    assert torch.equal(torch.rand(3), after_ours)
    return ours, reference


SHAPE = (12, 12)
MASKS = {
    "random half": random_mask(SHAPE, 0.5, seed=1),
    "random 90 %": random_mask(SHAPE, 0.9, seed=2),
    "block": removed_mask(SHAPE, (slice(3, 8), slice(4, 10))),
    "left border": removed_mask(SHAPE, (slice(None), slice(0, 3))),
    "top and bottom rows": removed_mask(SHAPE, (0, slice(None)), (-1, slice(None))),
    "four corners": removed_mask(SHAPE, (slice(0, 2), slice(0, 2)), (slice(0, 2), slice(-2, None)),
                                 (slice(-2, None), slice(0, 2)), (slice(-2, None), slice(-2, None))),
    "one interior pixel": removed_mask(SHAPE, (5, 6)),
    "one corner pixel": removed_mask(SHAPE, (11, 0)),
    "all but one pixel": 1 - removed_mask(SHAPE, (4, 4)),
    "blobs, 20 % kept": blob_mask(SHAPE, 20, seed=3),
    "blobs, 80 % kept": blob_mask(SHAPE, 80, seed=3),
}


@pytest.mark.parametrize("noise", [0.0, 0.01, 0.5])
@pytest.mark.parametrize("name", list(MASKS))
def test_equals_pytorch_grad_cam_on_three_channels(name, noise):
    mask = MASKS[name]
    ours, reference = both(image(3, SHAPE), mask, noise)
    assert ours.dtype == reference.dtype and ours.shape == reference.shape
    assert (ours - reference).abs().max() <= TOLERANCE
    assert torch.equal(ours[:, mask == 1], image(3, SHAPE)[:, mask == 1])  # kept pixels untouched


@pytest.mark.parametrize("channels", [1, 2, 3])
@pytest.mark.parametrize("shape", [(9, 23), (23, 9), (1, 15), (15, 1)])
def test_equals_pytorch_grad_cam_on_non_square_images(channels, shape):
    """Rows and columns must not be mixed up: a wide, a tall and a one-pixel-thin image."""
    for seed in range(3):
        ours, reference = both(image(channels, shape, seed), random_mask(shape, 0.5, seed), noise=0.01)
        assert (ours - reference).abs().max() <= TOLERANCE


def test_equals_pytorch_grad_cam_on_a_224_px_road_mask():
    img, mask = image(3, (224, 224)), blob_mask((224, 224), 40, seed=4)
    ours, reference = both(img, mask, noise=0.01)
    assert (ours - reference).abs().max() <= TOLERANCE


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("kept", [1, 50, 99])
def test_equals_pytorch_grad_cam_on_road_masks_down_to_one_percent_kept_or_removed(size, kept):
    img, mask = image(3, (size, size), seed=size), blob_mask((size, size), kept, seed=kept)
    ours, reference = both(img, mask, noise=0.01)
    assert (ours - reference).abs().max() <= TOLERANCE


@pytest.mark.parametrize("shape", [(1, 15), (15, 1), (9, 23), (224, 224)])
def test_the_unknowns_order_holds_every_pixel_once(shape):
    assert np.array_equal(np.sort(nested_dissection(*shape)), np.arange(shape[0] * shape[1]))


def test_nothing_removed_returns_the_image_and_draws_no_noise():
    img = image(3, SHAPE)
    ours, reference = both(img, torch.ones(SHAPE), noise=0.01)
    assert torch.equal(ours, img) and torch.equal(reference, img)


@pytest.mark.parametrize("shape", [SHAPE, (3, 3), (2, 5)])
def test_everything_removed_is_noise_around_zero_as_in_pytorch_grad_cam(shape):
    """No pixel is kept: the system has no data and is singular. pytorch-grad-cam's LU solves its
    zero right-hand side to 0 (on a 1 x 1 image it finds the exact singularity and returns NaN);
    ours, whose symmetric LU stops at an exactly zero pivot on 3 x 3 and 2 x 5, returns 0 too. Both
    add the noise."""
    ours, reference = both(image(3, shape), torch.zeros(shape), noise=0.01)
    assert torch.equal(ours, reference)
    torch.manual_seed(7)
    assert torch.equal(ours, 0.01 * torch.randn(3, *shape))


def test_one_removed_pixel_is_its_neighbours_weighted_mean_by_hand():
    """Direct neighbours weigh 1/6, diagonal ones 1/12; at a corner only the 3 in-image neighbours
    count (weights 5/12 in all), at an edge the 5 (2/3)."""
    img = image(2, (5, 6))
    v = img.double()
    inner = (v[:, 1, 2] + v[:, 3, 2] + v[:, 2, 1] + v[:, 2, 3]) / 6 \
        + (v[:, 1, 1] + v[:, 1, 3] + v[:, 3, 1] + v[:, 3, 3]) / 12
    corner = ((v[:, 0, 4] + v[:, 1, 5]) / 6 + v[:, 1, 4] / 12) / (5 / 12)
    edge = ((v[:, 0, 1] + v[:, 0, 3] + v[:, 1, 2]) / 6 + (v[:, 1, 1] + v[:, 1, 3]) / 12) / (2 / 3)
    for cell, expected in (((2, 2), inner), ((0, 5), corner), ((0, 2), edge)):
        out = noisy_linear_imputation(img, removed_mask((5, 6), cell), noise=0.0)
        np.testing.assert_allclose(out[:, cell[0], cell[1]].numpy(), expected.numpy(), rtol=1e-6)


def test_two_removed_neighbours_solve_their_equations_together_by_hand():
    """Columns 0-2 of a 5 x 6 image are 1, columns 3-5 are 0, and the 2-pixel gap (2, 2)-(2, 3) is
    removed. (2, 2) has kept neighbours of value 1 weighing 3/6 + 2/12 and the unknown (2, 3) at 1/6:
    x = 2/3 + x'/6; (2, 3) has 2/12 of value 1 and x at 1/6: x' = 1/6 + x/6. So x = 5/7, x' = 2/7."""
    img = torch.ones(1, 5, 6)
    img[:, :, 3:] = 0
    out = noisy_linear_imputation(img, removed_mask((5, 6), (2, slice(2, 4))), noise=0.0)
    np.testing.assert_allclose(out[0, 2, 2:4].numpy(), [5 / 7, 2 / 7], rtol=1e-6)


def test_the_noise_has_the_given_scale():
    img, mask = image(3, (40, 40)), random_mask((40, 40), 0.5, seed=5)
    torch.manual_seed(0)
    noisy = noisy_linear_imputation(img, mask, noise=0.5)
    clean = noisy_linear_imputation(img, mask, noise=0.0)
    assert (noisy - clean)[:, mask == 0].std().item() == pytest.approx(0.5, rel=0.05)
    assert torch.equal((noisy - clean)[:, mask == 1], torch.zeros(3, int(mask.sum())))
