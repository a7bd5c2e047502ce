"""A small U-Net (Ronneberger et al. 2015) for one-channel radiographs: lungs are large smooth
regions, so a few hundred thousand parameters at 64-128 px are enough, and it trains on a CPU."""

from __future__ import annotations

import torch
from torch import nn

ARCHITECTURE = "unet"


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 convolutions with BatchNorm, which lets a from-scratch net converge in a few epochs."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """``depth`` poolings, ``base_channels`` doubling at each; one logit per pixel. The input side
    must be a multiple of 2**depth."""

    def __init__(self, base_channels: int = 16, depth: int = 3):
        super().__init__()
        widths = [base_channels * 2**i for i in range(depth + 1)]
        pairs = list(zip(widths[:-1], widths[1:], strict=True))  # (a level's width, the one below it)
        self.down = nn.ModuleList([_block(1, widths[0])] + [_block(a, b) for a, b in pairs])
        self.up = nn.ModuleList([nn.ConvTranspose2d(b, a, 2, stride=2) for a, b in pairs])
        self.merge = nn.ModuleList([_block(2 * a, a) for a in widths[:-1]])
        self.head = nn.Conv2d(widths[0], 1, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(reversed(self.up), reversed(self.merge), strict=True):
            x = merge(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)[:, 0]
