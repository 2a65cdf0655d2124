"""The torch Tensor surface of everyday PyTorch code (issue #14): metadata, comparisons, casts,
rearrangements, selections, reductions with ``dim=``, copies, random and in-place updates, on
every backend against NumPy and closed forms, and against torch CPU where installed. Gradients:
test_tensor_surface_grad.py."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
from xpnet.autodiff import Tensor

H = np.array([[0.5, -1.0, 3.0, 2.0], [4.0, 0.0, -2.5, 1.0], [1.5, 1.5, -3.0, 0.25]])


def t(a, **kw):
    return xpnet.tensor(np.asarray(a), **kw)


def npy(x):
    return xpnet.to_numpy(x)


# -- metadata -------------------------------------------------------------------------------------


def test_size_is_torchs_method(backend):
    x = xpnet.zeros(2, 3, 4)
    assert x.size() == (2, 3, 4) == x.shape
    assert (x.size(0), x.size(1), x.size(-1), x.size(-3)) == (2, 3, 4, 2)
    assert x.numel() == x.nelement() == 24
    assert x.dim() == x.ndimension() == x.ndim == 3
    with pytest.raises(IndexError):
        x.size(3)
    s = xpnet.tensor(2.0)
    assert s.size() == () and s.numel() == 1 and s.dim() == 0
    assert xpnet.zeros(0, 5).numel() == 0
    batch = xpnet.zeros(16, 10)
    total = 0
    total += batch.size(0)  # the idiom of every evaluation loop
    assert total == 16


def test_element_size_and_kind(backend):
    assert xpnet.zeros(2).element_size() == 4
    assert xpnet.zeros(2, dtype=xpnet.float64).element_size() == 8
    assert xpnet.zeros(2, dtype=xpnet.int64).element_size() == 8
    assert xpnet.zeros(2, dtype=xpnet.bool).element_size() == 1
    assert xpnet.zeros(2).is_floating_point() and not xpnet.zeros(2, dtype=xpnet.int64).is_floating_point()
    x = xpnet.zeros(2, 3)
    assert x.contiguous() is x and x.is_contiguous()


# -- comparisons ----------------------------------------------------------------------------------

COMPARISONS = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal, "gt": np.greater,
               "ge": np.greater_equal}


@pytest.mark.parametrize("name", sorted(COMPARISONS))
def test_comparisons_as_methods_and_functions(backend, name):
    a = t(H, requires_grad=True)
    b = t(np.array([0.5, 0.0, 3.0, 1.0]))
    for other, host in ((b, npy(b)), (1.5, 1.5)):
        for got in (getattr(a, name)(other), getattr(xpnet, name)(a, other)):
            assert isinstance(got, Tensor) and xpnet.bool == got.dtype
            assert not got.requires_grad and got.grad_fn is None
            np.testing.assert_array_equal(npy(got), COMPARISONS[name](H, host))
    aliases = {"ne": "not_equal", "lt": "less", "le": "less_equal", "gt": "greater", "ge": "greater_equal"}
    if name in aliases:
        np.testing.assert_array_equal(npy(getattr(a, aliases[name])(b)), COMPARISONS[name](H, npy(b)))


def test_equal_allclose_isclose(backend):
    a = t(np.array([1.0, np.inf, np.nan, -2.0]))
    b = t(np.array([1.0 + 1e-9, np.inf, np.nan, -2.1]))
    for kwargs in ({}, {"equal_nan": True}, {"rtol": 0.1}, {"atol": 0.2, "rtol": 0.0}):
        np.testing.assert_array_equal(npy(a.isclose(b, **kwargs)), np.isclose(npy(a), npy(b), **kwargs))
        np.testing.assert_array_equal(npy(xpnet.isclose(a, b, **kwargs)), np.isclose(npy(a), npy(b), **kwargs))
    assert a.allclose(a, equal_nan=True) is True
    assert xpnet.allclose(a, b) is False and xpnet.allclose(a[:2], b[:2]) is True
    x = t(H)
    assert x.equal(t(H.copy())) is True and xpnet.equal(x, t(H)) is True
    assert x.equal(x + 1e-12) is False
    assert x.equal(x[:2]) is False  # another shape: False, not an error
    assert a.equal(a) is False  # NaN equals nothing, as torch.equal
    i = t(np.array([1, 2, 3]))
    assert i.isclose(t(np.array([1, 2, 4]))).tolist() == [True, True, False]


def test_isnan_isfinite_isinf(backend):
    host = np.array([1.0, np.nan, np.inf, -np.inf, 0.0])
    x = t(host)
    for name in ("isnan", "isfinite", "isinf"):
        want = getattr(np, name)(host)
        np.testing.assert_array_equal(npy(getattr(x, name)()), want)
        np.testing.assert_array_equal(npy(getattr(xpnet, name)(x)), want)
    assert xpnet.isnan(x).any().item() is True and xpnet.isfinite(x).all().item() is False


def test_all_any(backend):
    b = t(np.array([[True, False, True], [True, True, True]]))
    assert b.all().item() is False and b.any().item() is True
    np.testing.assert_array_equal(npy(b.all(dim=1)), [False, True])
    np.testing.assert_array_equal(npy(xpnet.any(b, 0)), [True, True, True])
    assert b.all(1, keepdim=True).shape == (2, 1)
    assert xpnet.all(b, dim=(0, 1)).item() is False
    n = t(np.array([[1.0, 0.0], [2.0, 3.0]]))  # numbers count as True when nonzero
    np.testing.assert_array_equal(npy(n.all(dim=1)), [False, True])
    np.testing.assert_array_equal(npy(n.any(dim=0)), [True, True])


# -- casts ----------------------------------------------------------------------------------------


def test_casts_and_type_names(backend):
    x = t(np.array([1.7, -2.2, 0.0]))
    cases = {"long": ("int64", "LongTensor"), "int": ("int32", "IntTensor"), "short": ("int16", "ShortTensor"),
             "char": ("int8", "CharTensor"), "bool": ("bool", "BoolTensor"), "float": ("float32", "FloatTensor"),
             "double": ("float64", "DoubleTensor")}
    for method, (dtype, type_name) in cases.items():
        y = getattr(x, method)()
        assert getattr(xpnet, "bool_" if dtype == "bool" else dtype) == y.dtype, method
        assert y.type() == f"xpnet.{type_name}"
        np.testing.assert_array_equal(npy(y), np.asarray([1.7, -2.2, 0.0]).astype(dtype))
    assert x.double() is x  # already that type: torch returns the Tensor itself
    assert t(np.array([1, 2])).byte().type() == "xpnet.ByteTensor"
    assert xpnet.float32 == x.type(xpnet.float32).dtype
    assert xpnet.int64 == x.type("torch.LongTensor").dtype  # a ported string works too
    assert x.type("xpnet.FloatTensor").type() == "xpnet.FloatTensor"
    assert xpnet.int64 == x.type_as(xpnet.zeros(1, dtype=xpnet.int64)).dtype
    with pytest.raises(ValueError, match="unknown tensor type"):
        x.type("xpnet.ComplexTensor")
    for method, dtype in (("half", "float16"), ("bfloat16", "bfloat16")):
        try:  # where the namespace has no such dtype it says so
            assert getattr(xpnet, dtype) == getattr(x, method)().dtype
        except TypeError as exc:
            assert dtype in str(exc)


def test_float_casts_are_differentiable(backend):
    x = t(np.array([1.0, 2.0]), requires_grad=True)
    (x.float() * 3.0).sum().backward()
    assert xpnet.float64 == x.grad.dtype
    np.testing.assert_array_equal(npy(x.grad), [3.0, 3.0])
    assert not x.long().requires_grad


# -- rearrangements -------------------------------------------------------------------------------


def test_view_as_reshape_as_expand_as(backend):
    x = t(np.arange(6.0))
    assert x.view_as(xpnet.zeros(2, 3)).shape == (2, 3)
    assert x.reshape_as(xpnet.zeros(3, 2)).shape == (3, 2)
    c = t(np.array([[1.0], [2.0]]))
    np.testing.assert_array_equal(npy(c.expand_as(xpnet.zeros(2, 3))), [[1.0] * 3, [2.0] * 3])


def test_rearrangements_against_numpy(backend):
    x = t(H)
    np.testing.assert_array_equal(npy(x.repeat(2, 3)), np.tile(H, (2, 3)))
    np.testing.assert_array_equal(npy(x.repeat(2, 1, 1)), np.tile(H, (2, 1, 1)))
    np.testing.assert_array_equal(npy(x.tile((2,))), np.tile(H, (1, 2)))
    np.testing.assert_array_equal(npy(xpnet.tile(x, (2, 1, 2))), np.tile(H, (2, 1, 2)))
    np.testing.assert_array_equal(npy(x.flip(0)), H[::-1])
    np.testing.assert_array_equal(npy(x.flip(0, 1)), H[::-1, ::-1])
    np.testing.assert_array_equal(npy(xpnet.flip(x, [1])), H[:, ::-1])
    np.testing.assert_array_equal(npy(x.roll(3)), np.roll(H, 3))
    np.testing.assert_array_equal(npy(x.roll(-1, 1)), np.roll(H, -1, 1))
    np.testing.assert_array_equal(npy(xpnet.roll(x, (1, 2), (0, 1))), np.roll(H, (1, 2), (0, 1)))
    np.testing.assert_array_equal(npy(x.narrow(1, 1, 2)), H[:, 1:3])
    np.testing.assert_array_equal(npy(xpnet.narrow(x, 0, -2, 2)), H[1:])
    with pytest.raises(ValueError):
        x.narrow(1, 3, 2)
    pieces = t(np.arange(5.0)).chunk(3)
    assert [p.shape for p in pieces] == [(2,), (2,), (1,)]  # ceil(5 / 3) = 2 each, as torch
    assert len(t(np.arange(6.0)).chunk(4)) == 3  # fewer chunks than asked, as torch
    assert [p.shape for p in xpnet.chunk(x, 2, dim=1)] == [(3, 2), (3, 2)]
    rows = x.unbind()
    assert len(rows) == 3 and all(r.shape == (4,) for r in rows)
    np.testing.assert_array_equal(npy(xpnet.unbind(x, 1)[2]), H[:, 2])
    c = x.clone()
    assert c is not x and c.data is not x.data
    np.testing.assert_array_equal(npy(c), H)


def test_repeat_needs_a_count_per_dimension(backend):
    with pytest.raises(ValueError, match="at least one per dimension"):
        t(H).repeat(2)


# -- gather, scatter, index_select, masked_fill, where ---------------------------------------------


def test_gather_scatter_against_numpy(backend):
    idx = np.array([[3, 0, 3], [1, 1, 2], [0, 2, 2]])
    x = t(H)
    np.testing.assert_array_equal(npy(x.gather(1, t(idx))), np.take_along_axis(H, idx, 1))
    small = np.array([[2, 0, 1]])  # the index may be shorter than the input along other axes
    np.testing.assert_array_equal(npy(xpnet.gather(x, 0, t(small))), np.take_along_axis(H[:, :3], small, 0))
    src = np.arange(9.0).reshape(3, 3)
    want = H.copy()
    for i in range(3):
        np.add.at(want[i], idx[i], src[i])  # repeated positions accumulate
    np.testing.assert_array_equal(npy(x.scatter_add(1, t(idx), t(src))), want)
    one_hot = xpnet.zeros(3, 4).scatter(1, t(np.array([[2], [0], [3]])), 1.0)
    np.testing.assert_array_equal(npy(one_hot), np.eye(4)[[2, 0, 3]])
    written = x.scatter(0, t(np.array([[1, 0, 2, 0]])), t(np.full((1, 4), 9.0)))
    want = H.copy()
    want[[1, 0, 2, 0], [0, 1, 2, 3]] = 9.0
    np.testing.assert_array_equal(npy(written), want)
    counts = xpnet.zeros(4, dtype=xpnet.int64).scatter_add(0, t(np.array([1, 3, 1, 1])), xpnet.ones(4, dtype=xpnet.int64))
    assert counts.tolist() == [0, 3, 0, 1]


def test_gather_index_errors(backend):
    x = t(H)
    with pytest.raises(RuntimeError, match="out of range"):
        x.gather(1, t(np.array([[4]])))
    with pytest.raises(RuntimeError, match="out of range"):
        x.gather(1, t(np.array([[-1]])))
    with pytest.raises(ValueError, match="dimensions"):
        x.gather(1, t(np.array([1, 2])))
    with pytest.raises(TypeError, match="integer index"):
        x.gather(1, t(np.array([[1.0]])))
    with pytest.raises(TypeError, match="dtype"):
        x.scatter_add(1, t(np.array([[1]])), t(np.array([[1]])))


def test_index_select_masked_fill_where(backend):
    x = t(H)
    np.testing.assert_array_equal(npy(x.index_select(0, t(np.array([2, 0, 2])))), H[[2, 0, 2]])
    np.testing.assert_array_equal(npy(xpnet.index_select(x, 1, [3, 1])), H[:, [3, 1]])
    with pytest.raises(RuntimeError, match="out of range"):
        x.index_select(0, t(np.array([3])))
    mask = H > 1.0
    np.testing.assert_array_equal(npy(x.masked_fill(t(mask), -1.0)), np.where(mask, -1.0, H))
    np.testing.assert_array_equal(npy(xpnet.masked_fill(x, t(mask[0]), t(np.array(7.0)))), np.where(mask[0], 7.0, H))
    ints = t(np.array([1, 2, 3]))
    assert ints.masked_fill(t(np.array([True, False, True])), 9.7).tolist() == [9, 2, 9]  # truncated, as torch
    with pytest.raises(TypeError, match="boolean"):
        x.masked_fill(t(H), 0.0)
    with pytest.raises(ValueError, match="0-dimensional"):
        x.masked_fill(t(mask), t(np.ones(4)))
    np.testing.assert_array_equal(npy(x.where(t(mask), 0.0)), np.where(mask, H, 0.0))
    np.testing.assert_array_equal(npy(xpnet.where(t(mask), x, -x)), np.where(mask, H, -H))
    rows, cols = xpnet.where(t(mask))  # one argument: the coordinates, as torch.where(cond)
    np.testing.assert_array_equal(npy(rows), np.nonzero(mask)[0])
    np.testing.assert_array_equal(npy(cols), np.nonzero(mask)[1])


# -- selections and reductions with dim= ----------------------------------------------------------

TIES = np.array([[3.0, 1.0, 3.0, 2.0], [0.0, 5.0, 5.0, -1.0], [2.0, 2.0, 2.0, 2.0]])


def test_max_min_forms(backend):
    x = t(TIES)
    out = xpnet.max(x, 1)
    assert isinstance(out, xpnet.return_types.max) and isinstance(out, tuple)
    values, indices = out
    np.testing.assert_array_equal(npy(values), TIES.max(1))
    np.testing.assert_array_equal(npy(indices), TIES.argmax(1))  # first of tied maxima
    assert xpnet.int64 == indices.dtype and not indices.requires_grad
    assert out[0] is out.values and out[1] is out.indices
    kept = x.max(dim=0, keepdim=True)
    assert kept.values.shape == (1, 4) and kept.indices.shape == (1, 4)
    np.testing.assert_array_equal(npy(x.min(-1).indices), TIES.argmin(-1))
    np.testing.assert_array_equal(npy(xpnet.min(x, dim=0).values), TIES.min(0))
    assert xpnet.max(x).item() == 5.0 and x.min().item() == -1.0  # overall: a Tensor, not a pair
    other = t(np.full((3, 4), 2.5))
    np.testing.assert_array_equal(npy(xpnet.max(x, other)), np.maximum(TIES, 2.5))  # elementwise
    np.testing.assert_array_equal(npy(x.min(other)), np.minimum(TIES, 2.5))
    # the Array API's axis= keeps its meaning: values only (as amax)
    np.testing.assert_array_equal(npy(xpnet.max(x, axis=1)), TIES.max(1))
    np.testing.assert_array_equal(npy(x.amax(dim=(0, 1))), TIES.max())
    np.testing.assert_array_equal(npy(xpnet.amin(x, 1, keepdim=True)), TIES.min(1, keepdims=True))
    s = xpnet.max(xpnet.tensor(4.0), 0)
    assert s.values.item() == 4.0 and s.indices.item() == 0
    with pytest.raises(TypeError):
        xpnet.max(x, 1.5)


def test_sort_argsort_topk(backend):
    x = t(TIES)
    for dim in (0, 1, -1):
        for descending in (False, True):
            values, indices = x.sort(dim=dim, descending=descending)
            key = -TIES if descending else TIES
            want = np.argsort(key, axis=dim, kind="stable")  # ties keep their order
            np.testing.assert_array_equal(npy(indices), want)
            np.testing.assert_array_equal(npy(values), np.take_along_axis(TIES, want, dim))
            np.testing.assert_array_equal(npy(xpnet.argsort(x, dim=dim, descending=descending)), want)
    assert isinstance(xpnet.sort(x), xpnet.return_types.sort)
    top = t(H).topk(2)
    assert isinstance(top, xpnet.return_types.topk)
    np.testing.assert_array_equal(npy(top.values), -np.sort(-H, 1)[:, :2])
    np.testing.assert_array_equal(npy(top.indices), np.argsort(-H, 1)[:, :2])
    low = xpnet.topk(t(H), 1, dim=0, largest=False)
    np.testing.assert_array_equal(npy(low.values), H.min(0, keepdims=True))
    with pytest.raises(RuntimeError, match="out of range"):
        t(H).topk(5)


def test_cumsum_prod_norm_against_numpy(backend):
    x = t(H)
    np.testing.assert_allclose(npy(x.cumsum(1)), np.cumsum(H, 1))
    np.testing.assert_allclose(npy(xpnet.cumsum(x, dim=0)), np.cumsum(H, 0))
    ints = t(np.array([[1, 2], [3, 4]]), dtype=xpnet.int32)
    assert xpnet.int64 == ints.cumsum(0).dtype and xpnet.int64 == ints.prod().dtype  # as torch
    assert t(np.array([True, True, False])).cumsum(0).tolist() == [1, 2, 2]
    assert xpnet.float64 == x.cumsum(1, dtype=xpnet.float64).dtype
    np.testing.assert_allclose(npy(x.prod(1)), H.prod(1))
    np.testing.assert_allclose(npy(xpnet.prod(x)), H.prod())
    np.testing.assert_allclose(npy(x.prod(0, keepdim=True)), H.prod(0, keepdims=True))
    np.testing.assert_allclose(npy(xpnet.prod(x, axis=(0, 1))), H.prod())
    assert ints.prod(1).tolist() == [2, 12]
    for p, dim in ((2, None), ("fro", None), (1, 1), (3, (0, 1)), (float("inf"), 0), (-float("inf"), 1),
                   (0, 1), (0.5, None)):
        axis = None if dim is None else dim
        ord_ = 2 if p == "fro" else p
        want = np.linalg.norm(H.reshape(-1), ord_) if axis is None else (
            np.sum(np.abs(H) ** ord_, axis=axis) ** (1 / ord_) if ord_ not in (0, np.inf, -np.inf) else
            (np.count_nonzero(H, axis=axis) if ord_ == 0 else
             (np.abs(H).max(axis) if ord_ > 0 else np.abs(H).min(axis))))
        np.testing.assert_allclose(npy(x.norm(p=p, dim=dim)), want, rtol=1e-6, err_msg=f"p={p} dim={dim}")
    assert x.norm(dim=1, keepdim=True).shape == (3, 1)
    with pytest.raises(ValueError, match="nuc"):
        x.norm(p="nuc")
    with pytest.raises(TypeError, match="floating"):
        ints.norm()


def test_reductions_match_torch_on_the_same_inputs(backend):
    torch = pytest.importorskip("torch")
    x, tx = t(TIES), torch.tensor(TIES)
    pairs = [
        (x.max(1), torch.max(tx, 1)), (x.min(0, True), tx.min(0, True)), (xpnet.sort(x, 1, True), tx.sort(1, True)),
        (x.cumsum(0), tx.cumsum(0)), (x.prod(1), tx.prod(1)), (x.norm(), tx.norm()), (x.norm(1, 1), tx.norm(1, 1)),
        (x.all(1), tx.bool().all(1)), (x.any(), tx.any()), (x.argsort(0), torch.argsort(tx, dim=0, stable=True)),
        (xpnet.max(x), torch.max(tx)), (x.amax(0), tx.amax(0)),
    ]
    for k, (ours, theirs) in enumerate(pairs):
        if isinstance(theirs, tuple):
            for a, b in zip(ours, theirs):
                np.testing.assert_allclose(npy(a), b.numpy(), err_msg=str(k))
        else:
            np.testing.assert_allclose(npy(ours), theirs.numpy(), rtol=1e-12, err_msg=str(k))


# -- copies, random fills, in-place updates -------------------------------------------------------


def test_tolist_clone_detach_requires_grad(backend):
    x = t(H, requires_grad=True)
    assert x.tolist() == H.tolist()
    y = x * 2.0
    d = y.detach()
    assert d.is_leaf and not d.requires_grad and d.grad_fn is None
    assert y.clone().grad_fn is not None
    assert y.detach_() is y and y.is_leaf and not y.requires_grad
    z = t(H).requires_grad_()
    assert z.requires_grad and z.requires_grad_(False) is z and not z.requires_grad


def test_fill_zero_normal_uniform(backend):
    x = xpnet.zeros(2, 3)
    assert x.fill_(2.5) is x
    np.testing.assert_array_equal(npy(x), np.full((2, 3), 2.5))
    assert x.zero_().sum().item() == 0.0
    assert t(np.array([1, 2])).fill_(3.9).tolist() == [3, 3]
    xpnet.manual_seed(11)
    a = xpnet.zeros(20000).normal_(2.0, 0.5)
    assert xpnet.float32 == a.dtype
    assert abs(a.mean().item() - 2.0) < 0.02 and abs(a.std().item() - 0.5) < 0.02
    xpnet.manual_seed(11)
    np.testing.assert_array_equal(npy(xpnet.zeros(20000).normal_(2.0, 0.5)), npy(a))  # the seeded generator
    u = xpnet.zeros(10000, dtype=xpnet.float64).uniform_(-1.0, 3.0)
    assert xpnet.float64 == u.dtype and npy(u).min() >= -1.0 and npy(u).max() < 3.0
    assert abs(u.mean().item() - 1.0) < 0.05
    w = xpnet.zeros(1000).uniform_(**{"from": 5.0, "to": 6.0})
    assert 5.0 <= npy(w).min() and npy(w).max() < 6.0


def test_in_place_arithmetic(backend):
    x = t(np.array([1.0, 2.0, 3.0]))
    assert x.add_(1.0) is x
    assert x.mul_(t(np.array([2.0, 1.0, 0.5]))).sub_(1.0, alpha=2.0).div_(2.0) is x
    np.testing.assert_allclose(npy(x), [1.0, 0.5, 0.0])
    np.testing.assert_allclose(npy(x.add_(t(np.array([1.0, 1.0, 1.0])), alpha=3.0)), [4.0, 3.5, 3.0])
    np.testing.assert_allclose(npy(x.clamp_(3.2, 3.8)), [3.8, 3.5, 3.2])
    np.testing.assert_allclose(npy(x.clamp_(max=3.4)), [3.4, 3.4, 3.2])
    np.testing.assert_allclose(npy(x.clip_(min=3.3)), [3.4, 3.4, 3.3])
    m = t(np.zeros((2, 2)))
    m.masked_fill_(t(np.array([[True, False], [False, True]])), 1.0)
    np.testing.assert_array_equal(npy(m), np.eye(2))
    m.scatter_add_(1, t(np.array([[1], [0]])), t(np.array([[5.0], [6.0]])))
    np.testing.assert_array_equal(npy(m), [[1.0, 5.0], [6.0, 1.0]])
    m.scatter_(0, t(np.array([[0, 0]])), 0.0)
    np.testing.assert_array_equal(npy(m), [[0.0, 0.0], [6.0, 1.0]])
    # dtype and shape rules of torch's in-place operations
    single = xpnet.zeros(2)
    single.add_(t(np.array([1.0, 2.0])))  # a float64 operand: the float32 Tensor stays float32
    assert xpnet.float32 == single.dtype
    with pytest.raises(RuntimeError, match="can't be cast"):
        t(np.array([1, 2])).add_(0.5)
    with pytest.raises(RuntimeError, match="doesn't match the broadcast shape"):
        xpnet.zeros(3).add_(xpnet.zeros(2, 3))


@pytest.mark.parametrize("op", ["add_", "sub_", "mul_", "div_", "clamp_", "fill_", "zero_", "normal_",
                                "uniform_", "masked_fill_"])
def test_in_place_on_a_leaf_that_requires_grad(backend, op):
    w = xpnet.ones(3, requires_grad=True)
    args = {"add_": (1.0,), "sub_": (1.0,), "mul_": (2.0,), "div_": (2.0,), "clamp_": (0.0, 0.5),
            "fill_": (3.0,), "zero_": (), "normal_": (), "uniform_": (),
            "masked_fill_": (t(np.array([True, False, True])), 0.0)}[op]
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an in-place operation"):
        getattr(w, op)(*args)
    np.testing.assert_array_equal(npy(w), [1.0, 1.0, 1.0])  # untouched
    with xpnet.no_grad():
        assert getattr(w, op)(*args) is w  # torch's way to update parameters by hand
    assert w.requires_grad and w.is_leaf


def test_in_place_on_a_tensor_with_history_is_refused_while_recording(backend):
    w = xpnet.ones(3, requires_grad=True)
    h = w * 2.0
    with pytest.raises(RuntimeError, match="autograd history"):
        h.add_(1.0)
    with xpnet.no_grad():
        h.add_(1.0)
    np.testing.assert_array_equal(npy(h), [3.0, 3.0, 3.0])


def test_from_numpy(backend):
    host = np.arange(6, dtype=np.int32).reshape(2, 3)
    x = xpnet.from_numpy(host)
    assert xpnet.int32 == x.dtype and x.shape == (2, 3)
    np.testing.assert_array_equal(npy(x), host)
    if backend.name == "numpy":
        host[0, 0] = 42  # shared memory, as torch.from_numpy
        assert x[0, 0].item() == 42
    with pytest.raises(TypeError, match="numpy.ndarray"):
        xpnet.from_numpy([1, 2, 3])


# -- the idioms of ported training and evaluation loops -------------------------------------------


def test_accuracy_idioms(backend):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((32, 10))
    labels = rng.integers(0, 10, 32)
    outputs, target = t(logits, requires_grad=True), t(labels)
    want = int((logits.argmax(1) == labels).sum())

    pred = outputs.argmax(dim=1, keepdim=True)  # the MNIST example
    correct = pred.eq(target.view_as(pred)).sum().item()
    assert correct == want and isinstance(correct, int)

    _, predicted = xpnet.max(outputs, 1)  # the CIFAR-10 tutorial
    total = target.size(0)
    assert (predicted == target).sum().item() == want and total == 32
    _, predicted = xpnet.max(outputs.data, 1)  # its older spelling: .data is the raw array here
    assert isinstance(predicted, Tensor)
    assert (predicted == target).sum().item() == want and total == 32

    _, top5 = outputs.topk(5, 1, True, True)
    hits = top5.eq(target.view(-1, 1).expand_as(top5)).any(dim=1).sum().item()
    assert hits == int(sum(labels[i] in np.argsort(-logits[i])[:5] for i in range(32)))

    conf, cls = outputs.softmax(dim=1).max(1)
    e = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(npy(conf), e.max(1) / e.sum(1), rtol=1e-12)
    assert cls.tolist() == logits.argmax(1).tolist()


def test_manual_sgd_step_idiom(backend):
    w = xpnet.tensor(np.array([1.0, -2.0]), requires_grad=True)
    loss = (w * w).sum()
    loss.backward()
    with xpnet.no_grad():
        w.sub_(w.grad * 0.1)  # w -= lr * w.grad, on the Parameter itself
        w.grad.zero_()
    np.testing.assert_allclose(npy(w), [0.8, -1.6])
    assert w.requires_grad and w.is_leaf and npy(w.grad).tolist() == [0.0, 0.0]
