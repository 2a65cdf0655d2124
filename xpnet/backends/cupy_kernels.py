"""CuPy fast paths for convolution and pooling (registered as ``("cupy", name)``).

Same contracts as the generic Array-API code in ``xpnet/nn/functional`` and the NumPy kernels, tested
equal to the generic code on a GPU (``pytest -m gpu``). CuPy is imported only when a kernel runs, so
this module loads everywhere.

* Convolution: one CUDA kernel writes the column matrix of a batch chunk as (C*kH*kW, n*OH*OW), so a
  single cuBLAS GEMM per group covers the whole chunk; backward reuses it for dW = G X_col^T and
  folds dX_col = W^T G back with a gather kernel (each input pixel sums the taps that read it: no
  atomics, deterministic).
* Pooling: one thread per output window (max keeps the argmax as an int32 offset in the H*W plane, the
  first maximum, NaN wins, as PyTorch); backward scatters with atomicAdd.
* float32 and float64 run natively; other float dtypes compute in float32 and cast back.
"""

from __future__ import annotations

import functools
import threading

from .base import register_kernel


def _on_array_device(fn):
    """Run the kernel with its first argument's GPU as the current device: allocations and launches
    then land where the data is, whichever device the caller had current."""

    @functools.wraps(fn)
    def wrapper(array, *args):
        with array.device:
            return fn(array, *args)

    return wrapper

_SOURCE = r"""
template <typename T>
__global__ void im2col_chunk(long long total, const T* __restrict__ x, T* __restrict__ cols,
                             int n0, int nb, int C, int H, int W, int KH, int KW, int OH, int OW,
                             int SH, int SW, int PT, int PL, int DH, int DW) {
    // cols layout (C, KH, KW, nb, OH, OW): row (c, i, j), column (n, oh, ow)
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        long long t = idx;
        const int ow = (int)(t % OW); t /= OW;
        const int oh = (int)(t % OH); t /= OH;
        const int n = (int)(t % nb); t /= nb;
        const int j = (int)(t % KW); t /= KW;
        const int i = (int)(t % KH); t /= KH;
        const int c = (int)t;
        const int h = oh * SH - PT + i * DH;
        const int w = ow * SW - PL + j * DW;
        T v = (T)0;
        if (h >= 0 && h < H && w >= 0 && w < W) {
            v = x[(((long long)(n0 + n) * C + c) * H + h) * W + w];
        }
        cols[idx] = v;
    }
}

template <typename T>
__global__ void col2im_chunk(long long total, const T* __restrict__ dcols, T* __restrict__ dx,
                             int n0, int nb, int C, int H, int W, int KH, int KW, int OH, int OW,
                             int SH, int SW, int PT, int PL, int DH, int DW) {
    // dx[n0 + n, c, h, w] = sum of the column entries whose tap (i, j) reads pixel (h, w)
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        long long t = idx;
        const int w = (int)(t % W); t /= W;
        const int h = (int)(t % H); t /= H;
        const int c = (int)(t % C); t /= C;
        const int n = (int)t;
        T acc = (T)0;
        for (int i = 0; i < KH; ++i) {
            const int ph = h + PT - i * DH;
            if (ph < 0 || ph % SH != 0) continue;
            const int oh = ph / SH;
            if (oh >= OH) continue;
            for (int j = 0; j < KW; ++j) {
                const int pw = w + PL - j * DW;
                if (pw < 0 || pw % SW != 0) continue;
                const int ow = pw / SW;
                if (ow >= OW) continue;
                acc += dcols[((((long long)c * KH + i) * KW + j) * nb + n) * OH * OW + (long long)oh * OW + ow];
            }
        }
        dx[(((long long)(n0 + n) * C + c) * H + h) * W + w] = acc;
    }
}

template <typename T>
__global__ void max_pool_forward(long long total, const T* __restrict__ x, T* __restrict__ y,
                                 int* __restrict__ arg, int H, int W, int KH, int KW, int OH, int OW,
                                 int SH, int SW, int PT, int PL, int DH, int DW) {
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const int ow = (int)(idx % OW);
        const int oh = (int)((idx / OW) % OH);
        const long long plane = idx / ((long long)OW * OH);
        const T* xp = x + plane * H * W;
        T best = (T)0;
        int best_at = -1;
        for (int i = 0; i < KH; ++i) {
            const int h = oh * SH - PT + i * DH;
            if (h < 0 || h >= H) continue;
            for (int j = 0; j < KW; ++j) {
                const int w = ow * SW - PL + j * DW;
                if (w < 0 || w >= W) continue;
                const T v = xp[h * W + w];
                // the first maximum wins; a NaN takes the window (PyTorch's rule)
                if (best_at < 0 || v > best || v != v) {
                    best = v;
                    best_at = h * W + w;
                }
            }
        }
        y[idx] = best;
        arg[idx] = best_at;
    }
}

template <typename T>
__global__ void max_pool_backward(long long total, const T* __restrict__ g, const int* __restrict__ arg,
                                  T* __restrict__ dx, int HW, int OHW) {
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const int at = arg[idx];
        if (at >= 0) atomicAdd(dx + (idx / OHW) * HW + at, g[idx]);
    }
}

// The window of output (oh, ow) clipped to the input, and its divisor: divisor_override, else the
// padded window size (count_include_pad) or the number of input cells inside it; never below 1.
__device__ __forceinline__ int avg_window(int oh, int ow, int H, int W, int KH, int KW, int SH, int SW,
                                          int PT, int PL, int PB, int PR, int count_include_pad, int divisor,
                                          int& h0, int& w0, int& h1, int& w1) {
    h0 = oh * SH - PT; w0 = ow * SW - PL;
    h1 = min(h0 + KH, H + PB); w1 = min(w0 + KW, W + PR);
    const int padded_size = (h1 - h0) * (w1 - w0);
    h0 = max(h0, 0); w0 = max(w0, 0); h1 = min(h1, H); w1 = min(w1, W);
    const int d = divisor > 0 ? divisor : (count_include_pad ? padded_size : (h1 - h0) * (w1 - w0));
    return d > 0 ? d : 1;
}

template <typename T>
__global__ void avg_pool_forward(long long total, const T* __restrict__ x, T* __restrict__ y,
                                 int H, int W, int KH, int KW, int OH, int OW, int SH, int SW,
                                 int PT, int PL, int PB, int PR, int count_include_pad, int divisor) {
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const int ow = (int)(idx % OW);
        const int oh = (int)((idx / OW) % OH);
        const long long plane = idx / ((long long)OW * OH);
        int h0, w0, h1, w1;
        const int d = avg_window(oh, ow, H, W, KH, KW, SH, SW, PT, PL, PB, PR, count_include_pad, divisor,
                                 h0, w0, h1, w1);
        const T* xp = x + plane * H * W;
        T acc = (T)0;
        for (int h = h0; h < h1; ++h)
            for (int w = w0; w < w1; ++w) acc += xp[h * W + w];
        y[idx] = acc / (T)d;
    }
}

template <typename T>
__global__ void avg_pool_backward(long long total, const T* __restrict__ g, T* __restrict__ dx,
                                  int H, int W, int KH, int KW, int OH, int OW, int SH, int SW,
                                  int PT, int PL, int PB, int PR, int count_include_pad, int divisor) {
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const int ow = (int)(idx % OW);
        const int oh = (int)((idx / OW) % OH);
        const long long plane = idx / ((long long)OW * OH);
        int h0, w0, h1, w1;
        const int d = avg_window(oh, ow, H, W, KH, KW, SH, SW, PT, PL, PB, PR, count_include_pad, divisor,
                                 h0, w0, h1, w1);
        const T share = g[idx] / (T)d;
        T* dp = dx + plane * H * W;
        for (int h = h0; h < h1; ++h)
            for (int w = w0; w < w1; ++w) atomicAdd(dp + h * W + w, share);
    }
}
"""

KERNEL_NAMES = ("im2col_chunk", "col2im_chunk", "max_pool_forward", "max_pool_backward", "avg_pool_forward",
                "avg_pool_backward")
_TYPES = {"float32": "float", "float64": "double"}
_modules: dict = {}
_lock = threading.Lock()

# column-matrix budget per batch chunk on the GPU
CHUNK_BYTES = 256 << 20
_THREADS = 256


def _cupy():
    import cupy

    return cupy


def _function(name: str, dtype):
    """The compiled kernel ``name<T>`` for ``dtype`` on the current device (compiled once per device)."""
    cupy = _cupy()
    device = cupy.cuda.Device().id
    with _lock:
        module = _modules.get(device)
        if module is None:
            expressions = [f"{k}<{t}>" for k in KERNEL_NAMES for t in _TYPES.values()]
            module = cupy.RawModule(code=_SOURCE, options=("--std=c++14",), name_expressions=expressions)
            _modules[device] = module
    return module.get_function(f"{name}<{_TYPES[str(dtype)]}>")


def _launch(name, dtype, total, *args):
    """Run kernel ``name<T>(total, *args)`` over ``total`` elements (grid-stride loop); Python ints go
    as C ints, every kernel's first parameter is the long long element count."""
    import numpy as np

    total = int(total)
    if total <= 0:
        return
    blocks = int(min((total + _THREADS - 1) // _THREADS, 1 << 20))
    params = [np.int64(total)] + [np.int32(a) if isinstance(a, (bool, int)) else a for a in args]
    _function(name, dtype)((blocks,), (_THREADS,), tuple(params))


def _compute_dtype(dtype):
    """float32/float64 natively; other floats (float16, bfloat16) computed in float32."""
    return dtype if str(dtype) in _TYPES else _cupy().dtype("float32")


def _output_size(size, kernel, stride, padding, dilation):
    return tuple((size[a] + padding[a][0] + padding[a][1] - dilation[a] * (kernel[a] - 1) - 1) // stride[a] + 1
                 for a in (0, 1))


def _im2col(x, n0, nb, kernel, stride, padding, dilation, out_hw):
    cupy = _cupy()
    _, c, h, w = x.shape
    (kh, kw), (oh, ow) = kernel, out_hw
    cols = cupy.empty((c * kh * kw, nb * oh * ow), dtype=x.dtype)
    _launch("im2col_chunk", x.dtype, cols.size, x, cols, int(n0), nb, c, h, w, kh, kw, oh, ow,
            stride[0], stride[1], padding[0][0], padding[1][0], dilation[0], dilation[1])
    return cols


def _chunk(c, kernel, out_hw, itemsize, n):
    per_image = c * kernel[0] * kernel[1] * out_hw[0] * out_hw[1] * itemsize
    return max(1, min(n, CHUNK_BYTES // max(1, per_image)))


@register_kernel("cupy", "conv2d_forward")
@_on_array_device
def conv2d_forward(x, w, b, stride, padding, dilation, groups):
    """y (N, O, OH, OW): per batch chunk, im2col into (C*kH*kW, n*OH*OW), then one GEMM per group."""
    cupy = _cupy()
    dtype = x.dtype
    ct = _compute_dtype(dtype)
    xc = cupy.ascontiguousarray(x, dtype=ct)
    wc = cupy.ascontiguousarray(w, dtype=ct)
    n, c, h, wd = xc.shape
    o, cg, kh, kw = wc.shape
    og = o // groups
    oh, ow = _output_size((h, wd), (kh, kw), stride, padding, dilation)
    wmat = wc.reshape(groups, og, cg * kh * kw)
    y = cupy.empty((n, o, oh, ow), dtype=ct)
    nb = _chunk(c, (kh, kw), (oh, ow), xc.itemsize, n)
    for n0 in range(0, n, nb):
        n1 = min(n, n0 + nb)
        cols = _im2col(xc, n0, n1 - n0, (kh, kw), stride, padding, dilation, (oh, ow))
        out = cupy.matmul(wmat, cols.reshape(groups, cg * kh * kw, (n1 - n0) * oh * ow))  # (G, Og, n*L)
        y[n0:n1] = out.reshape(o, n1 - n0, oh, ow).transpose(1, 0, 2, 3)
    if b is not None:
        y += b.astype(ct, copy=False).reshape(1, o, 1, 1)
    saved = (xc, wc, (oh, ow), stride, padding, dilation, groups, dtype)
    return (y if y.dtype == dtype else y.astype(dtype)), saved


@register_kernel("cupy", "conv2d_backward")
@_on_array_device
def conv2d_backward(g, saved, needs):
    cupy = _cupy()
    xc, wc, (oh, ow), stride, padding, dilation, groups, dtype = saved
    need_x, need_w, need_b = needs
    ct = xc.dtype
    gc = cupy.ascontiguousarray(g, dtype=ct)
    n, c, h, wd = xc.shape
    o, cg, kh, kw = wc.shape
    og = o // groups
    ck = cg * kh * kw
    db = gc.sum(axis=(0, 2, 3)) if need_b else None
    dw = cupy.zeros((groups, og, ck), dtype=ct) if need_w else None
    dx = cupy.empty((n, c, h, wd), dtype=ct) if need_x else None
    wmat = wc.reshape(groups, og, ck)
    nb = _chunk(c, (kh, kw), (oh, ow), xc.itemsize, n)
    for n0 in range(0, n, nb):
        n1 = min(n, n0 + nb)
        cols_width = (n1 - n0) * oh * ow
        # G of the chunk as (G, Og, n*L), matching the column order (n, oh, ow)
        gt = cupy.ascontiguousarray(gc[n0:n1].reshape(n1 - n0, o, oh * ow).transpose(1, 0, 2)).reshape(
            groups, og, cols_width)
        if need_w:
            cols = _im2col(xc, n0, n1 - n0, (kh, kw), stride, padding, dilation, (oh, ow))
            dw += cupy.matmul(gt, cols.reshape(groups, ck, cols_width).transpose(0, 2, 1))
            del cols
        if need_x:
            dcols = cupy.matmul(wmat.transpose(0, 2, 1), gt)  # (G, CgK, n*L) == (C*kH*kW, n*L)
            _launch("col2im_chunk", ct, (n1 - n0) * c * h * wd, dcols, dx, int(n0), n1 - n0, c, h, wd, kh, kw,
                    oh, ow, stride[0], stride[1], padding[0][0], padding[1][0], dilation[0], dilation[1])
    if need_w:
        dw = dw.reshape(o, cg, kh, kw)
    cast = (lambda a: a if a is None or a.dtype == dtype else a.astype(dtype))
    return cast(dx), cast(dw), cast(db)


@register_kernel("cupy", "max_pool2d_forward")
@_on_array_device
def max_pool2d_forward(x, kernel, stride, padding, dilation, out_hw):
    cupy = _cupy()
    dtype = x.dtype
    xc = cupy.ascontiguousarray(x, dtype=_compute_dtype(dtype))
    n, c, h, w = xc.shape
    oh, ow = out_hw
    y = cupy.empty((n, c, oh, ow), dtype=xc.dtype)
    arg = cupy.empty((n, c, oh, ow), dtype=cupy.int32)
    _launch("max_pool_forward", xc.dtype, y.size, xc, y, arg, h, w, kernel[0], kernel[1], oh, ow,
            stride[0], stride[1], padding[0][0], padding[1][0], dilation[0], dilation[1])
    saved = (arg, (n, c, h, w), xc.dtype, dtype)
    return (y if y.dtype == dtype else y.astype(dtype)), saved


@register_kernel("cupy", "max_pool2d_backward")
@_on_array_device
def max_pool2d_backward(g, saved):
    cupy = _cupy()
    arg, (n, c, h, w), ct, dtype = saved
    gc = cupy.ascontiguousarray(g, dtype=ct)
    dx = cupy.zeros((n, c, h, w), dtype=ct)
    _launch("max_pool_backward", ct, gc.size, gc, arg, dx, h * w, arg.shape[2] * arg.shape[3])
    return dx if dx.dtype == dtype else dx.astype(dtype)


def _avg_args(h, w, kernel, stride, padding, out_hw, count_include_pad, divisor_override):
    return (h, w, kernel[0], kernel[1], out_hw[0], out_hw[1], stride[0], stride[1], padding[0][0], padding[1][0],
            padding[0][1], padding[1][1], int(bool(count_include_pad)), int(divisor_override or 0))


@register_kernel("cupy", "avg_pool2d_forward")
@_on_array_device
def avg_pool2d_forward(x, kernel, stride, padding, out_hw, count_include_pad, divisor_override=None):
    cupy = _cupy()
    dtype = x.dtype
    xc = cupy.ascontiguousarray(x, dtype=_compute_dtype(dtype))
    n, c, h, w = xc.shape
    y = cupy.empty((n, c) + tuple(out_hw), dtype=xc.dtype)
    args = _avg_args(h, w, kernel, stride, padding, out_hw, count_include_pad, divisor_override)
    _launch("avg_pool_forward", xc.dtype, y.size, xc, y, *args)
    saved = (args, (n, c, h, w), tuple(out_hw), xc.dtype, dtype)
    return (y if y.dtype == dtype else y.astype(dtype)), saved


@register_kernel("cupy", "avg_pool2d_backward")
@_on_array_device
def avg_pool2d_backward(g, saved):
    cupy = _cupy()
    args, (n, c, h, w), out_hw, ct, dtype = saved
    gc = cupy.ascontiguousarray(g, dtype=ct)
    dx = cupy.zeros((n, c, h, w), dtype=ct)
    _launch("avg_pool_backward", ct, gc.size, gc, dx, *args)
    return dx if dx.dtype == dtype else dx.astype(dtype)
