"""The CuPy fused optimizer kernels equal the generic Array-API updates (needs a CUDA device)."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
import xpnet.optim as optim
from optim_cases import A, B, C0, CASES, W0, sign_of

pytestmark = pytest.mark.gpu

IDS = [case[0] for case in CASES]
KERNELS = {"SGD": "sgd_step", "Adagrad": "adagrad_step", "RMSprop": "rmsprop_step", "Adam": "adam_step",
           "AdamW": "adam_step"}


def trajectory(name, options, dtype, fused, steps=30):
    with xpnet.use_backend("cupy") as b:
        xp = b.xp
        a, bb = b.asarray(A, dtype=dtype), b.asarray(B, dtype=dtype)
        w = xpnet.Tensor(b.asarray(W0, dtype=dtype), requires_grad=True)
        c = xpnet.Tensor(b.asarray(C0, dtype=dtype), requires_grad=True)
        opt = getattr(optim, name)([w, c], fused=fused, **options)
        scale = sign_of(options) / (A.shape[0] * B.shape[1])
        out = []
        for _ in range(steps):
            r = xp.matmul(a, w.data) + c.data - bb
            w.grad = xpnet.Tensor(xp.matmul(a.mT, r) * scale)
            c.grad = xpnet.Tensor(xp.sum(r, axis=0) * scale)
            opt.step()
            out.append(np.concatenate([xpnet.to_numpy(w).ravel(), xpnet.to_numpy(c).ravel()]))
        state = {k: xpnet.to_numpy(v) for k, v in opt.state.get(w, {}).items() if k != "step"}
        return np.stack(out), state


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 1e-4)])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cupy_kernel_equals_generic_update(case, dtype, rtol):
    _, name, options = case
    assert xpnet.get_backend("cupy").kernel(KERNELS[name]) is not None
    fast, fast_state = trajectory(name, options, dtype, fused=True)
    generic, generic_state = trajectory(name, options, dtype, fused=False)
    assert fast.dtype == np.dtype(dtype)
    np.testing.assert_allclose(fast, generic, rtol=rtol, atol=rtol * 1e-2)
    assert fast_state.keys() == generic_state.keys()
    for key in fast_state:
        np.testing.assert_allclose(fast_state[key], generic_state[key], rtol=rtol, atol=rtol * 1e-2, err_msg=key)
