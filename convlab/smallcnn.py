"""The course's small CNN trained from scratch (notebooks 05-08): conv blocks, global average pooling, a linear head.

One definition serves the augmentation study (:mod:`convlab.augstudy`: 3 blocks, no dropout), the learning curves
of :mod:`convlab.handfeatures` (4 blocks, dropout) and notebook 07's data-loading demo. It is small enough to train
in seconds on a CPU core, and any input of at least ``2 ** (depth - 1)`` px works.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SmallCNN"]


class SmallCNN(nn.Module):
    """``depth`` blocks of 3x3 conv, BatchNorm and ReLU, with channels ``width``, ``2 width``, ``4 width``, ... and
    2x2 max-pooling after every block but the last; then global average pooling, dropout and a linear classifier:
    ``(B, in_channels, H, W)`` float -> ``(B, num_classes)`` logits.

    The defaults (4 blocks of 16-32-64-128 channels, dropout 0.2: about 100k parameters) are notebook 08's network.
    ``in_channels``: 3 for colour photos, 1 for grayscale (Fashion-MNIST).
    ``conv_bias``: give the convolutions a bias. It is redundant before BatchNorm and off by default; the augmentation
    study keeps it because its stored full-scale results were drawn with it (the bias draws shift every later one).
    """

    def __init__(
        self,
        num_classes: int,
        width: int = 16,
        depth: int = 4,
        dropout: float = 0.2,
        conv_bias: bool = False,
        in_channels: int = 3,
    ):
        super().__init__()
        for name, value, low in (
            ("num_classes", num_classes, 1),
            ("width", width, 1),
            ("depth", depth, 1),
            ("in_channels", in_channels, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
        chans = [in_channels] + [width * 2**i for i in range(depth)]
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [
                nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=conv_bias),
                nn.BatchNorm2d(chans[i + 1]),
                nn.ReLU(inplace=True),
            ]
            if i < depth - 1:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
        if dropout > 0:
            head.append(nn.Dropout(dropout))
        self.head = nn.Sequential(*head, nn.Linear(chans[-1], num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
