// Local response normalisation across channels: one thread per (image, pixel) walks the channels;
// neighbouring threads hold neighbouring pixels, so every read and write is coalesced.
//
// Index arithmetic is 32-bit (64-bit division costs ~10x more on a GPU); the host keeps every launch
// under 2^31 elements (batch slices) and offsets into big buffers in 64 bits.

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
