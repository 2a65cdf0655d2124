"""Tensor: one backend array plus what reverse- and forward-mode differentiation need."""

from __future__ import annotations

import math

from ..backends import (
    backend_name_of,
    backend_of,
    dtype_name,
    get_backend,
    is_float_dtype,
    register_transfer,
    to_numpy,
    unwrap,
)
from ..backends import transfer as _transfer
from .tensor_methods import TorchMethods


class Tensor(TorchMethods):
    """A raw array of the current backend (``.data``) with autodiff bookkeeping.

    ``.grad`` is a Tensor without history (as in PyTorch): ``p.grad.data`` is an array.
    The rest of torch.Tensor's everyday methods come from ``TorchMethods`` (tensor_methods.py).
    """

    __array_priority__ = 1000  # NumPy defers ``ndarray + Tensor`` to Tensor.__radd__

    __slots__ = ("data", "grad", "requires_grad", "_node", "__weakref__", "__dict__")

    # Rarely set, so class-level defaults instead of per-instance slots: creating a Tensor (once
    # per operation output) then writes four attributes only.
    _output_index = 0  # which output of its node this Tensor is
    _retains_grad = False  # keep .grad on a non-leaf (retain_grad())
    _tangent = None  # forward-mode tangent (a raw array) inside autodiff.jvp
    _post_accumulate_grad_hooks = None  # {handle id: hook}, register_post_accumulate_grad_hook

    def __init__(self, data, requires_grad: bool = False):
        if isinstance(data, Tensor):
            data = data.data
        elif backend_name_of(data) is None:
            data = get_backend().asarray(data)
        self.data = data
        self.grad = None
        self._node = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _wrap(cls, data):
        """A Tensor around a raw array that is known to be one (no checks, no copy)."""
        t = cls.__new__(cls)
        t.data = data
        t.grad = None
        t._node = None
        t.requires_grad = False
        return t

    @classmethod
    def _from_op(cls, data, node, index):
        t = cls.__new__(cls)
        t.data = data
        t.grad = None
        t._node = node
        t.requires_grad = True
        if index:
            t._output_index = index
        return t

    # -- metadata ------------------------------------------------------------------------------
    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    def size(self, dim=None):
        """The shape as a tuple (torch's ``size()``), or the length of dimension ``dim``."""
        if dim is None:
            return tuple(self.data.shape)
        ndim = self.data.ndim
        if not -ndim <= dim < ndim:
            raise IndexError(f"size: dimension {dim} is out of range for a Tensor of {ndim} dimensions")
        return self.data.shape[dim]

    def numel(self):
        """The number of elements."""
        return math.prod(self.data.shape)

    def dim(self):
        return self.ndim

    @property
    def device(self):
        """An ``xpnet.device`` (``device(type='cpu')`` for NumPy, ``cuda:i`` for CuPy) equal to its
        string (``t.device == "cpu"``); array_api_strict's devices come back as its own Device
        objects that also equal their names (``"device1"``). See ``xpnet.backends.devices``."""
        return backend_of(self.data).xpnet_device

    @property
    def is_cuda(self):
        return backend_of(self.data).xpnet_device.type == "cuda"

    @property
    def backend(self):
        return backend_of(self.data)

    @property
    def is_leaf(self):
        return self._node is None

    @property
    def grad_fn(self):
        return self._node

    @property
    def T(self):
        return _ops.transpose(self)

    @property
    def mT(self):
        return _ops.transpose(self, -2, -1)

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        body = repr(to_numpy(self.data)).replace("array(", "tensor(", 1)
        extra = []
        if self._node is not None:
            extra.append(f"grad_fn={self._node!r}")
        elif self.requires_grad:
            extra.append("requires_grad=True")
        backend = backend_of(self.data)
        if backend.name != "numpy":
            extra.append(f"backend={backend}")
        if extra:
            body = body[:-1] + ", " + ", ".join(extra) + ")"
        return body

    # -- autodiff -------------------------------------------------------------------------------
    def requires_grad_(self, requires_grad: bool = True):
        if requires_grad and not is_float_dtype(self.data.dtype):
            raise TypeError(
                f"only floating-point Tensors can require gradients, got dtype {dtype_name(self.data.dtype)}"
            )
        if not requires_grad and self._node is not None:
            raise RuntimeError("requires_grad_(False) on a non-leaf Tensor; use .detach() instead")
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self):
        """Keep ``.grad`` on this non-leaf Tensor after backward."""
        self._retains_grad = True
        return self

    def register_post_accumulate_grad_hook(self, hook):
        """Run ``hook(tensor)`` in each backward after the gradient of this leaf has been
        accumulated into ``.grad`` (torch's name and semantics: once per backward, after every
        contribution of that backward; the return value is ignored). Returns a handle whose
        ``remove()`` unregisters it. Queue work for the end of the backward with
        ``xpnet.autodiff.function.queue_callback``."""
        if self._node is not None:
            raise RuntimeError("register_post_accumulate_grad_hook: only leaf Tensors accumulate a .grad; "
                               "use it on a leaf (a Parameter)")
        if not self.requires_grad:
            raise RuntimeError("register_post_accumulate_grad_hook: this Tensor does not require grad")
        if not callable(hook):
            raise TypeError(f"register_post_accumulate_grad_hook: hook must be callable, got {type(hook).__name__}")
        hooks = self._post_accumulate_grad_hooks
        if hooks is None:
            hooks = self._post_accumulate_grad_hooks = {}
        return _function._add_hook(hooks, hook)

    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Reverse-mode sweep from this Tensor; ``grad`` defaults to 1 for a one-element Tensor."""
        if not self.requires_grad:
            raise RuntimeError("backward: this Tensor does not require grad and has no graph")
        if grad is None:
            if self.numel() != 1:
                raise RuntimeError(
                    f"backward: grad can be implied only for a one-element output, got shape {self.shape}; "
                    "pass grad= of the same shape"
                )
            xp = self.backend.xp
            grad = xp.ones(self.data.shape, dtype=self.data.dtype, device=self.data.device)
        else:
            if type(grad) is not type(self.data):  # the common seed, an array like the output's, skips both
                grad = grad.data if isinstance(grad, Tensor) else grad  # not unwrap: 0.2 us a backward
                if backend_name_of(grad) is None:
                    grad = self.backend.asarray(grad, dtype=self.data.dtype)
            if grad.shape != self.data.shape and tuple(grad.shape) != self.shape:
                raise ValueError(f"backward: grad has shape {tuple(grad.shape)}, expected {self.shape}")
        _function.run_backward(self, grad, retain_graph)

    def detach(self):
        return Tensor(self.data)

    def detach_(self):
        self._node = None
        self.requires_grad = False
        return self

    # -- conversion ------------------------------------------------------------------------------
    def item(self):
        if self.numel() != 1:
            raise ValueError(f"item: only one-element Tensors convert to a Python number, got shape {self.shape}")
        value = to_numpy(self.data).reshape(())
        return value.item()

    def tolist(self):
        return to_numpy(self.data).tolist()

    def numpy(self):
        """A host NumPy copy of the data."""
        return to_numpy(self.data).copy()

    def __array__(self, dtype=None, copy=None):
        arr = to_numpy(self.data)
        return arr if dtype is None else arr.astype(dtype)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        return bool(self.item())

    def __index__(self):
        return int(self.item())

    def to(self, *args, **kwargs):
        """This Tensor on another device and/or in another dtype, as torch's ``Tensor.to``:
        ``to(device=None, dtype=None, non_blocking=False, copy=False)``, ``to(dtype)``,
        ``to(other)`` (other's device and dtype); a device may be ``"cpu"``, ``"cuda:1"``, an
        ``xpnet.device``, a backend name (``"array_api_strict:device1"``) or ``backend=``.
        Returns self when nothing changes (unless ``copy=True``); otherwise a differentiable move
        and cast: the gradient flows back to this Tensor. ``non_blocking`` is accepted and ignored."""
        from .factories import tensor_to

        return tensor_to(self, *args, **kwargs)

    def cpu(self):
        """This Tensor on the host (``to("cpu")``: the current backend's CPU device, else NumPy)."""
        return self.to("cpu")

    def cuda(self, device=None, non_blocking: bool = False):
        """This Tensor on a GPU: the current CUDA device, or ``device`` (an int, ``"cuda:1"``)."""
        from ..backends.devices import cuda_device

        return self.to(cuda_device(device), non_blocking=non_blocking)

    def astype(self, dtype):
        return _ops.astype(self, dtype)

    def float(self):
        """This Tensor in float32: itself when it already is (as torch), else a differentiable copy."""
        return self._cast("float32")

    def double(self):
        """This Tensor in float64: itself when it already is, else a differentiable copy."""
        return self._cast("float64")

    # -- in-place helpers for optimizers and init (no graph) -------------------------------------
    def zero_(self):
        """Every element set to 0, under the in-place rules of ``fill_``."""
        return self.fill_(0)

    def copy_(self, other):
        """Overwrite the values with ``other``'s (any backend or device: it is moved here first,
        as torch's copy_ does), broadcast to this shape and cast to this dtype."""
        src = unwrap(other)
        backend = self.backend
        if backend_name_of(src) is None:
            src = backend.asarray(src, dtype=self.data.dtype)
        else:
            src = _transfer.to_device(src, backend=backend.name, device=backend.device)
        xp = backend.xp
        if tuple(src.shape) != self.shape:
            src = xp.broadcast_to(src, self.shape)
        self.data = xp.astype(src, self.data.dtype, copy=True)
        return self

    # -- operators: each calls the function of the same name in xpnet.autodiff.ops --------------
    def __add__(self, other):
        result = _two(_Add, self, other)
        return result if result is not None else _Add.apply(self, other)

    def __radd__(self, other):
        result = _two(_Add, other, self)
        return result if result is not None else _Add.apply(other, self)

    def __sub__(self, other):
        result = _two(_Sub, self, other)
        return result if result is not None else _Sub.apply(self, other)

    def __rsub__(self, other):
        result = _two(_Sub, other, self)
        return result if result is not None else _Sub.apply(other, self)

    def __mul__(self, other):
        result = _two(_Mul, self, other)
        return result if result is not None else _Mul.apply(self, other)

    def __rmul__(self, other):
        result = _two(_Mul, other, self)
        return result if result is not None else _Mul.apply(other, self)

    def __truediv__(self, other):
        result = _two(_Div, self, other)
        return result if result is not None else _Div.apply(self, other)

    def __rtruediv__(self, other):
        result = _two(_Div, other, self)
        return result if result is not None else _Div.apply(other, self)

    def __pow__(self, other):
        return _ops.pow(self, other)

    def __rpow__(self, other):
        return _ops.pow(other, self)

    def __matmul__(self, other):
        return _ops.matmul(self, other)

    def __rmatmul__(self, other):
        return _ops.matmul(other, self)

    def __eq__(self, other):
        return _ops.eq(self, other)

    def __ne__(self, other):
        return _ops.ne(self, other)

    def __lt__(self, other):
        return _ops.lt(self, other)

    def __le__(self, other):
        return _ops.le(self, other)

    def __gt__(self, other):
        return _ops.gt(self, other)

    def __ge__(self, other):
        return _ops.ge(self, other)

    # By identity: a class that defines __eq__ (elementwise here, as in PyTorch) is otherwise
    # unhashable, and Tensors are dict keys and set members. object's own slot, not a def that
    # calls it: hashing then costs a third as much.
    __hash__ = object.__hash__

    def __neg__(self):
        return _ops.neg(self)

    def __abs__(self):
        return _ops.abs(self)

    def __getitem__(self, index):
        return _ops.getitem(self, index)

    # -- methods: each calls the function of the same name in xpnet.autodiff.ops ----------------
    def exp(self, *args, **kwargs):
        return _ops.exp(self, *args, **kwargs)

    def log(self, *args, **kwargs):
        return _ops.log(self, *args, **kwargs)

    def sqrt(self, *args, **kwargs):
        return _ops.sqrt(self, *args, **kwargs)

    def abs(self, *args, **kwargs):
        return _ops.abs(self, *args, **kwargs)

    def square(self, *args, **kwargs):
        return _ops.square(self, *args, **kwargs)

    def tanh(self, *args, **kwargs):
        return _ops.tanh(self, *args, **kwargs)

    def sigmoid(self, *args, **kwargs):
        return _ops.sigmoid(self, *args, **kwargs)

    def relu(self, *args, **kwargs):
        return _ops.relu(self, *args, **kwargs)

    def clip(self, *args, **kwargs):
        return _ops.clip(self, *args, **kwargs)

    def clamp(self, *args, **kwargs):
        return _ops.clamp(self, *args, **kwargs)

    def maximum(self, *args, **kwargs):
        return _ops.maximum(self, *args, **kwargs)

    def minimum(self, *args, **kwargs):
        return _ops.minimum(self, *args, **kwargs)

    def sum(self, *args, **kwargs):
        return _ops.sum(self, *args, **kwargs)

    def mean(self, *args, **kwargs):
        return _ops.mean(self, *args, **kwargs)

    def max(self, *args, **kwargs):
        return _ops.max(self, *args, **kwargs)

    def min(self, *args, **kwargs):
        return _ops.min(self, *args, **kwargs)

    def var(self, *args, **kwargs):
        return _ops.var(self, *args, **kwargs)

    def std(self, *args, **kwargs):
        return _ops.std(self, *args, **kwargs)

    def argmax(self, *args, **kwargs):
        return _ops.argmax(self, *args, **kwargs)

    def argmin(self, *args, **kwargs):
        return _ops.argmin(self, *args, **kwargs)

    def logsumexp(self, *args, **kwargs):
        return _ops.logsumexp(self, *args, **kwargs)

    def softmax(self, *args, **kwargs):
        return _ops.softmax(self, *args, **kwargs)

    def log_softmax(self, *args, **kwargs):
        return _ops.log_softmax(self, *args, **kwargs)

    def reshape(self, *args, **kwargs):
        return _ops.reshape(self, *args, **kwargs)

    def view(self, *args, **kwargs):
        return _ops.view(self, *args, **kwargs)

    def transpose(self, *args, **kwargs):
        return _ops.transpose(self, *args, **kwargs)

    def permute(self, *args, **kwargs):
        return _ops.permute(self, *args, **kwargs)

    def flatten(self, *args, **kwargs):
        return _ops.flatten(self, *args, **kwargs)

    def squeeze(self, *args, **kwargs):
        return _ops.squeeze(self, *args, **kwargs)

    def unsqueeze(self, *args, **kwargs):
        return _ops.unsqueeze(self, *args, **kwargs)

    def expand(self, *args, **kwargs):
        return _ops.expand(self, *args, **kwargs)

    def split(self, *args, **kwargs):
        return _ops.split(self, *args, **kwargs)


def _move_tensor(t, backend, device):
    return t.to(backend=backend, device=device)


register_transfer(Tensor, _move_tensor)

# Imported last, once Tensor exists: the ops are Functions that take and return Tensors, and
# function.py wraps every Function's outputs in Tensors, so both import this module. Tensor's
# methods look these names up when called, never at import.
from . import function as _function  # noqa: E402
from . import ops as _ops  # noqa: E402

# The arithmetic operators go straight to the two-operand path of Function.apply (one Python call
# and apply's argument packing less on every operator of every training step); it declines what
# it does not cover (raw arrays, NumPy scalars, mixed devices, autocast), which apply then takes.
_two = _function._apply_two
_Add, _Sub, _Mul, _Div = (_ops.elementwise.Add, _ops.elementwise.Sub, _ops.elementwise.Mul,
                          _ops.elementwise.Div)
