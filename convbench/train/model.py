"""Models: a sequence of layers, and the two built-in architectures."""
from __future__ import annotations

import numpy as np

from convbench.train.layers import (
    Conv2d,
    Dropout,
    Flatten,
    GlobalAvgPool,
    Linear,
    MaxPool2d,
    ReLU,
    ResidualBlock,
)

MODELS = ("small-cnn", "resnet-mini")


class Sequential:
    def __init__(self, layers, in_shape):
        self.layers = list(layers)
        self.in_shape = tuple(in_shape)
        shape = self.in_shape
        for i, layer in enumerate(self.layers):      # shapes checked before any data flows
            try:
                shape = layer.out_shape(shape)
            except ValueError as e:
                raise ValueError(f"layer {i} ({layer!r}) does not fit input shape {shape}: "
                                 f"{e}") from None
            if any(s < 1 for s in shape):
                raise ValueError(f"layer {i} ({layer!r}) turns shape {self.in_shape} into {shape}")
        self.out_shape = shape
        if self.layers:
            self.layers[0].need_input_grad = False   # nothing upstream needs the input gradient

    @property
    def params(self):
        return [p for layer in self.layers for p in layer.params]

    @property
    def grads(self):
        return [g for layer in self.layers for g in layer.grads]

    def forward(self, x, training=False):
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def backward(self, dy):
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy

    def backends(self) -> list[tuple[str, dict]]:
        return [(f"{i}: {layer!r}", layer.backends()) for i, layer in enumerate(self.layers)
                if layer.backends()]

    def __repr__(self):
        return "\n".join(f"{i}: {layer!r}" for i, layer in enumerate(self.layers))


def build_model(name: str, in_shape, n_classes: int, backend: str = "auto",
                init: str = "he_uniform", dropout: float = 0.25, seed: int = 0) -> Sequential:
    """small-cnn: conv32-conv32-pool-conv64-pool-dropout-linear; resnet-mini: conv16, a residual
    block, a strided residual block to 32 channels, global average pooling, linear."""
    rng = np.random.default_rng(seed)
    C = in_shape[0]
    if name == "small-cnn":
        layers = [Conv2d(C, 32, 3, 1, 1, backend, init, rng), ReLU(),
                  Conv2d(32, 32, 3, 1, 1, backend, init, rng), ReLU(),
                  MaxPool2d(2, backend=backend),
                  Conv2d(32, 64, 3, 1, 1, backend, init, rng), ReLU(),
                  MaxPool2d(2, backend=backend),
                  Flatten(), Dropout(dropout, rng)]
        shape = Sequential(layers, in_shape).out_shape
        layers.append(Linear(shape[0], n_classes, "xavier_uniform", rng))
    elif name == "resnet-mini":
        layers = [Conv2d(C, 16, 3, 1, 1, backend, init, rng), ReLU(),
                  ResidualBlock(16, 16, 1, backend, init, rng),
                  ResidualBlock(16, 32, 2, backend, init, rng),
                  GlobalAvgPool(), Dropout(dropout, rng),
                  Linear(32, n_classes, "xavier_uniform", rng)]
    else:
        raise ValueError(f"model={name!r} must be one of {', '.join(MODELS)}")
    return Sequential(layers, in_shape)
