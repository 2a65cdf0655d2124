/* Elementwise and pooling kernels of the NumPy backend (float32 and float64), compiled without
 * floating-point contraction: each operation rounds as the NumPy expression it replaces does.
 *
 *   xp_relu_fwd:  y = x where x > 0, NaN where x is NaN, else 0
 *   xp_relu_bwd:  dx = g where y > 0 (that is, x > 0), else 0 (the generic `where`: no 0 * inf);
 *                 from the output, as PyTorch does: no mask to write and keep
 *   xp_max_pool_fwd / _bwd: max pooling with the winning window offset (see below)
 */
#include <stddef.h>
#include <string.h>

#define XP_RELU(T, SUF)                                                                                 \
    void xp_relu_fwd_##SUF(const T *restrict x, T *restrict y, ptrdiff_t n) {                           \
        for (ptrdiff_t i = 0; i < n; i++)                                                               \
            y[i] = x[i] <= (T)0 ? (T)0 : x[i]; /* NaN compares false: it passes through */              \
    }                                                                                                   \
    void xp_relu_bwd_##SUF(const T *restrict g, const T *restrict y, T *restrict out, ptrdiff_t n) {    \
        for (ptrdiff_t i = 0; i < n; i++)                                                               \
            out[i] = y[i] > (T)0 ? g[i] : (T)0;                                                         \
    }

XP_RELU(float, f32)
XP_RELU(double, f64)

/* Max pooling over (N, H, W, C) arrays given by element strides (any memory order). For output
 * (n, p, q, c) the window's offsets (i, j) are visited in order k = i kW + j at input row
 * p sH - pT + i dH and column q sW - pL + j dW; offsets outside the input are padding and never win.
 * The first strict maximum wins and a NaN beats everything before it (PyTorch's rule: val > max or
 * val is NaN); arg gets k. The forward takes channels-last x and y (channel stride 1): the channel
 * loop runs innermost, contiguous and branch-free, so it vectorizes (on (H, W) planes NumPy's
 * whole-plane passes are faster). Backward adds g to the winning input element of each window (dx
 * zeroed by the caller), or, when the windows tile the input (`tiles`, channels-last), writes every
 * element of dx: g at the winner, 0 elsewhere. */
#define XP_POOL(T, SUF)                                                                                  \
    void xp_max_pool_fwd_##SUF(const T *x, const ptrdiff_t *xs, int N, int H, int W, int C, T *y,       \
                               unsigned char *arg, const ptrdiff_t *ys, int OH, int OW, int kh, int kw,  \
                               int sh, int sw, int pt, int pl, int dh, int dw) {                         \
        /* strides into locals: stores through arg (unsigned char) could alias the stride arrays */     \
        const ptrdiff_t x0 = xs[0], x1 = xs[1], x2 = xs[2];                                             \
        const ptrdiff_t y0 = ys[0], y1 = ys[1], y2 = ys[2];                                             \
        for (int n = 0; n < N; n++)                                                                     \
            for (int p = 0; p < OH; p++)                                                                \
                for (int q = 0; q < OW; q++) {                                                          \
                    T *yo = y + n * y0 + p * y1 + q * y2;                                               \
                    unsigned char *ao = arg + n * y0 + p * y1 + q * y2;                                 \
                    int first = 1;                                                                      \
                    for (int i = 0; i < kh; i++) {                                                      \
                        int r = p * sh - pt + i * dh;                                                   \
                        if (r < 0 || r >= H)                                                            \
                            continue;                                                                   \
                        for (int j = 0; j < kw; j++) {                                                  \
                            int s = q * sw - pl + j * dw;                                               \
                            if (s < 0 || s >= W)                                                        \
                                continue;                                                               \
                            const T *xv = x + n * x0 + r * x1 + s * x2;                                 \
                            unsigned char k = (unsigned char)(i * kw + j);                              \
                            if (first) {                                                                \
                                for (int c = 0; c < C; c++) {                                           \
                                    yo[c] = xv[c];                                                      \
                                    ao[c] = k;                                                          \
                                }                                                                       \
                                first = 0;                                                              \
                            } else {                                                                    \
                                for (int c = 0; c < C; c++) {                                           \
                                    T v = xv[c], b = yo[c];                                             \
                                    int take = v > b || v != v;                                         \
                                    yo[c] = take ? v : b;                                               \
                                    ao[c] = take ? k : ao[c];                                           \
                                }                                                                       \
                            }                                                                           \
                        }                                                                               \
                    }                                                                                   \
                }                                                                                       \
    }                                                                                                   \
    void xp_max_pool_bwd_##SUF(const T *g, const ptrdiff_t *gs, const unsigned char *arg,               \
                               const ptrdiff_t *as, int N, int OH, int OW, int C, T *dx,                \
                               const ptrdiff_t *xs, int kh, int kw, int sh, int sw, int pt, int pl, int dh,\
                               int dw, int tiles) {                                                     \
        const ptrdiff_t g0 = gs[0], g1 = gs[1], g2 = gs[2], g3 = gs[3];                                 \
        const ptrdiff_t a0 = as[0], a1 = as[1], a2 = as[2], a3 = as[3];                                 \
        const ptrdiff_t x0 = xs[0], x1 = xs[1], x2 = xs[2], x3 = xs[3];                                 \
        /* the element offset of window offset k from the window's corner: no division per output */  \
        ptrdiff_t delta[256];                                                                           \
        for (int k = 0; k < 256; k++)                                                                   \
            delta[k] = (ptrdiff_t)(k / kw) * dh * x1 + (ptrdiff_t)(k % kw) * dw * x2;                    \
        if (tiles && x3 == 1) { /* windows tile dx: write every element, no zeroing pass */             \
            for (int n = 0; n < N; n++)                                                                 \
                for (int p = 0; p < OH; p++)                                                            \
                    for (int q = 0; q < OW; q++) {                                                      \
                        T *corner = dx + n * x0 + (ptrdiff_t)(p * sh) * x1 + (ptrdiff_t)(q * sw) * x2;  \
                        const T *gq = g + n * g0 + p * g1 + q * g2;                                     \
                        const unsigned char *aq = arg + n * a0 + p * a1 + q * a2;                       \
                        for (int i = 0; i < kh; i++)                                                    \
                            for (int j = 0; j < kw; j++) {                                              \
                                T *d = corner + i * x1 + j * x2;                                        \
                                const unsigned char k = (unsigned char)(i * kw + j);                    \
                                for (int c = 0; c < C; c++)                                             \
                                    d[c] = aq[c * a3] == k ? gq[c * g3] : (T)0;                         \
                            }                                                                           \
                    }                                                                                   \
            return;                                                                                     \
        }                                                                                               \
        /* channels innermost for channels-last arrays, else one plane after another */              \
        const int cl = x3 == 1;                                                                         \
        const int outer = cl ? 1 : C, inner = cl ? C : 1;                                               \
        for (int n = 0; n < N; n++)                                                                     \
            for (int co = 0; co < outer; co++)                                                          \
                for (int p = 0; p < OH; p++)                                                            \
                    for (int q = 0; q < OW; q++) {                                                      \
                        T *corner = dx + n * x0 + (ptrdiff_t)(p * sh - pt) * x1 + (ptrdiff_t)(q * sw - pl) * x2; \
                        const T *gq = g + n * g0 + p * g1 + q * g2;                                     \
                        const unsigned char *aq = arg + n * a0 + p * a1 + q * a2;                       \
                        for (int ci = 0; ci < inner; ci++) {                                            \
                            int c = co + ci;                                                            \
                            corner[c * x3 + delta[aq[c * a3]]] += gq[c * g3];                           \
                        }                                                                               \
                    }                                                                                   \
    }

XP_POOL(float, f32)
XP_POOL(double, f64)

/* One SGD update of n elements, the operations and roundings of numpy_kernels._sgd_apply (and of the
 * generic rule) in their order:
 *     d = g;  d = w * wd + d (or w * wd - d when maximizing; -d when maximizing without decay)
 *     b = b * mu;  b = b + d (or d * (1 - dampening));  d = d + b * mu (Nesterov) or d = b
 *     w = d * (-lr) + w
 * buf is NULL without momentum. */
#define XP_SGD(T, SUF)                                                                                   \
    void xp_sgd_##SUF(T *restrict w, const T *restrict g, T *restrict buf, ptrdiff_t n, T neg_lr,       \
                      int decay, T wd, int maximize,                                                   \
                      T mu, T damp_keep, int damped, int nesterov) {                                    \
        if (buf && !decay && !maximize && !damped && !nesterov) { /* the common case, branch-free */    \
            for (ptrdiff_t i = 0; i < n; i++) {                                                         \
                T b = buf[i] * mu;                                                                      \
                b = b + g[i];                                                                           \
                buf[i] = b;                                                                             \
                w[i] = b * neg_lr + w[i];                                                               \
            }                                                                                           \
            return;                                                                                     \
        }                                                                                               \
        for (ptrdiff_t i = 0; i < n; i++) {                                                             \
            T d = g[i];                                                                                 \
            if (decay) {                                                                                \
                T t = w[i] * wd;                                                                        \
                d = maximize ? t - d : t + d;                                                           \
            } else if (maximize) {                                                                      \
                d = -d;                                                                                 \
            }                                                                                           \
            if (buf) {                                                                                  \
                T b = buf[i] * mu;                                                                      \
                b = b + (damped ? d * damp_keep : d);                                                   \
                buf[i] = b;                                                                             \
                d = nesterov ? d + b * mu : b;                                                          \
            }                                                                                           \
            w[i] = d * neg_lr + w[i];                                                                   \
        }                                                                                               \
    }

XP_SGD(float, f32)
XP_SGD(double, f64)

/* Winograd F(2x2, 3x3) transforms for stride-1 3x3 convolutions (numpy_kernels._Winograd).
 * Input: each 4x4 tile d of the zero-framed NHWC input (tiles 2 apart) becomes V = B^T d B,
 *     B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],
 * stored as V[k, t, c] for k = 4 i + j, the 16 matrices v_k apart, a tile's row v_tile long. After
 * the 16 products
 * M_k = V_k U_k (U = G W G^T, the transformed kernel), each tile's output is Y = A^T M A,
 *     A^T = [1 1 1 0; 0 1 -1 -1],
 * a 2x2 block of the NHWC output (cropped at odd edges), plus the bias. The channel loops are
 * innermost and contiguous, so they vectorize. */
#define XP_WINO(T, SUF)                                                                                  \
    void xp_wino_in_##SUF(const T *restrict x, ptrdiff_t x_img, int Wq, int C, int N, int TH, int TW,   \
                          T *restrict v, ptrdiff_t v_tile, ptrdiff_t v_k) {                                               \
        const ptrdiff_t row = (ptrdiff_t)Wq * C;                                                        \
        for (int n = 0; n < N; n++)                                                                     \
            for (int a = 0; a < TH; a++)                                                                \
                for (int b = 0; b < TW; b++) {                                                          \
                    const T *d = x + n * x_img + (ptrdiff_t)(2 * a) * row + (ptrdiff_t)(2 * b) * C;     \
                    T *out = v + ((ptrdiff_t)(n * TH + a) * TW + b) * v_tile;                           \
                    for (int c = 0; c < C; c++) {                                                       \
                        T t[4][4];                                                                      \
                        for (int j = 0; j < 4; j++) {                                                   \
                            T d0 = d[0 * row + j * C + c], d1 = d[1 * row + j * C + c];                 \
                            T d2 = d[2 * row + j * C + c], d3 = d[3 * row + j * C + c];                 \
                            t[0][j] = d0 - d2;                                                          \
                            t[1][j] = d1 + d2;                                                          \
                            t[2][j] = d2 - d1;                                                          \
                            t[3][j] = d1 - d3;                                                          \
                        }                                                                               \
                        for (int i = 0; i < 4; i++) {                                                   \
                            out[(4 * i + 0) * v_k + c] = t[i][0] - t[i][2];                             \
                            out[(4 * i + 1) * v_k + c] = t[i][1] + t[i][2];                             \
                            out[(4 * i + 2) * v_k + c] = t[i][2] - t[i][1];                             \
                            out[(4 * i + 3) * v_k + c] = t[i][1] - t[i][3];                             \
                        }                                                                               \
                    }                                                                                   \
                }                                                                                       \
    }                                                                                                   \
    void xp_wino_out_##SUF(const T *restrict m, ptrdiff_t m_tile, ptrdiff_t m_k, int O, int N, int TH,  \
                           int TW, const T *restrict bias, T *restrict y, ptrdiff_t y_img, int OH,      \
                           int OW) {                                                                    \
        for (int n = 0; n < N; n++)                                                                     \
            for (int a = 0; a < TH; a++)                                                                \
                for (int b = 0; b < TW; b++) {                                                          \
                    const T *in = m + ((ptrdiff_t)(n * TH + a) * TW + b) * m_tile;                      \
                    T *out = y + n * y_img + ((ptrdiff_t)(2 * a) * OW + 2 * b) * O;                     \
                    const int rows = OH - 2 * a < 2 ? 1 : 2, cols = OW - 2 * b < 2 ? 1 : 2;             \
                    for (int o = 0; o < O; o++) {                                                       \
                        T s[2][4];                                                                      \
                        for (int j = 0; j < 4; j++) {                                                   \
                            T m0 = in[(0 + j) * m_k + o], m1 = in[(4 + j) * m_k + o];                   \
                            T m2 = in[(8 + j) * m_k + o], m3 = in[(12 + j) * m_k + o];                  \
                            s[0][j] = m0 + m1 + m2;                                                     \
                            s[1][j] = m1 - m2 - m3;                                                     \
                        }                                                                               \
                        T bo = bias ? bias[o] : (T)0;                                                   \
                        T y00 = s[0][0] + s[0][1] + s[0][2] + bo, y01 = s[0][1] - s[0][2] - s[0][3] + bo; \
                        T y10 = s[1][0] + s[1][1] + s[1][2] + bo, y11 = s[1][1] - s[1][2] - s[1][3] + bo; \
                        out[o] = y00;                                                                   \
                        if (cols > 1)                                                                   \
                            out[O + o] = y01;                                                           \
                        if (rows > 1) {                                                                 \
                            out[(ptrdiff_t)OW * O + o] = y10;                                           \
                            if (cols > 1)                                                               \
                                out[(ptrdiff_t)OW * O + O + o] = y11;                                   \
                        }                                                                               \
                    }                                                                                   \
                }                                                                                       \
    }

XP_WINO(float, f32)
XP_WINO(double, f64)

/* Batch norm on the (M, C) channels-last matrix (numpy_kernels.batch_norm_forward/backward), the
 * channel loops innermost (contiguous, vectorized), sums in double:
 *   xp_bn_moments:  sum[c] += sum_m (x - k[c]), sq[c] += sum_m (x - k[c])^2, shifted by k = a
 *                   sample (the first row), so E[x^2] - E[x]^2 cancels nothing of note
 *   xp_bn_affine:   y = x * scale[c] + shift[c]                (NumPy's two roundings)
 *   xp_bn_grad_sums: sg[c] += sum_m g, sgx[c] += sum_m g (x - mean[c])
 *   xp_bn_grad:     dx = g * a[c] + ((x - mean[c]) * b[c] + s[c])  (NumPy's order) */
#define XP_BN(T, SUF)                                                                                    \
    void xp_bn_moments_##SUF(const T *restrict x, ptrdiff_t M, int C, const T *restrict k,              \
                             double *restrict sum, double *restrict sq) {                                \
        for (ptrdiff_t m = 0; m < M; m++) {                                                             \
            const T *row = x + m * C;                                                                   \
            for (int c = 0; c < C; c++) {                                                               \
                double d = (double)row[c] - (double)k[c];                                               \
                sum[c] += d;                                                                            \
                sq[c] += d * d;                                                                         \
            }                                                                                           \
        }                                                                                               \
    }                                                                                                   \
    void xp_bn_affine_##SUF(const T *restrict x, ptrdiff_t M, int C, const T *restrict scale,           \
                            const T *restrict shift, T *restrict y) {                                   \
        for (ptrdiff_t m = 0; m < M; m++)                                                               \
            for (int c = 0; c < C; c++) {                                                               \
                T v = x[m * C + c] * scale[c];                                                          \
                y[m * C + c] = v + shift[c];                                                            \
            }                                                                                           \
    }                                                                                                   \
    void xp_bn_grad_sums_##SUF(const T *restrict g, const T *restrict x, ptrdiff_t M, int C,            \
                               const T *restrict mean, double *restrict sg, double *restrict sgx) {     \
        for (ptrdiff_t m = 0; m < M; m++)                                                               \
            for (int c = 0; c < C; c++) {                                                               \
                double gv = (double)g[m * C + c];                                                       \
                sg[c] += gv;                                                                            \
                sgx[c] += gv * ((double)x[m * C + c] - (double)mean[c]);                                \
            }                                                                                           \
    }                                                                                                   \
    void xp_bn_grad_##SUF(const T *restrict g, const T *restrict x, ptrdiff_t M, int C,                 \
                          const T *restrict mean, const T *restrict a, const T *restrict b,             \
                          const T *restrict s, T *restrict dx) {                                        \
        for (ptrdiff_t m = 0; m < M; m++)                                                               \
            for (int c = 0; c < C; c++) {                                                               \
                T centered = x[m * C + c] - mean[c];                                                    \
                centered = centered * b[c];                                                             \
                centered = centered + s[c];                                                             \
                T out = g[m * C + c] * a[c];                                                            \
                dx[m * C + c] = out + centered;                                                         \
            }                                                                                           \
    }

XP_BN(float, f32)
XP_BN(double, f64)

/* The weight gradient's side of Winograd F(2x2, 3x3): each 2x2 block of the output gradient G (NHWC,
 * zero past odd edges) becomes dM = A dY A^T (A = [1 0; 1 1; 1 -1; 0 -1]), the gradient of the
 * tile's M; then dU_k = sum over tiles V_k^T dM_k and dW = G^T dU G (numpy_kernels._Winograd). */
#define XP_WINO_GRAD(T, SUF)                                                                            \
    void xp_wino_grad_##SUF(const T *restrict g, ptrdiff_t g_img, int O, int N, int TH, int TW, int OH, \
                            int OW, T *restrict dm, ptrdiff_t dm_tile, ptrdiff_t dm_k) {                \
        for (int n = 0; n < N; n++)                                                                     \
            for (int a = 0; a < TH; a++)                                                                \
                for (int b = 0; b < TW; b++) {                                                          \
                    const T *in = g + n * g_img + ((ptrdiff_t)(2 * a) * OW + 2 * b) * O;                \
                    T *out = dm + ((ptrdiff_t)(n * TH + a) * TW + b) * dm_tile;                         \
                    const int right = 2 * b + 1 < OW, down = 2 * a + 1 < OH;                            \
                    for (int o = 0; o < O; o++) {                                                       \
                        T y00 = in[o], y01 = right ? in[O + o] : (T)0;                                  \
                        T y10 = down ? in[(ptrdiff_t)OW * O + o] : (T)0;                                \
                        T y11 = down && right ? in[(ptrdiff_t)OW * O + O + o] : (T)0;                   \
                        T t[4][2] = {{y00, y01}, {y00 + y10, y01 + y11}, {y00 - y10, y01 - y11}, {-y10, -y11}};\
                        for (int r = 0; r < 4; r++) {                                                   \
                            out[(4 * r + 0) * dm_k + o] = t[r][0];                                      \
                            out[(4 * r + 1) * dm_k + o] = t[r][0] + t[r][1];                            \
                            out[(4 * r + 2) * dm_k + o] = t[r][0] - t[r][1];                            \
                            out[(4 * r + 3) * dm_k + o] = -t[r][1];                                     \
                        }                                                                               \
                    }                                                                                   \
                }                                                                                       \
    }

XP_WINO_GRAD(float, f32)
XP_WINO_GRAD(double, f64)
