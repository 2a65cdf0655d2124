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

from . import kernels
from .kernels import register_kernel


def _on_array_device(fn):
    """Run the kernel with its first argument's GPU as the current device: allocations and launches
    then land where the data is, whichever device the caller had current."""

    @functools.wraps(fn)
    def wrapper(array, *args):
        with array.device:
            return fn(array, *args)

    return wrapper

_SOURCE = r"""
// Index arithmetic is 32-bit (64-bit division costs ~10x more on a GPU); the host keeps every launch
// under 2^31 elements (conv chunks, pooling batch slices) and offsets into big buffers in 64 bits.

template <typename T>
__global__ void im2col_tile(const T* __restrict__ x, T* __restrict__ cols, int n0, int nb, int C, int H,
                            int W, int KH, int KW, int OH, int OW, int SH, int SW, int PT, int PL, int DH,
                            int DW, int R) {
    // cols layout (C, KH, KW | nb, OH, OW). A thread owns one column (n, oh, ow), decoded once, and
    // writes R consecutive rows (c, i, j) of it, stepping (c, i, j) by increments: no division per
    // element. For each row a warp writes 32 neighbouring columns (coalesced).
    const int L = nb * OH * OW;
    const int rows = C * KH * KW;
    const long long image = (long long)C * H * W;
    for (int col = blockIdx.x * blockDim.x + threadIdx.x; col < L; col += blockDim.x * gridDim.x) {
        const int ow = col % OW;
        const int q = col / OW;
        const int oh = q % OH, n = q / OH;
        const int h0 = oh * SH - PT, w0 = ow * SW - PL;
        const T* xn = x + (long long)(n0 + n) * image;
        for (int r0 = blockIdx.y * R; r0 < rows; r0 += gridDim.y * R) {
            const int r1 = min(rows, r0 + R);
            int j = r0 % KW;
            const int t = r0 / KW;
            int i = t % KH, c = t / KH;
            for (int r = r0; r < r1; ++r) {
                const int h = h0 + i * DH, w = w0 + j * DW;
                T v = (T)0;
                if (h >= 0 && h < H && w >= 0 && w < W) v = xn[((long long)c * H + h) * W + w];
                cols[(long long)r * L + col] = v;
                if (++j == KW) {
                    j = 0;
                    if (++i == KH) {
                        i = 0;
                        ++c;
                    }
                }
            }
        }
    }
}

template <typename T>
__global__ void col2im_chunk(int total, const T* __restrict__ dcols, T* __restrict__ dx,
                             int n0, int nb, int C, int H, int W, int KH, int KW, int OH, int OW,
                             int SH, int SW, int PT, int PL, int DH, int DW) {
    // dx[n0 + n, c, h, w] = sum of the column entries whose tap (i, j) reads pixel (h, w): a gather,
    // no atomics; neighbouring threads read neighbouring columns (coalesced). Without dilation the
    // taps that land on the stride grid are visited directly (i = (h + PT) mod SH, then every SH-th).
    const long long L = (long long)nb * OH * OW;
    T* out = dx + (long long)n0 * C * H * W;
    const int istep = DH == 1 ? SH : 1, jstep = DW == 1 ? SW : 1;
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += blockDim.x * gridDim.x) {
        const int w = idx % W;
        int t = idx / W;
        const int h = t % H;
        t /= H;
        const int c = t % C, n = t / C;
        const T* base = dcols + (long long)c * KH * KW * L + (long long)n * OH * OW;
        T acc = (T)0;
        for (int i = DH == 1 ? (h + PT) % SH : 0; i < KH; i += istep) {
            const int ph = h + PT - i * DH;
            if (ph < 0) break;  // ph only falls as i grows
            if (DH != 1 && ph % SH != 0) continue;
            const int oh = ph / SH;
            if (oh >= OH) continue;
            for (int j = DW == 1 ? (w + PL) % SW : 0; j < KW; j += jstep) {
                const int pw = w + PL - j * DW;
                if (pw < 0) break;
                if (DW != 1 && pw % SW != 0) continue;
                const int ow = pw / SW;
                if (ow >= OW) continue;
                acc += base[(long long)(i * KW + j) * L + oh * OW + ow];
            }
        }
        out[idx] = acc;
    }
}

template <typename T>
__global__ void max_pool_forward(int total, const T* __restrict__ x, T* __restrict__ y,
                                 int* __restrict__ arg, int H, int W, int KH, int KW, int OH, int OW,
                                 int SH, int SW, int PT, int PL, int DH, int DW) {
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += blockDim.x * gridDim.x) {
        const int ow = idx % OW;
        const int q = idx / OW;
        const int oh = q % OH, plane = q / OH;
        const T* xp = x + (long long)plane * H * W;
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
__global__ void max_pool_backward(int total, const T* __restrict__ g, const int* __restrict__ arg,
                                  T* __restrict__ dx, int HW, int OHW) {
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += blockDim.x * gridDim.x) {
        const int at = arg[idx];
        if (at >= 0) atomicAdd(dx + (long long)(idx / OHW) * HW + at, g[idx]);
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
__global__ void avg_pool_forward(int total, const T* __restrict__ x, T* __restrict__ y,
                                 int H, int W, int KH, int KW, int OH, int OW, int SH, int SW,
                                 int PT, int PL, int PB, int PR, int count_include_pad, int divisor) {
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += blockDim.x * gridDim.x) {
        const int ow = idx % OW;
        const int q = idx / OW;
        const int oh = q % OH, plane = q / OH;
        int h0, w0, h1, w1;
        const int d = avg_window(oh, ow, H, W, KH, KW, SH, SW, PT, PL, PB, PR, count_include_pad, divisor,
                                 h0, w0, h1, w1);
        const T* xp = x + (long long)plane * H * W;
        T acc = (T)0;
        for (int h = h0; h < h1; ++h)
            for (int w = w0; w < w1; ++w) acc += xp[h * W + w];
        y[idx] = acc / (T)d;
    }
}

template <typename T>
__global__ void avg_pool_backward(int total, const T* __restrict__ g, T* __restrict__ dx,
                                  int H, int W, int KH, int KW, int OH, int OW, int SH, int SW,
                                  int PT, int PL, int PB, int PR, int count_include_pad, int divisor) {
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += blockDim.x * gridDim.x) {
        const int ow = idx % OW;
        const int q = idx / OW;
        const int oh = q % OH, plane = q / OH;
        int h0, w0, h1, w1;
        const int d = avg_window(oh, ow, H, W, KH, KW, SH, SW, PT, PL, PB, PR, count_include_pad, divisor,
                                 h0, w0, h1, w1);
        const T share = g[idx] / (T)d;
        T* dp = dx + (long long)plane * H * W;
        for (int h = h0; h < h1; ++h)
            for (int w = w0; w < w1; ++w) atomicAdd(dp + h * W + w, share);
    }
}

// Local response normalisation across channels: one thread per (image, pixel) walks the channels;
// neighbouring threads hold neighbouring pixels, so every read and write is coalesced.
template <typename T>
__global__ void lrn_forward(int total, const T* __restrict__ x, T* __restrict__ y, T* __restrict__ scale,
                            T* __restrict__ denom, int C, int HW, int lo, int hi, T alpha_n, T beta, T k) {
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += blockDim.x * gridDim.x) {
        const int n = idx / HW, p = idx - n * HW;
        const long long base = (long long)n * C * HW + p;
        for (int c = 0; c < C; ++c) {
            T s = (T)0;
            for (int q = max(c - lo, 0); q <= min(c + hi, C - 1); ++q) {
                const T v = x[base + (long long)q * HW];
                s += v * v;
            }
            const T d = k + alpha_n * s;
            const T sc = pow(d, -beta);
            const long long at = base + (long long)c * HW;
            y[at] = x[at] * sc;
            scale[at] = sc;
            denom[at] = d;
        }
    }
}

template <typename T>
__global__ void lrn_backward(int total, const T* __restrict__ g, const T* __restrict__ x,
                             const T* __restrict__ scale, const T* __restrict__ denom, T* __restrict__ dx,
                             int C, int HW, int lo, int hi, T coef) {
    // dx_j = g_j D_j^(-beta) - coef x_j sum_{c = j-hi}^{j+lo} g_c x_c D_c^(-beta) / D_c
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += blockDim.x * gridDim.x) {
        const int n = idx / HW, p = idx - n * HW;
        const long long base = (long long)n * C * HW + p;
        for (int c = 0; c < C; ++c) {
            T acc = (T)0;
            for (int q = max(c - hi, 0); q <= min(c + lo, C - 1); ++q) {
                const long long at = base + (long long)q * HW;
                acc += g[at] * x[at] * scale[at] / denom[at];
            }
            const long long at = base + (long long)c * HW;
            dx[at] = g[at] * scale[at] - coef * x[at] * acc;
        }
    }
}
"""

KERNEL_NAMES = ("im2col_tile", "col2im_chunk", "max_pool_forward", "max_pool_backward", "avg_pool_forward",
                "avg_pool_backward", "lrn_forward", "lrn_backward")
_TYPES = {"float32": "float", "float64": "double"}
_modules: dict = {}
_functions: dict = {}
_lock = threading.Lock()

# column-matrix budget per batch chunk on the GPU
CHUNK_BYTES = 256 << 20
_THREADS = 256
INT_MAX = (1 << 31) - 1
IM2COL_ROWS = 32  # column-matrix rows written per thread


def _cupy():
    import cupy

    return cupy


def _function(name: str, dtype):
    """The compiled kernel ``name<T>`` for ``dtype`` on the current device (compiled once per device;
    the function objects are cached, so a launch costs one dict lookup)."""
    cupy = _cupy()
    device = cupy.cuda.Device().id
    key = (device, name, str(dtype))
    fn = _functions.get(key)
    if fn is not None:
        return fn
    with _lock:
        module = _modules.get(device)
        if module is None:
            expressions = [f"{k}<{t}>" for k in KERNEL_NAMES for t in _TYPES.values()]
            module = cupy.RawModule(code=_SOURCE, options=("--std=c++14",), name_expressions=expressions)
            _modules[device] = module
        fn = _functions[key] = module.get_function(f"{name}<{_TYPES[str(dtype)]}>")
    return fn


def _c_args(args):
    import numpy as np

    return tuple(np.int32(a) if isinstance(a, (bool, int)) else a for a in args)


def _launch(name, dtype, total, *args):
    """Run kernel ``name<T>(total, *args)`` over ``total`` elements (grid-stride loop). Python ints go
    as C ints; ``total`` (every such kernel's first parameter) must stay under 2^31, which the callers
    keep by splitting the batch (``_batch_slices``)."""
    total = int(total)
    if total <= 0:
        return
    if total > INT_MAX:
        raise ValueError(f"cupy kernel {name}: {total} elements in one launch, more than 2^31 - 1")
    blocks = int(min((total + _THREADS - 1) // _THREADS, 1 << 20))
    _function(name, dtype)((blocks,), (_THREADS,), _c_args((total,) + args))


def _launch_tiles(name, dtype, rows, row_length, rows_per_thread, *args):
    """Run kernel ``name<T>(*args, rows_per_thread)`` on a 2-D grid: x threads walk the ``row_length``
    columns, blockIdx.y blocks of ``rows_per_thread`` rows (both grid-stride)."""
    if rows <= 0 or row_length <= 0:
        return
    if row_length > INT_MAX:
        raise ValueError(f"cupy kernel {name}: rows of {row_length} elements, more than 2^31 - 1")
    bx = int(min((row_length + _THREADS - 1) // _THREADS, INT_MAX))
    by = int(min(-(-rows // rows_per_thread), 65535))
    _function(name, dtype)((bx, by), (_THREADS,), _c_args(args + (rows_per_thread,)))


def _batch_slices(n, per_image):
    """[(i0, i1)] covering range(n) with at most 2^31 - 1 elements (``per_image`` each) per slice."""
    step = max(1, INT_MAX // max(1, int(per_image)))
    return [(i0, min(n, i0 + step)) for i0 in range(0, n, step)]


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
    rows = c * kh * kw
    _launch_tiles("im2col_tile", x.dtype, rows, nb * oh * ow, max(IM2COL_ROWS, -(-rows // 65535)), x, cols, int(n0),
                  nb, c, h, w, kh, kw, oh, ow, stride[0], stride[1], padding[0][0], padding[1][0], dilation[0],
                  dilation[1])
    return cols


def _chunk(c, kernel, out_hw, itemsize, n, in_hw=(1, 1)):
    """Images per batch chunk: the column matrix stays near CHUNK_BYTES, and both it and the chunk's
    input gradient under 2^31 elements (the kernels' 32-bit indices)."""
    per_image = c * kernel[0] * kernel[1] * out_hw[0] * out_hw[1]
    cap = INT_MAX // max(1, per_image, c * in_hw[0] * in_hw[1])
    return max(1, min(n, CHUNK_BYTES // max(1, per_image * itemsize), cap))


def _grouped_matmul(a, b, groups, transpose_b=False):
    """Per group g: a[g] @ b_g (or b_g^T), stacked along rows. ``a`` is (G, M, K) (or (M_total, K)
    for transpose_b), ``b`` a 2-D (G*K, N) (or (G*N, K)) matrix; one plain GEMM when G == 1."""
    cupy = _cupy()
    if transpose_b:  # a (G*M, W), b (G*K, W): out (G*M, K) = per group a_g @ b_g^T
        if groups == 1:
            return cupy.matmul(a, b.T)
        m, k = a.shape[0] // groups, b.shape[0] // groups
        out = cupy.matmul(a.reshape(groups, m, a.shape[1]), b.reshape(groups, k, b.shape[1]).transpose(0, 2, 1))
        return out.reshape(groups * m, k)
    if groups == 1:
        return cupy.matmul(a[0], b)
    g, m, k = a.shape
    return cupy.matmul(a, b.reshape(g, k, b.shape[1])).reshape(g * m, b.shape[1])


@register_kernel("cupy", kernels.CONV2D_FORWARD)
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
    bias = None if b is None else b.astype(ct, copy=False).reshape(1, o, 1, 1)
    nb = _chunk(c, (kh, kw), (oh, ow), xc.itemsize, n, (h, wd))
    for n0 in range(0, n, nb):
        n1 = min(n, n0 + nb)
        cols = _im2col(xc, n0, n1 - n0, (kh, kw), stride, padding, dilation, (oh, ow))
        out = _grouped_matmul(wmat, cols, groups)  # (O, n*L)
        view = out.reshape(o, n1 - n0, oh, ow).transpose(1, 0, 2, 3)
        if bias is None:
            y[n0:n1] = view
        else:
            cupy.add(view, bias, out=y[n0:n1])  # the layout change and the bias in one pass
    saved = (xc, wc, (oh, ow), stride, padding, dilation, groups, dtype)
    return (y if y.dtype == dtype else y.astype(dtype)), saved


@register_kernel("cupy", kernels.CONV2D_BACKWARD)
@_on_array_device
def conv2d_backward(g, saved, needs):
    """Per batch chunk, with G as (O, n*L) and X_col the chunk's column matrix:
        dL/dW = G X_col^T (per group)    dL/db = G 1    dX_col = W^T G, folded back by col2im."""
    cupy = _cupy()
    xc, wc, (oh, ow), stride, padding, dilation, groups, dtype = saved
    need_x, need_w, need_b = needs
    ct = xc.dtype
    gc = cupy.ascontiguousarray(g, dtype=ct)
    n, c, h, wd = xc.shape
    o, cg, kh, kw = wc.shape
    og = o // groups
    ck = cg * kh * kw
    db = dw = None
    dx = cupy.empty((n, c, h, wd), dtype=ct) if need_x else None
    wmat = wc.reshape(groups, og, ck)
    wmat_t = wmat.transpose(0, 2, 1)  # (G, CgK, Og)
    nb = _chunk(c, (kh, kw), (oh, ow), xc.itemsize, n, (h, wd))
    for n0 in range(0, n, nb):
        n1 = min(n, n0 + nb)
        cols_width = (n1 - n0) * oh * ow
        # G of the chunk as (O, n*L), matching the column order (n, oh, ow)
        gt = cupy.ascontiguousarray(gc[n0:n1].reshape(n1 - n0, o, oh * ow).transpose(1, 0, 2)).reshape(
            o, cols_width)
        if need_b:
            part = gt.sum(axis=1)  # contiguous rows: a faster reduction than over (N, H, W) of G
            db = part if db is None else db + part
        if need_w:
            cols = _im2col(xc, n0, n1 - n0, (kh, kw), stride, padding, dilation, (oh, ow))
            part = _grouped_matmul(gt, cols, groups, transpose_b=True)  # (O, CgK)
            dw = part if dw is None else dw + part
            del cols
        if need_x:
            dcols = _grouped_matmul(wmat_t, gt, groups)  # (C*kH*kW, n*L)
            _launch("col2im_chunk", ct, (n1 - n0) * c * h * wd, dcols, dx, int(n0), n1 - n0, c, h, wd, kh, kw,
                    oh, ow, stride[0], stride[1], padding[0][0], padding[1][0], dilation[0], dilation[1])
    if need_w:
        dw = dw.reshape(o, cg, kh, kw)
    cast = (lambda a: a if a is None or a.dtype == dtype else a.astype(dtype))
    return cast(dx), cast(dw), cast(db)


@register_kernel("cupy", kernels.MAX_POOL2D_FORWARD)
@_on_array_device
def max_pool2d_forward(x, kernel, stride, padding, dilation, out_hw):
    cupy = _cupy()
    dtype = x.dtype
    xc = cupy.ascontiguousarray(x, dtype=_compute_dtype(dtype))
    n, c, h, w = xc.shape
    oh, ow = out_hw
    y = cupy.empty((n, c, oh, ow), dtype=xc.dtype)
    arg = cupy.empty((n, c, oh, ow), dtype=cupy.int32)
    for i0, i1 in _batch_slices(n, c * oh * ow):
        _launch("max_pool_forward", xc.dtype, (i1 - i0) * c * oh * ow, xc[i0:i1], y[i0:i1], arg[i0:i1], h, w,
                kernel[0], kernel[1], oh, ow, stride[0], stride[1], padding[0][0], padding[1][0], dilation[0],
                dilation[1])
    saved = (arg, (n, c, h, w), xc.dtype, dtype)
    return (y if y.dtype == dtype else y.astype(dtype)), saved


@register_kernel("cupy", kernels.MAX_POOL2D_BACKWARD)
@_on_array_device
def max_pool2d_backward(g, saved):
    cupy = _cupy()
    arg, (n, c, h, w), ct, dtype = saved
    gc = cupy.ascontiguousarray(g, dtype=ct)
    dx = cupy.zeros((n, c, h, w), dtype=ct)
    ohw = arg.shape[2] * arg.shape[3]
    for i0, i1 in _batch_slices(n, c * ohw):
        _launch("max_pool_backward", ct, (i1 - i0) * c * ohw, gc[i0:i1], arg[i0:i1], dx[i0:i1], h * w, ohw)
    return dx if dx.dtype == dtype else dx.astype(dtype)


def _avg_args(h, w, kernel, stride, padding, out_hw, count_include_pad, divisor_override):
    return (h, w, kernel[0], kernel[1], out_hw[0], out_hw[1], stride[0], stride[1], padding[0][0], padding[1][0],
            padding[0][1], padding[1][1], int(bool(count_include_pad)), int(divisor_override or 0))


@register_kernel("cupy", kernels.AVG_POOL2D_FORWARD)
@_on_array_device
def avg_pool2d_forward(x, kernel, stride, padding, out_hw, count_include_pad, divisor_override=None):
    cupy = _cupy()
    dtype = x.dtype
    xc = cupy.ascontiguousarray(x, dtype=_compute_dtype(dtype))
    n, c, h, w = xc.shape
    y = cupy.empty((n, c) + tuple(out_hw), dtype=xc.dtype)
    args = _avg_args(h, w, kernel, stride, padding, out_hw, count_include_pad, divisor_override)
    for i0, i1 in _batch_slices(n, y.size // max(1, n)):
        _launch("avg_pool_forward", xc.dtype, (i1 - i0) * (y.size // n), xc[i0:i1], y[i0:i1], *args)
    saved = (args, (n, c, h, w), tuple(out_hw), xc.dtype, dtype)
    return (y if y.dtype == dtype else y.astype(dtype)), saved


@register_kernel("cupy", kernels.AVG_POOL2D_BACKWARD)
@_on_array_device
def avg_pool2d_backward(g, saved):
    cupy = _cupy()
    args, (n, c, h, w), out_hw, ct, dtype = saved
    gc = cupy.ascontiguousarray(g, dtype=ct)
    dx = cupy.zeros((n, c, h, w), dtype=ct)
    for i0, i1 in _batch_slices(n, gc.size // max(1, n)):
        _launch("avg_pool_backward", ct, (i1 - i0) * (gc.size // n), gc[i0:i1], dx[i0:i1], *args)
    return dx if dx.dtype == dtype else dx.astype(dtype)


@functools.lru_cache(maxsize=None)
def _relu_kernels():
    cupy = _cupy()
    forward = cupy.ElementwiseKernel(
        "T x", "T y, bool m",
        "m = x > (T)0; y = (m || x != x) ? x : (T)0;",  # a NaN stays NaN, as maximum(x, 0)
        "xpnet_relu_forward")
    backward = cupy.ElementwiseKernel("T g, bool m", "T dx", "dx = m ? g : (T)0;", "xpnet_relu_backward")
    return forward, backward


@register_kernel("cupy", kernels.RELU_FORWARD)
@_on_array_device
def relu_forward(x):
    """(maximum(x, 0), x > 0) in one pass: one read of x, one write of each output."""
    return _relu_kernels()[0](x)


@register_kernel("cupy", kernels.RELU_BACKWARD)
@_on_array_device
def relu_backward(g, mask):
    """dL/dx = G * [x > 0] as a select (0 where the mask is off, even where G is inf or NaN)."""
    return _relu_kernels()[1](g, mask)


@register_kernel("cupy", kernels.LOCAL_RESPONSE_NORM_FORWARD)
@_on_array_device
def local_response_norm_forward(x, size, alpha, beta, k):
    """(y, saved): one thread per (image, pixel) sums each channel window directly (no running sum,
    so no cancellation), and keeps D^(-beta) and D for the backward."""
    cupy = _cupy()
    dtype = x.dtype
    xc = cupy.ascontiguousarray(x, dtype=_compute_dtype(dtype))
    n, c = xc.shape[0], xc.shape[1]
    hw = xc.size // max(1, n * c)
    y, scale, denom = (cupy.empty_like(xc) for _ in range(3))
    t = xc.dtype.type
    lo, hi = size // 2, (size - 1) // 2
    for i0, i1 in _batch_slices(n, hw):
        _launch("lrn_forward", xc.dtype, (i1 - i0) * hw, xc[i0:i1], y[i0:i1], scale[i0:i1], denom[i0:i1], c, hw,
                lo, hi, t(alpha / size), t(beta), t(k))
    saved = (xc, scale, denom, (c, hw, lo, hi, 2.0 * alpha * beta / size), dtype)
    return (y if y.dtype == dtype else y.astype(dtype)), saved


@register_kernel("cupy", kernels.LOCAL_RESPONSE_NORM_BACKWARD)
@_on_array_device
def local_response_norm_backward(g, saved):
    """dL/dx_j = g_j D_j^(-beta) - (2 alpha beta / n) x_j sum_{c = j-hi}^{j+lo} g_c x_c D_c^(-beta) / D_c,
    one thread per (image, pixel) walking the channels (see LocalResponseNormFunction)."""
    cupy = _cupy()
    xc, scale, denom, (c, hw, lo, hi, coef), dtype = saved
    gc = cupy.ascontiguousarray(g, dtype=xc.dtype)
    dx = cupy.empty_like(xc)
    n = xc.shape[0]
    for i0, i1 in _batch_slices(n, hw):
        _launch("lrn_backward", xc.dtype, (i1 - i0) * hw, gc[i0:i1], xc[i0:i1], scale[i0:i1], denom[i0:i1],
                dx[i0:i1], c, hw, lo, hi, xc.dtype.type(coef))
    return dx if dx.dtype == dtype else dx.astype(dtype)
