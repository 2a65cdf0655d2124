"""The cross-entropy kernel family (numpy/loss.py, csrc/loss.c) gives what the generic code of the
CrossEntropyLoss Function (xpnet/nn/functional/loss.py) gives: the loss under every reduction and the
gradient, float32 and float64, (C,), (N, C) and (N, C, d1, d2) inputs, ignored rows (all of them too),
NaN and infinite logits; the Function takes the kernels in the common case only, and still matches
PyTorch; then the NumPy kernels' own contract (the out-of-range row, per-row scales, the library switched
off between forward and backward)."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
import xpnet.nn.functional as F
import kernel_cases
from kernel_cases import NUMPY_IMPLS, with_dtypes
from xpnet.autodiff import gradcheck
from xpnet.autodiff.function import Context
from xpnet.backends import kernels
from xpnet.backends.kernels import CrossEntropyForward
from xpnet.backends.numpy import loss as nloss
from xpnet.backends.numpy import native
from xpnet.nn.functional.loss import CrossEntropyLoss

FORWARD, BACKWARD = CrossEntropyLoss.forward_kernel, CrossEntropyLoss.backward_kernel
REDUCTIONS = ("none", "sum", "mean")

impl = kernel_cases.impl  # the fixture: the implementations (see kernel_cases.py)


def _targets(rng, shape, n_classes):
    return rng.integers(0, n_classes, () if len(shape) == 1 else (shape[0],) + shape[2:])


CASES = ("plain", "1d", "spatial", "ignored", "ignore-a-class", "all-ignored", "nonfinite")


def _case(name, dtype):
    """(logits, targets, ignore_index) of one named case."""
    rng = np.random.default_rng(CASES.index(name))
    shape = {"1d": (7,), "spatial": (3, 4, 2, 3)}.get(name, (9, 5))
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    n_classes = shape[0] if len(shape) == 1 else shape[1]
    t = _targets(rng, shape, n_classes)
    ignore_index = -100
    if name == "ignored":  # some rows ignored by the default index
        t[[1, 4]] = -100
    elif name == "ignore-a-class":  # an ignore_index that is a class: its rows are ignored
        ignore_index = 2
        t[[0, 3, 6]] = 2
    elif name == "all-ignored":
        t[:] = -100
    elif name == "spatial":
        t[0, 1, 2] = -100
    elif name == "nonfinite":  # NaN and infinite logits, in target and other classes, kept and ignored rows
        big = np.finfo(dtype).max
        x[0, 1], x[1, t[1]], x[2, (t[2] + 1) % 5], x[3, 0] = np.nan, -np.inf, -np.inf, np.inf
        x[4, t[4]], x[4, (t[4] + 2) % 5] = big, -big  # x - max overflows to -inf
        x[5, 0], t[5] = np.nan, -100
        x[6, 3], t[6] = -np.inf, -100
    return x, t, ignore_index


def _run(x, t, ignore_index, reduction, g):
    """CrossEntropyLoss's forward and backward, as apply runs them: (loss, dx, whether the kernels ran)."""
    ctx = Context((True, False, False))
    with np.errstate(all="ignore"):  # the NaN cases, and 'mean' over no row
        y = CrossEntropyLoss.forward(ctx, x, t, None, ignore_index=ignore_index, reduction=reduction)
        dx = CrossEntropyLoss.backward(ctx, g)[0]
    return y, dx, ctx.fast


def _generic(x, t, ignore_index, reduction, g):
    """The generic code on NumPy arrays: the kernels taken out of the table (kernel_cases.no_fast_paths
    patches lookup_kernel, which Backend.kernel passes by)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in (FORWARD, BACKWARD):
            patch.delitem(kernels._REGISTRY, ("numpy", name))
        y, dx, fast = _run(x, t, ignore_index, reduction, g)
    assert not fast
    return np.asarray(y), dx


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("impl, dtype", with_dtypes(), indirect=["impl"])
def test_cross_entropy_equals_generic(impl, case, reduction, dtype):
    x, t, ignore_index = _case(case, dtype)
    rows_shape = t.shape if reduction == "none" else ()
    g = np.asarray(np.random.default_rng(3).uniform(0.5, 2.0, rows_shape), dtype=dtype)
    expected_y, expected_dx = _generic(x, t, ignore_index, reduction, g)
    for on in impl.arrays:
        y, dx, fast = _run(on.put(x), on.put(t), ignore_index, reduction, on.put(g))
        assert fast == impl.numpy  # the kernels where the backend registers them, else the generic code
        impl.close(np.asarray(on.host(y)), expected_y, dtype)
        impl.close(dx, expected_dx, dtype)


@pytest.mark.parametrize("impl", NUMPY_IMPLS, indirect=True)
def test_numpy_kernels_contract(impl):
    forward, backward = impl.kernel(FORWARD), impl.kernel(BACKWARD)
    assert (forward, backward) == (nloss.cross_entropy_forward, nloss.cross_entropy_backward)
    for dtype in ("float32", "float64", "float16"):  # float16: the NumPy path, also with the library
        x = np.random.default_rng(0).standard_normal((6, 4)).astype(dtype)
        t = np.array([0, 3, -100, 7, 2, -1])
        out = forward(x, t, -100)
        assert isinstance(out, CrossEntropyForward)
        assert (out.count, out.bad) == (3, 3)  # rows 0, 1, 4 kept; 7 and -1 out of range, 7 first
        log_p = x.astype(np.float64) - np.log(np.exp(x.astype(np.float64)).sum(1, keepdims=True))
        tol = dict(float16=2e-3, float32=2e-6, float64=1e-13)[dtype]
        np.testing.assert_allclose(out.saved, log_p, rtol=tol, atol=tol)
        np.testing.assert_allclose(out.rows, [-log_p[0, 0], -log_p[1, 3], 0, 0, -log_p[4, 2], 0], rtol=tol, atol=tol)
        assert out.rows.dtype == out.saved.dtype == np.dtype(dtype)
        p = np.exp(out.saved.astype(np.float64))
        onehot = np.zeros_like(p)
        onehot[[0, 1, 4], [0, 3, 2]] = 1
        kept = np.isin(np.arange(6), [0, 1, 4])[:, None]
        s = np.arange(1, 13, dtype=dtype)[::2]  # one scale per row, strided
        for scale, per_row in ((np.asarray(0.5, dtype), 0.5), (s, s[:, None].astype(np.float64))):
            dx = backward(scale, out.saved, t, -100)
            assert dx.dtype == np.dtype(dtype) and dx.shape == x.shape
            np.testing.assert_allclose(dx, np.where(kept, per_row * (p - onehot), 0), rtol=tol, atol=tol)
    assert forward(np.zeros((0, 3), "float32"), np.zeros(0, np.int64), -100)[1:3] == (0, -1)  # no rows


@pytest.mark.parametrize("impl", ["numpy-compiled"], indirect=True)
def test_backward_without_the_library_after_the_compiled_forward(impl, monkeypatch):
    x, t, ignore_index = _case("ignored", "float32")
    saved = impl.kernel(FORWARD)(x, t, ignore_index).saved
    g = np.asarray(1.3, "float32")
    compiled = impl.kernel(BACKWARD)(g, saved, t, ignore_index)
    monkeypatch.setitem(native._state, "enabled", False)  # XPNET_NATIVE=0
    impl.close(impl.kernel(BACKWARD)(g, saved, t, ignore_index), compiled, "float32")


@pytest.fixture
def counted(monkeypatch):
    """Counts the calls of the NumPy backend's cross-entropy kernels."""
    calls = {FORWARD: 0, BACKWARD: 0}
    for name in calls:
        registered = kernels.registered()[("numpy", name)]

        def counting(*args, _name=name, _fn=registered):
            calls[_name] += 1
            return _fn(*args)

        monkeypatch.setitem(kernels._REGISTRY, ("numpy", name), counting)
    return calls


def test_the_common_case_takes_the_kernels(backend, counted):
    x = xpnet.tensor(np.random.default_rng(1).standard_normal((64, 10)).astype("float32"), requires_grad=True)
    y = xpnet.tensor(np.random.default_rng(2).integers(0, 10, 64))
    xpnet.nn.CrossEntropyLoss()(x, y).backward()
    taken = 1 if backend.name == "numpy" else 0  # array_api_strict registers no kernel: the generic code
    assert counted == {FORWARD: taken, BACKWARD: taken}
    assert x.grad is not None


@pytest.mark.parametrize("kwargs", [{"weight": [1.0, 2.0, 0.5]}, {"label_smoothing": 0.1}, {"probabilities": True}])
def test_weights_smoothing_and_probabilities_take_the_generic_code(backend, counted, kwargs):
    x = xpnet.tensor(np.random.default_rng(1).standard_normal((4, 3)), requires_grad=True)
    if kwargs.pop("probabilities", False):
        y = xpnet.tensor(np.full((4, 3), 1 / 3))
    else:
        y = xpnet.tensor(np.array([0, 2, 1, 2]))
    F.cross_entropy(x, y, **kwargs).backward()
    assert counted == {FORWARD: 0, BACKWARD: 0}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(6, 5), (2, 4, 3, 2), (5,)])
def test_cross_entropy_matches_torch(backend, reduction, shape):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    x_host = rng.standard_normal(shape).astype("float32")
    t_host = _targets(rng, shape, shape[0] if len(shape) == 1 else shape[1])
    if t_host.ndim:
        t_host.reshape(-1)[1] = -100
    x = xpnet.tensor(x_host, requires_grad=True)
    y = F.cross_entropy(x, xpnet.tensor(t_host), reduction=reduction)
    xt = torch.tensor(x_host, requires_grad=True)
    yt = torch.nn.functional.cross_entropy(xt, torch.from_numpy(t_host), reduction=reduction)
    np.testing.assert_allclose(xpnet.to_numpy(y.data), yt.detach().numpy(), rtol=1e-5, atol=1e-6)
    g_host = rng.uniform(0.5, 2.0, tuple(yt.shape)).astype("float32")
    y.backward(xpnet.tensor(g_host))
    yt.backward(torch.from_numpy(g_host))
    np.testing.assert_allclose(xpnet.to_numpy(x.grad.data), xt.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_through_the_kernels(backend, reduction):
    rng = np.random.default_rng(5)
    t = backend.from_host(np.array([[0, 2], [-100, 1]]))
    check = gradcheck(lambda x: F.cross_entropy(x, t, reduction=reduction),
                      (xpnet.tensor(rng.standard_normal((2, 3, 2)), requires_grad=True),))
    assert check


def test_an_out_of_range_target_is_refused_before_and_inside(backend):
    x = xpnet.tensor(np.zeros((4, 5)), requires_grad=True)
    with pytest.raises(ValueError, match=r"cross_entropy: target class index 7 at position \(2,\) is out of range"):
        F.cross_entropy(x, backend.from_host(np.array([0, 1, 7, 2])))
    if backend.name == "numpy":  # the kernel sees it too, past the checks of cross_entropy
        with pytest.raises(ValueError, match=r"CrossEntropyLoss: target class index 7 of row 2 is out of range"):
            CrossEntropyLoss.apply(x, np.array([0, 1, 7, 2]), None)
