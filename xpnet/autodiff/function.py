"""Function: one differentiable operation over raw arrays, and the reverse-mode engine.

A Function subclass gives ``forward(ctx, *args)`` and ``backward(ctx, *grads)`` as static
methods over raw arrays of one namespace, and optionally ``jvp(ctx, *tangents)`` for forward
mode. ``Cls.apply(*args, **config)`` unwraps Tensors, checks that all arrays share a device, runs
forward and, when gradients are wanted, records a Node that links the outputs to the inputs.

Positional arguments that are Tensors are the differentiable inputs; raw arrays, numbers and
other values pass through unchanged. ``backward`` returns one gradient per positional argument
(None where there is none; a bare array is accepted when there is exactly one argument).
Keyword arguments are configuration handed to ``forward`` and never differentiated.
"""

from __future__ import annotations

import contextlib
import contextvars

from ..backends import NUMPY_ARRAY, ONE_DEVICE_TYPES, backend_name_of, check_same_device, fresh_copy

_grad_enabled: contextvars.ContextVar = contextvars.ContextVar("xpnet_grad_enabled", default=True)
_forward_mode: contextvars.ContextVar = contextvars.ContextVar("xpnet_forward_mode", default=0)
# mixed precision (xpnet.amp.autocast): the low float dtype name, or None outside autocast
_autocast_dtype: contextvars.ContextVar = contextvars.ContextVar("xpnet_autocast", default=None)


def is_autocast_enabled() -> bool:
    """True inside ``xpnet.amp.autocast``: layers then accept low-precision inputs to float32
    weights, since the autocast Functions cast both sides to one dtype."""
    return _autocast_dtype.get() is not None


def is_grad_enabled() -> bool:
    return _grad_enabled.get()


@contextlib.contextmanager
def set_grad_enabled(mode: bool):
    token = _grad_enabled.set(bool(mode))
    try:
        yield
    finally:
        _grad_enabled.reset(token)


class no_grad(contextlib.ContextDecorator):
    """``with xpnet.no_grad():`` (or as a decorator): operations record no graph."""

    def __enter__(self):
        self._token = _grad_enabled.set(False)
        return self

    def __exit__(self, *exc):
        _grad_enabled.reset(self._token)
        return False


class enable_grad(contextlib.ContextDecorator):
    def __enter__(self):
        self._token = _grad_enabled.set(True)
        return self

    def __exit__(self, *exc):
        _grad_enabled.reset(self._token)
        return False


def forward_mode_active() -> bool:
    """True while ``xpnet.autodiff.jvp`` runs: only then do the jvp rules need a forward's inputs,
    so a Function keeps them alive (``ctx.inputs``) only when this says so."""
    return bool(_forward_mode.get())


@contextlib.contextmanager
def forward_mode():
    """Inside, Functions also push tangents (``Tensor._tangent``) through their ``jvp`` rules."""
    token = _forward_mode.set(_forward_mode.get() + 1)
    try:
        yield
    finally:
        _forward_mode.reset(token)


class Context:
    """What forward leaves for backward: ``save_for_backward(*arrays)`` and any attributes."""

    # the attributes the elementwise ops set on every call have slots: no per-call __dict__ for them
    __slots__ = ("_saved", "needs_input_grad", "a_shape", "a_dtype", "b_shape", "b_dtype", "out_shape",
                 "__dict__")

    def __init__(self, needs_input_grad=()):
        self._saved = ()
        self.needs_input_grad = needs_input_grad

    def save_for_backward(self, *arrays) -> None:
        self._saved = arrays

    @property
    def saved_tensors(self):
        if self._saved is None:
            raise RuntimeError(
                "trying to backward through the graph a second time: its saved arrays were freed "
                "after the first backward; pass retain_graph=True to the first backward"
            )
        return self._saved

    saved_arrays = saved_tensors


class Node(Context):
    """One recorded application: the Function's context itself (forward's ``ctx`` becomes the
    node, one object per operation instead of two), the Function, its Tensor inputs and output count.

    ``inputs`` is a tuple aligned with forward's positional args (Tensor or None); ``out_meta``
    the (shape, dtype) of each output of a multi-output node, to make zero gradients. A node whose
    saved arrays were dropped after a backward (``_saved is None``) is ``freed``.
    """

    __slots__ = ("fn", "inputs", "n_outputs", "out_meta", "__weakref__")

    def _record(self, fn, inputs, n_outputs, out_meta):
        self.fn = fn
        self.inputs = inputs
        self.n_outputs = n_outputs
        self.out_meta = out_meta
        return self

    @property
    def ctx(self):
        return self

    @property
    def freed(self) -> bool:
        return self._saved is None

    def __repr__(self):
        return f"<{self.fn.__name__}Backward>"


class Function:
    """Base class of differentiable operations; see the module docstring."""

    differentiable = True

    # True when backward returns gradients that are new arrays, each referenced nowhere else (no
    # view of G, no array returned twice): a leaf then keeps the array as its .grad without a copy
    # (a model's parameters get theirs from Affine and convolutions; 7 MiB a step for the MLP)
    owns_grads = False

    @staticmethod
    def forward(ctx, *args, **config):  # pragma: no cover - every subclass defines it
        raise TypeError("a Function subclass must define forward(ctx, *args)")

    @staticmethod
    def backward(ctx, *grads):  # pragma: no cover
        raise TypeError("this Function defines no backward")

    jvp = None  # optional: jvp(ctx, *tangents) -> output tangent(s)

    # Whether backward checks each gradient this Function returns against its input's shape. On
    # for every Function defined outside xpnet (a wrong shape is then an error naming it); off for
    # xpnet's own, whose gradients the test suite checks against finite differences, shapes
    # included: two shape reads per edge of every backward (a fifth of a small op's backward).
    check_grad_shapes = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "check_grad_shapes" not in cls.__dict__:
            cls.check_grad_shapes = not cls.__module__.startswith("xpnet.")

    # autocast policy (see xpnet.amp): None = run in the inputs' dtypes, "low" = cast floating
    # Tensor inputs to the autocast dtype (GEMM-heavy ops), "float32" = cast them up to float32
    # (reductions, normalisation, losses). The casts are recorded, so gradients reach float32 weights.
    autocast = None

    @classmethod
    def apply(cls, *args, **config):
        if len(args) == 2 and not config:
            result = _apply_two(cls, args[0], args[1])
            if result is not None:
                return result
        if cls.autocast is not None:
            low = _autocast_dtype.get()
            if low is not None:
                args = _autocast_args(args, low if cls.autocast == "low" else "float32")
        raw = []
        needs = []
        inputs = []  # aligned with args: the Tensor, or None
        any_requires = False
        first = first_kind = None  # the first array seen; a later one on another device triggers the check
        mixed = False
        for a in args:
            if isinstance(a, Tensor):
                d = a.data
                inputs.append(a)
                if a.requires_grad:
                    needs.append(True)
                    any_requires = True
                else:
                    needs.append(False)
            else:
                needs.append(False)
                inputs.append(None)
                kind = type(a)
                if kind in _NUMBERS or a is None:
                    raw.append(a)
                    continue
                if kind.__module__ == "numpy" and kind.__name__ != "ndarray" and hasattr(a, "item"):
                    # a NumPy scalar (np.float64(3.0), np.int64(2)) acts as the Python number it
                    # holds: no upcast of float32 data, and usable with every backend
                    raw.append(a.item())
                    continue
                if isinstance(a, _PLAIN) or backend_name_of(a) is None:
                    raw.append(a)
                    continue
                d = a
            raw.append(d)
            if first is None:
                first, first_kind = d, type(d)
            elif not mixed and (type(d) is not first_kind
                                or (first_kind not in ONE_DEVICE_TYPES and d.device != first.device)):
                mixed = True
        if mixed:
            check_same_device(*[a for a in raw if a is not None and not isinstance(a, _PLAIN)],
                              op=cls.__name__)

        ctx = _new(Node)  # the context; it becomes the graph's node if the call is recorded
        ctx._saved = ()
        ctx.needs_input_grad = tuple(needs)
        try:
            out = cls.forward(ctx, *raw, **config)
        except (ValueError, TypeError, IndexError, RuntimeError) as exc:
            _raise_named(exc, cls.__name__)
        inputs = tuple(inputs)
        result = _outputs(cls, ctx, out, inputs, any_requires and cls.differentiable and _grad_enabled.get())

        if _forward_mode.get() and cls.differentiable:
            tensor_inputs = inputs
            if any(t is not None and t._tangent is not None for t in tensor_inputs):
                if cls.jvp is None:
                    raise TypeError(f"{cls.__name__} has no jvp rule: forward-mode differentiation through it is not supported")
                tangents = tuple(None if t is None else t._tangent for t in tensor_inputs)
                tan_out = cls.jvp(ctx, *tangents)
                tan_out = tan_out if isinstance(tan_out, tuple) else (tan_out,)
                for r, tan in zip(result if type(result) is tuple else (result,), tan_out):
                    r._tangent = tan
        return result



def _apply_two(cls, a, b):
    """``cls.apply(a, b)`` in fewer steps for the most common call: two operands (the arithmetic
    operators, matmul, comparisons), each a Tensor or a Python number and at least one a Tensor,
    arrays of one type and device, no autocast or forward mode. The same context, node and
    outputs as apply's general path, without its lists; None where that path must run."""
    if isinstance(a, Tensor):
        da = a.data
        ra = a.requires_grad
        if isinstance(b, Tensor):
            db = b.data
            rb = b.requires_grad
            kind = type(da)
            if type(db) is not kind or (kind not in ONE_DEVICE_TYPES and da.device != db.device):
                return None  # the general path's device check names the op and both devices
        elif type(b) in _NUMBERS:
            db, rb, b = b, False, None
        else:
            return None
    elif type(a) in _NUMBERS and isinstance(b, Tensor):
        da, ra, a = a, False, None
        db = b.data
        rb = b.requires_grad
    else:
        return None
    if cls.autocast is not None or _forward_mode.get():
        return None
    ctx = _new(Node)  # Context.__init__'s two fields, without the call
    ctx._saved = ()
    ctx.needs_input_grad = (ra, rb)
    try:
        out = cls.forward(ctx, da, db)
    except (ValueError, TypeError, IndexError, RuntimeError) as exc:
        _raise_named(exc, cls.__name__)
    return _outputs(cls, ctx, out, (a, b), (ra or rb) and cls.differentiable and _grad_enabled.get())


def _outputs(cls, ctx, out, inputs, record):
    """The output Tensor(s) of a call of ``cls`` whose forward returned ``out``; when ``record``,
    ``ctx`` becomes their graph node, linked to ``inputs`` (a tuple aligned with the positional
    arguments: the Tensor, or None)."""
    if type(out) is tuple:
        if record:
            node = ctx._record(cls, inputs, len(out), tuple([(o.shape, o.dtype) for o in out]))
            return tuple([Tensor._from_op(o, node, i) for i, o in enumerate(out)])
        return tuple([Tensor._wrap(o) for o in out])
    result = _new(Tensor)  # Tensor._from_op(out, ctx, 0) or Tensor._wrap(out), inlined
    result.data = out
    result.grad = None
    if record:
        ctx.fn = cls  # ctx._record(cls, inputs, 1, None), inlined: out_meta is for multi-output nodes
        ctx.inputs = inputs
        ctx.n_outputs = 1
        ctx.out_meta = None
        result._node = ctx
        result.requires_grad = True
    else:
        result._node = None
        result.requires_grad = False
    return result


def _raise_named(exc, op):
    """Raise ``exc`` (caught from forward) with its message prefixed by the operation's name."""
    named = _named(exc, op)
    if named is exc:
        raise exc
    raise named from exc


_NUMBERS = frozenset((int, float, bool, complex))
_new = object.__new__
_PLAIN = (int, float, complex, bool, str, tuple, list, dict, slice, type(Ellipsis))


def _named(exc, op):
    """``exc`` with its message prefixed by the operation's name, unless it already names one."""
    if type(exc) not in _RENAMEABLE:
        return exc  # a subclass (DeviceMismatchError, numpy's AxisError) keeps its own form
    message = str(exc)
    head = message.split(":", 1)[0]
    if ":" in message and head and " " not in head.strip():
        return exc
    return type(exc)(f"{op}: {message}")


_RENAMEABLE = frozenset((ValueError, TypeError, IndexError, RuntimeError))


def _autocast_args(args, target):
    from ..backends import dtype_name, is_float_dtype
    from .ops import astype

    out = []
    for a in args:
        if isinstance(a, Tensor) and is_float_dtype(a.data.dtype) and dtype_name(a.data.dtype) != target:
            a = astype(a, target)
        out.append(a)
    return tuple(out)


def _topological_order(root_node):
    """Nodes reachable from ``root_node``, each after every node that consumes its outputs."""
    order = []
    visited = set()
    stack = [(root_node, False)]
    push, pop, emit, mark = stack.append, stack.pop, order.append, visited.add
    while stack:
        node, expanded = pop()
        if expanded:
            emit(node)
            continue
        # marked when expanded, not when pushed: marking on push would let a node reached through
        # several consumers finish before one of them, and run its backward too early
        if node in visited:
            continue
        mark(node)
        push((node, True))
        for t in node.inputs:
            if t is not None:
                parent = t._node
                if parent is not None and parent not in visited:
                    push((parent, False))
    order.reverse()
    return order


# -- gradient hooks ------------------------------------------------------------------------------
# How many post-accumulate-grad hooks are registered (Tensor.register_post_accumulate_grad_hook) and
# not removed: while 0, backward pays one truth test for hooks. A Tensor dropped with its hooks still
# registered keeps the count up: backward then only scans its graph for hooked leaves, still correct.
_hook_count = 0
# Callbacks queued (queue_callback) during a backward, run when the outermost backward ends.
_final_callbacks = []
_backward_depth = 0


class RemovableHandle:
    """Returned by the hook registrations (``Tensor.register_post_accumulate_grad_hook``,
    ``Module.register_forward_hook``, ...): ``handle.remove()`` unregisters the hook; also a context
    manager that removes it on exit. ``on_remove`` runs once, when a registered hook is removed."""

    _next_id = 0

    def __init__(self, hooks: dict, on_remove=None):
        self._hooks = hooks
        self._on_remove = on_remove
        self.id = RemovableHandle._next_id
        RemovableHandle._next_id += 1

    def remove(self) -> None:
        if self._hooks.pop(self.id, None) is not None and self._on_remove is not None:
            self._on_remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


def _hook_removed() -> None:
    global _hook_count
    _hook_count -= 1


def _add_hook(hooks: dict, hook) -> RemovableHandle:
    global _hook_count
    handle = RemovableHandle(hooks, on_remove=_hook_removed)
    hooks[handle.id] = hook
    _hook_count += 1
    return handle


def queue_callback(callback) -> None:
    """Run ``callback()`` once the backward now running has finished (torch's
    ``Variable._execution_engine.queue_callback``): a gradient hook uses it to act on the whole
    backward (DistributedDataParallel waits for its all-reduces there). Callbacks run in the order
    queued, after the outermost backward when backwards nest, and may queue more; a backward that
    raises drops them. Only valid during backward."""
    if not _backward_depth:
        raise RuntimeError("queue_callback: callbacks can only be queued during a backward pass")
    _final_callbacks.append(callback)


def _hook_edges(order):
    """{id(leaf): [leaf, edges left, got a gradient]} for the hooked leaves that the nodes of
    ``order`` feed: a leaf's hooks run when its last edge has been processed, so once per backward
    after all of its gradient has been accumulated (as torch's AccumulateGrad)."""
    edges = {}
    for node in order:
        for t in node.inputs:
            if t is not None and t._node is None and t._post_accumulate_grad_hooks:
                entry = edges.get(id(t))
                if entry is None:
                    edges[id(t)] = [t, 1, False]
                else:
                    entry[1] += 1
    return edges


def _run_post_accumulate_hooks(tensor) -> None:
    for hook in tuple(tensor._post_accumulate_grad_hooks.values()):
        hook(tensor)


def _edges_done(node_inputs, edges) -> None:
    for t in node_inputs:
        if t is not None:
            entry = edges.get(id(t))
            if entry is not None:
                entry[1] -= 1
                if entry[1] == 0 and entry[2]:
                    _run_post_accumulate_hooks(entry[0])


def run_backward(root, grad, retain_graph: bool = False) -> None:
    """Reverse-mode sweep from Tensor ``root`` seeded with array ``grad``.

    Each node runs once, in reverse topological order, with the sum of the gradients that reached
    each of its outputs; leaf Tensors that require grad accumulate into ``.grad``. A leaf's
    post-accumulate-grad hooks run once, after its last gradient of this sweep has been
    accumulated; callbacks queued with ``queue_callback`` run after the outermost sweep (none
    after a failed one). The sweep is this function's own body, not a call: one call less on
    every backward.
    """
    global _backward_depth
    _backward_depth += 1
    try:
        start = root._node
        if start is None:
            if root.requires_grad:
                _accumulate(root, grad)
                if root._post_accumulate_grad_hooks:
                    _run_post_accumulate_hooks(root)
            return  # the finally clause still runs the queued callbacks
        if start.n_outputs == 1:
            pending = {start: [grad]}
        else:
            slots = [None] * start.n_outputs
            slots[root._output_index] = grad
            pending = {start: slots}
        for t in start.inputs:
            if t is not None and t._node is not None:
                order = _topological_order(start)
                break
        else:
            order = (start,)  # every input is a leaf or a constant: one node, no graph walk
        edges = _hook_edges(order) if _hook_count else None
        for node in order:
            grads = pending.pop(node, None)
            if grads is None:
                if edges:
                    _edges_done(node.inputs, edges)
                continue
            if node._saved is None:  # freed
                raise RuntimeError(
                    f"trying to backward through {node!r} a second time: the graph was freed after the "
                    "first backward; pass retain_graph=True to the first backward"
                )
            fn = node.fn
            if len(grads) > 1 and any(g is None for g in grads):
                grads = [g if g is not None else _zeros_like_meta(node, i, grads) for i, g in enumerate(grads)]
            try:
                in_grads = fn.backward(node, *grads)
            except (ValueError, TypeError, IndexError) as exc:
                named = _named(exc, f"{fn.__name__}.backward")
                if named is exc:
                    raise
                raise named from exc
            if type(in_grads) is not tuple:
                in_grads = (in_grads,)
            owned = fn.owns_grads
            check = fn.check_grad_shapes
            for t, g in zip(node.inputs, in_grads):
                if t is None or g is None or not t.requires_grad:
                    continue
                if isinstance(g, Tensor):
                    g = g.data
                if check and g.shape != t.data.shape and tuple(g.shape) != tuple(t.data.shape):
                    raise RuntimeError(
                        f"{fn.__name__}.backward returned a gradient of shape {tuple(g.shape)} for an "
                        f"input of shape {tuple(t.shape)}"
                    )
                parent = t._node
                if parent is None:  # a leaf: _accumulate(t, g, owned), inlined on this hottest path
                    grad = t.grad
                    if grad is None:
                        if not owned:
                            g = g.copy("K") if type(g) is NUMPY_ARRAY and g.ndim else fresh_copy(g)
                    else:
                        g = grad.data + g
                    w = _new(Tensor)
                    w.data = g
                    w.grad = None
                    w._node = None
                    w.requires_grad = False
                    t.grad = w
                    if edges:
                        entry = edges.get(id(t))
                        if entry is not None:
                            entry[2] = True
                    continue
                if t._retains_grad:
                    _accumulate(t, g)
                slots = pending.get(parent)
                if slots is None:
                    slots = pending[parent] = [None] * parent.n_outputs
                k = t._output_index
                slots[k] = g if slots[k] is None else slots[k] + g
            if edges:
                _edges_done(node.inputs, edges)
            if not retain_graph:
                # drop everything the node holds, not just saved arrays: a caller that keeps the loss
                # alive (until the next iteration reassigns it) must not keep every activation alive
                node._saved = None
                node.__dict__.clear()
                node.inputs = ()
    except BaseException:
        if _backward_depth == 1:
            _final_callbacks.clear()
        raise
    finally:
        _backward_depth -= 1
        if _final_callbacks and not _backward_depth:
            _run_final_callbacks()


def _run_final_callbacks() -> None:
    global _backward_depth
    _backward_depth += 1  # a callback may queue another: it runs in this same loop
    try:
        while _final_callbacks:
            _final_callbacks.pop(0)()
    finally:
        _backward_depth -= 1
        _final_callbacks.clear()


def _accumulate(t, g, owned: bool = False) -> None:
    """Add raw gradient ``g`` into ``t.grad``. A first gradient is kept as a fresh array: the
    caller's may be a view another node still uses, unless the Function that made it declares it
    owned (``Function.owns_grads``); a later one is summed into a new array. run_backward inlines
    this for the gradients of leaves, its hot path; this serves a leaf root and retain_grad."""
    grad = t.grad
    if grad is None:
        t.grad = Tensor._wrap(g if owned else fresh_copy(g))
    else:
        t.grad = Tensor._wrap(grad.data + g)


def _zeros_like_meta(node, index, grads):
    shape, dtype = node.out_meta[index]
    ref = next(g for g in grads if g is not None)
    from array_api_compat import array_namespace

    xp = array_namespace(ref)
    return xp.zeros(shape, dtype=dtype, device=ref.device)


# Imported last, once Function exists: tensor.py in turn imports the ops, which subclass Function.
from .tensor import Tensor  # noqa: E402
