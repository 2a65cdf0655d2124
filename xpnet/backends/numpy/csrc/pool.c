/* Max pooling of the NumPy backend (float32 and float64; xpnet/backends/numpy/pool.py), compiled
 * without floating-point contraction. */
#include <stddef.h>

#include "xpnet_kernels.h"

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
                                if (g3 == 1 && a3 == 1) /* all channels-last: a vectorized loop */     \
                                    for (int c = 0; c < C; c++)                                         \
                                        d[c] = aq[c] == k ? gq[c] : (T)0;                               \
                                else                                                                    \
                                    for (int c = 0; c < C; c++)                                         \
                                        d[c] = aq[c * a3] == k ? gq[c * g3] : (T)0;                     \
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

/* The 2x2, stride-2 window on planes in 8-wide float32 vectors (GCC/Clang vector extensions): the
 * even and odd columns of two input rows are split by shuffles, and the winner rule above runs as
 * masks. Each returns how many outputs of the row it did (a multiple of 8); the scalar loop does the
 * rest. float64 rows take the scalar loop throughout (the _f64 versions do nothing). */
#include <string.h>
typedef float xp_v8f __attribute__((vector_size(32)));
typedef int xp_v8i __attribute__((vector_size(32)));
typedef unsigned char xp_v8b __attribute__((vector_size(8)));

static inline xp_v8f xp_blend(xp_v8i take, xp_v8f a, xp_v8f b) {
    return (xp_v8f)(((xp_v8i)a & take) | ((xp_v8i)b & ~take));
}

/* 8 outputs of the 2x2 window from rows r0, r1 (16 values each from 2q). */
static inline void pool2_fwd8(const float *r0, const float *r1, float *yr, unsigned char *ar) {
    xp_v8f a, b, c, d;
    memcpy(&a, r0, 32);
    memcpy(&b, r0 + 8, 32);
    memcpy(&c, r1, 32);
    memcpy(&d, r1 + 8, 32);
    xp_v8f best = __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14);
    xp_v8f v1 = __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15);
    xp_v8f v2 = __builtin_shufflevector(c, d, 0, 2, 4, 6, 8, 10, 12, 14);
    xp_v8f v3 = __builtin_shufflevector(c, d, 1, 3, 5, 7, 9, 11, 13, 15);
    xp_v8i k = {0, 0, 0, 0, 0, 0, 0, 0};
    xp_v8i take = (v1 > best) | (v1 != v1);
    best = xp_blend(take, v1, best);
    k = (take & 1) | (k & ~take);
    take = (v2 > best) | (v2 != v2);
    best = xp_blend(take, v2, best);
    k = (take & 2) | (k & ~take);
    take = (v3 > best) | (v3 != v3);
    best = xp_blend(take, v3, best);
    k = (take & 3) | (k & ~take);
    memcpy(yr, &best, 32);
    xp_v8b kb = __builtin_convertvector(k, xp_v8b);
    memcpy(ar, &kb, 8);
}

/* A whole output row in vectors; a last partial group (or a row under 8 outputs: the scalar loop's
 * compares mispredict on random data, ~10 ns an output) goes through zero-padded copies. */
static int pool2_fwd_row_f32(const float *r0, const float *r1, float *yr, unsigned char *ar, int OW) {
    int q = 0;
    for (; q + 8 <= OW; q += 8)
        pool2_fwd8(r0 + 2 * q, r1 + 2 * q, yr + q, ar + q);
    if (q < OW) {
        const int m = OW - q;
        float a[16] = {0.0f}, c[16] = {0.0f}, y8[8];
        unsigned char k8[8];
        memcpy(a, r0 + 2 * q, (size_t)(2 * m) * sizeof(float));
        memcpy(c, r1 + 2 * q, (size_t)(2 * m) * sizeof(float));
        pool2_fwd8(a, c, y8, k8);
        memcpy(yr + q, y8, (size_t)m * sizeof(float));
        memcpy(ar + q, k8, (size_t)m);
    }
    return OW;
}

/* The gradients of 8 outputs' windows into rows d0, d1 (16 values each from 2q). */
static inline void pool2_bwd8(const float *gr, const unsigned char *ar, float *d0, float *d1) {
    xp_v8f gv;
    xp_v8b kb;
    memcpy(&gv, gr, 32);
    memcpy(&kb, ar, 8);
    xp_v8i k = __builtin_convertvector(kb, xp_v8i), gi = (xp_v8i)gv;
    xp_v8f w0 = (xp_v8f)(gi & (k == 0)), w1 = (xp_v8f)(gi & (k == 1));
    xp_v8f w2 = (xp_v8f)(gi & (k == 2)), w3 = (xp_v8f)(gi & (k == 3));
    xp_v8f lo = __builtin_shufflevector(w0, w1, 0, 8, 1, 9, 2, 10, 3, 11);
    xp_v8f hi = __builtin_shufflevector(w0, w1, 4, 12, 5, 13, 6, 14, 7, 15);
    memcpy(d0, &lo, 32);
    memcpy(d0 + 8, &hi, 32);
    lo = __builtin_shufflevector(w2, w3, 0, 8, 1, 9, 2, 10, 3, 11);
    hi = __builtin_shufflevector(w2, w3, 4, 12, 5, 13, 6, 14, 7, 15);
    memcpy(d1, &lo, 32);
    memcpy(d1 + 8, &hi, 32);
}

static int pool2_bwd_row_f32(const float *gr, const unsigned char *ar, float *d0, float *d1, int OW) {
    int q = 0;
    for (; q + 8 <= OW; q += 8)
        pool2_bwd8(gr + q, ar + q, d0 + 2 * q, d1 + 2 * q);
    if (q < OW) { /* through zero-padded copies, as the forward */
        const int m = OW - q;
        float g8[8] = {0.0f}, e0[16], e1[16];
        unsigned char k8[8] = {0};
        memcpy(g8, gr + q, (size_t)m * sizeof(float));
        memcpy(k8, ar + q, (size_t)m);
        pool2_bwd8(g8, k8, e0, e1);
        memcpy(d0 + 2 * q, e0, (size_t)(2 * m) * sizeof(float));
        memcpy(d1 + 2 * q, e1, (size_t)(2 * m) * sizeof(float));
    }
    return OW;
}

static int pool2_fwd_row_f64(const double *r0, const double *r1, double *yr, unsigned char *ar, int OW) {
    (void)r0, (void)r1, (void)yr, (void)ar, (void)OW;
    return 0;
}

static int pool2_bwd_row_f64(const double *gr, const unsigned char *ar, double *d0, double *d1, int OW) {
    (void)gr, (void)ar, (void)d0, (void)d1, (void)OW;
    return 0;
}

/* Max pooling over (H, W) planes (NCHW memory, or the channel-major planes of the few-channel
 * convolution): P planes `x_plane` elements apart, rows `x_row` apart, columns contiguous; y and arg
 * are (P, OH, OW) contiguous. The winner rule is the one above. Each output starts at -inf with its
 * window's first inside offset (so a window of -inf keeps that one, as when the first inside element
 * is taken outright); then for each offset (i, j) in order a whole output row is swept over the
 * columns whose window element is inside, so that the loop over q is branch-free and vectorizes. */
#define XP_POOL_ROW(T, SW_EXPR)                                                                         \
    for (int q = q0; q < q1; q++) {                                                                     \
        T v = xr[q * (SW_EXPR)], b = yr[q];                                                             \
        int take = v > b || v != v;                                                                     \
        yr[q] = take ? v : b;                                                                           \
        ar[q] = take ? k : ar[q];                                                                       \
    }
#define XP_POOL_PLANES(T, SUF, NEG_INF)                                                                  \
    void xp_max_pool_planes_fwd_##SUF(const T *x, ptrdiff_t x_plane, ptrdiff_t x_row, ptrdiff_t P, int H,  \
                                      int W, T *y, unsigned char *arg, int OH, int OW, int kh, int kw,    \
                                      int sh, int sw, int pt, int pl, int dh, int dw) {                   \
        if (kh == 2 && kw == 2 && sh == 2 && sw == 2 && pt == 0 && pl == 0 && dh == 1 && dw == 1 &&        \
            2 * OH <= H && 2 * OW <= W) { /* the common 2x2 window: one pass per output row */         \
            for (ptrdiff_t n = 0; n < P; n++)                                                           \
                for (int p = 0; p < OH; p++) {                                                          \
                    const T *r0 = x + n * x_plane + (ptrdiff_t)(2 * p) * x_row, *r1 = r0 + x_row;       \
                    T *yr = y + (n * OH + p) * (ptrdiff_t)OW;                                           \
                    unsigned char *ar = arg + (n * OH + p) * (ptrdiff_t)OW;                             \
                    for (int q = pool2_fwd_row_##SUF(r0, r1, yr, ar, OW); q < OW; q++) {                  \
                        T best = r0[2 * q], v;                                                          \
                        unsigned char k = 0;                                                            \
                        int take;                                                                       \
                        v = r0[2 * q + 1];                                                              \
                        take = v > best || v != v;                                                      \
                        best = take ? v : best;                                                         \
                        k = take ? 1 : k;                                                               \
                        v = r1[2 * q];                                                                  \
                        take = v > best || v != v;                                                      \
                        best = take ? v : best;                                                         \
                        k = take ? 2 : k;                                                               \
                        v = r1[2 * q + 1];                                                              \
                        take = v > best || v != v;                                                      \
                        yr[q] = take ? v : best;                                                        \
                        ar[q] = take ? 3 : k;                                                           \
                    }                                                                                   \
                }                                                                                       \
            return;                                                                                     \
        }                                                                                               \
        for (ptrdiff_t n = 0; n < P; n++)                                                               \
            for (int p = 0; p < OH; p++) {                                                              \
                T *yr = y + (n * OH + p) * (ptrdiff_t)OW;                                               \
                unsigned char *ar = arg + (n * OH + p) * (ptrdiff_t)OW;                                 \
                int i0 = 0;                                                                             \
                while (i0 < kh - 1 && p * sh - pt + i0 * dh < 0)                                        \
                    i0++;                                                                               \
                for (int q = 0; q < OW; q++) {                                                          \
                    int j0 = 0;                                                                         \
                    while (j0 < kw - 1 && q * sw - pl + j0 * dw < 0)                                    \
                        j0++;                                                                           \
                    yr[q] = NEG_INF;                                                                    \
                    ar[q] = (unsigned char)(i0 * kw + j0);                                              \
                }                                                                                       \
                for (int i = 0; i < kh; i++) {                                                          \
                    int r = p * sh - pt + i * dh;                                                       \
                    if (r < 0 || r >= H)                                                                \
                        continue;                                                                       \
                    for (int j = 0; j < kw; j++) {                                                      \
                        int off = j * dw - pl; /* column of output q: q sw + off, inside for q0 <= q < q1 */ \
                        int q0 = off >= 0 ? 0 : (-off + sw - 1) / sw;                                   \
                        int q1 = W - 1 - off < 0 ? 0 : (W - 1 - off) / sw + 1;                           \
                        if (q1 > OW)                                                                    \
                            q1 = OW;                                                                    \
                        const T *xr = x + n * x_plane + r * x_row + off;                                \
                        const unsigned char k = (unsigned char)(i * kw + j);                            \
                        if (sw == 2) {                                                                  \
                            XP_POOL_ROW(T, 2)                                                           \
                        } else if (sw == 1) {                                                           \
                            XP_POOL_ROW(T, 1)                                                           \
                        } else {                                                                        \
                            XP_POOL_ROW(T, sw)                                                          \
                        }                                                                               \
                    }                                                                                   \
                }                                                                                       \
            }                                                                                           \
    }                                                                                                   \
    void xp_max_pool_planes_bwd_##SUF(const T *g, const unsigned char *arg, ptrdiff_t P, int OH, int OW,  \
                                      T *dx, ptrdiff_t x_plane, ptrdiff_t x_row, int H, int W, int kh,     \
                                      int kw, int sh, int sw, int pt, int pl, int dh, int dw, int tiles) { \
        if (tiles && kh == 2 && kw == 2) { /* the common 2x2 window: both rows of a window in one pass */ \
            for (ptrdiff_t n = 0; n < P; n++)                                                           \
                for (int p = 0; p < OH; p++) {                                                          \
                    const T *gr = g + (n * OH + p) * (ptrdiff_t)OW;                                     \
                    const unsigned char *ar = arg + (n * OH + p) * (ptrdiff_t)OW;                       \
                    T *d0 = dx + n * x_plane + (ptrdiff_t)(2 * p) * x_row, *d1 = d0 + x_row;            \
                    for (int q = pool2_bwd_row_##SUF(gr, ar, d0, d1, OW); q < OW; q++) {                  \
                        const T gv = gr[q];                                                             \
                        const unsigned char k = ar[q];                                                  \
                        d0[2 * q] = k == 0 ? gv : (T)0;                                                 \
                        d0[2 * q + 1] = k == 1 ? gv : (T)0;                                             \
                        d1[2 * q] = k == 2 ? gv : (T)0;                                                 \
                        d1[2 * q + 1] = k == 3 ? gv : (T)0;                                             \
                    }                                                                                   \
                }                                                                                       \
            return;                                                                                     \
        }                                                                                               \
        if (tiles) { /* windows tile dx exactly (no padding, stride = kernel): every element written */ \
            for (ptrdiff_t n = 0; n < P; n++)                                                           \
                for (int p = 0; p < OH; p++) {                                                          \
                    const T *gr = g + (n * OH + p) * (ptrdiff_t)OW;                                     \
                    const unsigned char *ar = arg + (n * OH + p) * (ptrdiff_t)OW;                       \
                    for (int i = 0; i < kh; i++) {                                                      \
                        T *dr = dx + n * x_plane + (ptrdiff_t)(p * kh + i) * x_row;                     \
                        for (int j = 0; j < kw; j++) {                                                  \
                            const unsigned char k = (unsigned char)(i * kw + j);                        \
                            for (int q = 0; q < OW; q++)                                                \
                                dr[q * kw + j] = ar[q] == k ? gr[q] : (T)0;                             \
                        }                                                                               \
                    }                                                                                   \
                }                                                                                       \
            return;                                                                                     \
        }                                                                                               \
        /* dx zeroed by the caller: each window's g added to its winner */                             \
        ptrdiff_t delta[256];                                                                           \
        for (int k = 0; k < 256; k++)                                                                   \
            delta[k] = (ptrdiff_t)(k / kw) * dh * x_row + (ptrdiff_t)(k % kw) * dw;                      \
        for (ptrdiff_t n = 0; n < P; n++)                                                               \
            for (int p = 0; p < OH; p++) {                                                              \
                const T *gr = g + (n * OH + p) * (ptrdiff_t)OW;                                         \
                const unsigned char *ar = arg + (n * OH + p) * (ptrdiff_t)OW;                           \
                T *corner = dx + n * x_plane + (ptrdiff_t)(p * sh - pt) * x_row - pl;                   \
                for (int q = 0; q < OW; q++)                                                            \
                    corner[(ptrdiff_t)q * sw + delta[ar[q]]] += gr[q];                                  \
            }                                                                                           \
        (void)H;                                                                                        \
        (void)W;                                                                                        \
    }

XP_POOL_PLANES(float, f32, -__builtin_inff())
XP_POOL_PLANES(double, f64, -__builtin_inf())
