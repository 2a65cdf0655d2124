"""NumPy fast paths for convolution, pooling, batch norm and LRN (registered as ``("numpy", name)``).

Each kernel has the contract of the generic Array-API code in ``xpnet/nn/functional`` (see the
docstrings there) and is tested equal to it (tests/backends/test_kernels.py). What makes them fast
on a CPU:

* NHWC inside. Arrays keep the NCHW shape at the interface, but the outputs made here live in
  NHWC memory (an NCHW view of an NHWC buffer). Elementwise ops (ReLU, ...) keep that layout, so
  the next layer gets its channels-last view for free: a receptive-field row of the im2col column
  matrix is then one contiguous run of kW*C values, and the GEMM output is the next NHWC activation.
* im2col by ``as_strided`` into a reused, cache-sized workspace, a batch chunk at a time, followed
  by one sgemm per chunk; the column matrix is never saved (backward rebuilds it), which keeps peak
  memory near the activations themselves. Few-channel inputs build the transposed matrix instead.
* Few channels (LeNet's 1->6 and 6->16 layers): NHWC rows are a handful of values long, so such
  stride-1 convolutions work on channel-major (C, N, H, W) planes instead, with output rows computed
  as wide as the padded input so that every column-matrix row is one contiguous run of a plane (see
  _PlanarConv). ReLU keeps any layout and max pooling works on the planes when they are innermost,
  so the planes pass from one narrow convolution to the next.
* The input gradient of a stride-1 convolution is itself a convolution (of the zero-framed output
  gradient with the flipped, transposed kernel): again im2col + sgemm, no scatter. Strided
  convolutions fold the column gradient back by one slice-add per kernel offset (col2im).
* Max pooling keeps the argmax offset as uint8, branch-free (masked NumPy operations are several
  times slower on the random masks pooling makes); backward routes the gradient with one masked
  multiply per offset. Batch norm and LRN work on the (M, C) channels-last matrix in cache-sized
  row blocks: batch norm needs one pass for its statistics and one for the output.
* Batch-parallel: each kernel splits the batch (or the rows) over ``NUM_WORKERS`` threads (the CPUs
  this process may use, or ``XPNET_NUM_THREADS``); NumPy releases the GIL in copies, ufuncs and GEMMs.
  While they run, OpenBLAS is pinned to one thread per call, so every core runs its own im2col + GEMM
  pipeline instead of waiting on the BLAS's spinning threads.
* Never float64 in a float32 computation: constants are cast to the array dtype first.
* Compiled where NumPy has no fast form (see native.py and csrc/): few-channel float32 convolutions
  as direct loops over wide rows (_WideConv; LeNet-5's step 15.7 -> 12.2 ms), the transforms of
  Winograd F(2x2, 3x3) for wider 3x3 convolutions (_Winograd), batch norm's passes, ReLU (NumPy's
  maximum runs ~4x slower than a vectorized loop here), channels-last max pooling and the SGD
  update. Each falls back to the NumPy code above when the library is unavailable, and is tested
  equal to it.
"""

from __future__ import annotations

import contextlib
import math
import ctypes
import glob
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import native
from . import kernels
from .kernels import register_kernel

# A batch chunk's column matrix is kept near this size so that im2col's output is still in cache
# when the GEMM reads it (measured on a 2-core EPYC: 2-8 MiB all within a few percent).
CHUNK_BYTES = 4 << 20

_local = threading.local()


class _BlasThreads:
    """OpenBLAS's thread count, pinned to 1 while the kernels run their own batch-parallel workers.

    Splitting the batch over worker threads, each with a single-threaded GEMM, also spreads im2col,
    col2im and the elementwise work over the cores, and avoids OpenBLAS's spinning threads competing
    with ours. Found through the OpenBLAS library NumPy loaded; where there is none (MKL, Accelerate),
    ``available`` is False and the GEMM kernels run serially with the BLAS's own threads.
    """

    def __init__(self):
        self._set = self._get = None
        self._lock = threading.Lock()
        self._depth = 0
        self._saved = None
        for path in self._candidates():
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for prefix in ("scipy_openblas", "openblas"):
                for suffix in ("64_", ""):
                    setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                    getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                    if setter is not None and getter is not None:
                        setter.argtypes, setter.restype, getter.restype = [ctypes.c_int], None, ctypes.c_int
                        self._set, self._get = setter, getter
                        return

    @staticmethod
    def _candidates():
        base = os.path.dirname(np.__file__)
        paths = (glob.glob(os.path.join(base + ".libs", "*openblas*"))
                 + glob.glob(os.path.join(base, ".dylibs", "*openblas*")))
        try:  # a NumPy linked against the system's OpenBLAS
            with open("/proc/self/maps") as maps:
                mapped = {line.split()[-1] for line in maps if "openblas" in line.lower()}
            paths += sorted(p for p in mapped if ".so" in os.path.basename(p))
        except OSError:
            pass
        return paths

    @property
    def available(self) -> bool:
        return self._set is not None

    @contextlib.contextmanager
    def single(self):
        with self._lock:
            if self._depth == 0:
                self._saved = self._get()
                if self._saved != 1:
                    self._set(1)
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0 and self._saved not in (None, 1):
                    self._set(self._saved)


_blas = _BlasThreads()


def _worker_count() -> int:
    wanted = os.environ.get("XPNET_NUM_THREADS", "").strip()
    if wanted.isdigit() and int(wanted) > 0:
        return int(wanted)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


NUM_WORKERS = _worker_count()
_pool = None
_pool_lock = threading.Lock()


def _executor():
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=max(1, NUM_WORKERS - 1), thread_name_prefix="xpnet-kernel")
    return _pool


def _after_fork_in_child():
    # a forked child (a multiprocessing data worker) inherits the pool object but not its threads,
    # and possibly a lock held by another parent thread: start afresh
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()
    _blas._lock, _blas._depth = threading.Lock(), 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# a part smaller than this many array elements is not worth a thread hand-off: handing work to a
# pool thread and collecting it costs about 100 us on a 2-core VM (measured: a no-op _parallel),
# so jobs under ~2 Mi elements run on the calling thread (LeNet-5 step 20 -> 16 ms, VGG unchanged)
PARALLEL_MIN_ELEMENTS = 1 << 20


def _parallel(fn, n: int, blas: bool = False, elements: int | None = None):
    """[fn(start, stop) for contiguous parts of range(n)], the parts run on NUM_WORKERS threads (the
    caller runs the first). NumPy releases the GIL in copies, ufuncs and GEMMs, so the parts truly
    overlap. ``blas``: fn calls GEMMs, which then run single-threaded; without a way to pin the BLAS
    to one thread such work runs serially instead. ``elements``: the size of the whole job, which
    caps the number of parts so that small jobs stay on the calling thread."""
    parts = min(NUM_WORKERS, n)
    if elements is not None:
        parts = min(parts, max(1, elements // PARALLEL_MIN_ELEMENTS))
    if parts <= 1 or getattr(_local, "in_worker", False) or (blas and not _blas.available):
        return [fn(0, n)]
    bounds = [(n * i // parts, n * (i + 1) // parts) for i in range(parts)]

    def run(a, b):
        _local.in_worker = True
        try:
            return fn(a, b)
        finally:
            _local.in_worker = False

    with (_blas.single() if blas else contextlib.nullcontext()):
        futures = [_executor().submit(run, a, b) for a, b in bounds[1:]]
        try:
            first = run(*bounds[0])
        finally:
            results = [f.result() for f in futures] if futures else []
    return [first] + results


_stores: list = []  # every thread's workspace dict, for release_workspaces
_stores_lock = threading.Lock()


def _workspace(name: str, shape, dtype):
    """A scratch array of ``shape`` reused across calls (one per thread and name); never returned
    to a caller, only filled and consumed inside one kernel call."""
    store = getattr(_local, "buffers", None)
    if store is None:
        store = _local.buffers = {}
        with _stores_lock:
            _stores.append(store)
    dtype = np.dtype(dtype)
    size = 1
    for s in shape:
        size *= int(s)
    key = (name, dtype)
    buf = store.get(key)
    if buf is None or buf.size < size:
        buf = np.empty(max(size, 1), dtype=dtype)
        store[key] = buf
    return buf[:size].reshape(shape)


def release_workspaces() -> None:
    """Drop the scratch buffers of every thread (they are rebuilt, at the sizes needed, on the next call)."""
    with _stores_lock:
        for store in _stores:
            store.clear()


def _nhwc(x):
    """The channels-last view of an NCHW array (no copy)."""
    return x.transpose(0, 2, 3, 1)


def _nchw(x):
    return x.transpose(0, 3, 1, 2)


def _frame_into(buf, src, top, left, value=0):
    """Copy NHWC ``src`` into ``buf`` at (top, left) and set only the frame around it to ``value``.

    ``src`` may overhang ``buf`` (negative ``top`` or a tail past the end): it is cropped.
    """
    n, hb, wb, c = buf.shape
    _, hs, ws, _ = src.shape
    r0, r1 = max(top, 0), min(top + hs, hb)
    c0, c1 = max(left, 0), min(left + ws, wb)
    if r0 > 0:
        buf[:, :r0] = value
    if r1 < hb:
        buf[:, r1:] = value
    if c0 > 0:
        buf[:, r0:r1, :c0] = value
    if c1 < wb:
        buf[:, r0:r1, c1:] = value
    if r1 > r0 and c1 > c0:
        np.copyto(buf[:, r0:r1, c0:c1], src[:, r0 - top:r1 - top, c0 - left:c1 - left])
    return buf


def _output_size(size, kernel, stride, padding, dilation):
    return tuple((size[a] + padding[a][0] + padding[a][1] - dilation[a] * (kernel[a] - 1) - 1) // stride[a] + 1
                 for a in (0, 1))


def _patches(xpad, kernel, stride, dilation, out_hw):
    """Read-only (N, OH, OW, kH, kW, C) view of NHWC ``xpad``: every receptive field, no copy."""
    sn, sh, sw, sc = xpad.strides
    return as_strided(xpad, (xpad.shape[0], out_hw[0], out_hw[1], kernel[0], kernel[1], xpad.shape[3]),
                      (sn, sh * stride[0], sw * stride[1], sh * dilation[0], sw * dilation[1], sc),
                      writeable=False)


def _chunk(n, rows_per_image, row_elems, itemsize):
    return max(1, min(n, CHUNK_BYTES // max(1, rows_per_image * row_elems * itemsize)))


def _column_sums(block):
    """Column sums of a (rows, C) block as one BLAS GEMV (several times faster than sum(axis=0))."""
    store = getattr(_local, "ones", None)
    if store is None:
        store = _local.ones = {}
    ones = store.get(block.dtype)
    if ones is None or ones.shape[0] < block.shape[0]:
        ones = store[block.dtype] = np.ones(block.shape[0], dtype=block.dtype)
    return np.matmul(ones[:block.shape[0]], block)


def _im2col(patches, n0, n1, name):
    """The column matrix of images [n0, n1) as a (rows, kH*kW*C) matrix, copied into a workspace.

    Stored rows-major when a receptive-field row (kW*C values, contiguous in NHWC) is the longer
    run; for few channels (a 5x5 kernel over 1 channel: runs of 5) it is stored as the transpose
    (kH*kW*C, rows), where each copied run is an output row (OW values) instead, and returned as a
    transposed view: BLAS takes either form without a copy."""
    _, oh, ow, kh, kw, c = patches.shape
    if kw * c >= ow or ow < 8:
        cols = _workspace(name, (n1 - n0, oh, ow, kh, kw, c), patches.dtype)
        np.copyto(cols, patches[n0:n1])
        return cols.reshape((n1 - n0) * oh * ow, kh * kw * c)
    cols_t = _workspace(name, (kh, kw, c, n1 - n0, oh, ow), patches.dtype)
    np.copyto(cols_t, patches[n0:n1].transpose(3, 4, 5, 0, 1, 2))
    return cols_t.reshape(kh * kw * c, (n1 - n0) * oh * ow).T


def _conv_gemm(patches, wmat, out_rows, kernel, c, name, bias=None):
    """out_rows[(n, p, q), :] = patches[n, p, q].ravel() @ wmat (+ bias), a cache-sized batch chunk at a
    time; the bias is added to each chunk while it is still in cache."""
    n, oh, ow = patches.shape[:3]
    kc = kernel[0] * kernel[1] * c
    nb = _chunk(n, oh * ow, kc, patches.itemsize)
    for n0 in range(0, n, nb):
        n1 = min(n, n0 + nb)
        out = out_rows[n0 * oh * ow:n1 * oh * ow]
        np.matmul(_im2col(patches, n0, n1, name), wmat, out=out)
        if bias is not None:
            np.add(out, bias, out=out)


def _framed_part(src, padding, n0, n1, shared):
    """Images [n0, n1) of NHWC ``src`` with their zero frame (written into the shared buffer)."""
    (pt, pb), (pl, pr) = padding
    if pt == pb == pl == pr == 0:
        return src[n0:n1]
    return _frame_into(shared[n0:n1], src[n0:n1], pt, pl)


def _shared_padded(shape_nhwc, padding, dtype, name):
    (pt, pb), (pl, pr) = padding
    if pt == pb == pl == pr == 0:
        return None
    n, h, w, c = shape_nhwc
    return _workspace(name, (n, h + pt + pb, w + pl + pr, c), dtype)


def _group_weights(w, groups):
    """W_mat per group, rows in (i, j, c) order to match the patch layout: (kH*kW*C/G, O/G)."""
    o, cg, kh, kw = w.shape
    og = o // groups
    return [np.ascontiguousarray(w[g * og:(g + 1) * og].transpose(2, 3, 1, 0)).reshape(kh * kw * cg, og)
            for g in range(groups)]


# -- Winograd F(2x2, 3x3) for stride-1 3x3 convolutions ------------------------------------------
# Where it pays on a 2-core EPYC (ms, batch 64, forward / input gradient, Winograd against im2col):
# 64 ch. 32x32: 26 / 26 against 33 / 32; 128 ch. 16x16: 26 / 26 against 30 / 29; 256 ch. 8x8: 36 / 34
# against 30 / 29. Both channel counts at least WINOGRAD_MIN_CHANNELS (thinner products are too
# inefficient in the BLAS) and outputs of at least WINOGRAD_MIN_PIXELS (few tiles per image leave
# the transforms and the strided products dominating); a chunk holds about WINOGRAD_ROWS tiles.
WINOGRAD_MIN_CHANNELS = 32
WINOGRAD_MIN_PIXELS = 256
WINOGRAD_ROWS = 512
_WINO_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
# U = G W G^T for every (c, o) at once: kron(G, G) (16, 9) times W's taps (9, C O), one small GEMM
_WINO_GG = np.kron(_WINO_G, _WINO_G).T


def _winograd_lib(w, stride, dilation, groups, dtype, out_hw):
    """The compiled library when this convolution runs as Winograd F(2x2, 3x3), else None."""
    if (tuple(w.shape[2:]) != (3, 3) or tuple(stride) != (1, 1) or tuple(dilation) != (1, 1) or groups != 1
            or min(w.shape[0], w.shape[1]) < WINOGRAD_MIN_CHANNELS or out_hw[0] * out_hw[1] < WINOGRAD_MIN_PIXELS
            or dtype not in _NATIVE_FLOATS):
        return None
    return native.library()


class _Winograd:
    """y = conv(x, W) (stride 1, 3x3) as Winograd F(2x2, 3x3) (Lavin and Gray, 2016): every 2x2 block
    of outputs from a 4x4 input tile with 16 multiplies per (input, output) channel pair instead of
    36, so the products cost 4/9 of im2col's. With U_k = (G W G^T)_k (C, O) and V_k the tiles'
    transformed inputs (tiles, C), k = 0..15:
        M_k = V_k U_k  (16 GEMMs)      y tile = A^T M A  (+ bias)
    The transforms (xp_wino_in / xp_wino_out) are compiled; the products run on chunks of about
    WINOGRAD_ROWS tiles. The input gradient of such a convolution is one too (of the framed G with
    the flipped, transposed kernel), so _Stride1InputGrad runs through here as well. The weight
    gradient follows from y = A^T (U ⊙ V) A by the chain rule: dM = A dY A^T per 2x2 block of G,
    dU_k = sum over tiles V_k^T dM_k, dW = G^T dU G (weight_grad_part, weight_grad)."""

    def __init__(self, lib, w, bias, out_hw):
        o, c = w.shape[:2]
        self.lib, self.c, self.o = lib, c, o
        self.oh, self.ow = out_hw
        self.th, self.tw = -(-self.oh // 2), -(-self.ow // 2)
        self.hq, self.wq = 2 * self.th + 2, 2 * self.tw + 2
        taps = np.ascontiguousarray(w.reshape(o, c, 9).transpose(2, 1, 0)).reshape(9, c * o)
        with _blas.single():  # a threaded GEMM here would leave OpenBLAS threads spinning (see matmul)
            self.u = np.matmul(_WINO_GG.T.astype(w.dtype), taps).reshape(16, c, o)
        self.bias = None if bias is None else np.ascontiguousarray(bias, dtype=w.dtype)
        self.step = max(1, WINOGRAD_ROWS // (self.th * self.tw))

    @staticmethod
    def _stack(name, rows, cols, dtype):
        """16 (rows, cols) matrices in one workspace, each a little more than rows * cols apart: at
        exact multiples of a large power of two the transforms' 16 streams would share cache sets.
        Returns the (16, rows, cols) view and the element distance between the matrices."""
        k_stride = rows * cols + 64
        buf = _workspace(name, (16 * k_stride,), dtype)
        item = buf.itemsize
        return as_strided(buf, (16, rows, cols), (k_stride * item, cols * item, item)), k_stride

    def _chunks(self, xh, top, left, n0, n1, dtype):
        """(a, z, V, its k stride) per chunk of images [n0, n1): V = B^T d B of every tile of the
        zero-framed images xh[a:z] placed at (top, left), as _stack's 16 matrices (tiles, C)."""
        tiles = self.th * self.tw
        transform_in = _native_kernel(self.lib, "xp_wino_in", dtype)
        for a in range(n0, n1, self.step):
            z = min(n1, a + self.step)
            m = z - a
            framed = _frame_into(_workspace("wino_x", (m, self.hq, self.wq, self.c), dtype), xh[a:z], top, left)
            v, v_k = self._stack("wino_v", m * tiles, self.c, dtype)
            transform_in(_ptr(framed), self.hq * self.wq * self.c, self.wq, self.c, m, self.th, self.tw, _ptr(v),
                         self.c, v_k)
            yield a, z, v

    def weight_grad_part(self, xh, gh, top, left, n0, n1):
        """dU = sum over the tiles of images [n0, n1) of V_k^T dM_k, (16, C, O): the weight gradient
        before its transform (see weight_grad). dM = A dY A^T per 2x2 block of G."""
        o, tiles, dtype = self.o, self.th * self.tw, gh.dtype
        transform_grad = _native_kernel(self.lib, "xp_wino_grad", dtype)
        du = np.zeros((16, self.c, o), dtype=dtype)
        part = _workspace("wino_du", (16, self.c, o), dtype)
        for a, z, v in self._chunks(xh, top, left, n0, n1, dtype):
            grad = np.ascontiguousarray(gh[a:z])
            dm, dm_k = self._stack("wino_m", (z - a) * tiles, o, dtype)
            transform_grad(_ptr(grad), self.oh * self.ow * o, o, z - a, self.th, self.tw, self.oh, self.ow, _ptr(dm),
                           o, dm_k)
            np.matmul(v.transpose(0, 2, 1), dm, out=part)
            np.add(du, part, out=du)
        return du

    @staticmethod
    def weight_grad(du):
        """dW (9 C, O), rows in (i, j, c) order, from the summed dU (16, C, O): U = G W G^T, so
        dW = G^T dU G, one GEMM with kron(G, G)."""
        _, c, o = du.shape
        with _blas.single():
            return np.matmul(_WINO_GG.astype(du.dtype), du.reshape(16, c * o)).reshape(9 * c, o)

    def images(self, xh, top, left, y, n0, n1):
        """NHWC outputs y[n0:n1] (N, OH, OW, O) from NHWC input images xh[n0:n1], placed at (top, left)
        in the zero-framed tiles."""
        o, tiles = self.o, self.th * self.tw
        transform_out = _native_kernel(self.lib, "xp_wino_out", y.dtype)
        bias = None if self.bias is None else _ptr(self.bias)
        for a, z, v in self._chunks(xh, top, left, n0, n1, y.dtype):
            prod, m_k = self._stack("wino_m", (z - a) * tiles, o, y.dtype)
            np.matmul(v, self.u, out=prod)
            transform_out(_ptr(prod), o, m_k, o, z - a, self.th, self.tw, bias, _ptr(y[a]), self.oh * self.ow * o,
                          self.oh, self.ow)


@register_kernel("numpy", kernels.CONV2D_FORWARD)
def conv2d_forward(x, w, b, stride, padding, dilation, groups):
    """Convolution forward in NHWC: returns y (N, O, OH, OW) over NHWC memory and the saved state.
    The batch is split over the worker threads; each frames, im2cols and multiplies its own images."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    og = o // groups
    oh, ow = _output_size((h, wd), (kh, kw), stride, padding, dilation)
    saved = (x, w, (oh, ow), stride, padding, dilation, groups)
    if _planar_conv(w, stride, groups):
        return _planar_conv_forward(x, w, b, padding, dilation), saved
    lib = _winograd_lib(w, stride, dilation, groups, x.dtype, (oh, ow))
    if lib is not None:
        wino, y = _Winograd(lib, w, b, (oh, ow)), np.empty((n, oh, ow, o), dtype=x.dtype)
        _parallel(lambda n0, n1: wino.images(_nhwc(x), padding[0][0], padding[1][0], y, n0, n1), n, blas=True,
                  elements=n * oh * ow * (9 * c + o))
        return _nchw(y), saved
    xh = _nhwc(x)
    shared = _shared_padded(xh.shape, padding, x.dtype, "conv_xpad")
    wmats = _group_weights(w, groups)
    y = np.empty((n, oh, ow, o), dtype=x.dtype)
    rows = y.reshape(n * oh * ow, o)

    def work(n0, n1):
        xpad = _framed_part(xh, padding, n0, n1, shared)
        part_rows = rows[n0 * oh * ow:n1 * oh * ow]
        for gi in range(groups):
            patches = _patches(xpad[..., gi * cg:(gi + 1) * cg], (kh, kw), stride, dilation, (oh, ow))
            if groups == 1:
                _conv_gemm(patches, wmats[0], part_rows, (kh, kw), cg, "conv_cols", bias=b)
            else:
                out = _workspace("conv_group_out", ((n1 - n0) * oh * ow, og), x.dtype)
                _conv_gemm(patches, wmats[gi], out, (kh, kw), cg, "conv_cols",
                           bias=None if b is None else b[gi * og:(gi + 1) * og])
                part_rows[:, gi * og:(gi + 1) * og] = out

    _parallel(work, n, blas=True, elements=n * oh * ow * (kh * kw * cg + o))
    return _nchw(y), saved


@register_kernel("numpy", kernels.CONV2D_BACKWARD)
def conv2d_backward(g, saved, needs):
    """The backward of conv2d_forward: on channel-major planes where the forward ran there (see
    _PlanarConv), else in NHWC (see _nhwc_conv_backward)."""
    _, w, _, stride, _, _, groups = saved
    if _planar_conv(w, stride, groups):
        return _planar_conv_backward(g, saved, needs)
    return _nhwc_conv_backward(g, saved, needs)


def _nhwc_conv_backward(g, saved, needs):
    """dW = sum over images of X_col^T G (each worker sums its images, then the partial sums add),
    db = column sums of G, dX as a stride-1 convolution or by col2im (see the helpers below)."""
    x, w, (oh, ow), stride, padding, dilation, groups = saved
    need_x, need_w, need_b = needs
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    og = o // groups
    kc = kh * kw * cg
    gh = _nhwc(g)
    if not gh.flags.c_contiguous:
        gh = np.ascontiguousarray(gh)  # free when g came from an NHWC layer
    grows = gh.reshape(n * oh * ow, o)
    xh = _nhwc(x)
    shared_x = _shared_padded(xh.shape, padding, x.dtype, "conv_xpad") if need_w else None
    input_grad = None
    if need_x:
        input_grad = (_Stride1InputGrad(gh, w, (n, c, h, wd), padding, dilation, groups) if stride == (1, 1)
                      else _Col2ImInputGrad(grows, w, (n, c, h, wd), (oh, ow), stride, padding, dilation, groups))
    lib = _winograd_lib(w, stride, dilation, groups, g.dtype, (oh, ow)) if need_w else None
    wino = None if lib is None else _Winograd(lib, w, None, (oh, ow))

    def work(n0, n1):
        db_part = _column_sums(grows[n0 * oh * ow:n1 * oh * ow]) if need_b else None
        dw_parts = None
        if wino is not None:
            dw_parts = [wino.weight_grad_part(xh, gh, padding[0][0], padding[1][0], n0, n1)]
        elif need_w:
            xpad = _framed_part(xh, padding, n0, n1, shared_x)
            nb = _chunk(n1 - n0, oh * ow, kc, x.itemsize)
            dw_parts = []
            for gi in range(groups):
                patches = _patches(xpad[..., gi * cg:(gi + 1) * cg], (kh, kw), stride, dilation, (oh, ow))
                gsel = grows[:, gi * og:(gi + 1) * og]
                acc = np.empty((kc, og), dtype=w.dtype)
                part = _workspace("conv_dw_part", (kc, og), w.dtype)
                for a in range(0, n1 - n0, nb):
                    z = min(n1 - n0, a + nb)
                    cols = _im2col(patches, a, z, "conv_cols")
                    rows = gsel[(n0 + a) * oh * ow:(n0 + z) * oh * ow]
                    np.matmul(cols.T, rows, out=acc if a == 0 else part)
                    if a:
                        np.add(acc, part, out=acc)
                dw_parts.append(acc)
        if input_grad is not None:
            input_grad(n0, n1)
        return db_part, dw_parts

    results = _parallel(work, n, blas=True, elements=n * oh * ow * (kc + o))
    db = dw = None
    if need_b:
        db = results[0][0]
        for r in results[1:]:
            db = db + r[0]
    if need_w:
        dw = np.empty_like(w)
        for gi in range(groups):
            acc = results[0][1][gi]
            for r in results[1:]:
                np.add(acc, r[1][gi], out=acc)
            if wino is not None:
                acc = wino.weight_grad(acc)
            dw[gi * og:(gi + 1) * og] = acc.reshape(kh, kw, cg, og).transpose(3, 2, 0, 1)
    dx = input_grad.result() if input_grad is not None else None
    return dx, dw, db


class _Stride1InputGrad:
    """dL/dx of a stride-1 convolution as a convolution: frame G (NHWC) with zeros so that every input
    pixel sees all kernel taps, then correlate with W flipped in (i, j) and transposed in (o, c):
        dx[n, h, w, c] = sum_{i', j', o} G_pad[n, h + i'D_h, w + j'D_w, o] W[o, c, kH-1-i', kW-1-j']
    Called per batch part from the backward workers."""

    def __init__(self, gh, w, xshape, padding, dilation, groups):
        n, c, h, wd = xshape
        o, cg, kh, kw = w.shape
        og = o // groups
        (pt, _), (pl, _) = padding
        self.gh, self.geometry = gh, (h, wd, c, cg, og, kh, kw, groups)
        self.dilation = dilation
        self.offset = (dilation[0] * (kh - 1) - pt, dilation[1] * (kw - 1) - pl)
        self.gpad = _workspace("conv_gpad", (n, h + dilation[0] * (kh - 1), wd + dilation[1] * (kw - 1), o), gh.dtype)
        # rows in (i', j', o) order: the flipped kernel, output channels as the reduced dimension
        self.wflip = [np.ascontiguousarray(w[g * og:(g + 1) * og, :, ::-1, ::-1].transpose(2, 3, 0, 1))
                      .reshape(kh * kw * og, cg) for g in range(groups)]
        self.dxh = np.empty((n, h, wd, c), dtype=gh.dtype)
        lib = _winograd_lib(w, (1, 1), dilation, groups, gh.dtype, (h, wd))
        self.wino = None if lib is None else _Winograd(
            lib, np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)), None, (h, wd))

    def __call__(self, n0, n1):
        h, wd, c, cg, og, kh, kw, groups = self.geometry
        if self.wino is not None:
            self.wino.images(self.gh, *self.offset, self.dxh, n0, n1)
            return
        gpad = _frame_into(self.gpad[n0:n1], self.gh[n0:n1], *self.offset)
        rows = self.dxh[n0:n1].reshape(-1, c)
        for gi in range(groups):
            patches = _patches(gpad[..., gi * og:(gi + 1) * og], (kh, kw), (1, 1), self.dilation, (h, wd))
            if groups == 1:
                _conv_gemm(patches, self.wflip[0], rows, (kh, kw), og, "conv_cols")
            else:
                out = _workspace("conv_group_dx", ((n1 - n0) * h * wd, cg), self.gh.dtype)
                _conv_gemm(patches, self.wflip[gi], out, (kh, kw), og, "conv_cols")
                rows[:, gi * cg:(gi + 1) * cg] = out

    def result(self):
        return _nchw(self.dxh)


class _Col2ImInputGrad:
    """dL/dx for strided convolutions: dX_col = G W_mat^T per chunk, then one slice-add per kernel offset
    into the zero-framed input gradient (col2im). Called per batch part from the backward workers."""

    def __init__(self, grows, w, xshape, out_hw, stride, padding, dilation, groups):
        n, c, h, wd = xshape
        (pt, pb), (pl, pr) = padding
        self.grows, self.w, self.xshape, self.out_hw = grows, w, xshape, out_hw
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.wmats = _group_weights(w, groups)
        self.dxpad = np.zeros((n, h + pt + pb, wd + pl + pr, c), dtype=grows.dtype)

    def __call__(self, n0, n1):
        o, cg, kh, kw = self.w.shape
        og = o // self.groups
        oh, ow = self.out_hw
        (sh, sw), (dh, dwl) = self.stride, self.dilation
        kc = kh * kw * cg
        nb = _chunk(n1 - n0, oh * ow, kc, self.grows.itemsize)
        for gi in range(self.groups):
            gsel = self.grows[:, gi * og:(gi + 1) * og]
            for a in range(n0, n1, nb):
                z = min(n1, a + nb)
                dcols = _workspace("conv_cols", ((z - a) * oh * ow, kc), self.grows.dtype)
                np.matmul(gsel[a * oh * ow:z * oh * ow], self.wmats[gi].T, out=dcols)
                dcols = dcols.reshape(z - a, oh, ow, kh, kw, cg)
                block = self.dxpad[a:z, :, :, gi * cg:(gi + 1) * cg]
                for i in range(kh):
                    for j in range(kw):
                        target = block[:, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dwl:j * dwl + sw * (ow - 1) + 1:sw]
                        np.add(target, dcols[:, :, :, i, j], out=target)

    def result(self):
        n, c, h, wd = self.xshape
        (pt, _), (pl, _) = self.padding
        return _nchw(self.dxpad[:, pt:pt + h, pl:pl + wd])


# -- few-channel convolution on channel-major planes ----------------------------------------------
# both channel counts at most this: such narrow convolutions are bound by im2col's short copies and
# by GEMMs a few columns wide in NHWC, not by arithmetic (LeNet's 1->6 and 6->16 layers). At 32
# channels NHWC wins again: the default `xpnet train` model (32-channel convs, then batch norm) ran
# 150 ms a step through NHWC against 204 ms through planes.
PLANAR_MAX_CHANNELS = 16


def _planar_conv(w, stride, groups):
    """Whether a convolution runs on channel-major planes (see _PlanarConv)."""
    return (groups == 1 and tuple(stride) == (1, 1)
            and w.shape[0] <= PLANAR_MAX_CHANNELS and w.shape[1] <= PLANAR_MAX_CHANNELS)


class _PlanarConv:
    """A stride-1, one-group convolution on channel-major planes with wide output rows.

    The zero-framed input lives in a (C, N, Hp + 1, Wp) buffer: one plane per (channel, image) and a
    spare zero row. Every output row is computed Wp wide instead of OW, so that output (p, q) of
    image n meets kernel offset (i, j) at plane position (p + i D_h) Wp + (q + j D_w): for each
    (c, i, j, n) the OH * Wp outputs read ONE contiguous run of the plane, starting at
    i D_h Wp + j D_w. The column matrix X_col (C kH kW, N OH Wp), rows in W's own (c, i, j) order, is
    thus a copy of long runs, and Y = W_mat X_col (W_mat = W as (O, C kH kW)) comes out channel-major.
    The Wp - OW extra outputs of a row are dropped (forward) or get a zero gradient (backward); the
    spare row keeps the last row's extra reads inside its plane.
    """

    def __init__(self, x, w, padding, dilation):
        self.n, self.c, self.h, self.w = x.shape
        self.o, _, kh, kw = w.shape
        (self.pt, pb), (self.pl, pr) = padding
        self.hp, self.wp = self.h + self.pt + pb, self.w + self.pl + pr
        self.kernel, self.dilation = (kh, kw), dilation
        self.oh, self.ow = self.hp - dilation[0] * (kh - 1), self.wp - dilation[1] * (kw - 1)
        self.row = self.oh * self.wp  # wide outputs per image
        self.plane = (self.hp + 1) * self.wp
        self.ckk = self.c * kh * kw
        self.wmat = w.reshape(self.o, self.ckk)
        self.x, self.dtype = x, x.dtype
        self.xpad = None

    def frame_input(self, n0, n1):
        """Images [n0, n1) of x into their zero-framed planes (the buffer is shared by the workers)."""
        if self.xpad is None:
            raise RuntimeError("frame_input before share_input")
        _frame_into(self.xpad[:, n0:n1].transpose(1, 2, 3, 0), _nhwc(self.x[n0:n1]), self.pt, self.pl)

    def share_input(self):
        self.xpad = _workspace("planar_xpad", (self.c, self.n, self.hp + 1, self.wp), self.dtype)

    def runs(self, buf, writeable=False):
        """(C, kH, kW, N, OH Wp) view of plane buffer ``buf``: [c, i, j, n] is the run of plane (c, n)
        that offset (i, j) meets (made once per call: as_strided costs microseconds)."""
        it = buf.itemsize
        (dh, dw), wp, plane = self.dilation, self.wp, self.plane
        return as_strided(buf, (self.c,) + self.kernel + (self.n, self.row),
                          (self.n * plane * it, dh * wp * it, dw * it, plane * it, it), writeable=writeable)

    def columns(self, runs, a, z):
        """X_col of images [a, z): (C kH kW, (z - a) OH Wp), copied from ``runs`` into a workspace."""
        cols = _workspace("planar_cols", (self.c,) + self.kernel + (z - a, self.row), self.dtype)
        np.copyto(cols, runs[:, :, :, a:z])
        return cols.reshape(self.ckk, -1)

    def fold(self, runs, dcols, a, z):
        """col2im: add offset (i, j)'s rows of dX_col (C kH kW, (z - a) OH Wp) into its runs of the
        zero-started planes (``runs`` of the dx buffer); one add of contiguous runs per offset."""
        kh, kw = self.kernel
        parts = dcols.reshape(self.c, kh, kw, z - a, self.row)
        for i in range(kh):
            for j in range(kw):
                target = runs[:, i, j, a:z]
                np.add(target, parts[:, i, j], out=target)

    def chunk(self, count):
        return _chunk(count, self.row, self.ckk + self.o, self.dtype.itemsize)


def _round_up(v, m):
    return -(-v // m) * m


class _WideConv:
    """Geometry of the compiled few-channel convolution (csrc/conv_wide.c), float32 only.

    Each image's zero-framed channels are planes of row width Wp, ``plane`` elements apart (an
    (N, C, plane) buffer); the output is computed Wp wide per row, P = OH Wp positions, rounded up
    to ``p16`` for the 16-wide vector loops, so output (r, s) is wide position r Wp + s and kernel
    offset (i, j) is tap offset i D_h Wp + j D_w (the largest, ``reach``). The output gradient lives
    in a (N, O, gplane) buffer, zero except G itself at ``reach`` + (r Wp + s): read from there it is
    the wide G of the weight gradient (zero on the extra columns), read with the flipped kernel's
    offsets it is the zero-framed G of the input gradient (a stride-1 convolution's dx is the
    correlation of the framed G with W flipped and transposed); a row's negative column offsets wrap
    into the previous row's zero extra columns. The input gradient is computed for the interior
    rows only, from wide position ``q0`` = pt Wp, ``q16`` positions."""

    def __init__(self, xshape, w, padding, dilation):
        self.n, self.c, self.h, self.w = xshape
        self.o, _, kh, kw = w.shape
        (self.pt, pb), (self.pl, pr) = padding
        dh, dw = dilation
        self.hp, self.wp = self.h + self.pt + pb, self.w + self.pl + pr
        self.oh, self.ow = self.hp - dh * (kh - 1), self.wp - dw * (kw - 1)
        self.offsets = np.array([i * dh * self.wp + j * dw for i in range(kh) for j in range(kw)], dtype=np.int64)
        self.reach = int(self.offsets[-1])
        self.p = self.oh * self.wp
        self.p16 = _round_up(self.p, 16)
        self.plane = _round_up(max(self.hp * self.wp, self.p16 + self.reach), 8)
        self.q0, self.q16 = self.pt * self.wp, _round_up(self.h * self.wp, 16)
        self.gplane = _round_up(max(self.reach + self.p16, self.q0 + self.q16 + self.reach), 8)
        self.kk = kh * kw

    def taps(self, channels, plane):
        """Offsets of the flattened (channel, i, j) taps in a buffer of ``plane``-long planes."""
        return (np.arange(channels, dtype=np.int64)[:, None] * plane + self.offsets[None, :]).reshape(-1)

    def frame_planes(self, lib, buf, x, n0, n1):
        """Images [n0, n1) of x into their zero-framed planes of ``buf`` (N, C, plane)."""
        _frame(lib, x[n0:n1], buf[n0:n1], self.wp, 0, self.pt, self.pl)

    def frame_grad(self, lib, buf, g, n0, n1, sums=None):
        """Images [n0, n1) of G into the (N, O, gplane) buffer, at ``reach`` + wide position, zero
        elsewhere; ``sums`` (float64, O) += the sums of G per channel."""
        _frame(lib, g[n0:n1], buf[n0:n1], self.wp, self.reach, 0, 0, sums)

    def images_per_block(self, per_image):
        return max(1, (256 << 10) // max(1, per_image * 4))


def _ptr(a):
    return a.ctypes.data


def _frame(lib, src, dst, row, head, top, left, sums=None):
    """xp_frame: each (image, channel) plane of ``src`` into its zero-framed plane of ``dst``."""
    n, c, h, w = src.shape
    s = [st // src.itemsize for st in src.strides]
    lib.xp_frame(_ptr(src), *s, n, c, h, w, _ptr(dst), dst.strides[0] // dst.itemsize, dst.shape[2], row, head,
                 top, left, None if sums is None else _ptr(sums))


def _native_conv_forward(lib, x, w, b, padding, dilation):
    """y (N, O, OH, OW), NCHW-contiguous, through xp_conv_wide; the batch split over the workers."""
    wc = _WideConv(x.shape, w, padding, dilation)
    n, c, o = wc.n, wc.c, wc.o
    planes = _workspace("wide_x", (n, c, wc.plane), x.dtype)
    taps = wc.taps(c, wc.plane)
    wmat = np.ascontiguousarray(w.reshape(o, -1))
    bias = None if b is None else np.ascontiguousarray(b, dtype=x.dtype)
    y = np.empty((n, o, wc.oh, wc.ow), dtype=x.dtype)

    def work(n0, n1):
        wc.frame_planes(lib, planes, x, n0, n1)
        scratch = _workspace("wide_out", (o, wc.p16), x.dtype)
        lib.xp_conv_wide(_ptr(planes[n0]), c * wc.plane, _ptr(taps), taps.size, _ptr(wmat), o,
                         None if bias is None else _ptr(bias), wc.p16, wc.oh, wc.wp, 0, wc.ow, _ptr(scratch),
                         _ptr(y[n0]), o * wc.oh * wc.ow, wc.oh * wc.ow, n1 - n0)

    _parallel(work, n, elements=n * wc.p * (c * wc.kk + o))
    return y


def _native_conv_backward(lib, g, saved, needs):
    """dW through xp_conv_wide_dw, dx through xp_conv_wide over the framed G with the flipped,
    transposed kernel (see _WideConv); db the sums of G, taken while framing it. Each worker
    returns its images' partial sums."""
    x, w, _, _, padding, dilation, _ = saved
    need_x, need_w, need_b = needs
    wc = _WideConv(x.shape, w, padding, dilation)
    n, c, o, kk = wc.n, wc.c, wc.o, wc.kk
    gbuf = _workspace("wide_g", (n, o, wc.gplane), g.dtype)
    planes = _workspace("wide_x", (n, c, wc.plane), g.dtype) if need_w else None
    x_taps = wc.taps(c, wc.plane)
    g_taps = wc.taps(o, wc.gplane)
    wflip = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).reshape(c, -1) if need_x else None
    dx = np.empty((n, c, wc.h, wc.w), dtype=g.dtype) if need_x else None
    dw_block = wc.images_per_block(c * wc.plane + o * wc.gplane)
    item = gbuf.itemsize

    def work(n0, n1):
        db_part = np.zeros(o, dtype=np.float64) if need_b else None
        wc.frame_grad(lib, gbuf, g, n0, n1, db_part)
        dw_part = None
        if need_w:
            wc.frame_planes(lib, planes, x, n0, n1)
            dw_part = np.zeros((o, c * kk), dtype=g.dtype)
            lib.xp_conv_wide_dw(_ptr(planes[n0]), c * wc.plane, _ptr(x_taps), x_taps.size,
                                _ptr(gbuf[n0]) + wc.reach * item, o * wc.gplane, wc.gplane, o,
                                wc.p16, n1 - n0, dw_block, _ptr(dw_part))
        if need_x:
            scratch = _workspace("wide_out", (c, wc.q16), g.dtype)
            lib.xp_conv_wide(_ptr(gbuf[n0]) + wc.q0 * item, o * wc.gplane, _ptr(g_taps), g_taps.size, _ptr(wflip),
                             c, None, wc.q16, wc.h, wc.wp, wc.pl, wc.w, _ptr(scratch),
                             _ptr(dx[n0]), c * wc.h * wc.w, wc.h * wc.w, n1 - n0)
        return db_part, dw_part

    results = _parallel(work, n, elements=n * wc.p * (c * kk + o))
    db = _sum_partials([r[0] for r in results]).astype(g.dtype) if need_b else None
    dw = _sum_partials([r[1] for r in results]).reshape(w.shape) if need_w else None
    return dx, dw, db


def _planar_conv_forward(x, w, b, padding, dilation):
    """y (N, O, OH, OW) over channel-major (O, N, OH, OW) memory; the batch split over the workers."""
    lib = native.library() if x.dtype == np.float32 else None
    if lib is not None:
        return _native_conv_forward(lib, x, w, b, padding, dilation)
    pc = _PlanarConv(x, w, padding, dilation)
    pc.share_input()
    o, n, oh, ow = pc.o, pc.n, pc.oh, pc.ow
    y = np.empty((o, n, oh, ow), dtype=x.dtype)
    bias = None if b is None else b.reshape(o, 1, 1, 1)

    runs = pc.runs(pc.xpad)

    def work(n0, n1):
        pc.frame_input(n0, n1)
        step = pc.chunk(n1 - n0)
        for a in range(n0, n1, step):
            z = min(n1, a + step)
            wide = _workspace("planar_out", (o, z - a, oh, pc.wp), x.dtype)
            np.matmul(pc.wmat, pc.columns(runs, a, z), out=wide.reshape(o, -1))
            if bias is None:
                np.copyto(y[:, a:z], wide[..., :ow])
            else:
                np.add(wide[..., :ow], bias, out=y[:, a:z])

    _parallel(work, n, blas=True, elements=n * pc.row * (pc.ckk + o))
    return y.transpose(1, 0, 2, 3)


def _planar_conv_backward(g, saved, needs):
    """Backward of _planar_conv_forward, with G_w = dL/dy in wide rows, (O, N OH Wp), zero in the extra
    columns:
        dL/dW_mat = G_w X_col^T      dL/db = G_w 1      dX_col = W_mat^T G_w, folded back by one add
    of contiguous runs per kernel offset (col2im on the planes; a stride-1 convolution has no other
    overlap to handle). The zero extra columns make the wide rows contribute exactly the true sums.
    A non-finite input value met only by an extra column would turn 0 * inf into NaN in dW, so a
    non-finite dW is recomputed in NHWC; with a non-finite W, dx is folded from the exact columns."""
    x, w, _, _, padding, dilation, _ = saved
    need_x, need_w, need_b = needs
    finite_w = bool(np.isfinite(w).all()) if need_x else True
    lib = native.library() if g.dtype == np.float32 == x.dtype else None
    if lib is not None and finite_w:
        dx, dw, db = _native_conv_backward(lib, g, saved, needs)
        if need_w and not np.isfinite(dw).all():
            dw = _nhwc_conv_backward(g, saved, (False, True, False))[1]
        return dx, dw, db
    pc = _PlanarConv(x, w, padding, dilation)
    o, n, c, oh, ow, wp = pc.o, pc.n, pc.c, pc.oh, pc.ow, pc.wp
    if need_w:
        pc.share_input()
    gw = _workspace("planar_grad", (o, n, oh, wp), g.dtype)
    fold_x = need_x and finite_w
    dxpad = _workspace("planar_dxpad", (c, n, pc.hp + 1, wp), g.dtype) if fold_x else None
    dx = np.empty((c, n, pc.h, pc.w), dtype=g.dtype) if fold_x else None
    wmat_t = pc.wmat.T
    x_runs = pc.runs(pc.xpad) if need_w else None
    dx_runs = pc.runs(dxpad, writeable=True) if fold_x else None

    def work(n0, n1):
        _frame_into(gw[:, n0:n1].transpose(1, 2, 3, 0), _nhwc(g[n0:n1]), 0, 0)
        db_part = _column_sums(gw[:, n0:n1].reshape(o, -1).T) if need_b else None
        dw_part = None
        if need_w:
            pc.frame_input(n0, n1)
            dw_part = np.zeros((o, pc.ckk), dtype=g.dtype)
        if fold_x:
            dxpad[:, n0:n1] = 0
        step = pc.chunk(n1 - n0)
        for a in range(n0, n1, step):
            z = min(n1, a + step)
            grad = gw[:, a:z].reshape(o, -1)
            if need_w:
                part = _workspace("planar_dw", (o, pc.ckk), g.dtype)
                np.matmul(grad, pc.columns(x_runs, a, z).T, out=part)
                np.add(dw_part, part, out=dw_part)
            if fold_x:
                dcols = _workspace("planar_dcols", (pc.ckk, (z - a) * pc.row), g.dtype)
                np.matmul(wmat_t, grad, out=dcols)
                pc.fold(dx_runs, dcols, a, z)
        if fold_x:
            np.copyto(dx[:, n0:n1], dxpad[:, n0:n1, pc.pt:pc.pt + pc.h, pc.pl:pc.pl + pc.w])
        return db_part, dw_part

    results = _parallel(work, n, blas=True, elements=n * pc.row * (pc.ckk + o))
    db = _sum_partials([r[0] for r in results]) if need_b else None
    dw = _sum_partials([r[1] for r in results]).reshape(w.shape) if need_w else None
    if fold_x:
        dx = dx.transpose(1, 0, 2, 3)
    if need_w and not np.isfinite(dw).all():
        dw = _nhwc_conv_backward(g, saved, (False, True, False))[1]
    if need_x and not fold_x:  # col2im of the exact columns only: the generic path's products and sums
        fold = _Col2ImInputGrad(np.ascontiguousarray(_nhwc(g)).reshape(-1, o), w, x.shape, (oh, ow), (1, 1),
                                padding, dilation, 1)
        fold(0, n)
        dx = fold.result()
    return dx, dw, db



# -- pooling ----------------------------------------------------------------------------------
def _pool_views(xpad, kernel, stride, dilation, out_hw):
    """One (N, OH, OW, C) strided view of NHWC ``xpad`` per kernel offset, in (i, j) order."""
    (oh, ow), (sh, sw), (dh, dw) = out_hw, stride, dilation
    return [xpad[:, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]
            for i in range(kernel[0]) for j in range(kernel[1])]


def _pool_padded_shape(h, w, out_hw, kernel, stride, padding, dilation):
    """Padded extent that every window fits in (ceil_mode may need extra rows past the padding)."""
    (oh, ow), (kh, kw), (sh, sw), (dh, dw) = out_hw, kernel, stride, dilation
    (pt, pb), (pl, pr) = padding
    need_h = (oh - 1) * sh + dh * (kh - 1) + 1
    need_w = (ow - 1) * sw + dw * (kw - 1) + 1
    return max(h + pt + pb, need_h), max(w + pl + pr, need_w)


def _max_pool_part(views, y, arg, exact_nan):
    """Running max over the kernel offsets; ``arg`` gets the winning offset. The fast form keeps y by
    np.maximum (NaN-propagating) and moves arg on a strict '>' only; when a NaN reached y the caller
    reruns with ``exact_nan``, which lets every NaN take the window as PyTorch does.

    Branch-free on purpose: masked NumPy operations (np.where, copyto(where=)) run several times
    slower on the random masks pooling produces. Offsets are visited in increasing order and arg is
    the last offset that beat the running max, so arg = max_k(k * [offset k beat it])."""
    np.copyto(y, views[0])
    arg[...] = 0
    better = _workspace("pool_better", y.shape, np.bool_)
    step = _workspace("pool_step", y.shape, arg.dtype)
    nan = _workspace("pool_nan", y.shape, np.bool_) if exact_nan else None
    for k, v in enumerate(views[1:], start=1):
        np.greater(v, y, out=better)
        if exact_nan:
            np.not_equal(v, v, out=nan)
            np.logical_or(better, nan, out=better)
            np.copyto(y, v, where=better)
        else:
            np.maximum(y, v, out=y)
        np.multiply(better, arg.dtype.type(k), out=step)
        np.maximum(arg, step, out=arg)


def _pool_layout(x):
    """(images, perm): the 4-D (batch, H, W, channels) array the pooling kernels work on, and what
    maps results back (see _from_pool_layout). In general x's NHWC view (perm None); when H and W
    are innermost in memory (NCHW, or the channel-major planes of the few-channel convolution) each
    (H, W) plane is an image of one channel, (P, H, W, 1) in memory order: the offsets' views then
    run along image rows instead of hopping over the channels, and the output keeps x's layout."""
    flat, perm = _memory_order(x)
    if flat is not None and perm[2:] == [2, 3]:
        return flat.reshape(-1, x.shape[2], x.shape[3], 1), perm
    return _nhwc(x), None


def _from_pool_layout(images, perm, shape):
    """An (N, C, H', W') array from pooling-layout ``images`` (see _pool_layout); ``shape`` is x's."""
    if perm is None:
        return _nchw(images)
    lead = tuple(shape[d] for d in perm[:2])
    return _unpermute(images.reshape(lead + images.shape[1:3]), perm)


def _to_pool_layout(g, perm):
    """The gradient in the layout _pool_layout chose for the forward input (a copy where g differs)."""
    if perm is None:
        return _nhwc(g)
    moved = g.transpose(perm)
    return moved.reshape(-1, g.shape[2], g.shape[3], 1)


@register_kernel("numpy", kernels.MAX_POOL2D_FORWARD)
def max_pool2d_forward(x, kernel, stride, padding, dilation, out_hw):
    """Running max over kernel offsets in NHWC or on (H, W) planes (see _pool_layout), the images
    split over the workers; the winning offset (the first maximum; a NaN wins, as in PyTorch) is kept
    as uint8 for backward."""
    channels_last = x.strides[1] == x.itemsize and x.shape[1] > 1
    lib = native.library() if channels_last and x.dtype in _NATIVE_FLOATS and kernel[0] * kernel[1] < 256 else None
    if lib is not None:
        return _native_max_pool_forward(lib, x, kernel, stride, padding, dilation, out_hw)
    xh, perm = _pool_layout(x)
    n, h, w, c = xh.shape
    hp, wp = _pool_padded_shape(h, w, out_hw, kernel, stride, padding, dilation)
    (pt, _), (pl, _) = padding
    framed = _workspace("pool_xpad", (n, hp, wp, c), x.dtype) if (hp, wp) != (h, w) else None
    oh, ow = out_hw
    y = np.empty((n, oh, ow, c), dtype=x.dtype)
    arg = np.empty((n, oh, ow, c), dtype=np.uint8 if kernel[0] * kernel[1] < 256 else np.int32)

    def work(n0, n1):
        src = xh[n0:n1] if framed is None else _frame_into(framed[n0:n1], xh[n0:n1], pt, pl, value=-np.inf)
        views = _pool_views(src, kernel, stride, dilation, out_hw)
        _max_pool_part(views, y[n0:n1], arg[n0:n1], exact_nan=False)
        if not np.isfinite(np.add.reduce(y[n0:n1], axis=None)):
            if np.isnan(y[n0:n1]).any():
                _max_pool_part(views, y[n0:n1], arg[n0:n1], exact_nan=True)
            if framed is not None:  # a window of -inf: its first input element wins, never the padding
                np.copyto(arg[n0:n1], _first_inside(h, w, kernel, stride, padding, dilation, out_hw),
                          where=y[n0:n1] == -np.inf)

    _parallel(work, n, elements=x.size)
    saved = (arg, x.shape, kernel, stride, padding, dilation, out_hw, (hp, wp), perm)
    return _from_pool_layout(y, perm, x.shape), saved


def _first_inside(h, w, kernel, stride, padding, dilation, out_hw):
    """(OH, OW, 1) uint8: each window's first kernel offset that meets the input, not the padding
    (rows and columns are independent: the first inside row's first inside column)."""
    def first(size, out, k, s, pad, d):
        pos = np.arange(out)[:, None] * s - pad + np.arange(k)[None, :] * d
        return np.argmax((pos >= 0) & (pos < size), axis=1)

    rows = first(h, out_hw[0], kernel[0], stride[0], padding[0][0], dilation[0])
    cols = first(w, out_hw[1], kernel[1], stride[1], padding[1][0], dilation[1])
    return (rows[:, None] * kernel[1] + cols[None, :]).astype(np.uint8)[:, :, None]


@register_kernel("numpy", kernels.MAX_POOL2D_BACKWARD)
def max_pool2d_backward(g, saved):
    """Each offset's view of dx takes g where that offset won: one masked multiply per offset when the
    windows tile the input exactly, a masked multiply-add otherwise (windows may overlap). dx has the
    forward input's layout."""
    if isinstance(saved[0], str):  # ("native", ...) from _native_max_pool_forward
        return _native_max_pool_backward(g, saved)
    arg, shape, kernel, stride, padding, dilation, out_hw, (hp, wp), perm = saved
    h, w = shape[2:]
    n, c = arg.shape[0], arg.shape[3]
    gh = _to_pool_layout(g, perm)
    tiles = (dilation == (1, 1) and tuple(stride) == tuple(kernel)
             and (hp, wp) == (out_hw[0] * kernel[0], out_hw[1] * kernel[1]))
    dx = (np.empty if tiles else np.zeros)((n, hp, wp, c), dtype=g.dtype)

    def work(n0, n1):
        part_arg, part_g = arg[n0:n1], gh[n0:n1]
        hit = _workspace("pool_hit", part_arg.shape, np.bool_)
        share = None if tiles else _workspace("pool_share", part_arg.shape, g.dtype)
        for k, v in enumerate(_pool_views(dx[n0:n1], kernel, stride, dilation, out_hw)):
            np.equal(part_arg, k, out=hit)
            if tiles:
                np.multiply(part_g, hit, out=v)
            else:  # branch-free masked add (see _max_pool_part)
                np.multiply(part_g, hit, out=share)
                np.add(v, share, out=v)

    _parallel(work, n, elements=dx.size)
    (pt, _), (pl, _) = padding
    return _from_pool_layout(dx[:, pt:pt + h, pl:pl + w], perm, shape)


_NATIVE_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _native_kernel(lib, name, dtype):
    return getattr(lib, f"{name}_{'f32' if dtype == np.float32 else 'f64'}")


def _like_memory(x, shape, dtype, fill=None):
    """A new array of logical ``shape`` with x's memory order of axes (NCHW, NHWC, channel-major...)."""
    _, perm = _memory_order(x)
    perm = perm or list(range(x.ndim))
    a = (np.empty if fill is None else np.zeros)([shape[d] for d in perm], dtype=dtype)
    return _unpermute(a, perm)


def _nhwc_strides(a):
    """Element strides of an (N, C, H, W) array in (N, H, W, C) order, as the C kernels take them."""
    s = [st // a.itemsize for st in a.strides]
    return np.array([s[0], s[2], s[3], s[1]], dtype=np.int64)


def _native_max_pool_forward(lib, x, kernel, stride, padding, dilation, out_hw):
    """xp_max_pool_fwd on channels-last x: y and the winning offsets (uint8) channels-last too, the
    images over the workers."""
    n, c, h, w = x.shape
    oh, ow = out_hw
    y = _nchw(np.empty((n, oh, ow, c), dtype=x.dtype))
    arg = _nchw(np.empty((n, oh, ow, c), dtype=np.uint8))
    xs, ys = _nhwc_strides(x), _nhwc_strides(y)
    geometry = (kernel[0], kernel[1], stride[0], stride[1], padding[0][0], padding[1][0], dilation[0], dilation[1])
    fwd = _native_kernel(lib, "xp_max_pool_fwd", x.dtype)

    def work(n0, n1):
        fwd(_ptr(x) + n0 * x.strides[0], _ptr(xs), n1 - n0, h, w, c, _ptr(y) + n0 * y.strides[0],
            _ptr(arg) + n0 * arg.strides[0], _ptr(ys), oh, ow, *geometry)

    _parallel(work, n, elements=x.size)
    return y, ("native", lib, arg, x, geometry)


def _native_max_pool_backward(g, saved):
    """xp_max_pool_bwd: each window's g added to its winning input element; dx in x's memory order."""
    _, lib, arg, x, geometry = saved
    n, c, oh, ow = g.shape
    kh, kw, sh, sw, pt, pl, dh, dw = geometry
    # windows that tile x exactly: the kernel writes every element of dx, no zeroing pass first
    tiles = (kh, kw, pt, pl, dh, dw) == (sh, sw, 0, 0, 1, 1) and x.shape[2:] == (oh * kh, ow * kw)
    tiles = tiles and x.strides[1] == x.itemsize
    dx = _like_memory(x, x.shape, g.dtype, fill=None if tiles else 0)
    gs, args, dxs = _nhwc_strides(g), _nhwc_strides(arg), _nhwc_strides(dx)
    bwd = _native_kernel(lib, "xp_max_pool_bwd", g.dtype)

    def work(n0, n1):
        bwd(_ptr(g) + n0 * g.strides[0], _ptr(gs), _ptr(arg) + n0 * arg.strides[0], _ptr(args), n1 - n0, oh, ow,
            c, _ptr(dx) + n0 * dx.strides[0], _ptr(dxs), *geometry, int(tiles))

    _parallel(work, n, elements=dx.size)
    return dx


def _avg_divisor(h, w, kernel, stride, padding, dilation, out_hw, count_include_pad, dtype):
    """Per-window divisor (OH, OW, 1): kH*kW, less what falls outside input+padding (ceil_mode) or,
    without count_include_pad, outside the input."""
    (pt, pb), (pl, pr) = padding
    hp, wp = _pool_padded_shape(h, w, out_hw, kernel, stride, padding, dilation)
    mask = np.zeros((1, hp, wp, 1), dtype=dtype)
    if count_include_pad:
        mask[:, :h + pt + pb, :w + pl + pr] = 1
    else:
        mask[:, pt:pt + h, pl:pl + w] = 1
    total = np.zeros((1, out_hw[0], out_hw[1], 1), dtype=dtype)
    for v in _pool_views(mask, kernel, stride, dilation, out_hw):
        total += v
    return np.maximum(total, 1)[0]


@register_kernel("numpy", kernels.AVG_POOL2D_FORWARD)
def avg_pool2d_forward(x, kernel, stride, padding, out_hw, count_include_pad, divisor_override=None):
    n, c, h, w = x.shape
    dilation = (1, 1)
    hp, wp = _pool_padded_shape(h, w, out_hw, kernel, stride, padding, dilation)
    xh = _nhwc(x)
    (pt, _), (pl, _) = padding
    framed = _workspace("pool_xpad", (n, hp, wp, c), x.dtype) if (hp, wp) != (h, w) else None
    if divisor_override:
        scale = np.asarray(1.0 / divisor_override, dtype=x.dtype)
    else:
        scale = np.reciprocal(_avg_divisor(h, w, kernel, stride, padding, dilation, out_hw, count_include_pad,
                                           x.dtype))
    y = np.empty((n, out_hw[0], out_hw[1], c), dtype=x.dtype)

    def work(n0, n1):
        src = xh[n0:n1] if framed is None else _frame_into(framed[n0:n1], xh[n0:n1], pt, pl)
        views = _pool_views(src, kernel, stride, dilation, out_hw)
        part = y[n0:n1]
        np.copyto(part, views[0])
        for v in views[1:]:
            np.add(part, v, out=part)
        np.multiply(part, scale, out=part)

    _parallel(work, n, elements=x.size)
    saved = (scale, x.shape, kernel, stride, padding, out_hw, (hp, wp))
    return _nchw(y), saved


@register_kernel("numpy", kernels.AVG_POOL2D_BACKWARD)
def avg_pool2d_backward(g, saved):
    scale, (n, c, h, w), kernel, stride, padding, out_hw, (hp, wp) = saved
    gh = _nhwc(g)
    dx = np.zeros((n, hp, wp, c), dtype=g.dtype)

    def work(n0, n1):
        gs = gh[n0:n1] * scale
        for v in _pool_views(dx[n0:n1], kernel, stride, (1, 1), out_hw):
            np.add(v, gs, out=v)

    _parallel(work, n, elements=dx.size)
    (pt, _), (pl, _) = padding
    return _nchw(dx[:, pt:pt + h, pl:pl + w])


# -- batch norm --------------------------------------------------------------------------------
def _channels_last(x):
    """(M, C) view of x with the channel axis (1) last: free for (N, C) and NHWC-memory input."""
    if x.ndim == 2:
        return x
    xh = np.moveaxis(x, 1, -1)
    return xh.reshape(-1, x.shape[1])  # copies only when x is not channels-last in memory


def _from_channels_last(rows, shape):
    if len(shape) == 2:
        return rows
    moved = rows.reshape((shape[0],) + tuple(shape[2:]) + (shape[1],))
    return np.moveaxis(moved, -1, 1)


# rows per block inside a worker: the few passes over a block hit the cache instead of memory, and the
# blocks are large enough that the per-call Python overhead stays small (1 MiB measured best here)
BN_BLOCK_BYTES = 1 << 20


def _row_blocks(a, b, width, itemsize):
    step = max(1, BN_BLOCK_BYTES // max(1, width * itemsize))
    return [(i, min(b, i + step)) for i in range(a, b, step)]


def _sum_partials(parts):
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    return total


def _block_moments(rows, a, b):
    """(count, mean, M2) of rows [a, b): one read of the rows from memory and no cancellation.

    Each cache-sized block is shifted by its own first row (a sample of the data, so the shifted
    values are of the order of the spread, not of the mean) before its sums are taken; the blocks
    merge with Chan's update."""
    c = rows.shape[1]
    dt = rows.dtype.type
    count, mean, m2 = 0, np.zeros(c, dtype=rows.dtype), np.zeros(c, dtype=rows.dtype)
    for i, j in _row_blocks(a, b, c, rows.itemsize):
        block = rows[i:j]
        k = j - i
        shift = block[0].copy()
        shifted = _workspace("bn_centered", block.shape, rows.dtype)
        np.subtract(block, shift, out=shifted)
        total = _column_sums(shifted)
        squares = np.einsum("ij,ij->j", shifted, shifted)
        mean_shifted = total / dt(k)
        bm2 = np.maximum(squares - total * mean_shifted, dt(0))
        mean, m2, count = _merge_moments(count, mean, m2, k, shift + mean_shifted, bm2)
    return count, mean, m2


def _native_bn_lib(rows):
    """The compiled library for batch norm on ``rows``: a C-contiguous float (M, C) matrix."""
    if rows.dtype not in _NATIVE_FLOATS or not rows.flags.c_contiguous or rows.shape[0] == 0:
        return None
    return native.library()


def _native_bn_moments(rows, a, b):
    """(count, mean, M2) of rows [a, b) in float64 through xp_bn_moments: sums shifted by row a."""
    c = rows.shape[1]
    k = rows[a].copy()
    total, squares = np.zeros(c), np.zeros(c)
    _native_kernel(native.library(), "xp_bn_moments", rows.dtype)(_ptr(rows[a]), b - a, c, _ptr(k), _ptr(total),
                                                                   _ptr(squares))
    count = b - a
    return count, k + total / count, np.maximum(squares - total * total / count, 0.0)


def _merge_moments(n1, mean1, m2_1, n2, mean2, m2_2):
    if n1 == 0:
        return mean2, m2_2, n2
    n = n1 + n2
    delta = mean2 - mean1
    dt = mean1.dtype.type
    mean = mean1 + delta * dt(n2 / n)
    m2 = m2_1 + m2_2 + delta * delta * dt(n1 * n2 / n)
    return mean, m2, n


@register_kernel("numpy", kernels.BATCH_NORM_FORWARD)
def batch_norm_forward(x, gamma, beta, mean, var, training, eps):
    """Returns (y, saved, batch_mean, batch_var); batch statistics are biased (divide by m) and are
    None in eval mode, where ``mean``/``var`` (running statistics) are used.

    On the (M, C) channels-last matrix, split over the workers and, inside each, in cache-sized row
    blocks: one pass for the statistics (per-block moments merged stably), one for
    y = x * (gamma/sigma) + (beta - mean * gamma/sigma). Backward recomputes x - mean block by block,
    so nothing but x itself (alive anyway) is kept."""
    rows = _channels_last(x)
    m, c = rows.shape
    dt = x.dtype.type
    lib = _native_bn_lib(rows)
    if training:
        moments = _native_bn_moments if lib is not None else _block_moments
        count, mean, m2 = 0, None, None
        for n2, mean2, m2_2 in _parallel(lambda a, b: moments(rows, a, b), m, blas=True, elements=rows.size):
            mean, m2, count = (mean2, m2_2, n2) if count == 0 else _merge_moments(count, mean, m2, n2, mean2, m2_2)
        mean, var = mean.astype(x.dtype), (m2 / m).astype(x.dtype)
    invstd = 1 / np.sqrt(var + dt(eps))
    scale = invstd if gamma is None else invstd * gamma
    shift = -mean * scale if beta is None else beta - mean * scale
    y = np.empty_like(rows)

    if lib is not None:  # the compiled loops read C arrays of the rows' type
        scale, shift = (np.ascontiguousarray(v, dtype=rows.dtype) for v in (scale, shift))

    def finish(a, b):
        if lib is not None:
            _native_kernel(lib, "xp_bn_affine", rows.dtype)(_ptr(rows[a]), b - a, c, _ptr(scale), _ptr(shift),
                                                             _ptr(y[a]))
            return
        for i, j in _row_blocks(a, b, c, rows.itemsize):
            np.multiply(rows[i:j], scale, out=y[i:j])
            np.add(y[i:j], shift, out=y[i:j])

    _parallel(finish, m, elements=rows.size)
    saved = (rows, mean, invstd, gamma, training, x.shape)
    return _from_channels_last(y, x.shape), saved, (mean if training else None), (var if training else None)


@register_kernel("numpy", kernels.BATCH_NORM_BACKWARD)
def batch_norm_backward(g, saved, needs):
    """With x_c = x - mean and x_hat = x_c / sigma: sum(g), sum(g x_c) in one blocked pass, then
    dx = a g + b x_c + c per channel (a = gamma/sigma, b = -a sum(g x_hat) / (m sigma), c = -a sum(g)/m
    in training; dx = a g in eval) in a second, x_c rebuilt block by block in cache."""
    rows, mean, invstd, gamma, training, shape = saved
    need_x, need_gamma, need_beta = needs
    grows = _channels_last(g)
    m, c = grows.shape
    dt = g.dtype.type

    same = grows.dtype == rows.dtype and grows.flags.c_contiguous
    lib = _native_bn_lib(rows) if same else None
    if lib is not None:
        mean = np.ascontiguousarray(mean, dtype=rows.dtype)

    def sums(a, b):
        if lib is not None:
            sg, sgx = np.zeros(c), np.zeros(c)
            _native_kernel(lib, "xp_bn_grad_sums", grows.dtype)(_ptr(grows[a]), _ptr(rows[a]), b - a, c, _ptr(mean),
                                                                _ptr(sg), _ptr(sgx))
            return sg, sgx
        sg = np.zeros(c, dtype=grows.dtype)
        sgx = np.zeros(c, dtype=grows.dtype)
        for i, j in _row_blocks(a, b, c, grows.itemsize):
            centered = _workspace("bn_centered", (j - i, c), rows.dtype)
            np.subtract(rows[i:j], mean, out=centered)
            sg += _column_sums(grows[i:j])
            sgx += np.einsum("ij,ij->j", grows[i:j], centered)
        return sg, sgx

    parts = _parallel(sums, m, blas=True, elements=grows.size)
    sum_g = _sum_partials([p[0] for p in parts]).astype(grows.dtype)
    sum_gx = _sum_partials([p[1] for p in parts]).astype(grows.dtype) * invstd  # sum(g * x_hat)
    dx = None
    if need_x:
        scale = invstd if gamma is None else gamma * invstd
        out = np.empty_like(grows)
        if training:
            coef_x = -scale * sum_gx * invstd / dt(m)
            shift = -scale * sum_g / dt(m)

            if lib is not None:
                scale, coef_x, shift = (np.ascontiguousarray(v, dtype=rows.dtype) for v in (scale, coef_x, shift))

            def finish(a, b):
                if lib is not None:
                    _native_kernel(lib, "xp_bn_grad", grows.dtype)(_ptr(grows[a]), _ptr(rows[a]), b - a, c, _ptr(mean),
                                                                   _ptr(scale), _ptr(coef_x), _ptr(shift), _ptr(out[a]))
                    return
                for i, j in _row_blocks(a, b, c, grows.itemsize):
                    centered = _workspace("bn_centered", (j - i, c), rows.dtype)
                    np.subtract(rows[i:j], mean, out=centered)
                    np.multiply(centered, coef_x, out=centered)
                    np.add(centered, shift, out=centered)
                    np.multiply(grows[i:j], scale, out=out[i:j])
                    np.add(out[i:j], centered, out=out[i:j])
        else:
            def finish(a, b):
                np.multiply(grows[a:b], scale, out=out[a:b])

        _parallel(finish, m, elements=grows.size)
        dx = _from_channels_last(out, shape)
    return dx, (sum_gx if need_gamma else None), (sum_g if need_beta else None)


# -- local response norm ------------------------------------------------------------------------
def _lrn_power(d, beta, out):
    """out = d^(-beta), by square roots for AlexNet's 0.75 (and 0.5, 1): pow is several times slower."""
    if beta == 0.75:
        np.sqrt(d, out=out)
        root = _workspace("lrn_root", d.shape, d.dtype)
        np.sqrt(out, out=root)
        np.multiply(out, root, out=out)
        np.reciprocal(out, out=out)
    elif beta == 0.5:
        np.sqrt(d, out=out)
        np.reciprocal(out, out=out)
    elif beta == 1.0:
        np.reciprocal(d, out=out)
    else:
        np.power(d, d.dtype.type(-beta), out=out)


def _window_sum_rows(src, before, after, out, name):
    """out[:, c] = sum_{c' = c - before}^{c + after} src[:, c'] over the channel (last) axis of a row
    block, zero outside the channels: a zero-framed copy, then one shifted add per window position."""
    rows, c = src.shape
    framed = _workspace(name, (rows, c + before + after), src.dtype)
    framed[:, :before] = 0
    framed[:, before + c:] = 0
    framed[:, before:before + c] = src
    np.copyto(out, framed[:, 0:c])
    for t in range(1, before + after + 1):
        np.add(out, framed[:, t:t + c], out=out)


@register_kernel("numpy", kernels.LOCAL_RESPONSE_NORM_FORWARD)
def local_response_norm_forward(x, size, alpha, beta, k):
    """LRN on the channels-last (M, C) matrix in row blocks over the workers: the channel window is a
    contiguous run of each row. Saves x, D^(-beta) and D^(-beta-1) (see LocalResponseNormFunction)."""
    rows = _channels_last(x)
    m, c = rows.shape
    dt = x.dtype.type
    lo, hi = size // 2, (size - 1) // 2
    y, scale, scale_over_d = np.empty_like(rows), np.empty_like(rows), np.empty_like(rows)

    def work(a, b):
        for i, j in _row_blocks(a, b, c + size, rows.itemsize):
            d = _workspace("lrn_d", (j - i, c), rows.dtype)
            sq = _workspace("lrn_sq", (j - i, c), rows.dtype)
            np.multiply(rows[i:j], rows[i:j], out=sq)
            _window_sum_rows(sq, lo, hi, d, "lrn_framed")
            np.multiply(d, dt(alpha / size), out=d)
            np.add(d, dt(k), out=d)
            _lrn_power(d, beta, scale[i:j])
            np.divide(scale[i:j], d, out=scale_over_d[i:j])
            np.multiply(rows[i:j], scale[i:j], out=y[i:j])

    _parallel(work, m, elements=rows.size * size)
    saved = (rows, scale, scale_over_d, (size, alpha, beta, lo, hi), x.shape)
    return _from_channels_last(y, x.shape), saved


@register_kernel("numpy", kernels.LOCAL_RESPONSE_NORM_BACKWARD)
def local_response_norm_backward(g, saved):
    rows, scale, scale_over_d, (size, alpha, beta, lo, hi), shape = saved
    grows = _channels_last(g)
    m, c = grows.shape
    coef = g.dtype.type(2.0 * alpha * beta / size)
    dx = np.empty_like(grows)

    def work(a, b):
        for i, j in _row_blocks(a, b, c + size, grows.itemsize):
            u = _workspace("lrn_u", (j - i, c), grows.dtype)
            back = _workspace("lrn_back", (j - i, c), grows.dtype)
            np.multiply(grows[i:j], rows[i:j], out=u)
            np.multiply(u, scale_over_d[i:j], out=u)
            _window_sum_rows(u, hi, lo, back, "lrn_framed")
            np.multiply(back, rows[i:j], out=back)
            np.multiply(back, coef, out=back)
            np.multiply(grows[i:j], scale[i:j], out=dx[i:j])
            np.subtract(dx[i:j], back, out=dx[i:j])

    _parallel(work, m, elements=grows.size * size)
    return _from_channels_last(dx, shape)


@register_kernel("numpy", kernels.RELU_BACKWARD)
def relu_backward(g, mask):
    """G * [x > 0] as one multiply by the boolean mask: about ten times faster than ``where`` on the
    random masks ReLU makes. 0 * inf would leave NaN where the generic ``where`` leaves 0, so a
    non-finite result (seen through its sum) falls back to ``where``. From the compiled forward,
    ``mask`` is the output y itself (x > 0 exactly where y > 0): xp_relu_bwd selects G where y > 0."""
    gflat, perm = _memory_order(g)
    same_layout = gflat is not None and mask.strides == tuple(s * mask.itemsize // g.itemsize for s in g.strides)
    if mask.dtype != np.bool_:  # the output of the compiled forward
        lib = native.library() if same_layout and g.dtype == mask.dtype else None
        if lib is not None:
            out = np.empty(gflat.shape, dtype=g.dtype)
            _native_elementwise(_native_kernel(lib, "xp_relu_bwd", g.dtype), gflat, mask.transpose(perm), out)
            return _unpermute(out, perm)
        mask = mask > 0
        same_layout = False
    if same_layout and g.size >= ELEMENTWISE_PARALLEL_MIN:
        # same layout: block by block over the workers, each block's sum taken while it is in cache
        out = np.empty(gflat.shape, dtype=g.dtype)
        src, msrc, dst = gflat.reshape(-1), mask.transpose(perm).reshape(-1), out.reshape(-1)
        finite = [True]

        def block(a, b):
            np.multiply(src[a:b], msrc[a:b], out=dst[a:b])
            if not np.isfinite(dst[a:b].sum()):
                finite[0] = False

        _blocks(block, src.size, quiet=True)
        if finite[0]:
            return _unpermute(out, perm)
    else:
        with np.errstate(invalid="ignore", over="ignore"):
            out = np.multiply(g, mask)
            if np.isfinite(out.sum()):
                return out
    return np.where(mask, g, np.zeros((), dtype=g.dtype))


# elementwise passes this large or larger are split over the workers; below it one thread wins: the
# ufuncs are bound by memory, and waking the workers costs more than the second core brings (on a
# 2-core machine, ReLU on 262k floats: 150 us on one thread against 270 us split in two)
ELEMENTWISE_PARALLEL_MIN = 1 << 22

# elementwise work is split into blocks this many elements long, small enough that a block read by
# one ufunc is still in cache when the next reads it
ELEMENTWISE_BLOCK = 1 << 17


def _native_elementwise(fn, *arrays):
    """fn(pointers..., count) over C-contiguous arrays of one size, split over the workers when large."""
    size = arrays[0].size

    def part(a, b):
        fn(*[_ptr(x) + a * x.itemsize for x in arrays], b - a)

    if size >= ELEMENTWISE_PARALLEL_MIN:
        _parallel(part, size)
    else:
        part(0, size)


def _memory_order(a):
    """``a`` with its axes permuted into memory order (C-contiguous then) and the permutation, or
    (None, None) when its elements do not fill one dense block (a strided slice)."""
    perm = sorted(range(a.ndim), key=lambda d: -abs(a.strides[d]))
    flat = a.transpose(perm)
    if not flat.flags.c_contiguous:
        return None, None
    return flat, perm


def _unpermute(a, perm):
    inverse = [0] * len(perm)
    for i, d in enumerate(perm):
        inverse[d] = i
    return a.transpose(inverse)


def _blocks(fn, size, quiet=False):
    """fn(a, b) over ELEMENTWISE_BLOCK-long blocks of range(size), the blocks split over the workers;
    ``quiet``: floating-point warnings off in every worker (NumPy's error state is per thread)."""
    nblocks = -(-size // ELEMENTWISE_BLOCK)

    def work(i0, i1):
        with (np.errstate(all="ignore") if quiet else contextlib.nullcontext()):
            for i in range(i0, i1):
                fn(i * ELEMENTWISE_BLOCK, min(size, (i + 1) * ELEMENTWISE_BLOCK))

    _parallel(work, nblocks, elements=size)


@register_kernel("numpy", kernels.RELU_FORWARD)
def relu_forward(x):
    """(maximum(x, 0), x > 0) in one pass over ``x``, block by block while it is in cache, split over
    the workers; the outputs keep ``x``'s memory layout (an NCHW view of NHWC stays one). Compiled:
    (y, y), the output standing in for the mask (see relu_backward), one read and one write."""
    flat, perm = _memory_order(x)
    lib = native.library() if x.dtype in _NATIVE_FLOATS and flat is not None else None
    if lib is not None:
        y = np.empty(flat.shape, dtype=x.dtype)
        _native_elementwise(_native_kernel(lib, "xp_relu_fwd", x.dtype), flat, y)
        y = _unpermute(y, perm)
        return y, y
    if flat is None or x.size < ELEMENTWISE_PARALLEL_MIN:
        return np.maximum(x, np.zeros((), dtype=x.dtype)), x > 0
    src = flat.reshape(-1)
    y = np.empty(flat.shape, dtype=x.dtype)
    mask = np.empty(flat.shape, dtype=bool)
    yf, mf = y.reshape(-1), mask.reshape(-1)
    zero = np.zeros((), dtype=x.dtype)

    def block(a, b):
        np.maximum(src[a:b], zero, out=yf[a:b])
        np.greater(src[a:b], zero, out=mf[a:b])

    _blocks(block, src.size)
    return _unpermute(y, perm), _unpermute(mask, perm)


# -- matrix products outside the batch-parallel kernels ---------------------------------------------
# products up to this many multiply-adds run on the kernels' workers; larger ones on OpenBLAS's threads,
# which share one packed copy of B (splitting rows over our workers packs it twice: ~10% slower on a
# 256x1024x1024 product, where the spinning afterwards costs relatively less)
MATMUL_WORKERS_MAX = 1 << 24

@register_kernel("numpy", kernels.MATMUL)
def matmul(a, b):
    """a @ b (a: (..., K), b: (K, N)); a small product (see MATMUL_WORKERS_MAX) has its rows split
    over the workers with single-threaded GEMMs.

    Why not OpenBLAS's own threads: after a threaded call its idle threads spin for about 0.1 s
    (its THREAD_TIMEOUT) before sleeping, taking a core from the batch-parallel kernels that run right
    after (a 256-channel convolution backward measured 60 ms alone, 95 ms just after a threaded
    64x4096x10 product). A layer's products running on the same workers leave nothing spinning."""
    if not _blas.available or b.ndim != 2 or a.ndim < 1 or a.dtype != b.dtype:
        return np.matmul(a, b)
    if a.ndim == 1:
        with _blas.single():
            return np.matmul(a, b)
    m, k, n = math.prod(a.shape[:-1]), a.shape[-1], b.shape[1]
    if m * k * n > MATMUL_WORKERS_MAX:
        return np.matmul(a, b)
    rows = a.reshape(m, k)
    out = np.empty((m, n), dtype=np.result_type(a, b))

    def work(r0, r1):
        np.matmul(rows[r0:r1], b, out=out[r0:r1])

    with _blas.single():  # also when it stays on this thread: a threaded GEMM would leave spinners
        _parallel(work, m, blas=True, elements=m * n * max(1, k // 64))
    return out.reshape(a.shape[:-1] + (n,))


# -- optimizer steps ---------------------------------------------------------------------------------
# parameters longer than this are updated block by block, so the scratch stays this size (smaller
# blocks, meant to stay in cache, measured slower on a 2-core EPYC: 16k elements 2.0 ms for the MLP's
# 1.9M parameters against 1.5 ms for 256k; the update is bound by per-call costs there, not memory)
SGD_BLOCK = 1 << 18


def _sgd_direction(g, w, weight_decay, maximize, out):
    """d = ±g + λw into ``out`` where a new array is needed; (d, owned) as in the generic rule."""
    if weight_decay != 0:
        np.multiply(w, weight_decay, out=out)
        (np.subtract if maximize else np.add)(out, g, out=out)
        return out, True
    if maximize:
        return np.negative(g, out=out), True
    return g, False


def _sgd_apply(w, g, buf, group, t1, t2):
    """The step -η·direction of one SGD update on arrays (or blocks) w, g and buf (None without
    momentum), the generic rule's operations in its order, written to t1 (t2: more scratch)."""
    lr, mu, damp = group["lr"], group["momentum"], group["dampening"]
    d, _ = _sgd_direction(g, w, group["weight_decay"], group["maximize"], t1)
    if buf is not None:
        np.multiply(buf, mu, out=buf)
        np.add(buf, d if damp == 0 else np.multiply(d, 1 - damp, out=t2), out=buf)
        if group["nesterov"]:
            d = np.add(d, np.multiply(buf, mu, out=t2), out=t1)
        else:
            d = buf
    return np.multiply(d, -lr, out=t1)


def _native_sgd(lib, wf, gf, bf, group):
    """xp_sgd over flat w, g and momentum buffer (or None): _sgd_apply's operations fused into one
    pass, the same roundings (compiled without contraction), split over the workers when long."""
    fn = _native_kernel(lib, "xp_sgd", wf.dtype)
    damp = group["dampening"]
    config = (-group["lr"], group["weight_decay"] != 0, group["weight_decay"], bool(group["maximize"]),
              group["momentum"], 1 - damp, damp != 0, bool(group["nesterov"]))
    item = wf.itemsize

    def part(a, b):
        fn(_ptr(wf) + a * item, _ptr(gf) + a * item, None if bf is None else _ptr(bf) + a * item, b - a, *config)

    if wf.size >= SGD_PARALLEL_MIN:
        _parallel(part, wf.size)
    else:
        part(0, wf.size)


# a compiled SGD update this long is split over the workers. It is bound by memory: the MLP's 1.9M
# parameters take 0.74 ms on one thread and 0.73 ms split in two (2-core EPYC), so only very long
# parameters are split
SGD_PARALLEL_MIN = 1 << 22


@register_kernel("numpy", kernels.SGD_STEP)
def sgd_step(w, g, state, group):
    """SGD's rule (``xpnet.optim.SGD.update``: d = ±g + λw; b ← μb + (1-τ)d; w ← w - η(b or d + μb)),
    the same NumPy operations in the same order, so the values are the generic ones bit for bit, but
    the parameter array is updated in place (as PyTorch's ``step`` does) through reused scratch
    buffers (a long parameter block by block, SGD_BLOCK elements): no fresh parameter-sized arrays
    each step (generic 0.6-0.85 ms against 0.49 ms on a 1024x1024 layer). The first momentum step
    (b = d) runs as b = μ·0 + d, without dampening. With the compiled kernels, float32 and float64
    contiguous parameters take xp_sgd: the same operations in one pass (see _native_sgd)."""
    rule, buf = group, None
    if group["momentum"] != 0:
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = np.zeros_like(w, dtype=np.result_type(w, g))
            rule = dict(group, dampening=0.0)
    blocked = (w.flags.writeable and w.flags.c_contiguous and g.flags.c_contiguous and g.dtype == w.dtype
               and (buf is None or (buf.flags.c_contiguous and buf.dtype == w.dtype)))
    if not blocked:
        step = _sgd_apply(w, g, buf, rule, np.empty(w.shape, np.result_type(w, g)),
                          np.empty(w.shape, np.result_type(w, g)))
        if w.flags.writeable and w.dtype == step.dtype:
            np.add(step, w, out=w)
            return w
        return step + w
    wf, gf = w.reshape(-1), g.reshape(-1)
    bf = None if buf is None else buf.reshape(-1)
    n = wf.size
    lib = native.library() if w.dtype in _NATIVE_FLOATS else None
    if lib is not None:
        _native_sgd(lib, wf, gf, bf, rule)
        return w
    size = min(n, SGD_BLOCK)
    t1, t2 = _workspace("sgd_t1", (size,), w.dtype), _workspace("sgd_t2", (size,), w.dtype)
    for a in range(0, n, SGD_BLOCK):
        b = min(n, a + SGD_BLOCK)
        step = _sgd_apply(wf[a:b], gf[a:b], None if bf is None else bf[a:b], rule, t1[:b - a], t2[:b - a])
        np.add(step, wf[a:b], out=wf[a:b])
    return w
