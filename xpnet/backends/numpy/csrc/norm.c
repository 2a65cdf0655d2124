/* Batch norm of the NumPy backend (float32 and float64; xpnet/backends/numpy/norm.py), compiled
 * without floating-point contraction: each operation rounds as the NumPy expression it replaces does. */
#include <stddef.h>

#include "xpnet_kernels.h"

/* Batch norm on the (M, C) channels-last matrix (norm.py: batch_norm_forward/backward), the
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
