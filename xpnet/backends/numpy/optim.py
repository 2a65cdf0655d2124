"""Optimizer steps of the NumPy backend: SGD's update, compiled (csrc/optim.c).

A step kernel takes ``(w, g, state, group, scalars)``: ``scalars`` is what the optimizer computed
for this step (for SGD the NamedTuple ``lr, momentum, dampening, weight_decay, nesterov, maximize`` of
Python numbers), read from there rather than from ``group``. It writes the new parameter values into
``w`` in place and returns ``w`` (never writes into ``g``); when it cannot run for these arrays (no
compiled library, a dtype or layout the C code does not cover) it returns None, changing nothing, and
the optimizer runs its generic rule.
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..kernels import register_kernel
from . import native
from .native import ptr
from .runtime import parallel

# a compiled SGD update this long is split over the workers. It is bound by memory: the MLP's 1.9M
# parameters take 0.74 ms on one thread and 0.73 ms split in two (2-core EPYC), so only very long
# parameters are split
SGD_PARALLEL_MIN = 1 << 22


def _same_block(a, w) -> bool:
    """``a`` can go through the compiled loop beside ``w``: an array of the same shape and dtype, one
    dense C-ordered block."""
    return (isinstance(a, np.ndarray) and a.shape == w.shape and a.dtype == w.dtype and a.flags.c_contiguous)


@register_kernel("numpy", kernels.SGD_STEP)
def sgd_step(w, g, state, group, scalars):
    """SGD's rule (``xpnet.optim.SGD.update``: d = ±g + λw; b ← μb + (1-τ)d; w ← w - η(b or d + μb))
    through xp_sgd: the generic rule's operations and roundings in its order (compiled without
    contraction), so the values are the generic ones bit for bit, fused into one pass that updates the
    parameter array in place (as PyTorch's ``step`` does), split over the workers when long. The first
    momentum step (b = d) runs as b = μ·0 + d, without dampening. float32 and float64 C-contiguous
    parameters with a gradient (and momentum buffer) of the same layout; None otherwise."""
    if not (isinstance(w, np.ndarray) and w.dtype in native.FLOATS and w.flags.writeable and w.flags.c_contiguous
            and _same_block(g, w)):
        return None
    momentum, dampening = scalars.momentum, scalars.dampening
    buf = state.get("momentum_buffer") if momentum != 0 else None
    if buf is not None and not (_same_block(buf, w) and buf.flags.writeable):
        return None
    lib = native.library()
    if lib is None:
        return None
    if momentum != 0 and buf is None:
        buf = state["momentum_buffer"] = np.zeros_like(w, dtype=np.result_type(w, g))
        dampening = 0.0
    fn = native.kernel(lib, "xp_sgd", w.dtype)
    weight_decay = scalars.weight_decay
    config = (float(-scalars.lr), bool(weight_decay != 0), float(weight_decay), bool(scalars.maximize), float(momentum),
              float(1 - dampening), bool(dampening != 0), bool(scalars.nesterov))
    wf, gf = w.reshape(-1), g.reshape(-1)
    bf = None if buf is None else buf.reshape(-1)
    item = wf.itemsize

    def part(a, b):
        fn(ptr(wf) + a * item, ptr(gf) + a * item, None if bf is None else ptr(bf) + a * item, b - a, *config)

    if wf.size >= SGD_PARALLEL_MIN:
        parallel(part, wf.size)
    else:
        part(0, wf.size)
    return w
