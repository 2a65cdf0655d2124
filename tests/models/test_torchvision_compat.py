"""torchvision-compatible VGG and AlexNet: the same state_dict keys and shapes as torchvision's
models (built here in plain torch.nn, following torchvision's layout, since torchvision itself is
not a dependency), the same outputs with weights moved through a .pth file, checked weight loading
(``models.create(..., weights=PATH)``) and ``xpnet convert-weights``.
"""

import sys

import numpy as np
import pytest

import xpnet
from xpnet import models
from xpnet.cli import main as cli_main
from xpnet.nn import StateDictError

from conftest import to_np

torch = pytest.importorskip("torch")
tnn = torch.nn

CFGS = {  # torchvision.models.vgg.cfgs A, B, D, E
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}
VGG_NAMES = [n + bn for n in CFGS for bn in ("", "_bn")]
# parameter counts of torchvision's models with 1000 classes
TORCHVISION_PARAMS = {"vgg11": 132_863_336, "vgg11_bn": 132_868_840, "vgg16_bn": 138_365_992,
                      "alexnet_owt": 61_100_840}


class TorchVGG(tnn.Module):
    def __init__(self, name, num_classes=1000):
        super().__init__()
        layers, channels = [], 3
        for v in CFGS[name.replace("_bn", "")]:
            if v == "M":
                layers.append(tnn.MaxPool2d(kernel_size=2, stride=2))
                continue
            layers.append(tnn.Conv2d(channels, v, kernel_size=3, padding=1))
            if name.endswith("_bn"):
                layers.append(tnn.BatchNorm2d(v))
            layers.append(tnn.ReLU(inplace=True))
            channels = v
        self.features = tnn.Sequential(*layers)
        self.avgpool = tnn.AdaptiveAvgPool2d((7, 7))
        self.classifier = tnn.Sequential(
            tnn.Linear(512 * 7 * 7, 4096), tnn.ReLU(True), tnn.Dropout(p=0.5),
            tnn.Linear(4096, 4096), tnn.ReLU(True), tnn.Dropout(p=0.5),
            tnn.Linear(4096, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class TorchAlexNet(tnn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.features = tnn.Sequential(
            tnn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), tnn.ReLU(inplace=True),
            tnn.MaxPool2d(kernel_size=3, stride=2),
            tnn.Conv2d(64, 192, kernel_size=5, padding=2), tnn.ReLU(inplace=True),
            tnn.MaxPool2d(kernel_size=3, stride=2),
            tnn.Conv2d(192, 384, kernel_size=3, padding=1), tnn.ReLU(inplace=True),
            tnn.Conv2d(384, 256, kernel_size=3, padding=1), tnn.ReLU(inplace=True),
            tnn.Conv2d(256, 256, kernel_size=3, padding=1), tnn.ReLU(inplace=True),
            tnn.MaxPool2d(kernel_size=3, stride=2))
        self.avgpool = tnn.AdaptiveAvgPool2d((6, 6))
        self.classifier = tnn.Sequential(
            tnn.Dropout(p=0.5), tnn.Linear(256 * 6 * 6, 4096), tnn.ReLU(inplace=True),
            tnn.Dropout(p=0.5), tnn.Linear(4096, 4096), tnn.ReLU(inplace=True),
            tnn.Linear(4096, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def torch_model(name, num_classes=1000, device=None):
    with torch.device(device or "cpu"):
        return TorchAlexNet(num_classes) if name == "alexnet_owt" else TorchVGG(name, num_classes)


def _shapes(state):
    return [(k, tuple(v.shape)) for k, v in state.items()]


@pytest.fixture
def float64_default():
    old = xpnet.get_default_dtype()
    xpnet.set_default_dtype(xpnet.float64)
    try:
        yield
    finally:
        xpnet.set_default_dtype(old)


# ------------------------------------------------------------------------------------------ layout
@pytest.mark.parametrize("name", VGG_NAMES)
def test_vgg_features_have_torchvision_keys_and_shapes(name):
    # the 32-pixel (CIFAR) form is cheap to build and has the same ``features`` as the 224 one
    ours = models.create(name, num_classes=10, input_size=32, init_weights=False).state_dict()
    theirs = torch_model(name, device="meta").state_dict()
    assert _shapes({k: v for k, v in ours.items() if k.startswith("features.")}) == \
        _shapes({k: v for k, v in theirs.items() if k.startswith("features.")})
    assert [k for k in ours if not k.startswith("features.")] == ["classifier.0.weight", "classifier.0.bias",
                                                                   "classifier.3.weight", "classifier.3.bias"]


@pytest.mark.parametrize("name", ["vgg11", "vgg16_bn", "alexnet_owt"])
def test_imagenet_models_have_torchvision_keys_and_shapes(name):
    model = models.create(name, num_classes=1000, input_size=224, init_weights=False) if name != "alexnet_owt" \
        else models.create(name, num_classes=1000)
    ours, theirs = model.state_dict(), torch_model(name, device="meta").state_dict()
    assert _shapes(ours) == _shapes(theirs)  # same keys, same order, same shapes
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[name]
    assert type(model.avgpool).__name__ == "AdaptiveAvgPool2d"
    assert tuple(model.avgpool.output_size) == ((6, 6) if name == "alexnet_owt" else (7, 7))


def test_torchvision_style_constructors():
    model = models.alexnet_owt(num_classes=7)
    assert model.model_name == "alexnet_owt" and model.model_options["input_size"] == 224
    assert tuple(model.classifier[6].weight.shape) == (7, 4096)
    assert models.vgg11 is not None and callable(models.vgg19_bn)


def test_vgg_init_follows_torchvision():
    xpnet.manual_seed(0)
    model = models.create("vgg11_bn", num_classes=10, input_size=32)
    conv = to_np(model.features[0].weight)
    assert abs(conv.std() - np.sqrt(2.0 / (64 * 9))) < 0.1 * np.sqrt(2.0 / (64 * 9))  # kaiming, fan_out
    assert not to_np(model.features[0].bias).any()
    assert (to_np(model.features[1].weight) == 1).all()
    assert abs(to_np(model.classifier[0].weight).std() - 0.01) < 0.001


def test_cifar_variants_keep_their_heads(backend):
    model = models.create("vgg16", num_classes=10)  # default input_size: 32
    assert sum(p.numel() for p in model.parameters()) == 14_714_688 + 512 * 512 + 512 + 512 * 10 + 10
    model.eval()
    with xpnet.no_grad():
        assert model(xpnet.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="too small"):
        models.create("alexnet_owt", input_size=32)


# ------------------------------------------------------------------------------------------ outputs
@pytest.mark.parametrize("name", ["vgg11_bn", "alexnet_owt"])
def test_outputs_equal_torch_with_weights_from_a_pth_file(name, tmp_path, float64_default):
    torch.manual_seed(0)
    reference = torch_model(name, num_classes=10).double()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode uses them
        for m in reference.modules():
            if isinstance(m, tnn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    reference.eval()
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        expected = reference(x).numpy()
    del reference

    model = models.create(name, num_classes=10, input_size=64, weights=path)
    model.eval()
    with xpnet.no_grad():
        got = to_np(model(xpnet.tensor(x.numpy())))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------------------ weights=PATH
def _small(name="vgg11_bn", **kw):
    return models.create(name, num_classes=kw.pop("num_classes", 10), input_size=32, **kw)


def test_weights_from_xpnet_save_and_plain_safetensors(tmp_path):
    from safetensors.numpy import save_file

    source = _small()
    xpnet.save(source.state_dict(), tmp_path / "w.safetensors")
    save_file({k: to_np(v) for k, v in source.state_dict().items()}, str(tmp_path / "plain.safetensors"))
    xpnet.save({"epoch": 3, "state_dict": source.state_dict()}, tmp_path / "wrapped.safetensors")
    for file in ("w.safetensors", "plain.safetensors", "wrapped.safetensors"):
        loaded = _small(weights=tmp_path / file)
        for (k, a), b in zip(source.state_dict().items(), loaded.state_dict().values()):
            np.testing.assert_array_equal(to_np(a), to_np(b), err_msg=f"{file}: {k}")


def test_weights_from_an_xpnet_checkpoint(tmp_path):
    from xpnet.train import save_checkpoint

    source = _small("vgg11")
    save_checkpoint(tmp_path / "ck.safetensors", source, epoch=1)
    loaded = _small("vgg11", weights=tmp_path / "ck.safetensors")
    np.testing.assert_array_equal(to_np(loaded.features[0].weight), to_np(source.features[0].weight))


def test_misfitting_weights_list_the_keys_and_load_nothing(tmp_path):
    from xpnet.models.weights import load_weights

    xpnet.save(_small("vgg11_bn").state_dict(), tmp_path / "vgg11_bn.safetensors")
    with pytest.raises(StateDictError) as info:
        _small("vgg13_bn", weights=tmp_path / "vgg11_bn.safetensors")
    text = str(info.value)
    assert "vgg11_bn.safetensors" in text and "'vgg13_bn'" in text and "Nothing was loaded" in text
    assert "missing key(s)" in text and "unexpected key(s)" in text and "shape mismatch(es)" in text
    assert "'features.4.weight': file (128, 64, 3, 3) vs model (64,)" in text and "torchvision" not in text
    assert "..." in text  # more than a few of each: the first ones only
    target = _small("vgg11_bn", num_classes=5)
    before = {k: to_np(v).copy() for k, v in target.state_dict().items()}
    with pytest.raises(StateDictError, match=r"'classifier.3.weight': file \(10, 512\) vs model \(5, 512\)"):
        load_weights(target, tmp_path / "vgg11_bn.safetensors")
    for k, v in target.state_dict().items():
        np.testing.assert_array_equal(to_np(v), before[k])
    xpnet.save({"classifier.6.weight": np.zeros((1000, 4096), np.float32)}, tmp_path / "head.safetensors")
    with pytest.raises(StateDictError, match="num_classes=1000, input_size=224"):
        models.create("alexnet_owt", num_classes=10, weights=tmp_path / "head.safetensors")
    xpnet.save([1, 2], tmp_path / "list.safetensors")
    with pytest.raises(StateDictError, match="not a state dict"):
        _small(weights=tmp_path / "list.safetensors")


def test_torchvision_style_state_dict_with_module_prefix(tmp_path):
    source = _small("vgg11")
    torch.save({"model": {"module." + k: torch.from_numpy(to_np(v)) for k, v in source.state_dict().items()}},
               tmp_path / "ddp.pth")
    loaded = _small("vgg11", weights=tmp_path / "ddp.pth")
    np.testing.assert_array_equal(to_np(loaded.classifier[3].bias), to_np(source.classifier[3].bias))


# ------------------------------------------------------------------------------------------ convert-weights
def test_convert_weights_cli(tmp_path, capsys, monkeypatch):
    torch.manual_seed(1)
    reference = torch_model("alexnet_owt", num_classes=3)
    torch.save(reference.state_dict(), tmp_path / "alex.pth")
    out = tmp_path / "alex.safetensors"
    assert cli_main(["convert-weights", str(tmp_path / "alex.pth"), str(out)]) == 0
    assert "16 tensors" in capsys.readouterr().out

    monkeypatch.setitem(sys.modules, "torch", None)  # the converted file needs no torch
    model = models.create("alexnet_owt", num_classes=3, weights=out)
    np.testing.assert_array_equal(to_np(model.features[0].weight), reference.features[0].weight.detach().numpy())

    # usage errors exit 2 with one line
    assert cli_main(["convert-weights", str(tmp_path / "alex.pth"), str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert cli_main(["convert-weights", str(tmp_path / "alex.pth"), str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "pip install torch" in err and "Traceback" not in err
    monkeypatch.undo()
    assert cli_main(["convert-weights", str(out), str(tmp_path / "again.safetensors")]) == 2
    assert "not a PyTorch file" in capsys.readouterr().err
    assert cli_main(["convert-weights", str(tmp_path / "missing.pth"), str(tmp_path / "x.safetensors")]) == 2
    assert "missing.pth" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli_main(["convert-weights", str(tmp_path / "alex.pth")])
    assert info.value.code == 2
