"""The seed's SimpleCNN, made valid at any input size."""

from __future__ import annotations

from torch import nn


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2))


class SimpleCNN(nn.Module):
    """Conv 32-64-128-256 (ReLU, max-pool each), flatten, Linear 512, ReLU, Dropout, Linear.

    The seed flattens a 14×14 map, which ties it to 224 px input; here an adaptive average pool
    brings any feature map to ``pooled_size``×``pooled_size`` first (an identity when the input is
    16 × pooled_size, e.g. 224 px with the seed's 14).
    """

    def __init__(self, num_classes: int, dropout: float = 0.5, pooled_size: int = 14):
        super().__init__()
        self.features = nn.Sequential(_conv_block(3, 32), _conv_block(32, 64),
                                      _conv_block(64, 128), _conv_block(128, 256))
        self.pool = nn.AdaptiveAvgPool2d(pooled_size)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(256 * pooled_size * pooled_size, 512),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(512, num_classes),
        )
        # He initialisation, as torchvision's VGG: PyTorch's default init shrinks activations at each
        # of these BatchNorm-free layers, and the network then sits at chance for hundreds of steps.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)))
