"""The NCCL engine (CuPy's ``cupy.cuda.nccl``): collectives on CuPy arrays, on the current stream.

UNTESTED on GPUs so far (the test machine has none); written against CuPy's NcclCommunicator API.

The communicator is built from a unique id that rank 0 creates and broadcasts over MPI (the MPI
communicator also carries what NCCL does not: barriers, Python objects, and collectives on host
arrays, which go to the MPI engine as they would under ``backend="mpi"``). A collective is queued
on the current CUDA stream, so later kernels on that stream see its result without waiting; the
``Work`` records an event after it: ``is_completed()`` queries the event, ``wait()`` synchronises
it. AVG is SUM followed by a division queued on the same stream. NCCL reduces float16 and
bfloat16 natively, so device arrays keep their dtype throughout.
"""

from __future__ import annotations

from .buffers import Target, is_floating, write_back
from .mpi import MPIEngine
from .work import ReduceOp, Work


def nccl_module():
    """``cupy.cuda.nccl`` when CuPy and NCCL load, else None."""
    try:
        from cupy.cuda import nccl

        nccl.get_version()
        return nccl
    except Exception:  # noqa: BLE001 -- any failure means: no NCCL here
        return None


class NCCLEngine:
    name = "nccl"

    def __init__(self, comm, timeout=None):
        import cupy

        self.cupy = cupy
        self.nccl = nccl_module()
        if self.nccl is None:
            raise RuntimeError("xpnet.distributed: backend 'nccl' needs CuPy with NCCL (cupy.cuda.nccl did not load)")
        self.host = MPIEngine(comm, device_buffers=False, timeout=timeout)
        self.rank, self.world_size, self.timeout = self.host.rank, self.host.world_size, timeout
        uid = [int(v) for v in self.nccl.get_unique_id()] if self.rank == 0 else None
        uid = self.host.broadcast_object(uid, 0)  # rank 0's id, over MPI
        self.comm = self.nccl.NcclCommunicator(self.world_size, tuple(uid), self.rank)
        n = self.nccl
        self._ops = {ReduceOp.SUM: n.NCCL_SUM, ReduceOp.AVG: n.NCCL_SUM, ReduceOp.PRODUCT: n.NCCL_PROD,
                     ReduceOp.MAX: n.NCCL_MAX, ReduceOp.MIN: n.NCCL_MIN}
        self._types = {"float16": n.NCCL_FLOAT16, "float32": n.NCCL_FLOAT32, "float64": n.NCCL_FLOAT64,
                       "int8": n.NCCL_INT8, "uint8": n.NCCL_UINT8, "int32": n.NCCL_INT32,
                       "uint32": n.NCCL_UINT32, "int64": n.NCCL_INT64, "uint64": n.NCCL_UINT64}
        if hasattr(n, "NCCL_BFLOAT16"):
            self._types["bfloat16"] = n.NCCL_BFLOAT16

    # -- plumbing -------------------------------------------------------------------------------
    def _device(self, target):
        return target.is_cupy()

    def _buffer(self, target):
        """A contiguous device array for the target: the array itself, or a contiguous copy."""
        array = target.array
        if not array.flags.c_contiguous:
            array = self.cupy.ascontiguousarray(array)
        name = str(array.dtype).rsplit(".", 1)[-1]
        if name not in self._types:
            raise TypeError(f"xpnet.distributed: NCCL has no datatype for {array.dtype}")
        return array, self._types[name]

    def _work(self, name, finish):
        stream = self.cupy.cuda.get_current_stream()
        if finish is not None:
            finish()  # queued on the same stream: ordered after the collective
        event = self.cupy.cuda.Event(disable_timing=True)
        event.record(stream)
        return Work(name, lambda: event.done, event.synchronize, None, self.timeout)

    def _stream(self):
        return self.cupy.cuda.get_current_stream().ptr

    # -- collectives ----------------------------------------------------------------------------
    def all_reduce(self, target: Target, op: ReduceOp) -> Work:
        if not self._device(target):
            return self.host.all_reduce(target, op)
        if op is ReduceOp.AVG and not is_floating(target.dtype):
            raise TypeError(f"xpnet.distributed.all_reduce: ReduceOp.AVG needs a floating dtype, got {target.dtype}")
        buffer, kind = self._buffer(target)
        self.comm.allReduce(buffer.data.ptr, buffer.data.ptr, buffer.size, kind, self._ops[op], self._stream())

        def finish():
            if op is ReduceOp.AVG:
                buffer[...] /= self.world_size
            if buffer is not target.array:
                target.array[...] = buffer

        return self._work("all_reduce", finish)

    def broadcast(self, target: Target, src: int) -> Work:
        if not self._device(target):
            return self.host.broadcast(target, src)
        buffer, kind = self._buffer(target)
        self.comm.bcast(buffer.data.ptr, buffer.size, kind, src, self._stream())

        def finish():
            if buffer is not target.array:
                target.array[...] = buffer

        return self._work("broadcast", finish)

    def all_gather(self, targets, target: Target) -> Work:
        if not self._device(target):
            return self.host.all_gather(targets, target)
        buffer, kind = self._buffer(target)
        gathered = self.cupy.empty((self.world_size,) + tuple(buffer.shape), dtype=buffer.dtype)
        self.comm.allGather(buffer.data.ptr, gathered.data.ptr, buffer.size, kind, self._stream())

        def finish():
            for out, part in zip(targets, gathered):
                if out.is_cupy():
                    out.array[...] = part
                else:
                    write_back(out, self.cupy.asnumpy(part))

        return self._work("all_gather", finish)

    def reduce_scatter(self, target: Target, inputs, op: ReduceOp) -> Work:
        if not self._device(target):
            return self.host.reduce_scatter(target, inputs, op)
        send = self.cupy.concatenate([self.cupy.asarray(t.array).reshape(-1) for t in inputs])
        out = self.cupy.empty(target.shape, dtype=send.dtype)
        _, kind = self._buffer(Target(out, "reduce_scatter"))
        self.comm.reduceScatter(send.data.ptr, out.data.ptr, out.size, kind, self._ops[op], self._stream())

        def finish():
            if op is ReduceOp.AVG:
                out[...] /= self.world_size
            target.array[...] = out

        return self._work("reduce_scatter", finish)

    def barrier(self) -> Work:
        self.cupy.cuda.get_current_stream().synchronize()
        return self.host.barrier()

    def all_gather_object(self, obj):
        return self.host.all_gather_object(obj)

    def broadcast_object(self, obj, src):
        return self.host.broadcast_object(obj, src)

    def close(self):
        destroy = getattr(self.comm, "destroy", None)
        if destroy is not None:
            destroy()
