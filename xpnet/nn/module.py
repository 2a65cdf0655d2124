"""Module: the base class of every layer and model, and the parameter/buffer bookkeeping.

As in PyTorch, assigning a ``Parameter`` or a ``Module`` to an attribute registers it; buffers
(running statistics and other non-trained state) are registered with ``register_buffer``. A buffer
may hold a Tensor or a raw backend array; it keeps whichever kind it was given, and
``state_dict()`` hands out Tensors either way.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import NamedTuple

from ..autodiff.function import RemovableHandle, no_grad
from ..autodiff.tensor import Tensor
from ..backends import (
    backend_name_of,
    backend_of,
    describe_device,
    dtype_name,
    get_backend,
    get_default_dtype,
    is_float_dtype,
    register_transfer,
    to_device,
)
from ..backends import unwrap as _raw
from .parameter import Parameter


class StateDictError(ValueError, RuntimeError):
    """``load_state_dict`` found missing, unexpected or mis-shaped keys (nothing was changed).

    A ValueError per xpnet's convention and a RuntimeError as PyTorch raises, so ported
    ``except RuntimeError`` code keeps working.
    """


class IncompatibleKeys(NamedTuple):
    missing_keys: list
    unexpected_keys: list


def _is_array(value) -> bool:
    return backend_name_of(value) is not None


def _shape_text(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def factory_backend(device=None):
    """The Backend a layer built with ``device=`` allocates on: ``None`` is the current backend;
    otherwise whatever ``get_backend(device=...)`` reads (``"cpu"``, ``"cuda:1"``,
    ``xpnet.device(...)``, a backend name, ``"array_api_strict:device1"``, a device of the current
    backend's namespace such as ``"device1"`` or a native device object)."""
    if device is None:
        return get_backend()
    return get_backend(device=device)


class Module:
    """Base class of layers and models (PyTorch's ``nn.Module`` semantics).

    Subclasses call ``super().__init__()`` first, assign Parameters, sub-Modules and buffers as
    attributes, and define ``forward``; ``module(x)`` runs the forward hooks around ``forward``.
    """

    training: bool

    def __init__(self):
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise TypeError(f"{type(self).__name__} has no forward(): a Module subclass must define forward(self, ...)")

    def __call__(self, *args, **kwargs):
        if self._forward_pre_hooks:
            for hook in tuple(self._forward_pre_hooks.values()):
                result = hook(self, args)
                if result is not None:
                    args = result if isinstance(result, tuple) else (result,)
        out = self.forward(*args, **kwargs)
        if self._forward_hooks:
            for hook in tuple(self._forward_hooks.values()):
                result = hook(self, args, out)
                if result is not None:
                    out = result
        return out

    def register_forward_hook(self, hook) -> RemovableHandle:
        """``hook(module, inputs, output)`` runs after forward; a non-None return replaces output."""
        handle = RemovableHandle(self._forward_hooks)
        self._forward_hooks[handle.id] = hook
        return handle

    def register_forward_pre_hook(self, hook) -> RemovableHandle:
        """``hook(module, inputs)`` runs before forward; a non-None return replaces the inputs."""
        handle = RemovableHandle(self._forward_pre_hooks)
        self._forward_pre_hooks[handle.id] = hook
        return handle

    # -- attribute registration ---------------------------------------------------------------
    def _check_init(self, what):
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"cannot assign {what} before Module.__init__() call: call super().__init__() first in "
                f"{type(self).__name__}.__init__"
            )

    def _forget(self, name, keep):
        for store in ("_parameters", "_buffers", "_modules"):
            if store != keep:
                self.__dict__[store].pop(name, None)
        if keep != "_buffers":
            self._non_persistent_buffers.discard(name)
        self.__dict__.pop(name, None)

    def __setattr__(self, name, value):
        d = self.__dict__
        params = d.get("_parameters")
        if isinstance(value, Parameter):
            self._check_init("parameters")
            self._forget(name, "_parameters")
            params[name] = value
            return
        if params is not None and name in params:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as parameter {name!r} "
                                "(nn.Parameter or None expected)")
            params[name] = None
            return
        modules = d.get("_modules")
        if isinstance(value, Module):
            self._check_init("child modules")
            self._forget(name, "_modules")
            modules[name] = value
            return
        if modules is not None and name in modules:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as child module {name!r} "
                                "(nn.Module or None expected)")
            modules[name] = None
            return
        buffers = d.get("_buffers")
        if buffers is not None and name in buffers:
            if value is not None and not isinstance(value, Tensor) and not _is_array(value):
                raise TypeError(f"cannot assign {type(value).__name__} as buffer {name!r} "
                                "(a Tensor, a backend array or None expected)")
            buffers[name] = value
            return
        object.__setattr__(self, name, value)

    def __getattr__(self, name):
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            items = d.get(store)
            if items is not None and name in items:
                return items[name]
        if "_parameters" not in d:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}: its __init__ did not call "
                                 "super().__init__()")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for store in ("_parameters", "_buffers", "_modules"):
            items = self.__dict__.get(store)
            if items is not None and name in items:
                del items[name]
                self._non_persistent_buffers.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers) | set(self._modules))

    def _check_name(self, name, kind):
        if not isinstance(name, str):
            raise TypeError(f"{kind} name must be a string, got {type(name).__name__}")
        if name == "" or "." in name:
            raise KeyError(f"{kind} name {name!r} must be non-empty and contain no '.'")
        if hasattr(type(self), name) or name in self.__dict__:
            raise KeyError(f"attribute {name!r} already exists on {type(self).__name__}")

    def register_parameter(self, name: str, param) -> None:
        self._check_init("parameters")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter({name!r}): expected nn.Parameter or None, got {type(param).__name__}")
        if name not in self._parameters:
            self._check_name(name, "parameter")
        self._forget(name, "_parameters")
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor, persistent: bool = True) -> None:
        """Register non-trained state (a Tensor, a raw array or None) that moves and saves with the
        module; ``persistent=False`` leaves it out of ``state_dict()``."""
        self._check_init("buffers")
        if tensor is not None and not isinstance(tensor, Tensor) and not _is_array(tensor):
            raise TypeError(f"register_buffer({name!r}): expected a Tensor, a backend array or None, "
                            f"got {type(tensor).__name__}")
        if isinstance(tensor, Parameter):
            raise TypeError(f"register_buffer({name!r}): got a Parameter; use register_parameter for trained state")
        if name not in self._buffers:
            self._check_name(name, "buffer")
        self._forget(name, "_buffers")
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)

    def add_module(self, name: str, module) -> None:
        self._check_init("child modules")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module({name!r}): expected an nn.Module or None, got {type(module).__name__}")
        if name not in self._modules:
            self._check_name(name, "module")
        self._forget(name, "_modules")
        self._modules[name] = module

    register_module = add_module

    def get_submodule(self, target: str):
        """The descendant named by a dotted path (``"features.0"``)."""
        module = self
        if target == "":
            return module
        for part in target.split("."):
            child = module._modules.get(part)
            if child is None:
                raise AttributeError(f"{type(module).__name__} has no submodule {part!r} (looking up {target!r})")
            module = child
        return module

    # -- traversal ----------------------------------------------------------------------------
    def named_modules(self, memo=None, prefix: str = "", remove_duplicate: bool = True):
        """(dotted name, module) for this module and every descendant, depth first."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is None:
                continue
            yield from child.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        seen = set()
        for name, child in self._modules.items():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                yield name, child

    def children(self):
        for _, child in self.named_children():
            yield child

    def _named_members(self, store, prefix, recurse, remove_duplicate=True):
        seen = set()
        owners = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        for owner_prefix, owner in owners:
            for name, value in owner.__dict__[store].items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield (f"{owner_prefix}.{name}" if owner_prefix else name), value

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        """(dotted name, Parameter) pairs; a Parameter shared by two layers appears once."""
        return self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        return self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    # -- modes and gradients --------------------------------------------------------------------
    def train(self, mode: bool = True):
        if not isinstance(mode, bool):
            raise TypeError(f"train(mode): mode must be a bool, got {type(mode).__name__}")
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's ``.grad`` (to None, or to zeros with ``set_to_none=False``)."""
        for p in self.parameters():
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad = Tensor(p.backend.xp.zeros_like(p.grad.data))

    def apply(self, fn):
        """Call ``fn(module)`` on every child (recursively, children first) and then on self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self, destination=None, prefix: str = "", keep_vars: bool = False):
        """An ordered dict of every parameter and persistent buffer by dotted name (``0.weight``).

        Values are Tensors without history that share memory with the module (``keep_vars=True``
        gives the Parameters and buffers themselves).
        """
        if destination is None:
            destination = OrderedDict()
        for name, p in self._parameters.items():
            if p is not None:
                destination[prefix + name] = p if keep_vars else Tensor(p.data)
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent_buffers:
                if keep_vars:
                    destination[prefix + name] = b
                else:
                    destination[prefix + name] = Tensor(_raw(b))
        for name, child in self._modules.items():
            if child is not None:
                child.state_dict(destination, prefix + name + ".", keep_vars)
        return destination

    def _state_slots(self):
        """(key, owner module, store name, attribute name) for every state_dict entry."""
        slots = []
        for prefix, m in self.named_modules(remove_duplicate=False):
            head = f"{prefix}." if prefix else ""
            for name, p in m._parameters.items():
                if p is not None:
                    slots.append((head + name, m, "_parameters", name))
            for name, b in m._buffers.items():
                if b is not None and name not in m._non_persistent_buffers:
                    slots.append((head + name, m, "_buffers", name))
        seen = set()
        unique = []
        for slot in slots:
            if slot[0] not in seen:
                seen.add(slot[0])
                unique.append(slot)
        return unique

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy values into this module's parameters and buffers, by key.

        Values may be Tensors, raw arrays of any backend or NumPy arrays; each is copied to the
        backend, device and dtype of the entry it replaces. Everything is checked before anything
        is written: a missing or unexpected key (with ``strict``), a shape mismatch (always) or an
        unconvertible value raises StateDictError naming the keys and shapes, and leaves the module
        unchanged. Returns ``(missing_keys, unexpected_keys)``.
        """
        if not hasattr(state_dict, "items"):
            raise TypeError(f"load_state_dict: expected a dict-like state_dict, got {type(state_dict).__name__}")
        slots = self._state_slots()
        expected = {key for key, *_ in slots}
        missing = [key for key, *_ in slots if key not in state_dict]
        unexpected = [key for key in state_dict if key not in expected]
        problems = []
        if strict:
            problems += [f"missing key {key!r} (expected shape {_shape_text(_current(m, store, name).shape)})"
                         for key, m, store, name in slots if key in missing]
            problems += [f"unexpected key {key!r} (shape {_shape_text(_value_shape(state_dict[key]))})"
                         for key in unexpected]
        staged = []
        for key, m, store, name in slots:
            if key not in state_dict:
                continue
            current = _raw(_current(m, store, name))
            value = state_dict[key]
            try:
                converted = _convert_for(current, value)
            except (TypeError, ValueError) as exc:
                problems.append(f"key {key!r}: cannot convert a {type(value).__name__}: {exc}")
                continue
            if tuple(converted.shape) != tuple(current.shape):
                problems.append(f"size mismatch for {key!r}: the state_dict has shape "
                                f"{_shape_text(converted.shape)}, the module has shape {_shape_text(current.shape)}")
                continue
            staged.append((m, store, name, converted))
        if problems:
            raise StateDictError(f"Error(s) in loading state_dict for {type(self).__name__} (nothing was loaded):\n  "
                                 + "\n  ".join(problems))
        for m, store, name, converted in staged:
            holder = m.__dict__[store][name]
            if isinstance(holder, Tensor):
                holder.data = converted
            else:
                m.__dict__[store][name] = converted
        return IncompatibleKeys(missing, unexpected)

    # -- moving and casting ---------------------------------------------------------------------
    def _apply_to_arrays(self, fn, cast_grads: bool = True):
        """Replace every parameter's and buffer's array by ``fn(array)`` in place (the Parameter
        objects stay the same, so optimizers holding them keep working)."""
        for m in self.modules():
            for p in m._parameters.values():
                if p is None:
                    continue
                p.data = fn(p.data)
                if cast_grads and p.grad is not None:
                    p.grad = Tensor(fn(p.grad.data))
            for name, b in list(m._buffers.items()):
                if b is None:
                    continue
                if isinstance(b, Tensor):
                    b.data = fn(b.data)
                else:
                    m._buffers[name] = fn(b)
        return self

    def to(self, *args, **kwargs):
        """Move every parameter and buffer and/or cast the floating ones, in place; returns self.

        As torch's ``Module.to``: ``to(device=None, dtype=None, non_blocking=False)``,
        ``to(dtype)``, ``to(tensor)`` (its device and dtype). A device is ``"cpu"``, ``"cuda:1"``,
        an ``xpnet.device``, a backend name or ``"backend:device"``
        (``m.to("array_api_strict:device1")``), a ``backend=`` keyword, or a device of the arrays'
        own namespace (``m.to("device1")``: each array stays in its namespace)."""
        from ..backends.devices import parse_to_args

        backend, device, dtype, _non_blocking, _copy = parse_to_args(args, kwargs, f"{type(self).__name__}.to")
        if backend is not None or device is not None:
            self._apply_to_arrays(lambda a: to_device(a, backend=backend, device=device))
        if dtype is not None:
            name = dtype_name(dtype)
            if not is_float_dtype(name):
                raise TypeError(f"{type(self).__name__}.to: dtype must be a floating dtype, got {name}")

            def cast(a):
                if not is_float_dtype(a.dtype):
                    return a
                b = backend_of(a)
                target = b.dtype(name)
                return a if a.dtype == target else b.xp.astype(a, target)

            self._apply_to_arrays(cast)
        return self

    def double(self):
        return self.to(dtype="float64")

    def float(self):
        return self.to(dtype="float32")

    def half(self):
        return self.to(dtype="float16")

    def cpu(self):
        """Every parameter and buffer on the host: ``to("cpu")`` (the current backend's CPU
        device, else NumPy)."""
        return self.to("cpu")

    def cuda(self, device=None):
        """Every parameter and buffer on a GPU: the current CUDA device, or ``device`` (an int,
        ``"cuda:1"``)."""
        from ..backends.devices import cuda_device

        return self.to(cuda_device(device))

    def _transfer(self, backend, device):
        # to_device(model) with no target moves to the current backend, like a bare array
        if backend is None and device is None:
            current = get_backend()
            backend, device = current.name, current.device
        return self._apply_to_arrays(lambda a: to_device(a, backend=backend, device=device))

    # -- description ----------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The text inside this module's parentheses in ``repr`` (override in layers)."""
        return ""

    def _get_name(self) -> str:
        return type(self).__name__

    def __repr__(self):
        extra = self.extra_repr()
        lines = []
        for name, child in self._modules.items():
            text = repr(child).replace("\n", "\n  ")
            lines.append(f"({name}): {text}")
        if not lines:
            return f"{self._get_name()}({extra})"
        body = ([extra] if extra else []) + lines
        return f"{self._get_name()}(\n  " + "\n  ".join(body) + "\n)"

    def _backend_and_dtype(self):
        """The backend of the first parameter or buffer, and the dtype of the first floating one."""
        backend = None
        dtype = None
        for value in list(self.parameters()) + [_raw(b) for b in self.buffers()]:
            data = _raw(value)
            if backend is None:
                backend = backend_of(data)
            if dtype is None and is_float_dtype(data.dtype):
                dtype = data.dtype
        backend = backend or get_backend()
        return backend, (dtype if dtype is not None else backend.dtype(get_default_dtype()))

    def summary(self, input_shape, batch_size: int = 1, dtype=None, print_fn=print) -> str:
        """Tabulate each layer's name, type, output shape and own parameter count, and the totals.

        ``input_shape`` is one sample's shape, without the batch dimension (as torchsummary's
        ``input_size`` and Keras): ``model.summary((3, 32, 32))`` runs one forward pass on zeros of
        shape ``(batch_size, 3, 32, 32)``, under ``no_grad`` and in eval mode (running statistics
        and the RNG are untouched; each module's mode is restored). Output shapes include the batch
        dimension. The text is printed with ``print_fn`` (None: not printed) and returned.
        """
        backend, native_dtype = self._backend_and_dtype()
        if dtype is not None:
            native_dtype = backend.dtype(dtype)
        sample = (int(input_shape),) if isinstance(input_shape, int) else tuple(int(s) for s in input_shape)
        shape = (int(batch_size),) + sample
        rows = {}
        order = []
        names = {id(m): (name, m) for name, m in self.named_modules() if m is not self}
        handles = []

        def make_pre_hook(key):
            def hook(module, inputs):
                if key not in rows:
                    depth = names[key][0].count(".")
                    rows[key] = {"name": names[key][0], "type": type(module).__name__, "depth": depth, "shape": "?"}
                    order.append(key)
            return hook

        def make_hook(key):
            def hook(module, inputs, output):
                if rows[key]["shape"] == "?":
                    rows[key]["shape"] = _describe_output(output)
            return hook

        for key, (name, m) in names.items():
            handles.append(m.register_forward_pre_hook(make_pre_hook(key)))
            handles.append(m.register_forward_hook(make_hook(key)))
        modes = {id(m): m.training for m in self.modules()}
        try:
            self.eval()
            x = Tensor(backend.xp.zeros(shape, dtype=native_dtype, device=backend.device))
            with no_grad():
                out = self(x)
        finally:
            for h in handles:
                h.remove()
            for m in self.modules():
                object.__setattr__(m, "training", modes[id(m)])

        table = []
        for key in order:
            row = rows[key]
            m = names[key][1]
            own = sum(math.prod(p.shape) for p in m.parameters(recurse=False))
            has_children = any(True for _ in m.children())
            count = f"{own:,}" if (own or not has_children) else "--"
            label = "  " * row["depth"] + f"{row['name']} ({row['type']})"
            table.append((label, row["shape"], count))
        total = sum(math.prod(p.shape) for p in self.parameters())
        trainable = sum(math.prod(p.shape) for p in self.parameters() if p.requires_grad)
        head = ("Layer (type)", "Output shape", "Param #")
        w0 = max([len(head[0])] + [len(r[0]) for r in table])
        w1 = max([len(head[1])] + [len(r[1]) for r in table])
        w2 = max([len(head[2]), len(f"{total:,}")] + [len(r[2]) for r in table])
        rule = "=" * (w0 + w1 + w2 + 4)
        lines = [f"{type(self).__name__} summary: input {_shape_text(shape)} {dtype_name(native_dtype)} "
                 f"on {backend}", rule,
                 f"{head[0]:<{w0}}  {head[1]:<{w1}}  {head[2]:>{w2}}", rule]
        lines += [f"{a:<{w0}}  {b:<{w1}}  {c:>{w2}}" for a, b, c in table]
        lines += [rule, f"Output: {_describe_output(out)}",
                  f"Total params: {total:,}", f"Trainable params: {trainable:,}",
                  f"Non-trainable params: {total - trainable:,}"]
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text


def _describe_output(output) -> str:
    if isinstance(output, Tensor) or _is_array(output):
        return _shape_text(tuple(output.shape))
    if isinstance(output, (tuple, list)):
        return "[" + ", ".join(_describe_output(o) for o in output) + "]"
    return type(output).__name__


def _current(module, store, name):
    return module.__dict__[store][name]


def _value_shape(value):
    try:
        return tuple(_raw(value).shape)
    except AttributeError:
        return ()


def _convert_for(current, value):
    """``value`` as a fresh array on ``current``'s backend and device with ``current``'s dtype."""
    value = _raw(value)
    target = backend_of(current)
    if _is_array(value):
        if describe_device(value) != str(target):
            value = to_device(value, backend=target.name, device=target.device)
    else:
        value = target.asarray(value)
    xp = target.xp
    if value.dtype != current.dtype:
        if is_float_dtype(current.dtype) != is_float_dtype(value.dtype) and is_float_dtype(value.dtype):
            raise TypeError(f"a floating value ({dtype_name(value.dtype)}) cannot be loaded into "
                            f"{dtype_name(current.dtype)} state")
        return xp.astype(value, current.dtype, copy=True)
    return xp.asarray(value, copy=True)


register_transfer(Module, lambda module, backend, device: module._transfer(backend, device))
