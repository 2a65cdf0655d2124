/* Softmax cross-entropy of the NumPy backend (float32 and float64; xpnet/backends/numpy/loss.py), over
 * logits x (M, C) C-contiguous and int64 targets t (M,), compiled without floating-point contraction:
 * each operation rounds as the generic code's (CrossEntropyLoss in xpnet/nn/functional/loss.py) does,
 * except e^x (exp_vec below: within an ulp in double, so float32 values round as NumPy's) and the sum
 * of the exponentials, taken in double.
 *
 * A row's target t_i is a class when 0 <= t_i < C and t_i != ignore_index; the other rows are ignored.
 *
 *   xp_ce_fwd:  per row, m = max_c x_ic, lse = log sum_c e^(x_ic - m), log_p_ic = (x_ic - m) - lse
 *               (a NaN anywhere in the row makes all its log p NaN, as with NumPy's max);
 *               rows_i = -(log_p_{i,t_i} + sum_{c != t_i} 0 log_p_ic)   where t_i is a class,
 *               rows_i = -sum_c 0 log_p_ic                              on an ignored row:
 *               the generic -sum_c A_ic log_p_ic with A one-hot, whose zero terms are NaN at a non-finite
 *               log p, and so are these. out[0]: how many rows have a class; out[1]: the first row whose
 *               target is out of range (t < 0 or t >= C, not ignore_index), or -1 (no x is read there)
 *   xp_ce_bwd:  dx_ic = s_i (e^(log_p_ic) - [c = t_i])  where t_i is a class,
 *               dx_ic = s_i (0 e^(log_p_ic))             on an ignored row
 *               (the generic s_i (p_ic sum_c' A_ic' - A_ic): NaN at an infinite or NaN p, as there);
 *               s_i = s[i s_stride] (s_stride 0: one scale for every row)
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "xpnet_kernels.h"

/* e^x in double for x <= 709 (here x - max and log p: never above 0), branch-free so that the loops over
 * it vectorize (libm's exp does not, and costs about 5 ns a value, most of a small batch's time):
 * x = k ln2 + r, |r| <= ln2/2, e^r by its Taylor polynomial of degree 13 (truncation error below 1e-17),
 * times 2^k as two factors (k read from the bits of the rounding sum), so that a subnormal result rounds
 * once. NaN stays NaN; below -746 (-inf included) gives 0. */
static inline double exp_vec(double x) {
    const double shift = 0x1.8p52; /* adding it rounds to an integer, held in the low bits */
    /* the clamp as copysign(746, x), not the constant -746: with a constant, GCC splits the clamped
     * path off (its result folds to 0) and leaves the loop scalar. A quiet comparison: NaN is kept */
    const double v = isless(x, -746.0) ? copysign(746.0, x) : x;
    const double kshift = v * 1.4426950408889634 + shift;
    const double k = kshift - shift;
    const double r = (v - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10;
    double p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    uint64_t bits;
    memcpy(&bits, &kshift, sizeof bits);
    /* k in [-1077, 1023] (any k for a NaN, whose p is NaN): 2^k = 2^k1 2^(k - k1), k1 = floor(k / 2) */
    const uint64_t kb = (bits & 0xfffffffffffffull) - (1ull << 51), k1 = (uint64_t)((int64_t)kb >> 1);
    const uint64_t b1 = (k1 + 1023) << 52, b2 = (kb - k1 + 1023) << 52;
    double s1, s2;
    memcpy(&s1, &b1, sizeof s1);
    memcpy(&s2, &b2, sizeof s2);
    return p * s1 * s2;
}

/* Three passes over log_p: x - m row by row (m kept in rows), e^(x - m) over the whole array (one
 * vectorized loop, however few the classes), then each row's sum in double (four partial sums), and
 * log p = (x - m) - lse, x - m computed again (the same rounding). m ignores a NaN, but a NaN in the row
 * makes its sum NaN, so every log p of the row is NaN, as with the generic max (NaN). */
#define XP_CE(T, SUF)                                                                                    \
    void xp_ce_fwd_##SUF(const T *restrict x, const int64_t *restrict t, ptrdiff_t M, ptrdiff_t C,       \
                         int64_t ignore_index, T *restrict log_p, T *restrict rows, int64_t *out) {      \
        int64_t count = 0, bad = -1;                                                                     \
        for (ptrdiff_t i = 0; i < M; i++) {                                                              \
            const T *xi = x + i * C;                                                                     \
            T *lp = log_p + i * C;                                                                       \
            T m4[4] = {xi[0], xi[0], xi[0], xi[0]}; /* four maxima at a time: no one chain of compares */ \
            ptrdiff_t c4 = 0;                                                                            \
            for (; c4 + 4 <= C; c4 += 4)                                                                 \
                for (int j = 0; j < 4; j++)                                                              \
                    m4[j] = isgreater(xi[c4 + j], m4[j]) ? xi[c4 + j] : m4[j];                           \
            for (; c4 < C; c4++)                                                                         \
                m4[0] = isgreater(xi[c4], m4[0]) ? xi[c4] : m4[0];                                       \
            const T m01 = isgreater(m4[1], m4[0]) ? m4[1] : m4[0];                                       \
            const T m23 = isgreater(m4[3], m4[2]) ? m4[3] : m4[2];                                       \
            const T m = isgreater(m23, m01) ? m23 : m01;                                                 \
            for (ptrdiff_t c = 0; c < C; c++)                                                            \
                lp[c] = xi[c] - m;                                                                       \
            rows[i] = m;                                                                                 \
        }                                                                                                \
        for (ptrdiff_t k = 0; k < M * C; k++)                                                            \
            log_p[k] = (T)exp_vec((double)log_p[k]);                                                     \
        for (ptrdiff_t i = 0; i < M; i++) {                                                              \
            const T *xi = x + i * C;                                                                     \
            T *lp = log_p + i * C;                                                                       \
            const T m = rows[i];                                                                         \
            double s4[4] = {0.0, 0.0, 0.0, 0.0}; /* four partial sums: no one chain of additions */      \
            ptrdiff_t c4 = 0;                                                                            \
            for (; c4 + 4 <= C; c4 += 4)                                                                 \
                for (int j = 0; j < 4; j++)                                                              \
                    s4[j] += (double)lp[c4 + j];                                                         \
            for (; c4 < C; c4++)                                                                         \
                s4[0] += (double)lp[c4];                                                                 \
            const double sum = (s4[0] + s4[1]) + (s4[2] + s4[3]);                                        \
            const T lse = (T)log(sum);                                                                   \
            for (ptrdiff_t c = 0; c < C; c++)                                                            \
                lp[c] = (xi[c] - m) - lse;                                                               \
            const int64_t ti = t[i];                                                                     \
            if (ti != ignore_index && ti >= 0 && ti < C) { /* the other classes add nothing (PyTorch) */ \
                rows[i] = -lp[ti];                                                                       \
                count++;                                                                                 \
            } else {                                                                                     \
                if (ti != ignore_index && bad < 0)                                                       \
                    bad = i;                                                                             \
                rows[i] = (T)0;                                                                          \
            }                                                                                            \
        }                                                                                                \
        out[0] = count;                                                                                  \
        out[1] = bad;                                                                                    \
    }                                                                                                    \
    void xp_ce_bwd_##SUF(const T *restrict log_p, const int64_t *restrict t, ptrdiff_t M, ptrdiff_t C,   \
                         int64_t ignore_index, const T *s, ptrdiff_t s_stride, T *restrict dx) {         \
        const ptrdiff_t n = M * C;                                                                       \
        for (ptrdiff_t k = 0; k < n; k++)                                                                \
            dx[k] = (T)exp_vec((double)log_p[k]);                                                        \
        for (ptrdiff_t i = 0; i < M; i++) {                                                              \
            T *d = dx + i * C;                                                                           \
            const T si = s[i * s_stride];                                                                \
            const int64_t ti = t[i];                                                                     \
            if (ti != ignore_index && ti >= 0 && ti < C) {                                               \
                const T p_t = d[ti];                                                                     \
                for (ptrdiff_t c = 0; c < C; c++)                                                        \
                    d[c] = si * d[c];                                                                    \
                d[ti] = si * (p_t - (T)1);                                                               \
            } else {                                                                                     \
                for (ptrdiff_t c = 0; c < C; c++)                                                        \
                    d[c] = si * ((T)0 * d[c]);                                                           \
            }                                                                                            \
        }                                                                                                \
    }

XP_CE(float, f32)
XP_CE(double, f64)
