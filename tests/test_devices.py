"""Devices as PyTorch spells them: xpnet.device, Tensor.to / .cpu / .cuda / .device, Module.to,
factories' device=, and "cuda" failing with one clear line where no CUDA backend is usable."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import xpnet
from xpnet import nn
from xpnet.backends import BackendUnavailableError, unavailable_reason

from conftest import to_np

NO_CUDA = unavailable_reason("cupy") is not None
needs_no_cuda = pytest.mark.skipif(not NO_CUDA, reason="checks the error raised where CUDA is missing")

VALID = ["cpu", "cuda", "cuda:0", "cuda:1", "cuda:10", "cpu:0"]
INVALID = ["Gpu", "CUDA", "Cpu", "cuda:", "cuda:-1", " cpu", "cuda:0 ", "cuda:1:2", "cuda:a", "cuda:01",
           "cuda:+1", ""]


# -- the device object --------------------------------------------------------------------------------

@pytest.mark.parametrize("text, kind, index", [("cpu", "cpu", None), ("cuda", "cuda", None),
                                               ("cuda:0", "cuda", 0), ("cuda:1", "cuda", 1), ("cpu:0", "cpu", 0)])
def test_parse(text, kind, index):
    d = xpnet.device(text)
    assert (d.type, d.index) == (kind, index)
    assert str(d) == text
    assert d == text and text == d and not (d != text)
    assert hash(d) == hash(text) and {d: 1}[text] == 1
    assert xpnet.device(d) == d and xpnet.device(str(d)) == d


def test_type_and_index_forms():
    assert xpnet.device("cuda", 1) == xpnet.device("cuda:1") == "cuda:1"
    assert xpnet.device("cpu", 0) == "cpu:0"
    assert xpnet.device(2) == "cuda:2"  # an int is a CUDA device index, as in torch
    assert xpnet.device("cuda") != xpnet.device("cuda:0")  # torch keeps "no index" apart too
    assert xpnet.device("cpu") != "cuda" and xpnet.device("cpu") != "numpy" and xpnet.device("cpu") != 0
    assert len({xpnet.device("cpu"), xpnet.device("cpu"), xpnet.device("cuda", 1), "cuda:1"}) == 2


def test_repr_and_immutability():
    assert repr(xpnet.device("cpu")) == "device(type='cpu')"
    assert repr(xpnet.device("cuda", 1)) == "device(type='cuda', index=1)"
    d = xpnet.device("cuda:3")
    with pytest.raises(AttributeError):
        d.index = 0
    with pytest.raises(AttributeError):
        d.type = "cpu"
    assert pickle.loads(pickle.dumps(d)) == d and copy.deepcopy(d) == d


@pytest.mark.parametrize("text", INVALID)
def test_invalid_strings(text):
    with pytest.raises(ValueError) as info:
        xpnet.device(text)
    message = str(info.value)
    assert repr(text) in message and "'cpu'" in message and "'cuda:N'" in message
    assert "\n" not in message


def test_invalid_arguments():
    with pytest.raises(ValueError, match="index"):
        xpnet.device("cuda:1", 1)
    with pytest.raises(ValueError, match="negative"):
        xpnet.device("cuda", -1)
    with pytest.raises(TypeError):
        xpnet.device(1.5)
    with pytest.raises(TypeError):
        xpnet.device("cuda", "1")


def test_matches_torch_spelling():
    torch = pytest.importorskip("torch")
    for text in VALID:
        ours, theirs = xpnet.device(text), torch.device(text)
        assert str(ours) == str(theirs) and repr(ours) == repr(theirs)
        assert (ours.type, ours.index) == (theirs.type, theirs.index)
    assert str(xpnet.device("cuda", 1)) == str(torch.device("cuda", 1))
    for text in INVALID:  # torch refuses the same strings (with a RuntimeError)
        with pytest.raises(RuntimeError):
            torch.device(text)


def test_exported():
    assert xpnet.device is xpnet.backends.device
    assert isinstance(xpnet.device("cpu"), xpnet.device)


# -- Tensor.device, .is_cuda ---------------------------------------------------------------------------

def test_tensor_device_on_the_host(backend):
    t = xpnet.ones(2, 3)
    assert t.device == "cpu" and "cpu" == t.device and t.device == xpnet.device("cpu")
    assert not t.is_cuda
    if backend.name == "numpy":
        assert isinstance(t.device, xpnet.device) and repr(t.device) == "device(type='cpu')"
    else:  # array_api_strict: its own Device, equal to its own name too, usable in the namespace
        assert t.device == "CPU_DEVICE" and str(t.device) == "CPU_DEVICE" and t.device.type == "cpu"
        assert t.device == backend.device and hash(t.device) == hash(backend.device)
        assert backend.xp.zeros((2,), device=t.device).device == backend.device


def test_strict_fake_devices():
    pytest.importorskip("array_api_strict")
    t = xpnet.ones(2, backend="array_api_strict", device="device1")
    assert t.device == "device1" and str(t.device) == "device1" and t.device != "cpu"
    assert t.device != "device2" and t.device != xpnet.device("cpu")
    assert t.device == xpnet.get_backend("array_api_strict", "device1").device
    assert not t.is_cuda and t.device.index is None


# -- Tensor.to -----------------------------------------------------------------------------------------

def test_to_same_device_returns_self(backend):
    t = xpnet.ones(3)
    assert t.to("cpu") is t and t.to(xpnet.device("cpu")) is t and t.cpu() is t
    assert t.to() is t and t.to(t) is t and t.to(t.device) is t and t.to(dtype=t.dtype) is t
    assert t.to(backend.name) is t and t.to("cpu", non_blocking=True) is t


def test_to_dtype_overloads(backend):
    t = xpnet.tensor([1.0, 2.0, 3.0])
    for out in (t.to(xpnet.float64), t.to(dtype=xpnet.float64), t.to("cpu", xpnet.float64),
                t.to(device="cpu", dtype="float64"), t.to(xpnet.device("cpu"), xpnet.float64, False, False)):
        assert xpnet.float64 == out.dtype and out.device == "cpu" and out.backend is backend
        np.testing.assert_array_equal(to_np(out), [1.0, 2.0, 3.0])
    assert xpnet.int64 == t.to(xpnet.int64).dtype


def test_to_other_tensor(backend):
    t = xpnet.tensor([1.5, 2.5])
    other = xpnet.zeros(1, dtype=xpnet.float64)
    out = t.to(other)
    assert xpnet.float64 == out.dtype and out.backend is other.backend
    assert xpnet.int64 == t.to(xpnet.zeros(1, dtype="int64")).dtype


def test_to_copy(backend):
    t = xpnet.tensor([1.0, 2.0], requires_grad=True)
    c = t.to("cpu", copy=True)
    assert c is not t and c.data is not t.data and c.grad_fn is not None
    c.sum().backward()
    np.testing.assert_array_equal(to_np(t.grad), [1.0, 1.0])
    d = t.detach().to(copy=True)
    assert d.data is not t.data
    if backend.name == "numpy":
        assert not np.shares_memory(d.data, t.data)
    assert t.to(t.backend) is t and t.to(xpnet.get_backend("numpy")).backend.name == "numpy"


def test_to_between_backends_and_back(backend):
    pytest.importorskip("array_api_strict")
    t = xpnet.tensor([1.0, 2.0])
    moved = t.to("array_api_strict:device1")
    assert moved.device == "device1" and str(moved.backend) == "array_api_strict:device1"
    assert str(t.to(backend="array_api_strict", device="device2").backend) == "array_api_strict:device2"
    back = moved.to(t.device)  # a Tensor.device remembers its backend: back next to t
    assert back.backend is t.backend
    assert t.to("numpy").backend.name == "numpy"


def test_to_argument_errors():
    t = xpnet.ones(2)
    with pytest.raises(TypeError, match="unexpected keyword"):
        t.to(memory_format=None)
    with pytest.raises(TypeError, match="multiple values"):
        t.to("cpu", device="cpu")
    with pytest.raises(TypeError, match="non_blocking must be a bool"):
        t.to(xpnet.float64, "cpu")
    with pytest.raises(ValueError, match="invalid|unknown"):
        t.to("device9")
    with pytest.raises(TypeError, match="come after"):
        t.to(True)
    with pytest.raises(TypeError, match="at most"):
        t.to("cpu", xpnet.float64, False, False, False)


def test_gradient_flows_through_to(backend):
    x = xpnet.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = x.to(xpnet.float64).to("cpu", copy=True)
    assert y.grad_fn is not None and not y.is_leaf
    (y * y).sum().backward()
    assert x.grad.backend is x.backend and xpnet.float32 == x.grad.dtype
    np.testing.assert_allclose(to_np(x.grad), [2.0, -4.0, 6.0])


def test_gradient_flows_across_backends():
    pytest.importorskip("array_api_strict")
    x = xpnet.tensor([1.0, 2.0], requires_grad=True)  # NumPy
    y = x.to("array_api_strict:device1")
    assert y.grad_fn is not None
    (y * 3.0).sum().backward()
    assert x.grad.backend.name == "numpy"
    np.testing.assert_array_equal(to_np(x.grad), [3.0, 3.0])
    # forward mode too
    _, tangent = xpnet.autodiff.jvp(lambda a: a.to("array_api_strict:device2") * 2.0, (x.detach(),),
                                    (xpnet.ones(2),))
    assert tangent.device == "device2"
    np.testing.assert_array_equal(to_np(tangent), [2.0, 2.0])


def test_cpu_from_a_fake_device():
    pytest.importorskip("array_api_strict")
    t = xpnet.ones(2, backend="array_api_strict", device="device1")
    with xpnet.use_backend("array_api_strict"):
        assert str(t.cpu().backend) == "array_api_strict:CPU_DEVICE"  # the current backend's host device
    assert t.cpu().backend.name == "numpy"  # current backend NumPy


def test_torch_tensors():
    pytest.importorskip("torch")
    with xpnet.use_backend("torch"):
        t = xpnet.ones(2)
        assert t.device == "cpu" and isinstance(t.device, xpnet.device) and not t.is_cuda
        assert t.to("cpu") is t
        assert xpnet.ones(2, backend="numpy").to("cpu").backend.name == "torch"  # "cpu" is torch's here
    n = xpnet.ones(2)
    assert n.to(t.device).backend.name == "torch"  # lands next to t whatever the current backend


# -- CUDA where there is none ---------------------------------------------------------------------------

@needs_no_cuda
@pytest.mark.parametrize("make", [
    lambda: xpnet.ones(2).to("cuda"),
    lambda: xpnet.ones(2).to("cuda:1"),
    lambda: xpnet.ones(2).to(xpnet.device("cuda", 0)),
    lambda: xpnet.ones(2).cuda(),
    lambda: xpnet.zeros(2, device="cuda"),
    lambda: xpnet.tensor([1.0], device=xpnet.device("cuda")),
    lambda: xpnet.to_device(np.ones(2), device="cuda:0"),
    lambda: nn.Linear(2, 2).to("cuda"),
    lambda: nn.Linear(2, 2).cuda(0),
    lambda: xpnet.set_backend("cuda"),
    lambda: xpnet.use_backend(xpnet.device("cuda:1")).__enter__(),
], ids=["to", "to-index", "to-device", "cuda", "zeros", "tensor", "to_device", "module-to", "module-cuda",
        "set_backend", "use_backend"])
def test_cuda_unavailable_one_line(make):
    with pytest.raises(BackendUnavailableError) as info:
        make()
    message = str(info.value)
    assert "\n" not in message and "cuda" in message and unavailable_reason("cupy") in message
    assert xpnet.get_backend().name == "numpy"  # a failed set_backend changed nothing


def test_cuda_helpers_without_cuda():
    if not NO_CUDA:
        assert xpnet.cuda.device_count() >= 1 and xpnet.cuda.current_device() == 0
        return
    assert xpnet.cuda.device_count() == 0 and not xpnet.cuda.is_available()
    with pytest.raises(BackendUnavailableError):
        xpnet.cuda.current_device()
    with pytest.raises(BackendUnavailableError):
        xpnet.cuda.set_device(0)
    with pytest.raises(ValueError, match="CUDA device"):
        xpnet.ones(2).cuda("cpu")
    assert xpnet.device("cuda") == "cuda"  # naming a device never needs the GPU


# -- factories, to_device, use_backend ------------------------------------------------------------------

def test_factories_device(backend):
    for t in (xpnet.zeros(3, device="cpu"), xpnet.ones(3, device=xpnet.device("cpu")),
              xpnet.tensor([1.0, 2.0], device=xpnet.device("cpu")), xpnet.randn(2, device="cpu"),
              xpnet.arange(3, device="cpu"), xpnet.full((2,), 1.5, device="cpu"), xpnet.empty(2, device="cpu")):
        assert t.backend is backend and t.device == "cpu"


def test_factories_namespace_device():
    pytest.importorskip("array_api_strict")
    with xpnet.use_backend("array_api_strict"):
        assert xpnet.zeros(2, device="device1").device == "device1"  # the current namespace's device
    assert xpnet.zeros(2, device="array_api_strict:device2").device == "device2"
    assert xpnet.zeros(2, device="numpy").backend.name == "numpy"


def test_to_device_and_backend_selection():
    pytest.importorskip("array_api_strict")
    host = np.ones(2, dtype=np.float32)
    assert isinstance(xpnet.to_device(host, device=xpnet.device("cpu")), np.ndarray)
    with xpnet.use_backend("array_api_strict"):
        moved = xpnet.to_device(host, device="cpu")
        assert str(xpnet.backend_of(moved)) == "array_api_strict:CPU_DEVICE"
        assert str(xpnet.get_backend(device="device1")) == "array_api_strict:device1"
        with xpnet.use_backend("cpu") as b:
            assert str(b) == "array_api_strict:CPU_DEVICE"
    assert str(xpnet.backend_of(xpnet.to_device(host, "array_api_strict", xpnet.device("cpu")))) == \
        "array_api_strict:CPU_DEVICE"
    with xpnet.use_backend(xpnet.device("cpu")) as b:
        assert b.name == "numpy"
    with xpnet.use_backend("numpy", device=xpnet.device("cpu")) as b:
        assert b.name == "numpy"
    # the existing spellings keep working
    assert str(xpnet.get_backend("array_api_strict", "device1")) == "array_api_strict:device1"
    assert str(xpnet.backend_of(xpnet.to_device(host, backend="array_api_strict", device="device2"))) == \
        "array_api_strict:device2"


# -- Module.to / cpu / cuda -----------------------------------------------------------------------------

def test_module_to(backend):
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    weight = model[0].weight
    assert model.to("cpu") is model and model.cpu() is model and model[0].weight is weight
    assert all(p.backend is backend for p in model.parameters())
    assert model.to(xpnet.float64) is model and xpnet.float64 == model[0].weight.dtype
    model.to(device=xpnet.device("cpu"), dtype=xpnet.float32)
    assert xpnet.float32 == model[1].bias.dtype
    model.to(xpnet.zeros(1, dtype=xpnet.float64))
    assert xpnet.float64 == model[1].weight.dtype
    with pytest.raises(TypeError, match="floating"):
        model.to(xpnet.int64)


def test_module_to_fake_device():
    pytest.importorskip("array_api_strict")
    model = nn.Linear(2, 2)
    x = xpnet.ones(1, 2, backend="array_api_strict", device="device1")
    model.to(x)
    assert model.weight.device == "device1" and model(x).device == "device1"
    with xpnet.use_backend("array_api_strict"):
        model.cpu()
        assert model.weight.device == "CPU_DEVICE"
    model.cpu()
    assert model.weight.backend.name == "numpy"


# -- mixing devices --------------------------------------------------------------------------------------

def test_mixing_devices_names_both():
    pytest.importorskip("array_api_strict")
    a = xpnet.ones(2, 2)
    b = a.to("array_api_strict:device1")
    for op in (lambda: a + b, lambda: a @ b, lambda: xpnet.maximum(a, b)):
        with pytest.raises(xpnet.DeviceMismatchError) as info:
            op()
        assert "numpy:cpu" in str(info.value) and "array_api_strict:device1" in str(info.value)
    c = a.to("array_api_strict:device2")
    with pytest.raises(xpnet.DeviceMismatchError, match="device1.*device2"):
        b * c
