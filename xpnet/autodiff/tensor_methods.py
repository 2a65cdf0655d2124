"""The everyday PyTorch Tensor surface that ``Tensor`` inherits: metadata, comparisons, casts,
rearrangements, selections, reductions with ``dim=``, copies and in-place updates.

Each method calls the function of the same name in ``xpnet.autodiff.ops`` (looked up when called:
the ops import ``tensor.py``, which imports this module first), so the math and the gradient rules
live there. In-place methods (``add_``, ``fill_``, ...) follow PyTorch's rules for autograd:

* a leaf that requires grad refuses them while gradients are recorded ("a leaf Variable that
  requires grad is being used in an in-place operation."); under ``no_grad`` they update it;
* a Tensor that has autograd history refuses them while gradients are recorded: xpnet keeps no
  version counters, so it could not tell whether a recorded operation still needs the old values
  (PyTorch either records the update or raises). Use the out-of-place form, ``y = y.add(1)``;
* a Tensor without grad that takes a value requiring grad (``acc.add_(w)``) joins the graph.

The new values are a new array bound to ``.data`` (the Array API leaves writes through views to
each library), so another Tensor that shares the old array (``detach()``, a view) keeps the old
values, where PyTorch would show the update through the shared storage.
"""

from __future__ import annotations

import sys

from ..backends import backend_name_of, dtype_name, get_backend, is_float_dtype
from .function import is_grad_enabled

_OPS = __package__ + ".ops"
_TENSOR = __package__ + ".tensor"


def _ops():
    """xpnet.autodiff.ops (imported by tensor.py after Tensor exists)."""
    return sys.modules[_OPS]


def _wrap(array):
    return sys.modules[_TENSOR].Tensor._wrap(array)


_ITEM_SIZES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8, "int8": 1, "int16": 2, "int32": 4,
               "int64": 8, "uint8": 1, "bool": 1}
# torch's legacy type names (Tensor.type()), by dtype name
_TYPE_NAMES = {"float32": "FloatTensor", "float64": "DoubleTensor", "float16": "HalfTensor",
               "bfloat16": "BFloat16Tensor", "int64": "LongTensor", "int32": "IntTensor", "int16": "ShortTensor",
               "int8": "CharTensor", "uint8": "ByteTensor", "bool": "BoolTensor"}
_TYPE_DTYPES = {v: k for k, v in _TYPE_NAMES.items()}


class TorchMethods:
    """Methods of ``torch.Tensor`` beyond the operators and the core ones in ``Tensor``'s body."""

    __slots__ = ()

    def __format__(self, spec):
        """A 0-d Tensor formats as its number (``f"{loss:.4f}"``, as torch); others as ``str``."""
        if self.data.ndim == 0:
            return format(self.item(), spec)
        return object.__format__(self, spec)

    # -- metadata --------------------------------------------------------------------------------
    def ndimension(self):
        """The number of dimensions (``dim()``)."""
        return self.data.ndim

    def nelement(self):
        """The number of elements (``numel()``)."""
        return self.numel()

    def element_size(self):
        """Bytes per element of this dtype."""
        return _ITEM_SIZES[dtype_name(self.data.dtype)]

    def is_floating_point(self):
        return is_float_dtype(self.data.dtype)

    def contiguous(self, memory_format=None):
        """This Tensor: xpnet arrays need no contiguous copy before ``view``."""
        return self

    def is_contiguous(self, memory_format=None):
        return True

    # -- comparisons (boolean Tensors without gradient) -------------------------------------------
    def eq(self, other):
        return _ops().eq(self, other)

    def ne(self, other):
        return _ops().ne(self, other)

    def lt(self, other):
        return _ops().lt(self, other)

    def le(self, other):
        return _ops().le(self, other)

    def gt(self, other):
        return _ops().gt(self, other)

    def ge(self, other):
        return _ops().ge(self, other)

    def not_equal(self, other):
        return _ops().ne(self, other)

    def less(self, other):
        return _ops().lt(self, other)

    def less_equal(self, other):
        return _ops().le(self, other)

    def greater(self, other):
        return _ops().gt(self, other)

    def greater_equal(self, other):
        return _ops().ge(self, other)

    def equal(self, other):
        """True when ``other`` has this shape and these values (a Python bool)."""
        return _ops().equal(self, other)

    def isclose(self, other, rtol=1e-05, atol=1e-08, equal_nan=False):
        return _ops().isclose(self, other, rtol=rtol, atol=atol, equal_nan=equal_nan)

    def allclose(self, other, rtol=1e-05, atol=1e-08, equal_nan=False):
        return _ops().allclose(self, other, rtol=rtol, atol=atol, equal_nan=equal_nan)

    def isnan(self):
        return _ops().isnan(self)

    def isfinite(self):
        return _ops().isfinite(self)

    def isinf(self):
        return _ops().isinf(self)

    # -- arithmetic spelled as methods -------------------------------------------------------------
    def add(self, other, *, alpha=1):
        """self + alpha * other."""
        return _ops().add(self, other if alpha == 1 else other * alpha)

    def sub(self, other, *, alpha=1):
        """self - alpha * other."""
        return _ops().sub(self, other if alpha == 1 else other * alpha)

    def mul(self, other):
        return _ops().mul(self, other)

    def div(self, other, *, rounding_mode=None):
        if rounding_mode is not None:
            raise ValueError(f"div: rounding_mode={rounding_mode!r} is not supported; only true division")
        return _ops().div(self, other)

    def pow(self, exponent):
        return _ops().pow(self, exponent)

    def neg(self):
        return _ops().neg(self)

    def matmul(self, other):
        return _ops().matmul(self, other)

    def mm(self, other):
        return _ops().matmul(self, other)

    def t(self):
        """The transpose of a matrix (a 0-d or 1-D Tensor comes back as it is), as ``Tensor.t``."""
        if self.data.ndim > 2:
            raise ValueError(f"t: expects a Tensor of at most 2 dimensions, got {self.data.ndim}; use transpose")
        return _ops().transpose(self)

    # -- rearrangements -----------------------------------------------------------------------------
    def view_as(self, other):
        return _ops().reshape(self, tuple(other.shape))

    def reshape_as(self, other):
        return _ops().reshape(self, tuple(other.shape))

    def expand_as(self, other):
        return _ops().expand(self, tuple(other.shape))

    def repeat(self, *sizes):
        return _ops().repeat(self, *sizes)

    def tile(self, *dims):
        return _ops().tile(self, dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims)

    def flip(self, *dims):
        return _ops().flip(self, *dims)

    def roll(self, shifts, dims=None):
        return _ops().roll(self, shifts, dims)

    def narrow(self, dim, start, length):
        return _ops().narrow(self, dim, start, length)

    def chunk(self, chunks, dim=0):
        return _ops().chunk(self, chunks, dim)

    def unbind(self, dim=0):
        return _ops().unbind(self, dim)

    def gather(self, dim, index):
        return _ops().gather(self, dim, index)

    def scatter_add(self, dim, index, src):
        return _ops().scatter_add(self, dim, index, src)

    def scatter(self, dim, index, src=None, *, value=None, reduce=None):
        return _ops().scatter(self, dim, index, src, value=value, reduce=reduce)

    def index_select(self, dim, index):
        return _ops().index_select(self, dim, index)

    def masked_fill(self, mask, value):
        return _ops().masked_fill(self, mask, value)

    def where(self, condition, other):
        """``self`` where ``condition`` holds, else ``other`` (``xpnet.where(condition, self, other)``)."""
        return _ops().where(condition, self, other)

    # -- orderings and reductions -------------------------------------------------------------------
    def sort(self, dim=-1, descending=False, stable=False):
        return _ops().sort(self, dim, descending, stable)

    def argsort(self, dim=-1, descending=False, stable=False):
        return _ops().argsort(self, dim, descending, stable)

    def topk(self, k, dim=-1, largest=True, sorted=True):  # noqa: A002
        return _ops().topk(self, k, dim, largest, sorted)

    def amax(self, dim=None, keepdim=False):
        return _ops().amax(self, dim, keepdim)

    def amin(self, dim=None, keepdim=False):
        return _ops().amin(self, dim, keepdim)

    def cumsum(self, dim, *, dtype=None):
        return _ops().cumsum(self, dim, dtype=dtype)

    def prod(self, dim=None, keepdim=False, *, dtype=None):
        return _ops().prod(self, dim, keepdim, dtype=dtype)

    def norm(self, p="fro", dim=None, keepdim=False, dtype=None):
        return _ops().norm(self, p, dim, keepdim, dtype)

    def all(self, dim=None, keepdim=False):
        return _ops().all(self, dim, keepdim)

    def any(self, dim=None, keepdim=False):
        return _ops().any(self, dim, keepdim)

    # -- copies -------------------------------------------------------------------------------------
    def clone(self, memory_format=None):
        """A copy that shares no memory, still in the graph (dL/dself = G)."""
        return _ops().clone(self)

    # -- in-place updates (see the module docstring for the autograd rules) --------------------------
    def _in_place(self, op, compute, operand=None):
        """Make this Tensor hold ``compute(before)``, ``before`` being a Tensor over the current
        values, with PyTorch's in-place rules: same shape, a dtype this one can hold (checked on
        the arithmetic ``operand`` first, where the namespace might refuse the mix itself)."""
        if operand is not None:
            self._check_operand(op, operand)
        if self.requires_grad and is_grad_enabled():
            if self._node is None:
                raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")
            raise RuntimeError(
                f"{op}: in-place update of a Tensor that has autograd history ({self._node!r}); xpnet "
                f"keeps no version counters, so use the out-of-place form (y = y.{op.rstrip('_')}(...))")
        out = compute(_wrap(self.data))
        if tuple(out.shape) != tuple(self.data.shape):
            raise RuntimeError(f"{op}: output with shape {list(self.data.shape)} doesn't match the broadcast "
                               f"shape {list(out.shape)}")
        if out.dtype != self.data.dtype:
            mine, theirs = dtype_name(self.data.dtype), dtype_name(out.dtype)
            if (is_float_dtype(out.dtype) and not is_float_dtype(self.data.dtype)) or (
                    mine == "bool" and theirs != "bool"):
                raise RuntimeError(f"{op}: result type {theirs} can't be cast to the desired output type {mine}")
            out = _ops().astype(out, self.data.dtype)
        self.data = out.data
        if out._node is not None:  # a value that requires grad went in: this Tensor joins the graph
            self._node = out._node
            self._output_index = out._output_index
            self.requires_grad = True
        return self

    def _check_operand(self, op, other):
        """torch's rule for in-place arithmetic: the result type must fit this dtype."""
        mine = dtype_name(self.data.dtype)
        if is_float_dtype(mine):
            return
        kind = getattr(other, "dtype", None)
        if isinstance(other, float) or op == "div_" or (kind is not None and is_float_dtype(kind)):
            theirs = "float"
        elif mine == "bool" and not isinstance(other, bool) and (kind is None or dtype_name(kind) != "bool"):
            theirs = "int"
        else:
            return
        raise RuntimeError(f"{op}: result type {theirs} can't be cast to the desired output type {mine}")

    def add_(self, other, *, alpha=1):
        return self._in_place("add_", lambda before: _ops().add(before, other if alpha == 1 else other * alpha),
                              other if alpha == 1 or isinstance(alpha, int) else alpha)

    def sub_(self, other, *, alpha=1):
        return self._in_place("sub_", lambda before: _ops().sub(before, other if alpha == 1 else other * alpha),
                              other if alpha == 1 or isinstance(alpha, int) else alpha)

    def mul_(self, other):
        return self._in_place("mul_", lambda before: _ops().mul(before, other), other)

    def div_(self, other, *, rounding_mode=None):
        if rounding_mode is not None:
            raise ValueError(f"div_: rounding_mode={rounding_mode!r} is not supported; only true division")
        return self._in_place("div_", lambda before: _ops().div(before, other), other)

    def clamp_(self, min=None, max=None):  # noqa: A002 - torch's keyword names
        return self._in_place("clamp_", lambda before: _ops().clamp(before, min, max))

    def clip_(self, min=None, max=None):  # noqa: A002
        return self._in_place("clip_", lambda before: _ops().clamp(before, min, max))

    def masked_fill_(self, mask, value):
        return self._in_place("masked_fill_", lambda before: _ops().masked_fill(before, mask, value))

    def scatter_add_(self, dim, index, src):
        return self._in_place("scatter_add_", lambda before: _ops().scatter_add(before, dim, index, src))

    def scatter_(self, dim, index, src=None, *, value=None, reduce=None):
        return self._in_place("scatter_", lambda before: _ops().scatter(before, dim, index, src, value=value,
                                                                        reduce=reduce))

    def fill_(self, value):
        """Every element set to ``value`` (a number, or a 0-d Tensor: then differentiable)."""
        data = self.data
        if hasattr(value, "shape"):
            def filled(before):
                ops = _ops()
                v = value if dtype_name(value.dtype) == dtype_name(data.dtype) else ops.astype(value, data.dtype)
                return ops.clone(ops.broadcast_to(v, tuple(data.shape)))
            return self._in_place("fill_", filled)
        if dtype_name(data.dtype) == "bool":
            value = bool(value)
        elif not is_float_dtype(data.dtype):
            value = int(value)  # torch truncates a float fill of an integer Tensor
        xp = self.backend.xp
        return self._in_place("fill_", lambda before: _wrap(xp.full(tuple(data.shape), value, dtype=data.dtype,
                                                                    device=data.device)))

    def normal_(self, mean=0.0, std=1.0, *, generator=None):
        """Values drawn from N(mean, std²) by this backend's seeded generator (``manual_seed``)."""
        backend = self.backend
        shape, dtype = tuple(self.data.shape), self.data.dtype
        return self._in_place("normal_", lambda before: _wrap(backend.rng.normal(shape, float(mean), float(std),
                                                                                 dtype=dtype)))

    def uniform_(self, *bounds, generator=None, **named):
        """Values drawn uniformly from [from, to) (default [0, 1)) by this backend's seeded
        generator: ``uniform_(-a, a)``, or ``uniform_(**{"from": -a, "to": a})`` as torch names them."""
        low = bounds[0] if len(bounds) > 0 else named.pop("from", 0.0)
        high = bounds[1] if len(bounds) > 1 else named.pop("to", 1.0)
        if named or len(bounds) > 2:
            raise TypeError(f"uniform_: unexpected arguments {sorted(named) or bounds[2:]}")
        backend = self.backend
        shape, dtype = tuple(self.data.shape), self.data.dtype
        return self._in_place("uniform_", lambda before: _wrap(backend.rng.uniform(shape, float(low), float(high),
                                                                                   dtype=dtype)))

    # -- casts (last in the body: their names are builtins') -------------------------------------------
    def _cast(self, name):
        """This Tensor in dtype ``name``: itself when it already is, else a (differentiable between
        floating dtypes) copy."""
        if dtype_name(self.data.dtype) == name:
            return self
        return _ops().astype(self, name)

    def type(self, dtype=None, non_blocking=False, **kwargs):
        """With no argument, the legacy type name (``'xpnet.FloatTensor'``, ``'xpnet.cuda.LongTensor'``
        on CuPy); given a dtype or such a name (``'torch.DoubleTensor'`` too), this Tensor cast to it."""
        on_gpu = backend_name_of(self.data) == "cupy"
        if dtype is None:
            return ("xpnet.cuda." if on_gpu else "xpnet.") + _TYPE_NAMES[dtype_name(self.data.dtype)]
        if isinstance(dtype, str) and dtype.endswith("Tensor"):
            name = _TYPE_DTYPES.get(dtype.rsplit(".", 1)[-1])
            if name is None:
                raise ValueError(f"type: unknown tensor type {dtype!r}")
            out = self._cast(name)
            wants_gpu = ".cuda." in dtype
            if wants_gpu != on_gpu:
                out = out.to("cuda" if wants_gpu else "cpu")
            return out
        return self._cast(dtype_name(dtype))

    def type_as(self, other):
        """This Tensor in ``other``'s type (dtype, and CPU or GPU), as ``Tensor.type_as``."""
        return self.type(other.type())

    def long(self):
        return self._cast("int64")

    def int(self):
        return self._cast("int32")

    def short(self):
        return self._cast("int16")

    def char(self):
        return self._cast("int8")

    def byte(self):
        return self._cast("uint8")

    def bool(self):
        return self._cast("bool")

    def half(self):
        return self._cast("float16")

    def bfloat16(self):
        return self._cast("bfloat16")


def from_numpy(ndarray):
    """A Tensor over a NumPy array, as ``torch.from_numpy``: the dtype is kept, and on the NumPy
    backend the memory is shared (no copy). Under array_api_strict the array goes to that backend
    (its CPU counterpart); under a GPU backend the Tensor stays on the host (NumPy), as torch's
    CPU tensor does."""
    if backend_name_of(ndarray) != "numpy" or type(ndarray).__name__ != "ndarray":
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(ndarray).__name__}")
    tensor_class = sys.modules[_TENSOR].Tensor
    backend = get_backend()
    if backend.name in ("numpy", "cupy"):
        return tensor_class(ndarray)
    return tensor_class(backend.from_host(ndarray))
