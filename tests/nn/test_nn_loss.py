"""Losses: values and gradients against PyTorch (every reduction, weights, ignore_index, label
smoothing), gradcheck on every backend, target validation and the loss Modules."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
import xpnet.nn as nn
import xpnet.nn.functional as F
from xpnet.autodiff import gradcheck
from nn_cases import arr, assert_close, tensor, to_np, torch_tensor

REDUCTIONS = ["mean", "sum", "none"]


def _backward_both(y, yt, backend, rng, torch):
    """Backpropagate the same upstream gradient through an xpnet and a torch loss."""
    g_host = rng.standard_normal(yt.shape) if yt.dim() else np.asarray(1.7)
    y.backward(arr(backend, g_host))
    yt.backward(torch.from_numpy(np.asarray(g_host, dtype=np.float64)))


# -- regression and binary losses ---------------------------------------------------------------------

PAIR_LOSSES = [
    ("mse", F.mse_loss, "mse_loss", {}),
    ("l1", F.l1_loss, "l1_loss", {}),
    ("bce", F.binary_cross_entropy, "binary_cross_entropy", {}),
    ("bce_weight", F.binary_cross_entropy, "binary_cross_entropy", {"weight": (4,)}),
    ("bce_logits", F.binary_cross_entropy_with_logits, "binary_cross_entropy_with_logits", {}),
    ("bce_logits_weights", F.binary_cross_entropy_with_logits, "binary_cross_entropy_with_logits",
     {"weight": (3, 1), "pos_weight": (4,)}),
]


def _pair_inputs(rng, name):
    if name.startswith("bce") and "logits" not in name:
        x = rng.uniform(0.05, 0.95, (3, 4))
    else:
        x = rng.standard_normal((3, 4)) * 3
    if "logits" in name:
        x[0, :2] = [150.0, -150.0]  # saturated logits stay finite
    t = rng.uniform(0, 1, (3, 4))
    return x, t


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", PAIR_LOSSES, ids=[c[0] for c in PAIR_LOSSES])
def test_pair_loss_matches_torch(backend, rng, case, reduction):
    torch = pytest.importorskip("torch")
    name, fn, torch_name, weight_shapes = case
    x_host, t_host = _pair_inputs(rng, name)
    extra_host = {k: rng.uniform(0.5, 2.0, s) for k, s in weight_shapes.items()}
    x, t = tensor(backend, x_host), tensor(backend, t_host)
    y = fn(x, t, reduction=reduction, **{k: arr(backend, v) for k, v in extra_host.items()})
    xt, tt = torch_tensor(torch, x_host), torch_tensor(torch, t_host)
    yt = getattr(torch.nn.functional, torch_name)(
        xt, tt, reduction=reduction, **{k: torch.from_numpy(v) for k, v in extra_host.items()})
    assert np.isfinite(to_np(y)).all()
    assert_close(y, yt)
    _backward_both(y, yt, backend, rng, torch)
    assert_close(x.grad, xt.grad)
    assert_close(t.grad, tt.grad)


@pytest.mark.parametrize("case", PAIR_LOSSES, ids=[c[0] for c in PAIR_LOSSES])
def test_pair_loss_gradcheck(backend, rng, case):
    name, fn, _, weight_shapes = case
    x_host, t_host = _pair_inputs(rng, name)
    x_host[0, :2] = [1.5, -0.5] if "logits" in name else x_host[0, :2]
    extra = {k: arr(backend, rng.uniform(0.5, 2.0, s)) for k, s in weight_shapes.items()}
    for reduction in ("mean", "none"):
        assert gradcheck(lambda x, t: fn(x, t, reduction=reduction, **extra),
                         (tensor(backend, x_host), tensor(backend, t_host)))


def test_bce_saturates_like_torch(backend):
    torch = pytest.importorskip("torch")
    x_host = np.array([0.0, 1.0, 1e-300, 0.5])
    t_host = np.array([1.0, 0.0, 1.0, 0.5])
    y = F.binary_cross_entropy(tensor(backend, x_host, False), tensor(backend, t_host, False), reduction="none")
    yt = torch.nn.functional.binary_cross_entropy(torch.from_numpy(x_host), torch.from_numpy(t_host),
                                                  reduction="none")
    assert_close(y, yt)  # log floored at -100, as PyTorch
    with pytest.raises(ValueError, match=r"binary_cross_entropy: input values must be probabilities in \[0, 1\]"):
        F.binary_cross_entropy(tensor(backend, [1.5, 0.2]), tensor(backend, [1.0, 0.0]))


# -- classification losses ------------------------------------------------------------------------------

def _class_inputs(rng, shape, n_classes, ignore_index=None, scale=3.0):
    x = rng.standard_normal(shape) * scale
    target_shape = (shape[0],) + shape[2:] if len(shape) > 1 else ()
    t = rng.integers(0, n_classes, target_shape)
    if ignore_index is not None and t.ndim:
        flat = t.reshape(-1)
        flat[::3] = ignore_index
    return x, t


CE_GRID = [
    # (input shape, weight?, ignore_index or None, label_smoothing)
    ((6, 5), False, None, 0.0),
    ((6, 5), True, None, 0.0),
    ((6, 5), False, -100, 0.0),
    ((6, 5), True, 2, 0.0),
    ((6, 5), False, None, 0.1),
    ((6, 5), True, -100, 0.25),
    ((6, 5), False, 1, 0.3),
    ((2, 4, 3, 2), True, -100, 0.2),
    ((2, 4, 3), False, None, 0.0),
    ((5,), True, None, 0.1),
]
CE_IDS = [f"{'x'.join(map(str, s))}-w{int(w)}-ign{i}-ls{ls}" for s, w, i, ls in CE_GRID]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", CE_GRID, ids=CE_IDS)
def test_cross_entropy_matches_torch(backend, rng, case, reduction):
    torch = pytest.importorskip("torch")
    shape, use_weight, ignore_index, smoothing = case
    n_classes = shape[0] if len(shape) == 1 else shape[1]
    x_host, t_host = _class_inputs(rng, shape, n_classes, ignore_index)
    w_host = rng.uniform(0.2, 2.0, n_classes) if use_weight else None
    kwargs = {} if ignore_index is None else {"ignore_index": ignore_index}
    x = tensor(backend, x_host)
    y = F.cross_entropy(x, xpnet.Tensor(backend.from_host(t_host)),
                        weight=None if w_host is None else arr(backend, w_host),
                        reduction=reduction, label_smoothing=smoothing, **kwargs)
    xt = torch_tensor(torch, x_host)
    yt = torch.nn.functional.cross_entropy(xt, torch.from_numpy(t_host),
                                           weight=None if w_host is None else torch.from_numpy(w_host),
                                           reduction=reduction, label_smoothing=smoothing, **kwargs)
    assert_close(y, yt)
    _backward_both(y, yt, backend, rng, torch)
    assert_close(x.grad, xt.grad)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", [c for c in CE_GRID if c[3] == 0.0], ids=[i for c, i in zip(CE_GRID, CE_IDS)
                                                                       if c[3] == 0.0])
def test_nll_loss_matches_torch(backend, rng, case, reduction):
    torch = pytest.importorskip("torch")
    shape, use_weight, ignore_index, _ = case
    n_classes = shape[0] if len(shape) == 1 else shape[1]
    x_host, t_host = _class_inputs(rng, shape, n_classes, ignore_index)
    w_host = rng.uniform(0.2, 2.0, n_classes) if use_weight else None
    kwargs = {} if ignore_index is None else {"ignore_index": ignore_index}
    x = tensor(backend, x_host)
    y = F.nll_loss(F.log_softmax(x, dim=0 if len(shape) == 1 else 1), backend.from_host(t_host),
                   weight=None if w_host is None else arr(backend, w_host), reduction=reduction, **kwargs)
    xt = torch_tensor(torch, x_host)
    yt = torch.nn.functional.nll_loss(torch.log_softmax(xt, dim=0 if len(shape) == 1 else 1),
                                      torch.from_numpy(t_host),
                                      weight=None if w_host is None else torch.from_numpy(w_host),
                                      reduction=reduction, **kwargs)
    assert_close(y, yt)
    _backward_both(y, yt, backend, rng, torch)
    assert_close(x.grad, xt.grad)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2)])
def test_cross_entropy_probability_targets_match_torch(backend, rng, shape, smoothing):
    torch = pytest.importorskip("torch")
    x_host = rng.standard_normal(shape)
    p_host = rng.dirichlet(np.ones(shape[1]), size=(shape[0],) + shape[2:])
    p_host = np.moveaxis(p_host, -1, 1)
    w_host = rng.uniform(0.5, 1.5, shape[1])
    x, p = tensor(backend, x_host), tensor(backend, p_host)
    y = F.cross_entropy(x, p, weight=arr(backend, w_host), label_smoothing=smoothing)
    xt, pt = torch_tensor(torch, x_host), torch_tensor(torch, p_host)
    yt = torch.nn.functional.cross_entropy(xt, pt, weight=torch.from_numpy(w_host), label_smoothing=smoothing)
    assert_close(y, yt)
    _backward_both(y, yt, backend, rng, torch)
    assert_close(x.grad, xt.grad)
    assert_close(p.grad, pt.grad)


def test_label_smoothing_values(backend):
    """Worked values: 3 classes, uniform logits -> loss log 3 for any smoothing; with a confident
    correct logit the smoothed loss is (1 - eps) * nll + eps * mean_c(-log p_c)."""
    torch = pytest.importorskip("torch")
    uniform = tensor(backend, np.zeros((2, 3)))
    target = backend.from_host(np.array([0, 2]))
    for eps in (0.0, 0.1, 0.5):
        assert float(F.cross_entropy(uniform, target, label_smoothing=eps)) == pytest.approx(np.log(3), abs=1e-12)
    logits = np.array([[4.0, 0.0, -1.0]])
    log_p = logits - np.log(np.exp(logits).sum())
    eps = 0.2
    expected = (1 - eps) * -log_p[0, 0] + eps * -log_p[0].mean()
    value = float(F.cross_entropy(tensor(backend, logits), backend.from_host(np.array([0])), label_smoothing=eps))
    assert value == pytest.approx(expected, abs=1e-12)
    ref = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.tensor([0]), label_smoothing=eps)
    assert value == pytest.approx(float(ref), abs=1e-12)


def test_ignore_index_excluded_from_mean(backend, rng):
    x_host = rng.standard_normal((4, 3))
    t_host = np.array([0, -100, 2, -100])
    full = F.cross_entropy(tensor(backend, x_host), backend.from_host(t_host), reduction="none")
    assert to_np(full)[1] == 0.0 and to_np(full)[3] == 0.0
    mean = F.cross_entropy(tensor(backend, x_host), backend.from_host(t_host))
    kept = F.cross_entropy(tensor(backend, x_host[[0, 2]]), backend.from_host(t_host[[0, 2]]))
    assert float(mean) == pytest.approx(float(kept), abs=1e-12)
    x = tensor(backend, x_host)
    F.cross_entropy(x, backend.from_host(t_host)).backward()
    np.testing.assert_array_equal(to_np(x.grad)[[1, 3]], 0.0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_class_losses_with_non_finite_logits_match_torch(backend, dtype, smoothing):
    """A masked (-inf) class other than the target adds nothing to the loss, and an ignored row is 0
    whatever its logits (0 * -inf is no term), as in PyTorch; with label smoothing every class counts."""
    torch = pytest.importorskip("torch")
    x_host = np.array([[1.0, -np.inf, 0.5], [0.2, 0.3, np.inf], [np.inf, 1.0, 2.0], [0.5, -np.inf, -1.0]],
                      dtype=dtype)
    t_host = np.array([0, 2, -100, 2])
    with np.errstate(all="ignore"):
        y = F.cross_entropy(backend.from_host(x_host), backend.from_host(t_host), reduction="none",
                            label_smoothing=smoothing)
        log_p = np.log(np.array([[0.6, 0.0, 0.4], [0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [0.3, 0.0, 0.7]], dtype=dtype))
        nll = F.nll_loss(backend.from_host(log_p), backend.from_host(t_host), reduction="none")
    yt = torch.nn.functional.cross_entropy(torch.from_numpy(x_host), torch.from_numpy(t_host), reduction="none",
                                           label_smoothing=smoothing)
    nllt = torch.nn.functional.nll_loss(torch.from_numpy(log_p), torch.from_numpy(t_host), reduction="none")
    np.testing.assert_allclose(to_np(y), yt.numpy(), rtol=1e-6)  # nan and inf where PyTorch has them
    np.testing.assert_allclose(to_np(nll), nllt.numpy(), rtol=1e-6)
    assert np.isfinite(to_np(y)[[0, 3]]).all() == (smoothing == 0.0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("p,margin,use_weight", [(1, 1.0, False), (2, 0.5, True), (1, 2.0, True)])
def test_multi_margin_matches_torch(backend, rng, p, margin, use_weight, reduction):
    torch = pytest.importorskip("torch")
    x_host, t_host = _class_inputs(rng, (6, 4), 4, scale=1.0)
    w_host = rng.uniform(0.5, 2.0, 4) if use_weight else None
    x = tensor(backend, x_host)
    y = F.multi_margin_loss(x, backend.from_host(t_host), p=p, margin=margin,
                            weight=None if w_host is None else arr(backend, w_host), reduction=reduction)
    xt = torch_tensor(torch, x_host)
    yt = torch.nn.functional.multi_margin_loss(xt, torch.from_numpy(t_host), p=p, margin=margin,
                                               weight=None if w_host is None else torch.from_numpy(w_host),
                                               reduction=reduction)
    assert_close(y, yt)
    _backward_both(y, yt, backend, rng, torch)
    assert_close(x.grad, xt.grad)


def test_multi_margin_single_sample(backend):
    x = tensor(backend, [0.1, 0.2, 0.4, 0.8])
    # PyTorch's documented example: (1 - 0.8 + 0.1) + (1 - 0.8 + 0.2) + (1 - 0.8 + 0.4), over 4 classes
    value = F.multi_margin_loss(x, backend.from_host(np.array(3)))
    assert float(value) == pytest.approx((0.3 + 0.4 + 0.6) / 4, abs=1e-12)


CLASS_GRADCHECK = [
    ("ce", lambda x, t, w: F.cross_entropy(x, t)),
    ("ce_weight_ignore_smooth", lambda x, t, w: F.cross_entropy(x, t, weight=w, ignore_index=1,
                                                                 label_smoothing=0.2)),
    ("ce_none", lambda x, t, w: F.cross_entropy(x, t, weight=w, reduction="none", label_smoothing=0.1)),
    ("nll_weight", lambda x, t, w: F.nll_loss(x, t, weight=w)),
    ("nll_sum_ignore", lambda x, t, w: F.nll_loss(x, t, reduction="sum", ignore_index=0)),
    ("multi_margin_p2", lambda x, t, w: F.multi_margin_loss(x, t, p=2, weight=w)),
    ("multi_margin_none", lambda x, t, w: F.multi_margin_loss(x, t, margin=0.7, reduction="none")),
]


@pytest.mark.parametrize("case", CLASS_GRADCHECK, ids=[c[0] for c in CLASS_GRADCHECK])
def test_class_loss_gradcheck(backend, rng, case):
    x_host = rng.standard_normal((4, 3))
    t = backend.from_host(np.array([0, 2, 1, 2]))
    w = arr(backend, [0.5, 1.5, 2.0])
    assert gradcheck(lambda x: case[1](x, t, w), (tensor(backend, x_host),))


def test_cross_entropy_gradcheck_spatial(backend, rng):
    t = backend.from_host(np.array([[[0, 2], [1, 1]]]))
    assert gradcheck(lambda x: F.cross_entropy(x, t, label_smoothing=0.1),
                     (tensor(backend, rng.standard_normal((1, 3, 2, 2))),))


def test_class_target_errors(backend):
    x = tensor(backend, np.zeros((4, 5)))
    with pytest.raises(ValueError, match=r"cross_entropy: target class index 7 at position \(2,\) is out of range "
                                         r"for 5 classes \(allowed: 0\.\.4 or ignore_index=-100\)"):
        F.cross_entropy(x, backend.from_host(np.array([0, 1, 7, 2])))
    with pytest.raises(ValueError, match=r"index -3 at position \(1,\)"):
        F.nll_loss(x, backend.from_host(np.array([0, -3, 1, 2])))
    with pytest.raises(ValueError, match=r"expected a target of shape \(4,\) for input of shape \(4, 5\).*got \(4, 1\)"):
        F.cross_entropy(x, backend.from_host(np.zeros((4, 1), dtype=np.int64)))
    with pytest.raises(TypeError, match="nll_loss: target must hold integer class indices"):
        F.nll_loss(x, arr(backend, [0.0, 1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="a floating target holds class probabilities"):
        F.cross_entropy(x, arr(backend, [0.0, 1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"weight must have one entry per class, shape \(5,\), got \(3,\)"):
        F.cross_entropy(x, backend.from_host(np.array([0, 1, 2, 3])), weight=arr(backend, [1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="reduction must be 'none', 'mean' or 'sum', got 'avg'"):
        F.cross_entropy(x, backend.from_host(np.array([0, 1, 2, 3])), reduction="avg")
    with pytest.raises(ValueError, match=r"multi_margin_loss: target class index 5"):
        F.multi_margin_loss(x, backend.from_host(np.array([0, 5, 2, 3])))


def test_pair_loss_errors(backend):
    x = tensor(backend, np.zeros((4, 1)))
    with pytest.raises(ValueError, match=r"mse_loss: input shape \(4, 1\) and target shape \(4,\) differ"):
        F.mse_loss(x, arr(backend, np.zeros(4)))
    with pytest.raises(TypeError, match="l1_loss: input dtype float64 does not match target dtype float32"):
        F.l1_loss(x, arr(backend, np.zeros((4, 1)), dtype="float32"))


def test_loss_device_mismatch():
    x = xpnet.tensor([[0.0, 1.0]], backend="array_api_strict", device="device1")
    t = xpnet.tensor([1], backend="array_api_strict", device="device2")
    with pytest.raises(xpnet.DeviceMismatchError, match="device1.*device2"):
        F.cross_entropy(x, t)


def test_loss_modules(backend, rng):
    x_host, t_host = _class_inputs(rng, (5, 3), 3)
    weight = [0.5, 1.0, 2.0]
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=0.1)
    assert list(loss_fn.state_dict()) == ["weight"]
    assert repr(loss_fn) == "CrossEntropyLoss(label_smoothing=0.1)"
    x = tensor(backend, x_host)
    t = backend.from_host(t_host)
    loss_fn.to(backend=backend.name, device=backend.device)
    direct = F.cross_entropy(x, t, weight=arr(backend, weight), label_smoothing=0.1)
    assert float(loss_fn(x, t)) == pytest.approx(float(direct), abs=1e-6)  # weight buffer is float32
    # PyTorch's deprecated flags, positional order included
    assert nn.MSELoss(None, False).reduction == "none"
    assert nn.L1Loss(size_average=False).reduction == "sum"
    assert nn.NLLLoss(None, None, 3).ignore_index == 3
    assert nn.MultiMarginLoss(2, 0.5).p == 2
    y = tensor(backend, rng.uniform(0.1, 0.9, (5, 3)))
    z = tensor(backend, rng.uniform(0, 1, (5, 3)))
    assert float(nn.BCELoss(reduction="sum")(y, z)) == pytest.approx(
        float(F.binary_cross_entropy(y, z, reduction="sum")), abs=1e-12)
    bce = nn.BCEWithLogitsLoss(pos_weight=xpnet.tensor([2.0, 1.0, 0.5], dtype="float64"))
    bce.to(backend=backend.name, device=backend.device)
    assert float(bce(y, z)) == pytest.approx(float(F.binary_cross_entropy_with_logits(
        y, z, pos_weight=arr(backend, [2.0, 1.0, 0.5]))), abs=1e-12)
    assert float(nn.MSELoss()(y, z)) == pytest.approx(float(((to_np(y) - to_np(z)) ** 2).mean()), abs=1e-12)
    with pytest.raises(ValueError, match="reduction must be"):
        nn.MSELoss(reduction="average")
    with pytest.raises(ValueError, match="only p=1 and p=2"):
        nn.MultiMarginLoss(p=3)
