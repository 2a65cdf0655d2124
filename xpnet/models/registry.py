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


def create(name: str, num_classes: int = 10, in_channels: int = 3, input_size: int | None = None,
           weights=None, **kwargs):
    """Build a registered model. ``input_size`` is the side of the square input image (the
    model's default when None); it decides e.g. the 224 vs 32-pixel VGG variant.

    ``weights``: a file to load into the new model (``xpnet.save`` output, a plain safetensors
    state dict, or, with torch installed, a PyTorch/torchvision ``.pth``); every key and shape is
    checked first, and a misfit raises StateDictError listing the missing, unexpected and
    mismatched keys (see ``xpnet.models.weights.load_weights``)."""
    builder = MODELS[_check(name)]
    if input_size is None:
        input_size = _DEFAULT_SIZES[name]
    accepted = inspect.signature(builder).parameters
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise TypeError(f"model {name!r} takes no option(s) {', '.join(unknown)}")
    build_options = dict(kwargs)
    if weights is not None and "init_weights" in accepted:
        build_options.setdefault("init_weights", False)  # the file replaces every value: skip the random draws
    model = builder(num_classes=num_classes, in_channels=in_channels, input_size=input_size, **build_options)
    model.model_name = name
    model.model_options = {"num_classes": num_classes, "in_channels": in_channels, "input_size": input_size,
                           **kwargs}
    model.input_shape = (in_channels, input_size, input_size)
    if weights is not None:
        from .weights import load_weights

        load_weights(model, weights)
    return model


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1
