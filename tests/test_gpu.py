"""CuPy end-to-end checks; they run only where CuPy sees a CUDA device (``pytest -m gpu``)."""

import numpy as np
import pytest

import xpnet
from xpnet import models, nn, optim

from conftest import to_np

pytestmark = pytest.mark.gpu


def _batch(seed=0):
    gen = np.random.default_rng(seed)
    return gen.standard_normal((8, 3, 32, 32)).astype(np.float32), gen.integers(0, 10, 8)


def test_cupy_training_step_matches_numpy():
    x, y = _batch()
    results = {}
    for name in ("numpy", "cupy"):
        with xpnet.use_backend(name):
            xpnet.manual_seed(0)
            model = models.create("vgg11_bn", num_classes=10, in_channels=3, input_size=32)
            if name == "cupy":
                model.load_state_dict(results["numpy_init"])
            else:
                results["numpy_init"] = {k: to_np(v).copy() for k, v in model.state_dict().items()}
            opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            model.eval()  # no dropout: identical arithmetic on both backends
            for _ in range(2):
                loss = nn.CrossEntropyLoss()(model(xpnet.tensor(x)), xpnet.tensor(y))
                opt.zero_grad()
                loss.backward()
                opt.step()
            results[name] = (float(loss.item()), {k: to_np(v) for k, v in model.state_dict().items()})
    assert results["cupy"][0] == pytest.approx(results["numpy"][0], rel=1e-3)
    for k, v in results["numpy"][1].items():
        np.testing.assert_allclose(results["cupy"][1][k], v, rtol=1e-2, atol=1e-3, err_msg=k)


def test_model_and_optimizer_move_to_gpu_and_back():
    model = models.create("lenet5", num_classes=10, in_channels=1, input_size=28)
    opt = optim.Adam(model.parameters(), lr=1e-3)
    x = xpnet.randn(4, 1, 28, 28)
    loss = model(x).sum()
    loss.backward()
    opt.step()
    model = xpnet.to_device(model, "cupy", 0)
    opt = xpnet.to_device(opt, "cupy", 0)
    with xpnet.use_backend("cupy", 0):
        loss = model(xpnet.randn(4, 1, 28, 28)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(xpnet.backend_of(p.data).name == "cupy" for p in model.parameters())
    with pytest.raises(xpnet.DeviceMismatchError, match="cupy:0"):
        model(xpnet.randn(4, 1, 28, 28, backend="numpy"))
