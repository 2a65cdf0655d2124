"""The generic implementations return the kernels' result NamedTuples (xpnet/backends/kernels.py),
with ``saved`` a NamedTuple of named fields; the Functions pass what they computed (the convolution's
output size) to whichever implementation runs; batch norm returns its batch statistics, and the
running buffers follow from them bit for bit in every autodiff mode."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
import xpnet.nn.functional as F
from xpnet.autodiff import jvp
from xpnet.backends import kernels
from xpnet.nn.functional import conv as conv_mod
from xpnet.nn.functional import norm as norm_mod
from xpnet.nn.functional import pool as pool_mod
from nn_cases import tensor, to_np


def _is_named(t):
    return isinstance(t, tuple) and hasattr(t, "_fields")


def test_generic_results_are_the_kernel_named_tuples(backend, rng):
    x = backend.asarray(rng.standard_normal((2, 4, 7, 6)))
    w = backend.asarray(rng.standard_normal((6, 2, 3, 3)))
    b = backend.asarray(rng.standard_normal(6))
    stride, padding, dilation, groups = (2, 1), ((1, 0), (1, 1)), (1, 2), 2
    out_hw = conv_mod.conv2d_output_size((7, 6), (3, 3), stride, padding, dilation)
    fwd = conv_mod.conv2d_forward_generic(x, w, b, stride, padding, dilation, groups, out_hw)
    assert type(fwd) is kernels.ConvForward and type(fwd.saved) is conv_mod.GenericConvSaved
    assert tuple(fwd.y.shape) == (2, 6) + out_hw and fwd.saved.out_hw == out_hw and fwd.saved.groups == 2
    grads = conv_mod.conv2d_backward_generic(backend.asarray(rng.standard_normal(fwd.y.shape)), fwd.saved,
                                             (True, True, True))
    assert type(grads) is kernels.ConvGrads and tuple(grads.dw.shape) == (6, 2, 3, 3)

    pad = ((1, 1), (0, 0))
    out_hw = conv_mod.conv2d_output_size((7, 6), (3, 2), (2, 2), pad, (1, 1))
    mp = pool_mod.max_pool2d_forward_generic(x, (3, 2), (2, 2), pad, (1, 1), out_hw)
    ap = pool_mod.avg_pool2d_forward_generic(x, (3, 2), (2, 2), pad, out_hw, True)
    assert type(mp) is type(ap) is kernels.PoolForward
    assert type(mp.saved) is pool_mod.GenericMaxPoolSaved and type(ap.saved) is pool_mod.GenericAvgPoolSaved
    assert tuple(mp.saved.arg.shape) == (2, 4) + out_hw and ap.saved.out_hw == out_hw

    for training in (True, False):
        mean = None if training else backend.asarray(rng.standard_normal(4))
        var = None if training else backend.asarray(rng.random(4) + 0.5)
        bn = norm_mod.batch_norm_forward_generic(x, w[:4, 0, 0, 0], None, mean, var, training, 1e-5)
        assert type(bn) is kernels.BatchNormForward and type(bn.saved) is norm_mod.GenericBatchNormSaved
        assert (bn.batch_mean is None) == (not training) and bn.saved.training is training
        bg = norm_mod.batch_norm_backward_generic(x, bn.saved, (True, True, False))
        assert type(bg) is kernels.BatchNormGrads and bg.dbeta is None

    lrn = norm_mod.lrn_forward_generic(x, 3, 1e-2, 0.75, 2.0)
    assert type(lrn) is kernels.LocalResponseNormForward
    assert type(lrn.saved) is norm_mod.GenericLocalResponseNormSaved and (lrn.saved.lo, lrn.saved.hi) == (1, 1)


def test_every_implementation_in_use_returns_named_results(backend, rng):
    # whichever runs here, kernel or generic, through the Functions: the same NamedTuple types
    seen = {}

    def spy(name, fn):
        def wrapped(*args):
            out = fn(*args)
            seen[name] = out
            return out
        return wrapped

    runs = {
        kernels.CONV2D_FORWARD: conv_mod.conv2d_forward_generic,
        kernels.MAX_POOL2D_FORWARD: pool_mod.max_pool2d_forward_generic,
        kernels.AVG_POOL2D_FORWARD: pool_mod.avg_pool2d_forward_generic,
        kernels.BATCH_NORM_FORWARD: norm_mod.batch_norm_forward_generic,
        kernels.LOCAL_RESPONSE_NORM_FORWARD: norm_mod.lrn_forward_generic,
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, generic in runs.items():
            mp.setitem(kernels._REGISTRY, (backend.name, name), spy(name, backend.kernel(name) or generic))
        relu = backend.kernel(kernels.RELU_FORWARD)
        if relu is not None:
            mp.setitem(kernels._REGISTRY, (backend.name, kernels.RELU_FORWARD), spy(kernels.RELU_FORWARD, relu))
        x = tensor(backend, rng.standard_normal((2, 3, 8, 8)))
        w = tensor(backend, rng.standard_normal((4, 3, 3, 3)))
        y = F.conv2d(x, w, padding=1)
        y = F.batch_norm(y, None, None, training=True)
        y = F.local_response_norm(F.relu(y), 3)
        y = F.max_pool2d(y, 2) + F.avg_pool2d(y, 2)
        y.sum().backward()
    expected = {kernels.CONV2D_FORWARD: kernels.ConvForward, kernels.MAX_POOL2D_FORWARD: kernels.PoolForward,
                kernels.AVG_POOL2D_FORWARD: kernels.PoolForward, kernels.BATCH_NORM_FORWARD: kernels.BatchNormForward,
                kernels.LOCAL_RESPONSE_NORM_FORWARD: kernels.LocalResponseNormForward,
                kernels.RELU_FORWARD: kernels.ReLUForward}
    for name, result in seen.items():
        assert type(result) is expected[name], name
        assert _is_named(result.saved) or not isinstance(result.saved, tuple), name
    assert len(seen) >= len(runs)


def test_convolution_passes_its_output_size_to_the_implementation(backend, rng, monkeypatch):
    calls = []
    run = backend.kernel(kernels.CONV2D_FORWARD) or conv_mod.conv2d_forward_generic

    def recording(x, w, b, stride, padding, dilation, groups, out_hw):
        calls.append(out_hw)
        return run(x, w, b, stride, padding, dilation, groups, out_hw)

    monkeypatch.setitem(kernels._REGISTRY, (backend.name, kernels.CONV2D_FORWARD), recording)
    x = tensor(backend, rng.standard_normal((1, 2, 9, 7)))
    w = tensor(backend, rng.standard_normal((3, 2, 3, 2)))
    y = F.conv2d(x, w, stride=(2, 1), padding=(1, 0), dilation=(2, 1))
    assert calls == [tuple(y.shape[-2:])] == [(4, 6)]
    # the unbatched form and the jvp rule get it too
    y, t = jvp(lambda a: F.conv2d(a, w, stride=(2, 1), padding=(1, 0), dilation=(2, 1)), (x[0],),
               (tensor(backend, rng.standard_normal((2, 9, 7)), requires_grad=False),))
    assert calls[1:] == [(4, 6), (4, 6)] and tuple(t.shape) == (3, 4, 6)


def test_batch_norm_function_returns_its_statistics_in_training_mode(backend, rng):
    x = tensor(backend, rng.standard_normal((5, 3, 2)))
    y, mean, var = norm_mod.BatchNormFunction.apply(x, None, None, training=True)
    xh = to_np(x)
    np.testing.assert_allclose(to_np(mean), xh.mean(axis=(0, 2)), rtol=1e-12)
    np.testing.assert_allclose(to_np(var), xh.var(axis=(0, 2)), rtol=1e-12)
    y.sum().backward()  # the statistics' (absent) gradients are ignored
    assert x.grad.shape == x.shape
    rm, rv = backend.asarray(np.zeros(3)), backend.asarray(np.ones(3))
    out = norm_mod.BatchNormFunction.apply(x, None, None, mean=rm, var=rv, training=False)
    assert isinstance(out, xpnet.Tensor)  # eval mode: y alone


@pytest.mark.parametrize("mode", ["grad", "no_grad", "no input requires grad", "forward mode"])
def test_running_statistics_follow_the_returned_batch_statistics_bit_for_bit(backend, rng, mode):
    x_host = rng.standard_normal((6, 3, 4)) * 3 + 1
    momentum, m = 0.3, 6 * 4
    rm0, rv0 = rng.standard_normal(3), rng.random(3) + 0.5
    running_mean, running_var = xpnet.tensor(rm0.copy()), xpnet.tensor(rv0.copy())
    views = (running_mean.data, running_var.data)
    grads = mode != "no input requires grad"
    weight = tensor(backend, rng.standard_normal(3), requires_grad=grads)
    bias = tensor(backend, rng.standard_normal(3), requires_grad=grads)
    x = tensor(backend, x_host, requires_grad=grads)

    def f(a):
        return F.batch_norm(a, running_mean, running_var, weight, bias, training=True, momentum=momentum)

    if mode == "no_grad":
        with xpnet.no_grad():
            f(x)
    elif mode == "forward mode":
        jvp(f, (x,), (tensor(backend, rng.standard_normal(x_host.shape), requires_grad=False),))
    else:
        f(x)
    # the statistics the implementation in use computes, and today's update formula on them
    run = backend.kernel(kernels.BATCH_NORM_FORWARD) or norm_mod.batch_norm_forward_generic
    ref = run(backend.asarray(x_host), weight.data, bias.data, None, None, True, 1e-5)
    want_mean = (1.0 - momentum) * backend.asarray(rm0) + momentum * ref.batch_mean
    want_var = (1.0 - momentum) * backend.asarray(rv0) + momentum * (ref.batch_var * (m / (m - 1)))
    np.testing.assert_array_equal(to_np(running_mean), to_np(want_mean))
    np.testing.assert_array_equal(to_np(running_var), to_np(want_var))
    assert running_mean.data is views[0] and running_var.data is views[1]  # updated in place
