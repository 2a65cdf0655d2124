"""The MPI engine: collectives over an mpi4py communicator, every one started nonblocking.

Host-side module: it imports NumPy (MPI buffers). Each collective is started with MPI's
nonblocking call (``Iallreduce``, ``Ibcast``, ``Iallgather``, ``Ireduce_scatter_block``) on a
contiguous buffer (``buffers.py`` says which: the array itself, or a host copy) and returned as a
``Work``; a synchronous call is the same followed by ``wait()``. Reductions run in place
(``MPI.IN_PLACE``). MPICH and Open MPI progress a nonblocking collective mostly while some MPI
call runs on that rank; set ``MPICH_ASYNC_PROGRESS=1`` for progress in the background.

Small Python objects (``all_gather_object``, ``broadcast_object_list``) travel as bytes: JSON
when the object reads back equal from JSON (numbers, strings, lists, dicts with string keys),
else pickle. They come from this program's own ranks, never from files.
"""

from __future__ import annotations

import json
import pickle

import numpy as np

from .buffers import Target, direct_buffer, host_copy, is_floating, write_back
from .work import ReduceOp, Work


class MPIEngine:
    """Collectives on ``comm`` (an ``mpi4py.MPI.Comm``); ``device_buffers``: MPI reads CUDA memory."""

    name = "mpi"

    def __init__(self, comm, device_buffers=False, timeout=None):
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.world_size = comm.Get_size()
        self.device_buffers = device_buffers
        self.timeout = timeout
        self._ops = {ReduceOp.SUM: MPI.SUM, ReduceOp.AVG: MPI.SUM, ReduceOp.PRODUCT: MPI.PROD,
                     ReduceOp.MAX: MPI.MAX, ReduceOp.MIN: MPI.MIN}

    # -- plumbing -------------------------------------------------------------------------------
    def _work(self, name, request, finish):
        return Work(name, request.Test, request.Wait, finish, self.timeout)

    def _staged(self, target):
        """(buffer, is the array itself) for ``target``."""
        buffer = direct_buffer(target, self.device_buffers)
        return (buffer, True) if buffer is not None else (host_copy(target), False)

    def _check_op(self, name, op, target):
        if op is ReduceOp.AVG and not is_floating(target.dtype):
            raise TypeError(f"xpnet.distributed.{name}: ReduceOp.AVG needs a floating dtype, got {target.dtype}")

    def _divide(self, buffer):
        if buffer is not None and buffer.size:
            buffer /= self.world_size  # in place, on the host or (CUDA-aware MPI) the device

    # -- collectives ----------------------------------------------------------------------------
    def all_reduce(self, target: Target, op: ReduceOp) -> Work:
        self._check_op("all_reduce", op, target)
        buffer, direct = self._staged(target)
        request = self.comm.Iallreduce(self.MPI.IN_PLACE, buffer, self._ops[op])

        def finish():
            if op is ReduceOp.AVG:
                self._divide(buffer)
            if not direct:
                write_back(target, buffer)

        return self._work("all_reduce", request, finish)

    def broadcast(self, target: Target, src: int) -> Work:
        buffer, direct = self._staged(target)
        request = self.comm.Ibcast(buffer, root=src)

        def finish():
            if not direct and self.rank != src:
                write_back(target, buffer)

        return self._work("broadcast", request, finish)

    def all_gather(self, targets, target: Target) -> Work:
        send = np.ascontiguousarray(host_copy(target) if direct_buffer(target) is None else target.array)
        gathered = np.empty((self.world_size,) + send.shape, dtype=send.dtype)
        request = self.comm.Iallgather(send, gathered)

        def finish():
            for out, part in zip(targets, gathered):
                write_back(out, part)

        return self._work("all_gather", request, finish)

    def reduce_scatter(self, target: Target, inputs, op: ReduceOp) -> Work:
        self._check_op("reduce_scatter", op, target)
        send = np.concatenate([host_copy(t).reshape(-1) for t in inputs])
        out = np.empty(target.shape, dtype=send.dtype)
        request = self.comm.Ireduce_scatter_block(send, out, self._ops[op])

        def finish():
            if op is ReduceOp.AVG:
                self._divide(out)
            write_back(target, out)

        return self._work("reduce_scatter", request, finish)

    def barrier(self) -> Work:
        request = self.comm.Ibarrier()
        return self._work("barrier", request, None)

    # -- Python objects -------------------------------------------------------------------------
    def all_gather_object(self, obj):
        payload = _encode(obj)
        sizes = np.empty(self.world_size, dtype=np.int64)
        self.comm.Allgather(np.array([len(payload)], dtype=np.int64), sizes)
        gathered = np.empty(int(sizes.sum()), dtype=np.uint8)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.comm.Allgatherv(np.frombuffer(payload, dtype=np.uint8),
                             [gathered, (sizes.tolist(), offsets.tolist()), self.MPI.BYTE])
        return [_decode(gathered[o:o + s].tobytes()) for o, s in zip(offsets, sizes)]

    def broadcast_object(self, obj, src):
        payload = _encode(obj) if self.rank == src else b""
        size = np.array([len(payload)], dtype=np.int64)
        self.comm.Bcast(size, root=src)
        buffer = np.frombuffer(payload, dtype=np.uint8).copy() if self.rank == src else \
            np.empty(int(size[0]), dtype=np.uint8)
        self.comm.Bcast(buffer, root=src)
        return obj if self.rank == src else _decode(buffer.tobytes())

    def close(self):
        pass


def _encode(obj) -> bytes:
    """b'J' + JSON where JSON gives the object back equal (same types), else b'P' + pickle."""
    try:
        text = json.dumps(obj, allow_nan=True)
        if _same(json.loads(text), obj):
            return b"J" + text.encode()
    except (TypeError, ValueError, RecursionError):
        pass
    return b"P" + pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _decode(payload: bytes):
    if payload[:1] == b"J":
        return json.loads(payload[1:].decode())
    return pickle.loads(payload[1:])  # noqa: S301 -- bytes sent by this program's own ranks


def _same(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b or (a != a and b != b)  # NaN reads back as NaN
