"""From host batches to Tensors on the loader's device: ``Uploader`` (and, with CuPy and
``pin_memory=True``, ``PinnedUploader``, page-locked staging on a copy stream).

Host-side module: it imports NumPy (the host batches are NumPy arrays).
"""

from __future__ import annotations

import numpy as np

from ..autodiff.tensor import Tensor
from ..backends import get_default_dtype


class Uploader:
    """Host fields -> Tensors on ``backend`` (copying views the source reuses), then ``device_transform``."""

    def __init__(self, backend, pin_memory, device_transform):
        self.backend = backend
        self.device_transform = device_transform
        self.pinned = PinnedUploader(backend) if pin_memory and backend.name == "cupy" else None

    def upload(self, host, transient):
        if self.pinned is not None:
            arrays = self.pinned.upload(host)
        elif transient and self.backend.name != "cupy":  # CPU namespaces may keep the host buffer itself
            arrays = [self.backend.from_host(np.array(h, copy=True)) for h in host]
        else:
            arrays = [self.backend.from_host(h) for h in host]
        bfloat16 = str(get_default_dtype()) == "bfloat16"
        tensors = []
        for h, array in zip(host, arrays):
            if bfloat16 and h.dtype.kind == "f":
                array = self.backend.xp.astype(array, self.backend.dtype("bfloat16"))
            tensors.append(Tensor(array))
        if self.device_transform is not None:
            out = self.device_transform(tensors[0])
            tensors[0] = out if isinstance(out, Tensor) else Tensor(out)
        return tuple(tensors)


class PinnedUploader:
    """CuPy: each batch is copied into page-locked host memory, uploaded on a separate non-blocking
    stream into a device staging buffer, and copied (device to device, on the consumer's stream,
    after an event says the upload is done) into fresh arrays. The upload thus overlaps whatever
    the consumer's stream is running; the fresh arrays belong to the consumer's stream, so the
    memory pool never hands a block still read by queued kernels to the side stream. ``DEPTH``
    stages rotate; a stage is reused only after the events of its previous batch."""

    DEPTH = 3
    ALIGN = 256

    def __init__(self, backend):
        import cupy

        self.cupy, self.backend = cupy, backend
        with backend.device:
            self.stream = cupy.cuda.Stream(non_blocking=True)
        self.stages = [None] * self.DEPTH  # [pinned, device staging, nbytes, uploaded event, consumed event]
        self.turn = 0

    def upload(self, host):
        cupy, runtime = self.cupy, self.cupy.cuda.runtime
        offsets, total = [], 0
        for h in host:
            offsets.append(total)
            total += -(-h.nbytes // self.ALIGN) * self.ALIGN
        total = max(total, self.ALIGN)
        index, self.turn = self.turn, (self.turn + 1) % self.DEPTH
        with self.backend.device:
            stage = self.stages[index]
            if stage is not None:
                stage[3].synchronize()  # the previous upload out of this pinned buffer has finished
            if stage is None or stage[2] < total:
                if stage is not None:
                    stage[4].synchronize()  # nothing reads the old staging buffer any more: free it
                with self.stream:
                    stage = [cupy.cuda.alloc_pinned_memory(total), cupy.empty(total, cupy.uint8), total,
                             cupy.cuda.Event(disable_timing=True), cupy.cuda.Event(disable_timing=True)]
                self.stream.synchronize()
                self.stages[index] = stage
            else:  # the side stream waits until the consumer has copied the previous batch out
                self.stream.wait_event(stage[4])
            pinned, staging = stage[0], stage[1]
            for h, offset in zip(host, offsets):
                view = np.frombuffer(pinned, np.uint8, h.nbytes, offset)
                view[...] = np.ascontiguousarray(h).reshape(-1).view(np.uint8)
            runtime.memcpyAsync(staging.data.ptr, pinned.ptr, total, runtime.memcpyHostToDevice, self.stream.ptr)
            stage[3].record(self.stream)
            consumer = cupy.cuda.get_current_stream()
            consumer.wait_event(stage[3])
            arrays = []
            for h, offset in zip(host, offsets):
                out = cupy.empty(h.shape, h.dtype)
                if h.nbytes:
                    runtime.memcpyAsync(out.data.ptr, staging.data.ptr + offset, h.nbytes,
                                        runtime.memcpyDeviceToDevice, consumer.ptr)
                arrays.append(out)
            stage[4].record(consumer)
        return arrays
