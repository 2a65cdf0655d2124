"""Conv2d / F.conv2d: values and gradients against PyTorch over a geometry grid, gradcheck, forward
mode, output-size formula, error messages, layer repr, state_dict and default initialization."""

from __future__ import annotations

import math

import numpy as np
import pytest

import xpnet
import xpnet.nn as nn
import xpnet.nn.functional as F
from xpnet.autodiff import gradcheck, jvp
from xpnet.nn.functional.conv import conv2d_output_size
from nn_cases import arr, assert_close, copy_module_params, tensor, to_np, torch_tensor

# (kernel, stride, padding, dilation, groups, in_channels, out_channels, H, W)
GRID = [
    ((3, 3), 1, 0, 1, 1, 3, 4, 7, 6),
    ((3, 3), 1, 1, 1, 1, 2, 3, 5, 5),
    ((3, 2), 2, 1, 1, 1, 2, 3, 8, 7),
    ((1, 1), 1, 0, 1, 1, 4, 2, 4, 3),
    ((5, 5), 3, 2, 1, 1, 2, 2, 9, 11),
    ((3, 3), 1, 2, 2, 1, 2, 3, 6, 7),
    ((2, 3), (2, 1), (1, 0), (1, 2), 1, 3, 2, 7, 8),
    ((3, 3), 1, 1, 1, 2, 4, 6, 5, 6),
    ((3, 3), 2, 1, 1, 4, 4, 4, 6, 5),
    ((2, 2), 1, "same", 1, 1, 2, 3, 5, 6),
    ((3, 3), 1, "same", 2, 1, 2, 2, 6, 5),
    ((3, 3), 1, "valid", 1, 1, 2, 2, 5, 5),
    ((11, 11), 4, 2, 1, 1, 3, 2, 23, 23),
]


def _ids(case):
    k, s, p, d, g = case[:5]
    return f"k{k[0]}x{k[1]}-s{s}-p{p}-d{d}-g{g}".replace(" ", "")


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("case", GRID, ids=[_ids(c) for c in GRID])
def test_conv2d_matches_torch(backend, rng, case):
    torch = pytest.importorskip("torch")
    (kh, kw), stride, padding, dilation, groups, cin, cout, h, w = case
    x_host = rng.standard_normal((2, cin, h, w))
    w_host = rng.standard_normal((cout, cin // groups, kh, kw))
    b_host = rng.standard_normal(cout)
    x, wt, bt = tensor(backend, x_host), tensor(backend, w_host), tensor(backend, b_host)
    y = F.conv2d(x, wt, bt, stride=stride, padding=padding, dilation=dilation, groups=groups)
    xr, wr, br = (torch_tensor(torch, a) for a in (x_host, w_host, b_host))
    yr = torch.nn.functional.conv2d(xr, wr, br, stride=stride, padding=padding, dilation=dilation, groups=groups)
    assert_close(y, yr)
    g_host = rng.standard_normal(tuple(yr.shape))
    y.backward(arr(backend, g_host))
    yr.backward(torch.from_numpy(g_host))
    assert_close(x.grad, xr.grad)
    assert_close(wt.grad, wr.grad)
    assert_close(bt.grad, br.grad)


def test_conv2d_without_bias_and_unbatched(backend, rng):
    torch = pytest.importorskip("torch")
    x_host, w_host = rng.standard_normal((3, 6, 5)), rng.standard_normal((2, 3, 3, 3))
    x, w = tensor(backend, x_host), tensor(backend, w_host)
    y = F.conv2d(x, w, padding=1)
    assert y.shape == (2, 6, 5)
    xr, wr = torch_tensor(torch, x_host), torch_tensor(torch, w_host)
    yr = torch.nn.functional.conv2d(xr, wr, padding=1)
    assert_close(y, yr)
    g = rng.standard_normal(y.shape)
    y.backward(arr(backend, g))
    yr.backward(torch.from_numpy(g))
    assert_close(x.grad, xr.grad)
    assert_close(w.grad, wr.grad)


def test_conv2d_gradcheck(backend, rng):
    x = tensor(backend, rng.standard_normal((2, 2, 5, 4)))
    w = tensor(backend, rng.standard_normal((3, 2, 3, 2)))
    b = tensor(backend, rng.standard_normal(3))
    assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=1), (x, w, b))
    assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, padding=2, dilation=2), (x, w, b))
    wg = tensor(backend, rng.standard_normal((4, 1, 2, 2)))
    assert gradcheck(lambda x, w: F.conv2d(x, w, groups=2), (x, wg))


def test_conv2d_jvp_matches_vjp(backend, rng):
    shapes = ((2, 2, 5, 4), (3, 2, 3, 3), (3,))
    x, w, b = (tensor(backend, rng.standard_normal(s)) for s in shapes)
    tangents = tuple(tensor(backend, rng.standard_normal(s), requires_grad=False) for s in shapes)

    def f(x, w, b):
        return F.conv2d(x, w, b, stride=2, padding=1)

    y, jt = jvp(f, (x, w, b), tangents)
    u = rng.standard_normal(y.shape)
    f(x, w, b).backward(arr(backend, u))
    lhs = float((u * to_np(jt)).sum())
    rhs = sum(float((to_np(p.grad) * to_np(t)).sum()) for p, t in zip((x, w, b), tangents))
    assert lhs == pytest.approx(rhs, rel=1e-10)


@pytest.mark.parametrize("size,kernel,stride,padding,dilation,expected", [
    (32, 3, 1, 1, 1, 32), (32, 3, 1, 0, 1, 30), (32, 5, 2, 2, 1, 16), (227, 11, 4, 0, 1, 55),
    (7, 3, 2, 1, 2, 3), (5, 5, 1, 0, 1, 1), (6, 2, 2, 0, 1, 3),
])
def test_output_size_formula(size, kernel, stride, padding, dilation, expected):
    # floor((H + 2P - D(K-1) - 1)/S) + 1
    assert expected == (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    out = conv2d_output_size((size, size + 1), (kernel, kernel), (stride, stride),
                             ((padding, padding), (padding, padding)), (dilation, dilation))
    assert out == (expected, (size + 1 + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1)


def test_conv2d_layer_output_shape(backend):
    layer = nn.Conv2d(3, 8, kernel_size=5, stride=2, padding=2)
    y = layer(xpnet.zeros((2, 3, 17, 12)))
    assert y.shape == (2, 8, 9, 6)


def test_conv2d_wrong_channels_message(backend):
    layer = nn.Conv2d(3, 64, kernel_size=3)
    with pytest.raises(ValueError) as info:
        layer(xpnet.zeros((8, 1, 32, 32)))
    assert str(info.value) == "Conv2d(3, 64, kernel_size=3): expected input (N, 3, H, W), got (8, 1, 32, 32)"


def test_conv2d_output_below_one_names_formula(backend):
    layer = nn.Conv2d(3, 4, kernel_size=7)
    with pytest.raises(ValueError) as info:
        layer(xpnet.zeros((1, 3, 5, 9)))
    text = str(info.value)
    assert "(H + 2P - D(K-1) - 1)/S + 1" in text
    assert "(5 + 2*0 - 1*(7-1) - 1)/1 + 1 = -1" in text
    assert text.startswith("Conv2d(3, 4, kernel_size=7): output height")


def test_conv2d_dtype_mismatch_is_type_error(backend):
    layer = nn.Conv2d(3, 4, kernel_size=3)
    x = xpnet.zeros((1, 3, 5, 5), dtype=xpnet.float64)
    with pytest.raises(TypeError) as info:
        layer(x)
    assert "float64" in str(info.value) and "float32" in str(info.value)
    with pytest.raises(TypeError, match="float64.*float32"):
        F.conv2d(x, layer.weight)


def test_conv2d_argument_errors(backend):
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        nn.Conv2d(3, 4, 3, stride=0)
    with pytest.raises(ValueError, match="'same' needs stride 1"):
        nn.Conv2d(3, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="padding_mode"):
        nn.Conv2d(3, 4, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match=r"weight must be 4-D"):
        F.conv2d(xpnet.zeros((1, 3, 5, 5)), xpnet.zeros((4, 3, 3)))


def test_conv2d_repr_and_state_dict(backend):
    assert repr(nn.Conv2d(3, 64, kernel_size=3)) == "Conv2d(3, 64, kernel_size=(3, 3), stride=(1, 1))"
    assert repr(nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False)) == \
        "Conv2d(3, 64, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), bias=False)"
    assert repr(nn.Conv2d(4, 8, (3, 5), dilation=2, groups=2)) == \
        "Conv2d(4, 8, kernel_size=(3, 5), stride=(1, 1), dilation=(2, 2), groups=2)"
    layer = nn.Conv2d(4, 8, (3, 5), groups=2)
    sd = layer.state_dict()
    assert list(sd) == ["weight", "bias"]
    assert sd["weight"].shape == (8, 2, 3, 5) and sd["bias"].shape == (8,)
    assert xpnet.float32 == layer.weight.dtype
    assert xpnet.float64 == nn.Conv2d(3, 4, 3, dtype=xpnet.float64).weight.dtype


def test_conv2d_default_init_matches_pytorch_bounds(backend):
    torch = pytest.importorskip("torch")
    layer = nn.Conv2d(16, 32, 3)
    ref = torch.nn.Conv2d(16, 32, 3)
    bound = 1.0 / math.sqrt(16 * 9)  # kaiming_uniform_(a=sqrt(5)) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    w, b = to_np(layer.weight), to_np(layer.bias)
    tw = ref.weight.detach().numpy()
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert np.abs(tw).max() <= bound
    # uniform on [-bound, bound]: std bound/sqrt(3), and both fill the range
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    assert w.std() == pytest.approx(tw.std(), rel=0.06)
    assert np.abs(w).max() > 0.95 * bound
    xpnet.manual_seed(3)
    first = to_np(nn.Conv2d(2, 2, 3).weight)
    xpnet.manual_seed(3)
    assert np.array_equal(first, to_np(nn.Conv2d(2, 2, 3).weight))


def test_conv2d_layer_matches_torch_layer(backend, rng):
    torch = pytest.importorskip("torch")
    layer = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, dtype="float64")
    ref = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, dtype=torch.float64)
    copy_module_params(layer, ref, torch)
    x_host = rng.standard_normal((3, 4, 9, 8))
    x = tensor(backend, x_host)
    y = layer(x)
    xr = torch_tensor(torch, x_host)
    yr = ref(xr)
    assert_close(y, yr)
    g = rng.standard_normal(y.shape)
    y.backward(arr(backend, g))
    yr.backward(torch.from_numpy(g))
    assert_close(x.grad, xr.grad)
    assert_close(layer.weight.grad, ref.weight.grad)
    assert_close(layer.bias.grad, ref.bias.grad)


def test_conv2d_float32_stays_float32(backend, rng):
    layer = nn.Conv2d(2, 3, 3, padding=1)
    x = tensor(backend, rng.standard_normal((2, 2, 6, 6)), dtype="float32")
    y = layer(x)
    assert xpnet.float32 == y.dtype
    y.backward(arr(backend, np.ones(y.shape), dtype="float32"))
    assert xpnet.float32 == x.grad.dtype
    assert xpnet.float32 == layer.weight.grad.dtype and xpnet.float32 == layer.bias.grad.dtype
