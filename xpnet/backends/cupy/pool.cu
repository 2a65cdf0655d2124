// 2-D max and average pooling: one thread per output window; the backward passes scatter with atomicAdd.
//
// Index arithmetic is 32-bit (64-bit division costs ~10x more on a GPU); the host keeps every launch
// under 2^31 elements (batch slices) and offsets into big buffers in 64 bits.

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
