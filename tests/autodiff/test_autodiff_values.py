"""Forward values of every operation case against a NumPy reference, plus the numerics that
gradients cannot see: stability at extreme inputs, dtypes, ties, PyTorch conventions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import xpnet

from autodiff_cases import CASES, MASK


def _softmax(a, axis):
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _split_mix(x):
    return np.concatenate([x[:, 0:2] * 1.0, x[:, 2:4] * 2.0, x[:, 4:5] * 3.0], axis=1)


def _pad_crop(a):
    out = np.zeros((3, 5))  # rows: +1 top, -1 bottom; columns: -1 left, +2 right
    out[1:3, 0:3] = a[0:2, 1:4]
    return out


REFERENCE = {
    "add": lambda a, b: a + b, "add_3d": lambda a, b: a + b, "add_scalar": lambda a: 2.5 + a,
    "sub": lambda a, b: a - b, "rsub": lambda a: 1.0 - a, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b, "div_bcast_left": lambda a, b: a / b, "rdiv": lambda a: 2.0 / a,
    "pow_scalar": lambda a: a ** 2.5, "pow_int": lambda a: a ** 3, "pow_square": lambda a: a ** 2,
    "pow_tensor": lambda a, b: a ** b, "rpow": lambda b: 2.0 ** b, "neg": lambda a: -a,
    "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "abs": np.abs, "tanh": np.tanh,
    "sigmoid": lambda a: 1 / (1 + np.exp(-4 * a)), "relu": lambda a: np.maximum(a, 0),
    "square": np.square, "maximum": np.maximum, "maximum_scalar": lambda a: np.maximum(a, 0.1),
    "minimum": np.minimum, "clip": lambda a: np.clip(a, -0.5, 0.5),
    "clip_min_only": lambda a: np.maximum(a, 0.5),
    "clamp_tensor_bounds": lambda a, lo: np.minimum(np.maximum(a, lo), 1.0),
    "where": lambda a, b: np.where(MASK, a, b), "where_scalar": lambda a: np.where(MASK, a, 0.5),
    "astype_same": lambda a: a * 2.0,
    "sum_all": np.sum, "sum_axis": lambda a: a.sum(axis=1),
    "sum_dims_keepdim": lambda a: a.sum(axis=(0, 2), keepdims=True),
    "mean": lambda a: a.mean(axis=-1, keepdims=True), "mean_all": np.mean,
    "max_all": np.max, "max_axis": lambda a: a.max(axis=0),
    "min_axis": lambda a: a.min(axis=1, keepdims=True),
    "var": lambda a: a.var(axis=0, ddof=1), "var_biased": lambda a: a.var(axis=1),
    "var_all": lambda a: a.var(ddof=1), "std": lambda a: a.std(axis=(0, 1), keepdims=True, ddof=1),
    "std_correction0": np.std,
    "logsumexp": lambda a: np.log(np.exp(a).sum(axis=1)), "logsumexp_all": lambda a: np.log(np.exp(a).sum()),
    "softmax": lambda a: _softmax(a, -1), "softmax_dim0": lambda a: _softmax(a, 0),
    "log_softmax": lambda a: np.log(_softmax(a, 1)),
    "matmul": np.matmul, "matmul_batched": np.matmul, "matmul_bcast_batch": np.matmul,
    "matmul_bcast_rhs": np.matmul, "matmul_vec_mat": np.matmul, "matmul_mat_vec": np.matmul,
    "matmul_vec_vec": np.matmul, "matmul_vec_batch": np.matmul, "matmul_batch_vec": np.matmul,
    "reshape": lambda a: a.reshape(4, -1), "reshape_tuple": lambda a: a.reshape(6, 2) * 2.0,
    "view": lambda a: a.reshape(-1), "transpose": lambda a: a.transpose(2, 1, 0),
    "T_reverse": lambda a: a.transpose(2, 1, 0), "mT": lambda a: a.transpose(0, 2, 1),
    "permute": lambda a: a.transpose(2, 0, 1), "flatten": lambda a: a.reshape(2, 12),
    "flatten_mid": lambda a: a.reshape(2, 12, 2), "squeeze": lambda a: a.reshape(3, 2),
    "squeeze_dim": lambda a: a.reshape(3, 2), "unsqueeze": lambda a: a[..., None],
    "expand": lambda a: np.broadcast_to(a, (2, 3, 1)),
    "broadcast_to": lambda a: np.broadcast_to(a, (4, 3, 2)),
    "concat": lambda a, b, c: np.concatenate([a, b, c], axis=1),
    "cat_dim0": lambda a, b: np.concatenate([a, b], axis=0),
    "stack": lambda a, b: np.stack([a, b], axis=1),
    "split_chunks": _split_mix,
    "split_sections": lambda x: np.concatenate([x[3:4], x[0:1] * 2.0, np.exp(x[1:3])], axis=0),
    "split_unused_pieces": lambda x: x[:, 3:6] * 3.0,
    "pad": lambda a: np.pad(a, ((0, 0), (1, 2))),
    "pad_2d_value": lambda a: np.pad(a, ((0, 0), (2, 1), (1, 0)), constant_values=1.5),
    "pad_crop": _pad_crop,
    "index_int": lambda a: a[1], "index_negative_int": lambda a: a[-1, 2],
    "index_slices": lambda a: a[1:, ::2], "index_negative_step": lambda a: a[::-1, 1:3],
    "index_none_ellipsis": lambda a: a[None, ..., 1], "index_list_repeats": lambda a: a[[2, 0, 2, 2]],
    "index_list_axis1": lambda a: a[:, [3, 3, 0]],
    "index_tensor_2d": lambda a: a[np.array([[2, 0], [2, 2]])],
    "index_int_then_array": lambda a: a[0, :, [1, 1, 0]],
    "index_mask": lambda a: a[:, np.array([True, False, True, True])],
    "take_raw_negative": lambda x: np.take(x, [3, 1, 3, -1], axis=1),
    "mlp_block": lambda x, w, b: np.tanh(x @ w + b).sum(axis=1),
}


def test_every_case_has_a_reference():
    assert sorted(REFERENCE) == sorted(c.name for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_forward_value_matches_numpy(backend, case):
    host = case.inputs()
    out = case.fn(*[xpnet.tensor(a) for a in host])
    expected = np.asarray(REFERENCE[case.name](*host))
    got = out.numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert xpnet.float64 == out.dtype


def test_stable_at_extreme_inputs(backend):
    x = xpnet.tensor(np.array([[1000.0, -1000.0, 0.0], [-800.0, -800.0, -801.0]]), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow in the unused branch of sigmoid, no inf - inf
        s = x.sigmoid()
        sm = x.softmax(axis=1)
        lsm = x.log_softmax(axis=1)
        lse = xpnet.logsumexp(x, axis=1)
        (s.sum() + sm[:, 0].sum() + lsm[:, 1].sum() + lse.sum()).backward()
    np.testing.assert_allclose(s.numpy()[0], [1.0, 0.0, 0.5])
    np.testing.assert_allclose(sm.numpy()[0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(lsm.numpy()[0], [0.0, -2000.0, -1000.0])
    row = np.array([-800.0, -800.0, -801.0])
    np.testing.assert_allclose(lse.numpy(), [1000.0, -800.0 + np.log(2 + np.exp(-1.0))], rtol=1e-14)
    np.testing.assert_allclose(lsm.numpy()[1], row - (-800.0 + np.log(2 + np.exp(-1.0))), atol=1e-12)
    assert np.isfinite(x.grad.numpy()).all()
    # logsumexp of an all -inf slice is -inf, not NaN
    neg = xpnet.tensor(np.array([[-np.inf, -np.inf], [0.0, 0.0]]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # log(0) = -inf is the right answer here
        value = xpnet.logsumexp(neg, axis=1).numpy()
    np.testing.assert_allclose(value, [-np.inf, np.log(2.0)])


def test_float32_stays_float32(backend):
    rng = np.random.default_rng(2)
    x = xpnet.tensor(rng.standard_normal((3, 4)).astype(np.float32), requires_grad=True)
    w = xpnet.tensor(rng.standard_normal((4, 2)).astype(np.float32), requires_grad=True)
    y = ((x @ w).relu() * 2.0 + 1).log_softmax(axis=1) - x.var(axis=1, keepdims=True).sqrt()[:, :1]
    loss = (y ** 2).mean() + xpnet.pad(x, (1, 1)).std() + xpnet.where(x > 0, x, 0.5).sum()
    loss.backward()
    for t in (y, loss, x.grad, w.grad):
        assert xpnet.float32 == t.dtype, t


def test_numpy_scalars_act_as_python_numbers(backend):
    x = xpnet.tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    y = x * np.float64(2.0) + np.int64(1) - xpnet.tensor(np.ones(3, dtype=np.float32)).sum() / np.float32(3.0)
    assert xpnet.float32 == y.dtype  # no upcast to float64, and no backend mismatch
    np.testing.assert_allclose(y.numpy(), [2.0, 2.0, 2.0])


def test_mixed_precision_gradients_take_each_inputs_dtype(backend):
    a = xpnet.tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    b = xpnet.tensor(np.full(3, 2.0), requires_grad=True)
    (a * b).sum().backward()
    assert xpnet.float32 == a.grad.dtype and xpnet.float64 == b.grad.dtype
    c = a.astype(xpnet.float64)
    (c * 3.0).sum().backward()
    assert xpnet.float32 == a.grad.dtype
    np.testing.assert_allclose(a.grad.numpy(), [5.0, 5.0, 5.0])


def test_ties_split_the_gradient(backend):
    x = xpnet.tensor(np.array([[1.0, 3.0, 3.0], [2.0, 0.0, 2.0]]), requires_grad=True)
    x.max(axis=1).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0.0, 0.5, 0.5], [0.5, 0.0, 0.5]])
    a = xpnet.tensor(np.array([1.0, 2.0]), requires_grad=True)
    b = xpnet.tensor(np.array([1.0, 3.0]), requires_grad=True)
    xpnet.maximum(a, b).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [0.5, 0.0])
    np.testing.assert_allclose(b.grad.numpy(), [0.5, 1.0])


def test_kinks_follow_pytorch(backend):
    x = xpnet.tensor(np.array([-1.0, 0.0, 2.0]), requires_grad=True)
    (x.relu() + abs(x) + x.clip(0.0, 2.0)).sum().backward()
    # relu'(0) = 0, |x|'(0) = 0, clamp passes the gradient at both bounds
    np.testing.assert_allclose(x.grad.numpy(), [0.0 - 1.0 + 0.0, 0.0 + 0.0 + 1.0, 1.0 + 1.0 + 1.0])
    z = xpnet.tensor(np.array([0.0, 2.0]), requires_grad=True)
    (z ** 2.0).sum().backward()
    (z ** 0).sum().backward()  # d/dz z^0 = 0 everywhere, even at 0 (no 0 * inf)
    np.testing.assert_allclose(z.grad.numpy(), [0.0, 4.0])


def test_var_std_conventions(backend):
    host = np.array([[1.0, 2.0, 4.0], [0.0, -1.0, 5.0]])
    x = xpnet.tensor(host)
    np.testing.assert_allclose(x.var().item(), host.var(ddof=1))
    np.testing.assert_allclose(x.var(correction=0).item(), host.var())
    np.testing.assert_allclose(xpnet.std(x, dim=1, unbiased=False).numpy(), host.std(axis=1))
    np.testing.assert_allclose(xpnet.std(x, axis=0, unbiased=True).numpy(), host.std(axis=0, ddof=1))
    with pytest.raises(TypeError, match="var: got both correction=0 and unbiased=True"):
        xpnet.var(x, correction=0, unbiased=True)


def test_comparisons_and_argmax_carry_no_graph(backend):
    x = xpnet.tensor(np.array([[1.0, 3.0], [2.0, -1.0]]), requires_grad=True)
    for cmp, expected in ((x > 1.5, [[False, True], [True, False]]), (x <= 2.0, [[True, False], [True, True]]),
                          (x == x, [[True, True], [True, True]]), (x != 3.0, [[True, False], [True, True]]),
                          (2.0 < x, [[False, True], [False, False]]), (xpnet.ge(x, 2.0), [[False, True], [True, False]]),
                          (xpnet.lt(1.5, x), [[False, True], [True, False]])):
        assert cmp.grad_fn is None and not cmp.requires_grad
        assert xpnet.bool == cmp.dtype
        np.testing.assert_array_equal(cmp.numpy(), expected)
    for result, expected in ((x.argmax(), 1), (x.argmax(dim=1), [1, 0]), (xpnet.argmin(x, axis=0), [0, 1]),
                             (x.argmax(axis=1, keepdims=True), [[1], [0]])):
        assert not result.requires_grad and xpnet.int64 == result.dtype
        np.testing.assert_array_equal(result.numpy(), expected)
    i = x.astype(xpnet.int64)
    assert not i.requires_grad and xpnet.int64 == i.dtype


def test_indexing_shapes_follow_numpy(backend):
    host = np.arange(120.0).reshape(2, 3, 4, 5)
    x = xpnet.tensor(host)
    idx = np.array([0, 1, 1, -1])
    ours = xpnet.tensor(idx)
    for index in ((0, slice(None), idx), (slice(None), 0, idx), (0, idx), (slice(None), idx, 0),
                  (None, slice(None), idx), (0, None, idx), (Ellipsis, idx), (idx, Ellipsis, 1),
                  (slice(None), slice(1, None), None, idx)):
        mine = tuple(ours if isinstance(i, np.ndarray) else i for i in index)
        np.testing.assert_array_equal(x[mine].numpy(), host[index])
    if xpnet.get_backend().name != "numpy":
        with pytest.raises(xpnet.DeviceMismatchError, match="getitem"):
            x[idx]  # a host NumPy index for a Tensor of another backend is not moved silently
    with pytest.raises(TypeError, match="only one integer-array index"):
        x[ours, ours]
    with pytest.raises(IndexError, match="too many indices"):
        x[0, 0, 0, 0, 0]


def test_split_and_shape_helpers(backend):
    x = xpnet.tensor(np.arange(10.0))
    pieces = x.split(4)
    assert isinstance(pieces, tuple) and [p.shape for p in pieces] == [(4,), (4,), (2,)]
    assert [p.shape for p in xpnet.split(x, [3, 7])] == [(3,), (7,)]
    with pytest.raises(ValueError, match=r"split: sizes \[3, 3\] add up to 6"):
        xpnet.split(x, [3, 3])
    y = xpnet.tensor(np.zeros((2, 3, 4)))
    assert y.T.shape == (4, 3, 2) and y.transpose(0, 1).shape == (3, 2, 4)
    assert y.squeeze(0).shape == (2, 3, 4)  # PyTorch: squeezing a non-1 axis is a no-op
    assert y.unsqueeze(0).shape == (1, 2, 3, 4) and y.unsqueeze(-1).shape == (2, 3, 4, 1)
    assert y.reshape((4, 6)).shape == (4, 6) and y.view(-1, 4).shape == (6, 4)
    assert y.flatten().shape == (24,) and y.permute((2, 0, 1)).shape == (4, 2, 3)
    assert xpnet.pad(y, (1, 1), "constant", 2.0).numpy()[0, 0, 0] == 2.0
    with pytest.raises(ValueError, match="pad: expected an even number of pads"):
        xpnet.pad(y, (1, 1, 1))
    with pytest.raises(ValueError, match="concat: tensor 1 has shape"):
        xpnet.concat([y, xpnet.tensor(np.zeros((2, 2, 2)))], axis=1)


def test_unbroadcast_helper(backend):
    from xpnet.autodiff import unbroadcast

    g = xpnet.get_backend().asarray(np.ones((2, 3, 4)))
    assert tuple(unbroadcast(g, (3, 1)).shape) == (3, 1)
    np.testing.assert_array_equal(xpnet.to_numpy(unbroadcast(g, (3, 1))), np.full((3, 1), 8.0))
    np.testing.assert_array_equal(xpnet.to_numpy(unbroadcast(g, ())), 24.0)
    assert unbroadcast(g, (2, 3, 4)) is g


def test_counting_and_scalar_branches(backend):
    hits = xpnet.tensor(np.array([True, False, True, True]))
    assert hits.sum().item() == 3 and xpnet.int64 == hits.sum().dtype
    accuracy = hits.mean()
    assert xpnet.get_default_dtype() == accuracy.dtype and accuracy.item() == pytest.approx(0.75)
    picked = xpnet.where(hits, 1.0, -1.0)
    np.testing.assert_array_equal(picked.numpy(), [1.0, -1.0, 1.0, 1.0])
    assert xpnet.get_default_dtype() == picked.dtype
    scalar = xpnet.tensor(np.array(2.5), requires_grad=True)
    total = scalar.sum(dim=0)  # PyTorch accepts dim 0 on a 0-d tensor
    total.backward()
    assert total.item() == 2.5 and scalar.grad.item() == 1.0
    with pytest.raises(TypeError, match="eq: expected at least one Tensor"):
        xpnet.eq(1.0, 2.0)
