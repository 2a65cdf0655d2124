"""The model registry behind ``xpnet.models.create``."""

from __future__ import annotations

import inspect

MODELS: dict = {}
_DEFAULT_SIZES: dict = {}


def register_model(name: str, default_input_size: int):
    """Register a builder ``fn(num_classes, in_channels, input_size, **kw) -> Module``."""

    def deco(fn):
        MODELS[name] = fn
        _DEFAULT_SIZES[name] = default_input_size
        return fn

    return deco


def list_models():
    return sorted(MODELS)


def default_input_size(name: str) -> int:
    return _DEFAULT_SIZES[_check(name)]


def _check(name):
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return name


def create(name: str, num_classes: int = 10, in_channels: int = 3, input_size: int | None = None, **kwargs):
    """Build a registered model. ``input_size`` is the side of the square input image (the
    model's default when None); it decides e.g. the 224 vs 32-pixel VGG variant."""
    builder = MODELS[_check(name)]
    if input_size is None:
        input_size = _DEFAULT_SIZES[name]
    accepted = inspect.signature(builder).parameters
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise TypeError(f"model {name!r} takes no option(s) {', '.join(unknown)}")
    model = builder(num_classes=num_classes, in_channels=in_channels, input_size=input_size, **kwargs)
    model.model_name = name
    model.model_options = {"num_classes": num_classes, "in_channels": in_channels, "input_size": input_size,
                           **kwargs}
    model.input_shape = (in_channels, input_size, input_size)
    return model


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1
