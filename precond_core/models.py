"""Small networks for the training benchmarks (32 x 32 inputs with 1 or 3 channels).

- ``MLP(sizes, activation="tanh")``: fully connected layers ``sizes[0] -> ... -> sizes[-1]``.
- ``small_cnn(in_channels=3)``: the talk's small CNN: four 3x3 convolutions with 3 channels (padding 1),
  each followed by tanh and 2x2 max pooling (32 -> 2), then a linear layer to 10 classes; 466 parameters
  for 3-channel input.
- ``large_cnn(in_channels=3)``: 16 3x3 convolutions with 32 channels, tanh after each, 2x2 max pooling
  after every 4th (32 -> 2), a linear layer to 10; 140,906 parameters for 3-channel input.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["MLP", "small_cnn", "large_cnn", "count_parameters"]

_ACT = {"tanh": nn.Tanh, "relu": nn.ReLU}


def _check_channels(in_channels):
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels!r}")


class MLP(nn.Sequential):
    def __init__(self, sizes, activation: str = "tanh"):
        sizes = list(sizes)
        if len(sizes) < 2 or any(not isinstance(s, int) or s < 1 for s in sizes):
            raise ValueError(f"sizes must list at least two positive layer widths, got {sizes!r}")
        if activation not in _ACT:
            raise ValueError(f"activation must be one of {sorted(_ACT)}, got {activation!r}")
        layers: list[nn.Module] = [nn.Flatten()]
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(_ACT[activation]())
        super().__init__(*layers)


def _cnn(in_channels, channels, n_conv, pool_every):
    _check_channels(in_channels)
    layers: list[nn.Module] = []
    c = in_channels
    side = 32
    for i in range(n_conv):
        layers += [nn.Conv2d(c, channels, 3, padding=1), nn.Tanh()]
        c = channels
        if (i + 1) % pool_every == 0:
            layers.append(nn.MaxPool2d(2))
            side //= 2
    layers += [nn.Flatten(), nn.Linear(channels * side * side, 10)]
    return nn.Sequential(*layers)


def small_cnn(in_channels: int = 3) -> nn.Sequential:
    return _cnn(in_channels, 3, 4, 1)


def large_cnn(in_channels: int = 3) -> nn.Sequential:
    return _cnn(in_channels, 32, 16, 4)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
