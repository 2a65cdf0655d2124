"""The CuPy fused optimizer kernels equal the generic Array-API updates (needs a CUDA device)."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
import xpnet.optim as optim
from xpnet.backends import kernels
from xpnet.backends.cupy import optim as cupy_optim
from optim_cases import A, B, C0, CASES, W0, sign_of

pytestmark = pytest.mark.gpu

IDS = [case[0] for case in CASES]
KERNELS = {"SGD": kernels.SGD_STEP, "Adagrad": kernels.ADAGRAD_STEP, "RMSprop": kernels.RMSPROP_STEP,
           "Adam": kernels.ADAM_STEP, "AdamW": kernels.ADAM_STEP}
FAST = {"SGD": cupy_optim.sgd_step, "Adagrad": cupy_optim.adagrad_step, "RMSprop": cupy_optim.rmsprop_step,
        "Adam": cupy_optim.adam_step, "AdamW": cupy_optim.adam_step}


def trajectory(name, options, dtype, fused, steps=30):
    with xpnet.use_backend("cupy") as b:
        xp = b.xp
        a, bb = b.asarray(A, dtype=dtype), b.asarray(B, dtype=dtype)
        w = xpnet.Tensor(b.asarray(W0, dtype=dtype), requires_grad=True)
        c = xpnet.Tensor(b.asarray(C0, dtype=dtype), requires_grad=True)
        opt = getattr(optim, name)([w, c], fused=fused, **options)
        scale = sign_of(options) / (A.shape[0] * B.shape[1])
        out = []
        w_array = w.data
        for _ in range(steps):
            r = xp.matmul(a, w.data) + c.data - bb
            w.grad = xpnet.Tensor(xp.matmul(a.mT, r) * scale)
            c.grad = xpnet.Tensor(xp.sum(r, axis=0) * scale)
            opt.step()
            out.append(np.concatenate([xpnet.to_numpy(w).ravel(), xpnet.to_numpy(c).ravel()]))
        assert w.data is w_array  # every step writes into the parameter's own array
        state = {k: xpnet.to_numpy(v) for k, v in opt.state.get(w, {}).items() if k != "step"}
        return np.stack(out), state


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 1e-4)])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cupy_kernel_equals_generic_update(case, dtype, rtol):
    _, name, options = case
    assert xpnet.get_backend("cupy").kernel(KERNELS[name]) is FAST[name]
    fast, fast_state = trajectory(name, options, dtype, fused=True)
    generic, generic_state = trajectory(name, options, dtype, fused=False)
    assert fast.dtype == np.dtype(dtype)
    np.testing.assert_allclose(fast, generic, rtol=rtol, atol=rtol * 1e-2)
    assert fast_state.keys() == generic_state.keys()
    for key in fast_state:
        np.testing.assert_allclose(fast_state[key], generic_state[key], rtol=rtol, atol=rtol * 1e-2, err_msg=key)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cupy_kernel_declines_float16_untouched(case):
    """float16 is not a kernel dtype: the kernel returns None before it writes anything."""
    _, name, options = case
    with xpnet.use_backend("cupy") as b:
        w = xpnet.Tensor(b.asarray(W0, dtype="float16"), requires_grad=True)
        opt = getattr(optim, name)([w], **options)
        group = opt.param_groups[0]
        state = opt.init_state(w.data, group)
        if "step" in state:
            state["step"] += 1
        before = xpnet.to_numpy(w).copy()
        g = b.asarray(np.ones(W0.shape), dtype="float16")
        assert FAST[name](w.data, g, state, group, opt.step_scalars(state, group)) is None
        np.testing.assert_array_equal(xpnet.to_numpy(w), before)
