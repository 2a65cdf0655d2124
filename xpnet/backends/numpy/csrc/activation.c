/* ReLU of the NumPy backend (float32 and float64; xpnet/backends/numpy/activation.py), compiled
 * without floating-point contraction: each operation rounds as the NumPy expression it replaces does.
 *
 *   xp_relu_fwd:  y = x where x > 0, NaN where x is NaN, else 0
 *   xp_relu_bwd:  dx = g where y > 0 (that is, x > 0), else 0 (the generic `where`: no 0 * inf);
 *                 from the output, as PyTorch does: no mask to write and keep
 */
#include <stddef.h>

#include "xpnet_kernels.h"

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
