"""A MobileNetV2-like model built in code (inverted residuals: 1x1 expand, 3x3 depthwise, 1x1 project,
residual adds, ReLU6, batch norm), in PyTorch and in Keras. Random weights with non-trivial batch-norm
statistics: conversion and quantization tests need its structure, not its accuracy."""

from __future__ import annotations

from typing import Any

# (expansion, output channels, repeats, first stride): a shortened MobileNetV2 schedule
BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 2), (6, 96, 1, 1))
STEM, HEAD = 16, 256


def mobilenet_like(classes: int = 10, seed: int = 0) -> Any:
    """PyTorch, NCHW input ``[1, 3, H, W]``; eval mode."""
    import torch
    from torch import nn

    def conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1, act: bool = True) -> list[Any]:
        layers: list[Any] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                             nn.BatchNorm2d(cout)]
        return [*layers, nn.ReLU6()] if act else layers

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
            super().__init__()
            hidden = cin * expand
            layers = [] if expand == 1 else conv_bn(cin, hidden, 1, 1)
            layers += conv_bn(hidden, hidden, 3, stride, groups=hidden)
            layers += conv_bn(hidden, cout, 1, 1, act=False)
            self.block = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.block(x) if self.residual else self.block(x)

    torch.manual_seed(seed)
    layers: list[Any] = conv_bn(3, STEM, 3, 2)
    cin = STEM
    for expand, cout, repeats, stride in BLOCKS:
        for i in range(repeats):
            layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
            cin = cout
    layers += [*conv_bn(cin, HEAD, 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(HEAD, classes)]
    model = nn.Sequential(*layers)
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
            module.weight.data.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)
    return model.eval()


def keras_mobilenet_like(size: int = 32, classes: int = 10, seed: int = 0) -> Any:
    """Keras, NHWC input ``[1, size, size, 3]``, same schedule as :func:`mobilenet_like`."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(seed)
    layers = keras.layers

    def conv_bn(x: Any, cout: int, kernel: int, stride: int, depthwise: bool = False, act: bool = True) -> Any:
        if depthwise:
            x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False)(x)
        else:
            x = layers.Conv2D(cout, kernel, stride, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU(6.0)(x) if act else x

    inputs = keras.Input((size, size, 3), batch_size=1, name="image")
    x = conv_bn(inputs, STEM, 3, 2)
    cin = STEM
    for expand, cout, repeats, stride in BLOCKS:
        for i in range(repeats):
            s = stride if i == 0 else 1
            y = x if expand == 1 else conv_bn(x, cin * expand, 1, 1)
            y = conv_bn(y, 0, 3, s, depthwise=True)
            y = conv_bn(y, cout, 1, 1, act=False)
            x = layers.Add()([x, y]) if s == 1 and cin == cout else y
            cin = cout
    x = conv_bn(x, HEAD, 1, 1)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(classes)(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            n = len(layer.get_weights()[0])
            layer.set_weights([rng.random(n) * 0.5 + 0.75, rng.normal(size=n) * 0.1,
                               rng.normal(size=n) * 0.1, rng.random(n) * 0.5 + 0.75])
    return model
