// Convolution as im2col + cuBLAS GEMM: the column matrix of a batch chunk, and its fold back (col2im).
//
// Index arithmetic is 32-bit (64-bit division costs ~10x more on a GPU); the host keeps every launch
// under 2^31 elements (batch chunks) and offsets into big buffers in 64 bits.

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
