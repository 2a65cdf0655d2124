"""The operation cases shared by the gradcheck and forward-vs-reverse tests.

Each case is a function of float64 Tensors plus, per input, a shape and a value domain chosen so
the finite differences never straddle a kink (|x| at 0, clip bounds, max/min ties).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import xpnet
from xpnet.autodiff.ops import elementwise, indexing, linalg, reduction, shape

MASK = np.array([[True, False, True, True], [False, False, True, False], [True, True, False, True]])


@dataclass(frozen=True)
class Case:
    name: str
    fn: object
    shapes: tuple
    domains: tuple = ()

    def inputs(self, seed=0):
        """Host float64 arrays for this case (identical on every backend)."""
        rng = np.random.default_rng(seed)
        out = []
        for k, s in enumerate(self.shapes):
            domain = self.domains[k] if k < len(self.domains) else "any"
            out.append(sample(rng, s, domain))
        return out


def sample(rng, shape, domain):
    if domain == "any":
        return rng.standard_normal(shape)
    if domain == "pos":
        return rng.uniform(0.5, 2.0, shape)
    if domain == "away0":
        return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.3, 2.0, shape)
    if domain == "clip":  # keep clear of the bounds ±0.5
        magnitude = np.where(rng.random(shape) < 0.5, rng.uniform(0.0, 0.4, shape), rng.uniform(0.6, 2.0, shape))
        return rng.choice([-1.0, 1.0], shape) * magnitude
    if domain == "spread":  # distinct values, far apart: no max/min ties within a step
        n = int(np.prod(shape))
        return (rng.permutation(n).reshape(shape) - n / 2) * 0.37 + rng.uniform(-0.05, 0.05, shape)
    raise ValueError(domain)


def _split_mix(x):
    pieces = xpnet.split(x, 2, dim=1)
    return xpnet.concat([p * float(k + 1) for k, p in enumerate(pieces)], axis=1)


def _split_sections(x):
    a, b, c = xpnet.split(x, [1, 2, 1], axis=0)
    return xpnet.concat([c, a * 2.0, b.exp()], dim=0)


def _split_unused(x):
    return xpnet.split(x, 3, axis=1)[1] * 3.0


def _where(a, b):
    return xpnet.where(xpnet.tensor(MASK), a, b)


def _where_scalar(a):
    return xpnet.where(xpnet.tensor(MASK), a, 0.5)


def _idx_tensor(x):
    return x[xpnet.tensor(np.array([[2, 0], [2, 2]]))]


def _mask_index(x):
    return x[:, xpnet.tensor(np.array([True, False, True, True]))]


def _take_raw(x):
    b = xpnet.get_backend()
    return xpnet.take(x, b.asarray([3, 1, 3, -1], dtype="int64"), dim=1)


CASES = [
    # elementwise, with broadcasting
    Case("add", lambda a, b: a + b, ((3, 4), (4,))),
    Case("add_3d", lambda a, b: xpnet.add(a, b), ((2, 1, 3), (4, 3))),
    Case("add_scalar", lambda a: 2.5 + a, ((3,),)),
    Case("sub", lambda a, b: a - b, ((3, 1), (1, 4))),
    Case("rsub", lambda a: 1.0 - a, ((2, 3),)),
    Case("mul", lambda a, b: a * b, ((2, 3, 4), (3, 1))),
    Case("div", lambda a, b: a / b, ((3, 4), (4,)), ("any", "pos")),
    Case("div_bcast_left", lambda a, b: xpnet.div(a, b), ((3,), (2, 3)), ("any", "pos")),
    Case("rdiv", lambda a: 2.0 / a, ((3, 2),), ("pos",)),
    Case("pow_scalar", lambda a: a ** 2.5, ((3, 4),), ("pos",)),
    Case("pow_int", lambda a: a ** 3, ((3, 4),)),
    Case("pow_square", lambda a: xpnet.pow(a, 2), ((5,),)),
    Case("pow_tensor", lambda a, b: a ** b, ((3, 4), (4,)), ("pos", "any")),
    Case("rpow", lambda b: 2.0 ** b, ((3,),)),
    Case("neg", lambda a: -a, ((2, 3),)),
    Case("exp", lambda a: a.exp(), ((2, 3),)),
    Case("log", lambda a: xpnet.log(a), ((2, 3),), ("pos",)),
    Case("sqrt", lambda a: a.sqrt(), ((2, 3),), ("pos",)),
    Case("abs", lambda a: abs(a), ((2, 3),), ("away0",)),
    Case("tanh", lambda a: a.tanh(), ((2, 3),)),
    Case("sigmoid", lambda a: xpnet.sigmoid(a * 4.0), ((2, 3),)),
    Case("relu", lambda a: a.relu(), ((3, 4),), ("away0",)),
    Case("square", lambda a: a.square(), ((3, 4),)),
    Case("maximum", lambda a, b: xpnet.maximum(a, b), ((3, 4), (4,))),
    Case("maximum_scalar", lambda a: a.maximum(0.1), ((3, 4),), ("away0",)),
    Case("minimum", lambda a, b: xpnet.minimum(a, b), ((2, 1), (2, 3))),
    Case("clip", lambda a: a.clip(-0.5, 0.5), ((4, 3),), ("clip",)),
    Case("clip_min_only", lambda a: xpnet.clip(a, min=0.5), ((4, 3),), ("clip",)),
    Case("clamp_tensor_bounds", lambda a, lo: xpnet.clamp(a, lo, 1.0), ((3, 4), (4,)),
         ("spread", "any")),
    Case("where", _where, ((3, 4), (4,))),
    Case("where_scalar", _where_scalar, ((3, 4),)),
    Case("astype_same", lambda a: a.astype(xpnet.float64) * 2.0, ((3,),)),
    # reductions
    Case("sum_all", lambda a: a.sum(), ((3, 4),)),
    Case("sum_axis", lambda a: xpnet.sum(a, axis=1), ((3, 4, 2),)),
    Case("sum_dims_keepdim", lambda a: a.sum(dim=(0, 2), keepdim=True), ((3, 4, 2),)),
    Case("mean", lambda a: a.mean(axis=-1, keepdims=True), ((3, 4),)),
    Case("mean_all", lambda a: xpnet.mean(a), ((3, 4),)),
    Case("max_all", lambda a: a.max(), ((3, 4),), ("spread",)),
    Case("max_axis", lambda a: xpnet.max(a, dim=0).values, ((3, 4),), ("spread",)),
    Case("min_axis", lambda a: a.min(axis=1, keepdims=True), ((3, 4),), ("spread",)),
    Case("var", lambda a: a.var(axis=0), ((5, 3),)),
    Case("var_biased", lambda a: xpnet.var(a, dim=1, unbiased=False), ((3, 5),)),
    Case("var_all", lambda a: a.var(), ((3, 4),)),
    Case("std", lambda a: a.std(axis=(0, 1), keepdims=True), ((3, 4, 2),)),
    Case("std_correction0", lambda a: xpnet.std(a, correction=0), ((3, 4),)),
    Case("logsumexp", lambda a: xpnet.logsumexp(a, axis=1), ((3, 4),)),
    Case("logsumexp_all", lambda a: a.logsumexp(), ((3, 4),)),
    Case("softmax", lambda a: a.softmax(), ((3, 4),)),
    Case("softmax_dim0", lambda a: xpnet.softmax(a, dim=0), ((3, 4),)),
    Case("log_softmax", lambda a: xpnet.log_softmax(a, axis=1), ((2, 3, 4),)),
    # linalg
    Case("matmul", lambda a, b: a @ b, ((3, 4), (4, 2))),
    Case("matmul_batched", lambda a, b: xpnet.matmul(a, b), ((2, 3, 4), (2, 4, 5))),
    Case("matmul_bcast_batch", lambda a, b: a @ b, ((2, 1, 3, 4), (3, 4, 2))),
    Case("matmul_bcast_rhs", lambda a, b: a @ b, ((2, 3, 4), (4, 2))),
    Case("matmul_vec_mat", lambda a, b: a @ b, ((4,), (4, 3))),
    Case("matmul_mat_vec", lambda a, b: a @ b, ((3, 4), (4,))),
    Case("matmul_vec_vec", lambda a, b: a @ b, ((4,), (4,))),
    Case("matmul_vec_batch", lambda a, b: a @ b, ((4,), (2, 4, 3))),
    Case("matmul_batch_vec", lambda a, b: a @ b, ((2, 3, 4), (4,))),
    # shape
    Case("reshape", lambda a: a.reshape(4, -1), ((2, 3, 2),)),
    Case("reshape_tuple", lambda a: xpnet.reshape(a, (6, 2)) * 2.0, ((3, 4),)),
    Case("view", lambda a: a.view(-1), ((3, 4),)),
    Case("transpose", lambda a: a.transpose(0, 2), ((2, 3, 4),)),
    Case("T_reverse", lambda a: a.T, ((2, 3, 4),)),
    Case("mT", lambda a: a.mT, ((2, 3, 4),)),
    Case("permute", lambda a: a.permute(2, 0, 1), ((2, 3, 4),)),
    Case("flatten", lambda a: a.flatten(1), ((2, 3, 4),)),
    Case("flatten_mid", lambda a: xpnet.flatten(a, start_dim=1, end_dim=2), ((2, 3, 4, 2),)),
    Case("squeeze", lambda a: a.squeeze(), ((3, 1, 2, 1),)),
    Case("squeeze_dim", lambda a: a.squeeze(dim=1), ((3, 1, 2),)),
    Case("unsqueeze", lambda a: a.unsqueeze(-1), ((3, 2),)),
    Case("expand", lambda a: a.expand(2, 3, -1), ((3, 1),)),
    Case("broadcast_to", lambda a: xpnet.broadcast_to(a, (4, 3, 2)), ((3, 1),)),
    Case("concat", lambda a, b, c: xpnet.concat([a, b, c], axis=1), ((2, 3), (2, 1), (2, 2))),
    Case("cat_dim0", lambda a, b: xpnet.cat((a, b), dim=0), ((1, 3), (2, 3))),
    Case("stack", lambda a, b: xpnet.stack([a, b], axis=1), ((2, 3), (2, 3))),
    Case("split_chunks", _split_mix, ((2, 5),)),
    Case("split_sections", _split_sections, ((4, 2),)),
    Case("split_unused_pieces", _split_unused, ((2, 7),)),
    Case("pad", lambda a: xpnet.pad(a, (1, 2)), ((2, 3),)),
    Case("pad_2d_value", lambda a: xpnet.pad(a, (1, 0, 2, 1), value=1.5), ((2, 3, 2),)),
    Case("pad_crop", lambda a: xpnet.pad(a, (-1, 2, 1, -1)), ((3, 4),)),
    # indexing
    Case("index_int", lambda a: a[1], ((3, 4),)),
    Case("index_negative_int", lambda a: a[-1, 2], ((3, 4),)),
    Case("index_slices", lambda a: a[1:, ::2], ((3, 4),)),
    Case("index_negative_step", lambda a: a[::-1, 1:3], ((3, 4),)),
    Case("index_none_ellipsis", lambda a: a[None, ..., 1], ((2, 3, 4),)),
    Case("index_list_repeats", lambda a: a[[2, 0, 2, 2]], ((3, 4),)),
    Case("index_list_axis1", lambda a: a[:, [3, 3, 0]], ((3, 4),)),
    Case("index_tensor_2d", _idx_tensor, ((3, 2),)),
    Case("index_int_then_array", lambda a: a[0, :, [1, 1, 0]], ((2, 3, 4),)),
    Case("index_mask", _mask_index, ((3, 4),)),
    Case("take_raw_negative", _take_raw, ((2, 4),)),
    # composites
    Case("mlp_block", lambda x, w, b: (x @ w + b).tanh().sum(axis=1), ((4, 3), (3, 5), (5,))),
]

CASES_BY_NAME = {c.name: c for c in CASES}

# every public op, with the case(s) that exercise it (the coverage test reads this)
OPS_COVERED = {
    "add", "sub", "mul", "div", "pow", "neg", "exp", "log", "sqrt", "abs", "tanh", "sigmoid", "relu",
    "square", "maximum", "minimum", "clip", "clamp", "where", "astype", "sum", "mean", "max", "min",
    "var", "std", "logsumexp", "softmax", "log_softmax", "matmul", "reshape", "view", "transpose",
    "permute", "flatten", "squeeze", "unsqueeze", "expand", "broadcast_to", "concat", "cat", "stack",
    "split", "pad", "getitem", "take",
}

FUNCTION_MODULES = (elementwise, reduction, linalg, shape, indexing)
