"""Tensor.register_post_accumulate_grad_hook and queue_callback (torch's names and semantics)."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
from xpnet.autodiff import function as F
from xpnet.autodiff.function import queue_callback


def _leaf(values):
    return xpnet.nn.Parameter(xpnet.tensor(np.asarray(values, dtype=np.float64)))


def test_hook_runs_once_after_every_contribution(backend):
    w = _leaf([1.0, 2.0])
    seen = []
    w.register_post_accumulate_grad_hook(lambda t: seen.append(xpnet.to_numpy(t.grad.data).copy()))
    x = xpnet.tensor(np.asarray([3.0, 4.0]))
    # w feeds three nodes: the hook must see the full gradient, once
    loss = (w * x).sum() + (w * w).sum() + w.sum()
    loss.backward()
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], [3 + 2 + 1, 4 + 4 + 1])


def test_hook_sees_accumulated_grad_and_runs_each_backward(backend):
    w = _leaf([1.0, -1.0])
    calls = []
    handle = w.register_post_accumulate_grad_hook(lambda t: calls.append(xpnet.to_numpy(t.grad.data).copy()))
    (w * 2.0).sum().backward()
    (w * 3.0).sum().backward()
    np.testing.assert_allclose(calls[0], [2.0, 2.0])
    np.testing.assert_allclose(calls[1], [5.0, 5.0])
    handle.remove()
    handle.remove()  # a second remove is harmless
    (w * 3.0).sum().backward()
    assert len(calls) == 2
    assert F._hook_count >= 0


def test_hook_order_follows_backward_and_skips_unused(backend):
    a, b, c = _leaf([1.0]), _leaf([2.0]), _leaf([3.0])
    order = []
    for name, t in (("a", a), ("b", b), ("c", c)):
        t.register_post_accumulate_grad_hook(lambda t, name=name: order.append(name))
    h = (a * 2.0).exp()
    loss = (h * b).sum()  # b's node runs first in backward, then a's; c is unused
    loss.backward()
    assert order == ["b", "a"]


def test_hook_on_root_leaf_and_errors(backend):
    w = _leaf([1.0])
    seen = []
    w.register_post_accumulate_grad_hook(lambda t: seen.append(1))
    w.backward(xpnet.tensor(np.asarray([1.0])))
    assert seen == [1]
    with pytest.raises(RuntimeError, match="leaf"):
        (w * 2.0).register_post_accumulate_grad_hook(lambda t: None)
    with pytest.raises(RuntimeError, match="require grad"):
        xpnet.tensor(np.asarray([1.0])).register_post_accumulate_grad_hook(lambda t: None)
    with pytest.raises(TypeError, match="callable"):
        w.register_post_accumulate_grad_hook(3)


def test_queue_callback_runs_after_the_sweep(backend):
    a, b = _leaf([1.0]), _leaf([2.0])
    events = []

    def hook(t):
        events.append("hook")
        if len(events) == 1:
            queue_callback(lambda: events.append("end"))

    a.register_post_accumulate_grad_hook(hook)
    b.register_post_accumulate_grad_hook(hook)
    (a * b).sum().backward()
    assert events == ["hook", "hook", "end"]
    with pytest.raises(RuntimeError, match="during a backward"):
        queue_callback(lambda: None)


def test_raising_backward_drops_queued_callbacks(backend):
    a = _leaf([1.0])
    ran = []

    def hook(t):
        queue_callback(lambda: ran.append(1))
        raise ValueError("boom")

    handle = a.register_post_accumulate_grad_hook(hook)
    with pytest.raises(ValueError, match="boom"):
        (a * 2.0).sum().backward()
    handle.remove()
    (a * 2.0).sum().backward()
    assert ran == [] and F._final_callbacks == [] and F._backward_depth == 0
