/* Optimizer steps of the NumPy backend (float32 and float64; xpnet/backends/numpy/optim.py), compiled
 * without floating-point contraction: each operation rounds as the generic update's does. */
#include <stddef.h>

#include "xpnet_kernels.h"

/* One SGD update of n elements, the operations and roundings of the generic rule
 * (xpnet.optim.SGD.update) in their order:
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

/* The SGD update of every tensor of a parameter group, one after the other, each by xp_sgd itself
 * (the same operations, so the same bits as one call per tensor): one call from Python for the whole
 * group instead of one per parameter. The tables hold addresses as int64 (NumPy fills them); buf is
 * NULL without momentum. A fresh buffer (zeros, made for this step) takes its first momentum step
 * undamped, as the per-parameter kernel does. */
#define XP_SGD_GROUP(T, SUF)                                                                             \
    void xp_sgd_group_##SUF(const int64_t *w, const int64_t *g, const int64_t *buf, const int64_t *n,  \
                            const unsigned char *fresh, ptrdiff_t count, T neg_lr, int decay, T wd,      \
                            int maximize, T mu, T damp_keep, int damped, int nesterov) {                 \
        for (ptrdiff_t t = 0; t < count; t++) {                                                         \
            T *b = buf ? (T *)(intptr_t)buf[t] : NULL;                                                  \
            xp_sgd_##SUF((T *)(intptr_t)w[t], (const T *)(intptr_t)g[t], b, (ptrdiff_t)n[t], neg_lr,    \
                         decay, wd, maximize, mu, damp_keep, (fresh && fresh[t]) ? 0 : damped,          \
                         nesterov);                                                                     \
        }                                                                                               \
    }

XP_SGD_GROUP(float, f32)
XP_SGD_GROUP(double, f64)
