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
