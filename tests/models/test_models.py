import numpy as np
import pytest

import xpnet
from xpnet import models

from conftest import to_np


def _params(model):
    return sum(p.numel() for p in model.parameters())


def test_registry_lists_every_family():
    names = set(models.list_models())
    for name in ("mlp", "lenet5", "alexnet", "zfnet", "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn",
                 "vgg16_bn", "vgg19_bn", "vgg_small"):
        assert name in names
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        models.create("resnet")


@pytest.mark.parametrize("name,kwargs,out", [
    ("mlp", dict(in_channels=1, input_size=28), (2, 10)),
    ("lenet5", dict(in_channels=1, input_size=28), (2, 10)),
    ("lenet5", dict(in_channels=3, input_size=32), (2, 10)),
    ("vgg_small", dict(in_channels=1, input_size=28), (2, 10)),
    ("alexnet", dict(in_channels=3, input_size=32), (2, 10)),
    ("vgg11_bn", dict(in_channels=3, input_size=32), (2, 10)),
])
def test_forward_shapes(backend, name, kwargs, out):
    model = models.create(name, num_classes=10, **kwargs)
    model.eval()
    x = xpnet.randn(2, kwargs["in_channels"], kwargs["input_size"], kwargs["input_size"])
    with xpnet.no_grad():
        y = model(x)
    assert y.shape == out
    assert np.all(np.isfinite(to_np(y)))


def test_lenet5_feature_map_sizes():
    model = models.create("lenet5", num_classes=10, in_channels=1, input_size=28)
    text = model.summary((1, 28, 28))
    for shape in ("6, 28, 28", "6, 14, 14", "16, 10, 10", "16, 5, 5"):
        assert shape in text, text
    assert _params(model) == 61706  # 156 + 2416 + 48120 + 10164 + 850


def test_alexnet_227_dimensions_from_the_notes():
    model = models.create("alexnet", num_classes=1000, in_channels=3, input_size=227)
    assert _params(model) == 62_378_344  # single-tower AlexNet
    text = model.summary((3, 227, 227))
    for shape in ("96, 55, 55", "96, 27, 27", "256, 27, 27", "256, 13, 13", "384, 13, 13", "256, 6, 6"):
        assert shape in text, text


def test_vgg_parameter_counts():
    # VGG-16 at 224 with 1000 classes has the paper's 138,357,544 parameters
    assert _params(models.create("vgg16", num_classes=1000, input_size=224)) == 138_357_544
    # the 32-pixel head: five pools leave 1x1x512
    small = models.create("vgg16", num_classes=10, input_size=32)
    assert _params(small) == 14_714_688 + 512 * 512 + 512 + 512 * 10 + 10


def test_zfnet_dimensions():
    model = models.create("zfnet", num_classes=1000, in_channels=3, input_size=224)
    text = model.summary((3, 224, 224))
    for shape in ("96, 110, 110", "96, 55, 55", "256, 26, 26", "256, 13, 13", "256, 6, 6"):
        assert shape in text, text


def test_too_small_input_is_a_clear_error():
    with pytest.raises(ValueError, match="too small"):
        models.create("vgg16", input_size=16)


def test_create_records_options():
    model = models.create("mlp", num_classes=3, in_channels=1, input_size=8, hidden=(16,))
    assert model.model_name == "mlp"
    assert model.model_options == {"num_classes": 3, "in_channels": 1, "input_size": 8, "hidden": (16,)}
    with pytest.raises(TypeError, match="takes no option"):
        models.create("mlp", widths=3)
