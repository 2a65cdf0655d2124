import math

import numpy as np
import pytest

import xpnet
from xpnet import amp, nn, optim

from conftest import to_np


def _mlp():
    xpnet.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 5))


def _batch(backend):
    gen = np.random.default_rng(0)
    return xpnet.tensor(gen.standard_normal((16, 8)).astype(np.float32)), xpnet.tensor(gen.integers(0, 5, 16))


def test_autocast_runs_gemms_low_and_losses_in_float32():
    model = _mlp()
    x, y = _batch(None)
    ref_out = model(x)
    ref_loss = nn.CrossEntropyLoss()(ref_out, y)
    ref_loss.backward()
    ref_grads = [to_np(p.grad).copy() for p in model.parameters()]
    model.zero_grad()
    with amp.autocast("float16"):
        out = model(x)
        loss = nn.CrossEntropyLoss()(out, y)
    assert out.dtype == xpnet.float16
    assert loss.dtype == xpnet.float32
    loss.backward()
    for p, ref in zip(model.parameters(), ref_grads):
        assert p.dtype == xpnet.float32 and p.grad.dtype == xpnet.float32  # float32 master weights
        np.testing.assert_allclose(to_np(p.grad), ref, rtol=2e-2, atol=2e-3)
    assert float(loss.item()) == pytest.approx(float(ref_loss.item()), rel=5e-3)


def test_autocast_conv_and_batchnorm_match_float32():
    xpnet.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 3))
    x = xpnet.randn(4, 3, 8, 8)
    model.eval()
    ref = to_np(model(x))
    with amp.autocast("float16"):
        out = model(x)
    assert out.dtype == xpnet.float16
    np.testing.assert_allclose(to_np(out).astype(np.float32), ref, rtol=2e-2, atol=2e-2)


def test_autocast_disabled_and_nesting_and_outside_is_plain():
    model = _mlp()
    x, _ = _batch(None)
    with amp.autocast("float16"):
        with amp.autocast("float16", enabled=False):
            assert model(x).dtype == xpnet.float32
        assert amp.autocast_dtype() == "float16"
    assert amp.autocast_dtype() is None
    with pytest.raises(TypeError, match="does not match weight dtype"):
        model(x.astype("float64"))  # outside autocast the strict dtype check stands


def test_autocast_refuses_a_backend_without_the_dtype():
    with xpnet.use_backend("array_api_strict"):
        with pytest.raises(TypeError, match="no float16"):
            with amp.autocast("float16"):
                pass
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        amp.autocast("float64")


def _scaled_step(scaler, model, opt, x, y, poison=False):
    loss = nn.CrossEntropyLoss()(model(x), y)
    opt.zero_grad()
    scaler.scale(loss).backward()
    if poison:
        p = next(iter(model.parameters()))
        p.grad.data = p.grad.data * float("inf")
    before = [to_np(p).copy() for p in model.parameters()]
    scaler.step(opt)
    scaler.update()
    return before


def test_grad_scaler_unscales_and_skips_overflow(backend):
    model = _mlp()
    x, y = _batch(backend)
    opt = optim.SGD(model.parameters(), lr=0.1)
    scaler = amp.GradScaler(init_scale=1024.0, growth_interval=2)
    # one plain step for reference gradients
    ref = _mlp()
    loss = nn.CrossEntropyLoss()(ref(x), y)
    loss.backward()
    expected = [to_np(p) - 0.1 * to_np(p.grad) for p in ref.parameters()]
    _scaled_step(scaler, model, opt, x, y)
    for p, e in zip(model.parameters(), expected):
        np.testing.assert_allclose(to_np(p), e, rtol=1e-5, atol=1e-6)
    before = _scaled_step(scaler, model, opt, x, y, poison=True)
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(to_np(p), b)  # the overflowing step was skipped
    assert scaler.get_scale() == 512.0


def test_grad_scaler_scale_sequence_matches_torch():
    torch = pytest.importorskip("torch")
    pattern = [False, False, True, False, False, False, True, True, False, False]
    ours = amp.GradScaler(init_scale=256.0, growth_factor=2.0, backoff_factor=0.5, growth_interval=2)
    theirs = torch.amp.GradScaler("cpu", init_scale=256.0, growth_factor=2.0, backoff_factor=0.5, growth_interval=2)
    model = _mlp()
    x, y = _batch(None)
    opt = optim.SGD(model.parameters(), lr=0.0)
    tw = torch.nn.Parameter(torch.ones(3))
    topt = torch.optim.SGD([tw], lr=0.0)
    for poison in pattern:
        _scaled_step(ours, model, opt, x, y, poison=poison)
        topt.zero_grad()
        theirs.scale((tw * 2).sum()).backward()
        if poison:
            tw.grad.mul_(math.inf)
        theirs.step(topt)
        theirs.update()
        assert ours.get_scale() == theirs.get_scale()


def test_grad_scaler_state_round_trip():
    a = amp.GradScaler(init_scale=8.0, growth_interval=3)
    a._growth_tracker = 2
    b = amp.GradScaler()
    b.load_state_dict(a.state_dict())
    assert b.get_scale() == 8.0 and b.state_dict() == a.state_dict()
