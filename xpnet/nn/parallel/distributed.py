"""DistributedDataParallel: one model replica per rank, gradients averaged over the ranks in buckets.

PyTorch's names and semantics (``torch.nn.parallel.DistributedDataParallel``). Launch with
``mpiexec -n N python train.py``; each rank calls ``xpnet.distributed.init_process_group()``,
builds the same model and wraps it::

    model = DistributedDataParallel(Net())
    loss = loss_fn(model(x_local), y_local)      # x_local: this rank's share of the global batch
    loss.backward()                              # gradients averaged over the ranks on return
    optimizer.step()

How the gradients travel
------------------------
At construction every rank checks that all ranks built the same model (names, shapes and
dtypes of the parameters and buffers, gathered with ``all_gather_object``), then takes rank 0's
parameters and buffers (one broadcast per dtype). The trainable parameters are grouped, in reverse
order of registration (the order in which backward usually produces their gradients), into
buckets of about ``bucket_cap_mb`` MiB, one dtype and device per bucket.

Each parameter carries a post-accumulate-grad hook (``Tensor.register_post_accumulate_grad_hook``;
the engine runs it once per backward, after the last contribution to that parameter's ``.grad``).
When every parameter of a bucket has its gradient, the bucket's gradients are copied into one flat
array and an asynchronous ``all_reduce(..., op=AVG)`` starts on it while backward goes on. Buckets
start in bucket order on every rank (a ready bucket waits for the ones before it), so the
collectives match across ranks even when gradients arrive in another order. The first hook of a
backward queues a callback for the end of that backward (``xpnet.autodiff.function.queue_callback``,
torch's ``queue_callback``): it starts what has not started, waits for every bucket and writes the
averaged values into each ``p.grad``. So when ``loss.backward()`` returns, the gradients are
averaged, as in torch.

A forward with gradients enabled and outside ``no_sync()`` arms the next backward; in
``no_sync()`` nothing is communicated and gradients accumulate in ``.grad`` locally; the next armed
backward reduces the accumulated sums. A backward that is not preceded by a forward of this
wrapper (a second backward through a retained graph) communicates nothing.

Parameters without a gradient: with ``find_unused_parameters=False`` a parameter that got no
gradient in an armed backward raises, at the end of that backward, a RuntimeError naming it (after
waiting for the buckets already started, so the ranks stay matched). With ``True`` the forward
walks the output's graph and marks the parameters it cannot reach as ready, so their buckets need
not wait for them; at the end of backward every parameter still missing a gradient counts as
zero. A parameter that no rank gave a gradient keeps ``grad`` None (each bucket carries one flag
per parameter saying whether the rank had a gradient for it).

``broadcast_buffers``: before a forward, rank 0's buffers (BatchNorm running statistics) are
broadcast to every rank, as torch does: when the forward before it ran with gradients enabled and
outside ``no_sync()`` (and before the first forward). A forward is then a collective that every
rank must run; to evaluate on rank 0 alone, call ``ddp.module`` instead.

``gradient_as_bucket_view=True``: each ``p.grad`` after the reduction is a view of the bucket's
reduced array instead of a copy of its slice (saves one copy of the gradients a step).
``device_ids``/``output_device``: accepted for torch compatibility; the module must already be on
this rank's device (``model.to(f"cuda:{local_rank}")``) and the output stays where the module puts it.
"""

from __future__ import annotations

import contextlib
import math
import weakref

from ...autodiff import function as _function
from ...autodiff.function import is_grad_enabled
from ...autodiff.tensor import Tensor
from ...backends import backend_of, dtype_name, to_numpy
from ..module import Module

__all__ = ["DistributedDataParallel"]

_NAME = "DistributedDataParallel"


def _dist():
    from ... import distributed

    return distributed


def _shape_text(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _itemsize(array) -> int:
    xp = backend_of(array).xp
    return xp.finfo(array.dtype).bits // 8


def _flat(array):
    return backend_of(array).xp.reshape(array, (-1,))


def _raw(value):
    return value.data if isinstance(value, Tensor) else value


def _write_in_place(holder, value) -> None:
    """Overwrite a parameter's or buffer's array in place (views of it, such as ``state_dict()``'s,
    see the new values); a read-only array is replaced instead."""
    array = _raw(holder)
    try:
        array[...] = value
    except (TypeError, ValueError):
        if not isinstance(holder, Tensor):
            raise
        holder.data = backend_of(array).xp.asarray(value, copy=True)


def model_mismatch(layouts) -> str | None:
    """The first difference between rank 0's model layout and another rank's, as one line, or None.

    ``layouts[r]`` is rank r's ``{"parameter": [(name, shape, dtype), ...], "buffer": [...]}``."""
    ref = layouts[0]
    for rank, other in enumerate(layouts[1:], start=1):
        for kind in ("parameter", "buffer"):
            mine, theirs = ref[kind], other[kind]
            for i, (a, b) in enumerate(zip(mine, theirs)):
                (name_a, shape_a, dtype_a), (name_b, shape_b, dtype_b) = a, b
                if name_a != name_b:
                    return (f"{kind} #{i} is {name_a!r} on rank 0 but {name_b!r} on rank {rank}")
                if tuple(shape_a) != tuple(shape_b):
                    return (f"{kind} {name_a!r} has shape {_shape_text(shape_a)} on rank 0 but "
                            f"{_shape_text(shape_b)} on rank {rank}")
                if dtype_a != dtype_b:
                    return f"{kind} {name_a!r} has dtype {dtype_a} on rank 0 but {dtype_b} on rank {rank}"
            if len(mine) != len(theirs):
                longer, extra = (0, mine) if len(mine) > len(theirs) else (rank, theirs)
                name = extra[min(len(mine), len(theirs))][0]
                return (f"rank 0 has {len(mine)} {kind}s but rank {rank} has {len(theirs)} "
                        f"({kind} {name!r} exists on rank {longer} only)")
    return None


class _Bucket:
    """Parameters reduced together: their indices, their slices of the flat array, and the state
    of the current backward."""

    __slots__ = ("indices", "slices", "numel", "pending", "flat", "work")

    def __init__(self, indices, params):
        self.indices = tuple(indices)
        slices, start = [], 0
        for i in self.indices:
            n = math.prod(params[i].shape)
            slices.append((start, start + n, params[i].shape))
            start += n
        self.slices = tuple(slices)
        self.numel = start
        self.pending = len(self.indices)
        self.flat = None  # the Tensor being reduced
        self.work = None


def _reachable_leaves(output) -> set:
    """ids of the leaf Tensors that ``output``'s graph reaches (every Tensor inside tuples, lists
    and dicts counts as an output)."""
    stack, tensors = [output], []
    while stack:
        item = stack.pop()
        if isinstance(item, Tensor):
            tensors.append(item)
        elif isinstance(item, (tuple, list)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    leaves, seen, nodes = set(), set(), []
    for t in tensors:
        if t._node is None:
            leaves.add(id(t))
        elif t._node not in seen:
            seen.add(t._node)
            nodes.append(t._node)
    while nodes:
        node = nodes.pop()
        for t in node.inputs:
            if t is None:
                continue
            parent = t._node
            if parent is None:
                leaves.add(id(t))
            elif parent not in seen:
                seen.add(parent)
                nodes.append(parent)
    return leaves


class DistributedDataParallel(Module):
    """Data parallelism over the ranks of the default process group (see the module docstring).

    ``module``: the replica of this rank (same architecture on every rank); ``bucket_cap_mb``:
    the bucket size in MiB; ``broadcast_buffers``: copy rank 0's buffers (BatchNorm running
    statistics) to every rank before each training forward; ``find_unused_parameters``: allow parameters
    that get no gradient in a step (they count as zero). ``state_dict()`` keys start with
    ``module.``, as torch's.
    """

    def __init__(self, module, device_ids=None, output_device=None, dim: int = 0, broadcast_buffers: bool = True,
                 process_group=None, bucket_cap_mb: float = 25, find_unused_parameters: bool = False,
                 gradient_as_bucket_view: bool = False, static_graph: bool = False):
        super().__init__()
        dist = _dist()
        if not isinstance(module, Module):
            raise TypeError(f"{_NAME}: module must be an xpnet.nn.Module, got {type(module).__name__}")
        if not dist.is_initialized():
            raise RuntimeError(f"{_NAME}: the default process group is not initialized; call "
                               "xpnet.distributed.init_process_group() first (and launch with mpiexec -n N)")
        if process_group is not None:
            raise ValueError(f"{_NAME}: only the default process group is supported, got process_group="
                             f"{process_group!r}")
        if dim != 0:
            raise ValueError(f"{_NAME}: dim must be 0 (each rank feeds its own batch), got {dim}")
        if device_ids is not None and (not isinstance(device_ids, (list, tuple)) or len(device_ids) > 1):
            raise ValueError(f"{_NAME}: device_ids must be None or a list of one device (this rank's), "
                             f"got {device_ids!r}")
        if isinstance(bucket_cap_mb, bool) or not isinstance(bucket_cap_mb, (int, float)) or bucket_cap_mb <= 0:
            raise ValueError(f"{_NAME}: bucket_cap_mb must be a positive number, got {bucket_cap_mb!r}")
        self.module = module
        self.device_ids = device_ids
        self.output_device = output_device
        self.dim = dim
        self.broadcast_buffers = bool(broadcast_buffers)
        self.bucket_cap_mb = bucket_cap_mb
        self.find_unused_parameters = bool(find_unused_parameters)
        self.gradient_as_bucket_view = bool(gradient_as_bucket_view)
        self.static_graph = bool(static_graph)
        self.require_backward_grad_sync = True
        self._require_forward_param_sync = True  # broadcast buffers before the next forward
        self.world_size = dist.get_world_size()
        self.rank = dist.get_rank()

        self._verify_same_model()
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self._param_names = [n for n, _ in named]
        self._params = [p for _, p in named]
        if self.world_size > 1:
            self._broadcast_from_rank0([p for _, p in module.named_parameters()])
            self._broadcast_from_rank0(self._module_buffers())
        self._buckets = self._build_buckets(int(bucket_cap_mb * 1024 * 1024))
        self._bucket_of = {}
        for b, bucket in enumerate(self._buckets):
            for i in bucket.indices:
                self._bucket_of[i] = b
        self._ready = [False] * len(self._params)
        self._armed = False
        self._next_bucket = 0
        self._callback_queued = False
        owner = weakref.ref(self)
        self._hook_handles = [p.register_post_accumulate_grad_hook(_make_hook(owner, i))
                              for i, p in enumerate(self._params)]

    # -- construction ------------------------------------------------------------------------------
    def _module_buffers(self):
        return [b for _, b in self.module.named_buffers() if b is not None]

    def _verify_same_model(self) -> None:
        dist = _dist()
        layout = {
            "parameter": [(n, tuple(p.shape), dtype_name(p.dtype)) for n, p in self.module.named_parameters()],
            "buffer": [(n, tuple(_raw(b).shape), dtype_name(_raw(b).dtype)) for n, b in self.module.named_buffers()
                       if b is not None],
        }
        layouts = [None] * self.world_size
        dist.all_gather_object(layouts, layout)
        problem = model_mismatch(layouts)
        if problem is not None:
            raise ValueError(f"{_NAME}: every rank must build the same model, but {problem}")

    def _broadcast_from_rank0(self, holders) -> None:
        """Rank 0's values into every rank's parameters/buffers: one broadcast per dtype and device."""
        dist = _dist()
        groups = {}
        for h in holders:
            a = _raw(h)
            groups.setdefault((type(a), dtype_name(a.dtype), str(a.device)), []).append(h)
        for members in groups.values():
            arrays = [_raw(h) for h in members]
            xp = backend_of(arrays[0]).xp
            flat = Tensor._wrap(xp.concat([_flat(a) for a in arrays]))
            dist.broadcast(flat, src=0)
            start = 0
            for h, a in zip(members, arrays):
                n = math.prod(a.shape)
                _write_in_place(h, xp.reshape(flat.data[start:start + n], tuple(a.shape)))
                start += n

    def _build_buckets(self, cap_bytes: int):
        """Buckets over the parameters in reverse registration order, one dtype/device each, each
        closed when the next parameter would take it past ``cap_bytes`` (a bigger parameter gets its
        own bucket)."""
        open_buckets, closed = {}, []  # key -> (indices, bytes)
        for i in reversed(range(len(self._params))):
            a = self._params[i].data
            key = (type(a), dtype_name(a.dtype), str(a.device))
            size = math.prod(a.shape) * _itemsize(a)
            indices, used = open_buckets.get(key, ([], 0))
            if indices and used + size > cap_bytes:
                closed.append(indices)
                indices, used = [], 0
            indices.append(i)
            open_buckets[key] = (indices, used + size)
        closed.extend(indices for indices, _ in open_buckets.values() if indices)
        closed.sort(key=lambda indices: -indices[0])  # bucket order: where its first gradient comes
        return [_Bucket(indices, self._params) for indices in closed]

    @property
    def bucket_count(self) -> int:
        return len(self._buckets)

    # -- forward ------------------------------------------------------------------------------------
    def forward(self, *inputs, **kwargs):
        if self._armed:
            self._disarm()  # a forward without a backward before it: drop that step's reduction
        if self.broadcast_buffers and self.world_size > 1 and self._require_forward_param_sync:
            buffers = self._module_buffers()
            if buffers:
                self._broadcast_from_rank0(buffers)
        output = self.module(*inputs, **kwargs)
        synced = is_grad_enabled() and self.require_backward_grad_sync
        self._require_forward_param_sync = synced
        if synced and self._params:
            self._arm(output)
        return output

    @contextlib.contextmanager
    def no_sync(self):
        """Inside (forward and backward both), gradients accumulate locally with no communication;
        the first backward after it averages the accumulated gradients."""
        previous = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous

    # -- the reduction of one backward ----------------------------------------------------------------
    def _arm(self, output) -> None:
        self._ready = [False] * len(self._params)
        for bucket in self._buckets:
            bucket.pending = len(bucket.indices)
            bucket.flat = bucket.work = None
        self._next_bucket = 0
        self._armed = True
        self._callback_queued = False  # a backward that raised dropped its callback
        if self.find_unused_parameters:
            reached = _reachable_leaves(output)
            for i, p in enumerate(self._params):
                if id(p) not in reached:
                    self._mark_ready(i)

    def _disarm(self) -> None:
        """Wait for what was started (so every rank's collectives stay matched) and forget the rest."""
        self._armed = False
        for bucket in self._buckets:
            if bucket.work is not None:
                bucket.work.wait()
            bucket.flat = bucket.work = None

    def _grad_ready(self, i: int) -> None:
        if not self._armed or self._ready[i]:
            return
        if not self._callback_queued:
            _function.queue_callback(self._finish_backward)
            self._callback_queued = True
        self._mark_ready(i)
        self._launch_ready_buckets()

    def _mark_ready(self, i: int) -> None:
        self._ready[i] = True
        self._buckets[self._bucket_of[i]].pending -= 1

    def _launch_ready_buckets(self) -> None:
        buckets = self._buckets
        while self._next_bucket < len(buckets) and buckets[self._next_bucket].pending == 0:
            self._launch(buckets[self._next_bucket])
            self._next_bucket += 1

    def _launch(self, bucket: _Bucket) -> None:
        params = self._params
        ref = params[bucket.indices[0]].data
        xp = backend_of(ref).xp
        parts = []
        for i, (start, end, _) in zip(bucket.indices, bucket.slices):
            g = params[i].grad
            if g is not None:
                parts.append(_flat(g.data))
            else:
                parts.append(xp.zeros((end - start,), dtype=ref.dtype, device=ref.device))
        if self.find_unused_parameters:  # one flag a parameter: did this rank have a gradient for it
            flags = [1.0 if params[i].grad is not None else 0.0 for i in bucket.indices]
            parts.append(xp.asarray(flags, dtype=ref.dtype, device=ref.device))
        bucket.flat = Tensor._wrap(xp.concat(parts))  # concat copies: the reduction never writes into a .grad
        bucket.work = _dist().all_reduce(bucket.flat, op=_dist().ReduceOp.AVG, async_op=True)

    def _finish_backward(self) -> None:
        """End of an armed backward: start what is left, wait for every bucket, write the averages."""
        self._callback_queued = False
        if not self._armed:
            return
        missing = [self._param_names[i] for i, ready in enumerate(self._ready) if not ready]
        if missing and not self.find_unused_parameters:
            self._disarm()
            shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
            raise RuntimeError(
                f"{_NAME}: {len(missing)} parameter(s) received no gradient in this backward, so their "
                f"buckets cannot be reduced: {shown}; pass find_unused_parameters=True if parameters may go "
                "unused in a step (or set requires_grad=False on them)")
        for i, ready in enumerate(self._ready):
            if not ready:
                self._mark_ready(i)
        self._launch_ready_buckets()
        self._armed = False
        view = self.gradient_as_bucket_view
        for bucket in self._buckets:
            bucket.work.wait()
            reduced = bucket.flat.data
            xp = backend_of(reduced).xp
            had_grad = to_numpy(reduced[bucket.numel:]).tolist() if self.find_unused_parameters else None
            for k, (i, (start, end, shape)) in enumerate(zip(bucket.indices, bucket.slices)):
                p = self._params[i]
                if had_grad is not None and p.grad is None and had_grad[k] == 0.0:
                    continue  # no rank had a gradient for it: it stays None, as torch
                chunk = xp.reshape(reduced[start:end], shape)
                p.grad = Tensor._wrap(chunk if view else xp.asarray(chunk, copy=True))
            bucket.flat = bucket.work = None

    def extra_repr(self) -> str:
        return (f"world_size={self.world_size}, buckets={len(self._buckets)}, "
                f"find_unused_parameters={self.find_unused_parameters}")


def _make_hook(owner, index):
    def hook(param):
        ddp = owner()
        if ddp is not None:
            ddp._grad_ready(index)

    return hook
