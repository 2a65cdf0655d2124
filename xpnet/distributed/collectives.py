"""Collectives with ``torch.distributed``'s signatures, on xpnet Tensors or raw arrays, in place.

Each writes its result into the array it was given (a Tensor's ``.data``), as torch writes into
the tensor: the same array object when it can be written (NumPy via ``np.copyto``, other
namespaces via ``array[...] = ...``), else the Tensor's ``.data`` is rebound to a new array (a
read-only NumPy array, say). Tensors keep their dtype; float16/bfloat16 reduce in float32 on the
host path. With ``async_op=True`` a ``Work`` comes back and the result is there after
``work.wait()`` (or once ``work.is_completed()`` says True); otherwise the call blocks and
returns None. ``group`` is accepted for torch's signatures; only the default group exists.
"""

from __future__ import annotations

from .buffers import Target
from .group import _only_default, group as _group
from .work import ReduceOp, reduce_op


def _run(work, async_op):
    if async_op:
        return work
    work.wait()
    return None


def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op=False):
    """Reduce ``tensor`` over all ranks with ``op``; every rank gets the result, in place."""
    _only_default(group, "all_reduce")
    engine = _group("all_reduce").engine
    return _run(engine.all_reduce(Target(tensor, "all_reduce"), reduce_op(op)), async_op)


def broadcast(tensor, src, group=None, async_op=False):
    """Copy rank ``src``'s ``tensor`` into ``tensor`` on every rank."""
    _only_default(group, "broadcast")
    state = _group("broadcast")
    _check_rank("broadcast", "src", src, state.comm.Get_size())
    return _run(state.engine.broadcast(Target(tensor, "broadcast"), int(src)), async_op)


def all_gather(tensor_list, tensor, group=None, async_op=False):
    """``tensor_list[r]`` receives rank ``r``'s ``tensor`` (every entry of the same shape)."""
    _only_default(group, "all_gather")
    state = _group("all_gather")
    world = state.comm.Get_size()
    source = Target(tensor, "all_gather")
    targets = _targets("all_gather", "tensor_list", tensor_list, world, source.shape)
    return _run(state.engine.all_gather(targets, source), async_op)


def reduce_scatter(output, input_list, op=ReduceOp.SUM, group=None, async_op=False):
    """Reduce ``input_list[r]`` over all ranks into ``output`` on rank ``r``."""
    _only_default(group, "reduce_scatter")
    state = _group("reduce_scatter")
    world = state.comm.Get_size()
    target = Target(output, "reduce_scatter", "output")
    inputs = _targets("reduce_scatter", "input_list", input_list, world, target.shape)
    return _run(state.engine.reduce_scatter(target, inputs, reduce_op(op)), async_op)


def barrier(group=None, async_op=False, device_ids=None):
    """Wait until every rank has reached its ``barrier()``."""
    _only_default(group, "barrier")
    return _run(_group("barrier").engine.barrier(), async_op)


def all_gather_object(object_list, obj, group=None):
    """``object_list[r]`` receives rank ``r``'s ``obj`` (a small Python object; JSON, else pickle,
    between this program's own ranks)."""
    _only_default(group, "all_gather_object")
    state = _group("all_gather_object")
    world = state.comm.Get_size()
    if len(object_list) != world:
        raise ValueError(f"xpnet.distributed.all_gather_object: object_list must have world_size={world} "
                         f"entries, got {len(object_list)}")
    object_list[:] = state.engine.all_gather_object(obj)


def broadcast_object_list(object_list, src=0, group=None, device=None):
    """Replace the entries of ``object_list`` on every rank by those of rank ``src``."""
    _only_default(group, "broadcast_object_list")
    state = _group("broadcast_object_list")
    _check_rank("broadcast_object_list", "src", src, state.comm.Get_size())
    object_list[:] = state.engine.broadcast_object(list(object_list), int(src))


def _check_rank(name, what, value, world):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < world:
        raise ValueError(f"xpnet.distributed.{name}: {what} must be a rank in [0, {world}), got {value!r}")


def _targets(name, what, values, world, shape):
    if not isinstance(values, (list, tuple)) or len(values) != world:
        got = len(values) if isinstance(values, (list, tuple)) else type(values).__name__
        raise ValueError(f"xpnet.distributed.{name}: {what} must be a list of world_size={world} "
                         f"tensors, got {got}")
    targets = [Target(v, name, f"{what}[{i}]") for i, v in enumerate(values)]
    for i, t in enumerate(targets):
        if t.shape != shape:
            raise ValueError(f"xpnet.distributed.{name}: {what}[{i}] has shape {t.shape}, expected {shape}")
    return targets
