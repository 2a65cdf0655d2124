"""Optimizer steps of the NumPy backend: SGD's update, compiled (csrc/optim.c), per parameter
(``sgd_step``) and for a whole parameter group in one call (``sgd_step_group``: a small model's six
parameters cost one ctypes call per step instead of six, with the same bits).

A step kernel takes ``(w, g, state, group, scalars)``: ``scalars`` is what the optimizer computed
for this step (for SGD the NamedTuple ``lr, momentum, dampening, weight_decay, nesterov, maximize`` of
Python numbers), read from there rather than from ``group``. It writes the new parameter values into
``w`` in place and returns ``w`` (never writes into ``g``); when it cannot run for these arrays (no
compiled library, a dtype or layout the C code does not cover) it returns None, changing nothing, and
the optimizer runs its generic rule.
"""

from __future__ import annotations

import weakref
from typing import NamedTuple

import numpy as np

from .. import kernels
from ..kernels import register_kernel
from . import native, runtime
from .native import ptr
from .runtime import parallel, split_count

# A compiled SGD update is bound by memory; it is split over the workers only when each part holds
# runtime.ELEMENTWISE_PARALLEL_MIN elements (the MLP's 1.9M parameters took 0.74 ms on one thread and
# 0.73 ms split in two on a 2-core EPYC; see runtime for this machine's sweep).


def _same_block(a, w) -> bool:
    """``a`` can go through the compiled loop beside ``w``: an array of the same shape and dtype, one
    dense C-ordered block."""
    return (isinstance(a, np.ndarray) and a.shape == w.shape and a.dtype == w.dtype and a.flags.c_contiguous)


def _config(scalars, fresh: bool) -> tuple:
    """xp_sgd's scalar arguments after (w, g, buf, n). A fresh buffer (made for this step: b = μ·0 + d)
    takes its first step without dampening."""
    dampening = 0.0 if fresh else scalars.dampening
    weight_decay = scalars.weight_decay
    return (float(-scalars.lr), bool(weight_decay != 0), float(weight_decay), bool(scalars.maximize),
            float(scalars.momentum), float(1 - dampening), bool(dampening != 0), bool(scalars.nesterov))


def _sgd_one(fn, w, g, buf, config) -> None:
    """xp_sgd over one parameter, on this thread or, when long enough, split over the workers."""
    size = w.size
    if split_count(size, runtime.ELEMENTWISE_PARALLEL_MIN) <= 1:
        fn(ptr(w), ptr(g), None if buf is None else ptr(buf), size, *config)
        return
    pw, pg, pb, item = ptr(w), ptr(g), None if buf is None else ptr(buf), w.itemsize

    def part(a, b):
        fn(pw + a * item, pg + a * item, None if pb is None else pb + a * item, b - a, *config)

    parallel(part, size, elements=size, min_elements=runtime.ELEMENTWISE_PARALLEL_MIN)


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
    momentum = scalars.momentum
    buf = state.get("momentum_buffer") if momentum != 0 else None
    if buf is not None and not (_same_block(buf, w) and buf.flags.writeable):
        return None
    lib = native.library()
    if lib is None:
        return None
    fresh = momentum != 0 and buf is None
    if fresh:
        buf = state["momentum_buffer"] = np.zeros_like(w, dtype=np.result_type(w, g))
    _sgd_one(native.kernel(lib, "xp_sgd", w.dtype), w, g, buf, _config(scalars, fresh))
    return w


class _Tables(NamedTuple):
    """The addresses and sizes of a group's parameters and momentum buffers, as xp_sgd_group reads them."""

    w_refs: tuple  # weak references: the table is valid while these are the same arrays
    buf_refs: tuple
    w_at: np.ndarray  # int64 addresses
    buf_at: np.ndarray | None
    sizes: np.ndarray  # int64
    addresses: tuple  # of w_at, buf_at (or None) and sizes: the arguments xp_sgd_group takes


# group -> its tables, by the ids of its parameter arrays; parameters are updated in place, so their
# arrays (and buffers) and addresses stay the same from step to step and only the gradients' table is
# built anew. Weak references tell a reused id from the same array; a few groups are kept
_tables: dict = {}
_TABLES_KEPT = 16


def _tables_for(ws, bufs) -> _Tables:
    key = tuple(map(id, ws))
    found = _tables.get(key)
    if found is not None and all(r() is w for r, w in zip(found.w_refs, ws)) and (
            bufs is None if found.buf_refs is None else all(r() is b for r, b in zip(found.buf_refs, bufs))):
        return found
    w_at = np.array([ptr(w) for w in ws], dtype=np.int64)
    buf_at = None if bufs is None else np.array([ptr(b) for b in bufs], dtype=np.int64)
    sizes = np.array([w.size for w in ws], dtype=np.int64)
    made = _Tables(tuple(map(weakref.ref, ws)), None if bufs is None else tuple(map(weakref.ref, bufs)),
                   w_at, buf_at, sizes, (ptr(w_at), None if buf_at is None else ptr(buf_at), ptr(sizes)))
    if len(_tables) >= _TABLES_KEPT:
        _tables.clear()
    _tables[key] = made
    return made


@register_kernel("numpy", kernels.SGD_STEP_GROUP)
def sgd_step_group(ws, gs, states, group, scalars):
    """SGD's step for a whole parameter group (``Optimizer.group_kernel_name``): ``ws``, ``gs``,
    ``states`` the group's parameters that have a gradient, their gradients and their state dicts,
    ``scalars`` the group's SGDScalars. One xp_sgd_group call runs xp_sgd over every tensor in turn,
    so each gets exactly the bits of sgd_step and of the generic rule; the tables of addresses of the
    parameters and buffers are kept between steps (``_tables_for``), the gradients' built per step. A
    tensor long enough to split over the workers goes through sgd_step's split instead. Writes each w
    in place, makes the momentum buffers of a first step, returns ``ws``.

    Declines (None, nothing changed; the optimizer then runs its per-parameter path, which also
    raises the errors the checks here stand for) unless every parameter is a writable C-contiguous
    float32 or float64 ndarray of one dtype with a gradient (and buffer) of its shape, dtype and layout,
    each listed once, and the compiled library is there."""
    if not ws:
        return ws
    w0 = ws[0]
    if not isinstance(w0, np.ndarray):
        return None
    dtype = w0.dtype
    if dtype not in native.FLOATS or len(ws) != len(gs) or len(ws) != len(states):
        return None
    with_buffers = scalars.momentum != 0
    bufs = [] if with_buffers else None
    for w, g, state in zip(ws, gs, states):
        if not (isinstance(w, np.ndarray) and w.dtype == dtype and isinstance(g, np.ndarray) and g.dtype == dtype
                and g.shape == w.shape):
            return None
        wflags = w.flags
        if not (wflags.c_contiguous and wflags.writeable and g.flags.c_contiguous):
            return None
        if with_buffers:
            buf = state.get("momentum_buffer")
            if buf is not None and not (isinstance(buf, np.ndarray) and buf.dtype == dtype and buf.shape == w.shape
                                        and buf.flags.c_contiguous and buf.flags.writeable):
                return None
            bufs.append(buf)
    if len(set(map(id, ws))) != len(ws):  # one array twice: its two updates must run one after the other
        return None
    lib = native.library()
    if lib is None:
        return None
    fresh = None
    if with_buffers and any(buf is None for buf in bufs):
        fresh = np.zeros(len(ws), dtype=np.uint8)
        for i, buf in enumerate(bufs):
            if buf is None:
                bufs[i] = states[i]["momentum_buffer"] = np.zeros_like(ws[i])
                fresh[i] = 1
    limit = 2 * runtime.ELEMENTWISE_PARALLEL_MIN  # split_count's test, once for the group
    long_ones = [i for i, w in enumerate(ws) if w.size >= limit] if runtime.NUM_WORKERS > 1 else ()
    if long_ones:  # split over the workers one by one; the rest in one call
        one = native.kernel(lib, "xp_sgd", dtype)
        for i in long_ones:
            _sgd_one(one, ws[i], gs[i], bufs[i] if with_buffers else None,
                     _config(scalars, fresh is not None and bool(fresh[i])))
        split = set(long_ones)
        rest = [i for i in range(len(ws)) if i not in split]
        if not rest:
            return ws
        ws_, gs_ = [ws[i] for i in rest], [gs[i] for i in rest]
        bufs_ = None if bufs is None else [bufs[i] for i in rest]
        fresh_ = None if fresh is None else fresh[rest]
    else:
        ws_, gs_, bufs_, fresh_ = ws, gs, bufs, fresh
    w_at, buf_at, sizes = _tables_for(ws_, bufs_).addresses
    g_at = np.array([ptr(g) for g in gs_], dtype=np.int64)
    native.kernel(lib, "xp_sgd_group", dtype)(w_at, ptr(g_at), buf_at, sizes, None if fresh_ is None else ptr(fresh_),
                                              len(ws_), *_config(scalars, False))
    return ws
