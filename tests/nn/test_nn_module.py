"""Module, Parameter and containers: registration, traversal, modes, state_dict, moving, repr, summary."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

import xpnet
import xpnet.nn as nn
from nn_cases import arr, to_np


class Block(nn.Module):
    """A module with a parameter, a buffer, a non-persistent buffer and children."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.act = nn.ReLU()
        self.scale = nn.Parameter(xpnet.ones(4))
        self.register_buffer("count", xpnet.zeros(1, dtype="int64"))
        self.register_buffer("running", xpnet.zeros(4))
        self.register_buffer("scratch", xpnet.zeros(2), persistent=False)

    def forward(self, x):
        return self.act(self.fc(x)) * self.scale


def test_parameter_basics(backend):
    p = nn.Parameter(backend.xp.ones((2, 3), dtype=backend.dtype("float32"), device=backend.device))
    assert isinstance(p, xpnet.Tensor) and p.requires_grad and p.is_leaf
    assert repr(p).startswith("Parameter containing:\ntensor(")
    assert nn.Parameter(xpnet.zeros(2), requires_grad=False).requires_grad is False
    assert nn.Parameter().shape == (0,)
    with pytest.raises(TypeError, match="only floating-point data can require gradients"):
        nn.Parameter(xpnet.tensor([1, 2]))


def test_registration_and_traversal():
    m = Block()
    assert [n for n, _ in m.named_parameters()] == ["scale", "fc.weight", "fc.bias"]
    assert [n for n, _ in m.named_buffers()] == ["count", "running", "scratch"]
    assert [n for n, _ in m.named_children()] == ["fc", "act"]
    assert [n for n, _ in m.named_modules()] == ["", "fc", "act"]
    assert len(list(m.parameters(recurse=False))) == 1
    assert list(m.state_dict()) == ["scale", "count", "running", "fc.weight", "fc.bias"]
    # a shared layer's parameters are listed once
    shared = nn.Linear(2, 2)
    seq = nn.Sequential(shared, nn.ReLU(), shared)
    assert len(list(seq.parameters())) == 2
    # reassigning replaces the registration; None keeps the slot
    m.scale = None
    assert "scale" not in dict(m.named_parameters()) and m.scale is None
    with pytest.raises(TypeError, match="cannot assign Tensor as parameter 'scale'"):
        m.scale = xpnet.ones(4)
    with pytest.raises(TypeError, match="cannot assign int as buffer 'running'"):
        m.running = 3
    del m.act
    assert [n for n, _ in m.named_children()] == ["fc"]
    with pytest.raises(AttributeError, match="'Block' object has no attribute 'missing'"):
        m.missing


def test_missing_super_init_is_explained():
    class Broken(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)

    with pytest.raises(AttributeError, match="call super\\(\\).__init__\\(\\) first in Broken.__init__"):
        Broken()


def test_train_eval_zero_grad_apply_requires_grad(backend, rng):
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2)).to(backend=backend.name,
                                                                               device=backend.device)
    assert model.training and all(m.training for m in model.modules())
    assert model.eval() is model and not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())
    x = xpnet.Tensor(arr(backend, rng.standard_normal((5, 3)), dtype="float32"))
    model(x).backward(arr(backend, np.ones((5, 2)), dtype="float32"))
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad(set_to_none=False)
    assert all((to_np(p.grad) == 0).all() and p.grad.shape == p.shape for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    seen = []
    model.apply(lambda m: seen.append(type(m).__name__))
    assert seen == ["Linear", "Dropout", "Linear", "Sequential"]
    model.apply(lambda m: nn.init.zeros_(m.bias) if isinstance(m, nn.Linear) else None)
    assert all((to_np(m.bias) == 0).all() for m in model if isinstance(m, nn.Linear))
    model.requires_grad_(False)
    assert not any(p.requires_grad for p in model.parameters())


def test_sequential_and_module_list():
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    seq = nn.Sequential(a, b, c)
    assert len(seq) == 3 and seq[0] is a and seq[-1] is c and list(seq) == [a, b, c]
    assert list(seq.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    head = seq[:2]
    assert isinstance(head, nn.Sequential) and list(head) == [a, b]
    seq.append(nn.Sigmoid())
    assert len(seq) == 4 and isinstance(seq[3], nn.Sigmoid)
    del seq[1]
    assert [n for n, _ in seq.named_children()] == ["0", "1", "2"] and seq[1] is c
    named = nn.Sequential(OrderedDict([("hidden", nn.Linear(2, 2)), ("out", nn.Linear(2, 1))]))
    assert list(named.state_dict()) == ["hidden.weight", "hidden.bias", "out.weight", "out.bias"]
    assert named.hidden is named[0]
    with pytest.raises(TypeError, match="element 1 is a int, not an nn.Module"):
        nn.Sequential(a, 5)
    with pytest.raises(IndexError, match="index 5 is out of range for length 3"):
        seq[5]
    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    layers.insert(1, nn.Tanh())
    layers += [nn.ReLU()]
    assert len(layers) == 5 and isinstance(layers[1], nn.Tanh) and isinstance(layers[-1], nn.ReLU)
    assert [n for n, _ in layers.named_parameters()][:4] == ["0.weight", "0.bias", "2.weight", "2.bias"]

    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = layers

    assert len(list(Holder().parameters())) == 6
    with pytest.raises(TypeError, match="ModuleList has no forward"):
        layers(xpnet.zeros(2))


def test_forward_hooks():
    layer = nn.Linear(2, 2)
    calls = []
    pre = layer.register_forward_pre_hook(lambda m, inputs: calls.append(("pre", inputs[0].shape)))
    post = layer.register_forward_hook(lambda m, inputs, out: out * 0.0)
    y = layer(xpnet.ones(3, 2))
    assert calls == [("pre", (3, 2))] and (to_np(y) == 0).all()
    pre.remove()
    post.remove()
    assert (to_np(layer(xpnet.ones(3, 2))) != 0).any() and len(calls) == 1


# -- state_dict ----------------------------------------------------------------------------------------

def test_state_dict_round_trip(backend):
    with xpnet.use_backend(backend.name, backend.device):
        xpnet.manual_seed(1)
        src = Block()
        xpnet.manual_seed(2)
        dst = Block()
    src.running = xpnet.Tensor(arr(backend, [1.0, 2.0, 3.0, 4.0], dtype="float32"))
    sd = src.state_dict()
    assert all(isinstance(v, xpnet.Tensor) and not v.requires_grad for v in sd.values())
    assert sd["fc.weight"].data is src.fc.weight.data  # shares memory, as in PyTorch
    result = dst.load_state_dict(sd)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for key, value in dst.state_dict().items():
        np.testing.assert_array_equal(to_np(value), to_np(sd[key]))  # loaded values read back exactly
    assert dst.fc.weight.data is not src.fc.weight.data  # copied, not aliased
    assert xpnet.int64 == dst.count.dtype


def test_load_accepts_numpy_tensors_and_other_devices(backend, rng):
    with xpnet.use_backend(backend.name, backend.device):
        model = nn.Linear(3, 2)
    w = rng.standard_normal((2, 3))  # float64 NumPy into a float32 module: takes the module's dtype
    b = xpnet.tensor(np.array([0.5, -0.5]), backend="array_api_strict", device="device2")
    model.load_state_dict({"weight": w, "bias": b})
    assert str(model.weight.backend) == str(backend) and str(model.bias.backend) == str(backend)
    assert xpnet.float32 == model.weight.dtype and xpnet.float32 == model.bias.dtype
    np.testing.assert_array_equal(to_np(model.weight), w.astype(np.float32))
    np.testing.assert_array_equal(to_np(model.bias), [0.5, -0.5])
    w[0, 0] = 100.0
    assert to_np(model.weight)[0, 0] != 100.0


def test_failed_load_leaves_module_unchanged(backend):
    with xpnet.use_backend(backend.name, backend.device):
        model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    before = {k: to_np(v).copy() for k, v in model.state_dict().items()}
    good = {k: np.full(v.shape, 7.0) for k, v in before.items()}
    bad = dict(good)
    bad["2.weight"] = np.zeros((2, 5))
    with pytest.raises(nn.StateDictError) as err:
        model.load_state_dict(bad)
    message = str(err.value)
    assert "size mismatch for '2.weight': the state_dict has shape (2, 5), the module has shape (2, 4)" in message
    assert isinstance(err.value, RuntimeError) and isinstance(err.value, ValueError)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(to_np(v), before[k])  # the valid keys before it were not written
    missing = {k: v for k, v in good.items() if k != "0.bias"}
    with pytest.raises(nn.StateDictError, match=r"missing key '0.bias' \(expected shape \(4,\)\)"):
        model.load_state_dict(missing)
    extra = dict(good, **{"3.weight": np.zeros((1, 1))})
    with pytest.raises(nn.StateDictError, match=r"unexpected key '3.weight' \(shape \(1, 1\)\)"):
        model.load_state_dict(extra)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(to_np(v), before[k])
    # strict=False reports the differences and loads the rest; a shape mismatch is still an error
    result = model.load_state_dict(extra | {"0.bias": np.zeros(4)}, strict=False)
    assert result.unexpected_keys == ["3.weight"] and result.missing_keys == []
    assert (to_np(model[0].weight) == 7.0).all()
    result = model.load_state_dict(missing, strict=False)
    assert result.missing_keys == ["0.bias"]
    with pytest.raises(nn.StateDictError, match="size mismatch"):
        model.load_state_dict(bad, strict=False)


# -- moving and casting ---------------------------------------------------------------------------------

def test_to_device_moves_every_parameter_and_buffer(rng):
    model = nn.Sequential(Block(), nn.Linear(4, 2))
    model(xpnet.ones(2, 3)).backward(np.ones((2, 2), dtype=np.float32))
    weight = model[1].weight
    before = {k: to_np(v).copy() for k, v in model.state_dict().items()}
    moved = xpnet.to_device(model, "array_api_strict", "device1")
    assert moved is model and model[1].weight is weight  # same Parameter objects (optimizers keep them)
    arrays = [p.data for p in model.parameters()] + [p.grad.data for p in model.parameters()]
    arrays += [b.data for b in model.buffers()]
    assert all(str(xpnet.backend_of(a)) == "array_api_strict:device1" for a in arrays)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(to_np(v), before[k])
    x = xpnet.tensor(rng.standard_normal((2, 3)).astype(np.float32), backend="array_api_strict", device="device1")
    assert str(model(x).backend) == "array_api_strict:device1"
    with pytest.raises(xpnet.DeviceMismatchError):
        model(xpnet.ones(2, 3))  # a NumPy input to a device1 model
    model.to(backend="numpy")
    assert all(xpnet.backend_of(p.data).name == "numpy" for p in model.parameters())
    with xpnet.use_backend("array_api_strict", "device2"):
        xpnet.to_device(model)  # no target: the current backend
    assert str(model[1].bias.backend) == "array_api_strict:device2"
    # PyTorch-style single arguments: "backend:device", a device of the current namespace, a dtype
    assert str(model.to("array_api_strict:device1")[1].weight.backend) == "array_api_strict:device1"
    assert str(model.to("device2")[0].running.backend) == "array_api_strict:device2"
    assert xpnet.float64 == model.to("float64")[1].weight.dtype


def test_dtype_casts(backend):
    with xpnet.use_backend(backend.name, backend.device):
        model = Block()
    model.double()
    assert xpnet.float64 == model.fc.weight.dtype and xpnet.float64 == model.running.dtype
    assert xpnet.int64 == model.count.dtype  # integer buffers keep their dtype
    model.to(xpnet.float32)
    assert xpnet.float32 == model.fc.weight.dtype
    model.to(dtype="float64")
    assert xpnet.float64 == model.scale.dtype
    model.float()
    assert xpnet.float32 == model.scale.dtype
    with pytest.raises(TypeError, match="must be a floating dtype"):
        model.to(dtype="int32")


# -- description ----------------------------------------------------------------------------------------

def test_repr_tree():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Sequential(nn.Dropout(0.1), nn.Linear(4, 2, bias=False)))
    assert repr(model) == (
        "Sequential(\n"
        "  (0): Linear(in_features=3, out_features=4, bias=True)\n"
        "  (1): ReLU()\n"
        "  (2): Sequential(\n"
        "    (0): Dropout(p=0.1, inplace=False)\n"
        "    (1): Linear(in_features=4, out_features=2, bias=False)\n"
        "  )\n"
        ")"
    )


def test_summary(backend, capsys):
    with xpnet.use_backend(backend.name, backend.device):
        model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Dropout(0.5),
                              nn.Sequential(nn.Linear(8, 3), nn.LogSoftmax(dim=1)))
    model.train()
    rng_state = backend.rng.get_state()
    text = model.summary((3, 4), batch_size=2)  # one sample's shape, as torchsummary
    assert capsys.readouterr().out.strip() == text
    lines = text.splitlines()
    assert lines[0] == f"Sequential summary: input (2, 3, 4) float32 on {backend}"
    assert lines[2].split() == ["Layer", "(type)", "Output", "shape", "Param", "#"]
    rows = [line.split() for line in lines[4:11]]
    assert rows[0] == ["0", "(Flatten)", "(2,", "12)", "0"]
    assert rows[1] == ["1", "(Linear)", "(2,", "8)", "104"]
    assert rows[4] == ["4", "(Sequential)", "(2,", "3)", "--"]
    assert rows[5] == ["4.0", "(Linear)", "(2,", "3)", "27"]
    assert rows[6] == ["4.1", "(LogSoftmax)", "(2,", "3)", "0"]
    assert "Total params: 131" in text and "Trainable params: 131" in text and "Non-trainable params: 0" in text
    # summary ran in eval mode under no_grad: modes restored, the generator untouched, no gradients
    assert all(m.training for m in model.modules())
    assert backend.rng.get_state() == rng_state
    assert all(p.grad is None for p in model.parameters())
    again = model.summary((12,), print_fn=None)
    assert again.count("\n") == text.count("\n") and "(1, 8)" in again
    assert capsys.readouterr().out == ""


def test_small_mlp_trains(backend, rng):
    """The pieces together: two Linear layers, ReLU, cross-entropy and SGD fit a separable problem."""
    with xpnet.use_backend(backend.name, backend.device):
        xpnet.manual_seed(0)
        model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    x_host = rng.standard_normal((64, 2)).astype(np.float32)
    y_host = (x_host[:, 0] * x_host[:, 1] > 0).astype(np.int64)
    x, y = xpnet.Tensor(backend.from_host(x_host)), backend.from_host(y_host)
    opt = xpnet.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.35 * losses[0]
    accuracy = (to_np(model(x)).argmax(axis=1) == y_host).mean()
    assert accuracy > 0.9
