/* Direct few-channel convolution on "wide rows" (float32), the compiled fast path of the NumPy
 * backend's few-channel convolutions (see xpnet/backends/numpy/planar.py: WideConv; the NumPy
 * version is PlanarConv there), compiled with floating-point contraction (fused multiply-adds).
 *
 * Geometry. Each image's channels are planes of row width Wp (the padded input width) laid out one
 * after another; a stride-1 convolution's output is computed Wp wide per row, so output position
 * p = r * Wp + s (s < OW are the true outputs) meets kernel offset (i, j) at plane position
 * p + i * Dh * Wp + j * Dw. With taps flattened over (c, i, j), every tap t is one fixed offset
 * tap[t] = c * plane + i * Dh * Wp + j * Dw from p, so
 *
 *     y[n, o, p] = b[o] + sum_t W[o, t] x[n, p + tap[t]]                    (xp_conv_wide)
 *     dW[o, t]  += sum_n sum_p G[n, o, p] x[n, p + tap[t]]                  (xp_conv_wide_dw)
 *
 * (G zero on the positions that are not true outputs). The input gradient is the first form again,
 * over the zero-framed G with the flipped, transposed kernel (see planar.py: WideConv).
 *
 * Both loops keep blocks of accumulators in vector registers (GCC/Clang vector extensions: AVX2 with
 * -march=native on x86-64, NEON on arm64): the forward loop 4 output channels x 16 positions, the
 * weight-gradient loop 2 output channels x 5 taps x 8 positions. Each image's wide output goes to a
 * small scratch block and only its true columns are copied out, and xp_frame builds the zero-framed
 * planes (summing them on the way: the bias gradient). Callers pad every buffer so that
 * the loops may run past P to the next multiple of 16 (P itself is rounded up by the caller).
 */
#include <stddef.h>
#include <string.h>

#include "xpnet_kernels.h"
#include "xpnet_parallel.h"

typedef float v8 __attribute__((vector_size(32)));

#define XP_INLINE static inline __attribute__((always_inline))

XP_INLINE v8 load8(const float *p) { v8 v; memcpy(&v, p, sizeof v); return v; }
XP_INLINE void store8(float *p, v8 v) { memcpy(p, &v, sizeof v); }
XP_INLINE v8 splat8(float s) { v8 v = {s, s, s, s, s, s, s, s}; return v; }
XP_INLINE float hsum8(v8 v) {
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

/* OB (1-4, a constant after inlining) output channels at 16 positions from p. */
XP_INLINE void fwd_block(const float *x, const ptrdiff_t *tap, int T, const float *w, const float *b,
                         float *y, ptrdiff_t y_ch, ptrdiff_t p, const int OB) {
    v8 a0[4], a1[4];
    for (int q = 0; q < OB; q++) {
        a0[q] = splat8(b ? b[q] : 0.0f);
        a1[q] = a0[q];
    }
    for (int t = 0; t < T; t++) {
        const float *src = x + tap[t] + p;
        v8 x0 = load8(src), x1 = load8(src + 8);
        for (int q = 0; q < OB; q++) {
            v8 wv = splat8(w[(ptrdiff_t)q * T + t]);
            a0[q] += wv * x0;
            a1[q] += wv * x1;
        }
    }
    for (int q = 0; q < OB; q++) {
        store8(y + q * y_ch + p, a0[q]);
        store8(y + q * y_ch + p + 8, a1[q]);
    }
}

/* y[n, o, r, s] = b[o] + sum_t w[o * T + t] x[n * x_img + tap[t] + r * row + col0 + s] for n < N,
 * o < O, r < rows, s < cols: each image's wide output, P = rows * row positions rounded up to 16,
 * goes to `scratch` (O * P16 floats) and its rows are cropped into y (NCHW strides y_img, y_ch, and
 * cols per row). b may be NULL. */
static void conv_wide_images(const float *x, ptrdiff_t x_img, const ptrdiff_t *tap, int T, const float *w,
                             int O, const float *b, ptrdiff_t P16, int rows, int row, int col0, int cols,
                             float *scratch, float *y, ptrdiff_t y_img, ptrdiff_t y_ch, int N) {
    for (int n = 0; n < N; n++) {
        const float *xn = x + n * x_img;
        for (int o0 = 0; o0 < O; o0 += 4) {
            const int ob = O - o0 < 4 ? O - o0 : 4;
            const float *wo = w + (ptrdiff_t)o0 * T;
            const float *bo = b ? b + o0 : NULL;
            float *so = scratch + o0 * P16;
            for (ptrdiff_t p = 0; p < P16; p += 16) {
                switch (ob) {
                case 4: fwd_block(xn, tap, T, wo, bo, so, P16, p, 4); break;
                case 3: fwd_block(xn, tap, T, wo, bo, so, P16, p, 3); break;
                case 2: fwd_block(xn, tap, T, wo, bo, so, P16, p, 2); break;
                default: fwd_block(xn, tap, T, wo, bo, so, P16, p, 1); break;
                }
            }
        }
        for (int o = 0; o < O; o++)
            for (int r = 0; r < rows; r++)
                memcpy(y + n * y_img + o * y_ch + (ptrdiff_t)r * cols, scratch + o * P16 + (ptrdiff_t)r * row + col0,
                       (size_t)cols * sizeof(float));
    }
}

struct conv_wide_job {
    const float *x, *w, *b;
    const ptrdiff_t *tap;
    ptrdiff_t x_img, P16, scratch_part, y_img, y_ch;
    int T, O, rows, row, col0, cols;
    float *scratch, *y;
};

static void conv_wide_part(void *ctx, ptrdiff_t n0, ptrdiff_t n1, int part) {
    const struct conv_wide_job *j = ctx;
    conv_wide_images(j->x + n0 * j->x_img, j->x_img, j->tap, j->T, j->w, j->O, j->b, j->P16, j->rows, j->row,
                     j->col0, j->cols, j->scratch + part * j->scratch_part, j->y + n0 * j->y_img, j->y_img,
                     j->y_ch, (int)(n1 - n0));
}

void xp_conv_wide(const float *x, ptrdiff_t x_img, const ptrdiff_t *tap, int T, const float *w, int O,
                  const float *b, ptrdiff_t P16, int rows, int row, int col0, int cols, float *scratch,
                  ptrdiff_t scratch_part, float *y, ptrdiff_t y_img, ptrdiff_t y_ch, int N, int parts) {
    struct conv_wide_job job = {x, w, b, tap, x_img, P16, scratch_part, y_img, y_ch, T, O, rows, row, col0, cols,
                                scratch, y};
    xp_run_parts(conv_wide_part, &job, N, parts);
}

/* Zero-framed planes: for image n < N and channel c < C, plane dst + n * d_img + c * d_plane gets
 * `head` zeros, then rows of width `row` holding src[n, c, :, :] (H x W, element strides s_n, s_c,
 * s_h, s_w) at row `top`, column `left`, zeros everywhere else up to d_plane. With `sums`, also
 * sums[c] += the sum of src[n, c] (in double). */
static void frame_images(const float *src, ptrdiff_t s_n, ptrdiff_t s_c, ptrdiff_t s_h, ptrdiff_t s_w, int N,
                         int C, int H, int W, float *dst, ptrdiff_t d_img, ptrdiff_t d_plane, int row,
                         ptrdiff_t head, int top, int left, double *sums) {
    for (int n = 0; n < N; n++) {
        for (int c = 0; c < C; c++) {
            const float *sp = src + n * s_n + c * s_c;
            float *d = dst + n * d_img + c * d_plane;
            ptrdiff_t at = head + (ptrdiff_t)top * row;
            memset(d, 0, (size_t)at * sizeof(float));
            double total = 0.0;
            for (int r = 0; r < H; r++) {
                float *dr = d + at + (ptrdiff_t)r * row;
                const float *sr = sp + r * s_h;
                memset(dr, 0, (size_t)left * sizeof(float));
                float part = 0.0f;
                if (s_w == 1) {
                    memcpy(dr + left, sr, (size_t)W * sizeof(float));
                    if (sums)
                        for (int s = 0; s < W; s++)
                            part += sr[s];
                } else {
                    for (int s = 0; s < W; s++) {
                        dr[left + s] = sr[s * s_w];
                        part += sr[s * s_w];
                    }
                }
                total += part;
                memset(dr + left + W, 0, (size_t)(row - left - W) * sizeof(float));
            }
            ptrdiff_t end = at + (ptrdiff_t)H * row;
            memset(d + end, 0, (size_t)(d_plane - end) * sizeof(float));
            if (sums)
                sums[c] += total;
        }
    }
}

struct frame_job {
    const float *src;
    ptrdiff_t s_n, s_c, s_h, s_w, d_img, d_plane, head;
    int C, H, W, row, top, left;
    float *dst;
    double *sums;
};

static void frame_part(void *ctx, ptrdiff_t n0, ptrdiff_t n1, int part) {
    const struct frame_job *j = ctx;
    frame_images(j->src + n0 * j->s_n, j->s_n, j->s_c, j->s_h, j->s_w, (int)(n1 - n0), j->C, j->H, j->W,
                 j->dst + n0 * j->d_img, j->d_img, j->d_plane, j->row, j->head, j->top, j->left,
                 j->sums ? j->sums + (ptrdiff_t)part * j->C : NULL);
}

/* As frame_images, the images split into `parts`; part p adds its sums to sums[p * C + c]. */
void xp_frame(const float *src, ptrdiff_t s_n, ptrdiff_t s_c, ptrdiff_t s_h, ptrdiff_t s_w, int N, int C, int H,
              int W, float *dst, ptrdiff_t d_img, ptrdiff_t d_plane, int row, ptrdiff_t head, int top, int left,
              double *sums, int parts) {
    struct frame_job job = {src, s_n, s_c, s_h, s_w, d_img, d_plane, head, C, H, W, row, top, left, dst, sums};
    xp_run_parts(frame_part, &job, N, parts);
}

/* dw[q * T + k] += sum over the N images and P positions of g[o0 + q] x[tap[k]], for OB (1-2)
 * channels and KB (1-5) taps, both constants after inlining. */
XP_INLINE void dw_block(const float *x, ptrdiff_t x_img, const ptrdiff_t *tap, const float *g,
                        ptrdiff_t g_img, ptrdiff_t g_ch, ptrdiff_t P, int N, float *dw, int T,
                        const int OB, const int KB) {
    v8 acc[2][5];
    for (int q = 0; q < OB; q++)
        for (int k = 0; k < KB; k++)
            acc[q][k] = splat8(0.0f);
    for (int n = 0; n < N; n++) {
        const float *gn = g + n * g_img;
        const float *xn = x + n * x_img;
        for (ptrdiff_t p = 0; p < P; p += 8) {
            v8 g0 = load8(gn + p);
            v8 g1 = OB > 1 ? load8(gn + g_ch + p) : g0;
            for (int k = 0; k < KB; k++) {
                v8 xv = load8(xn + tap[k] + p);
                acc[0][k] += g0 * xv;
                if (OB > 1)
                    acc[1][k] += g1 * xv;
            }
        }
    }
    for (int q = 0; q < OB; q++)
        for (int k = 0; k < KB; k++)
            dw[(ptrdiff_t)q * T + k] += hsum8(acc[q][k]);
}

#define XP_DW(OB, KB) dw_block(xb, x_img, tap + t0, gb + o0 * g_ch, g_img, g_ch, P, nb, dw + (ptrdiff_t)o0 * T + t0, T, OB, KB)
#define XP_DW_TAPS(OB)                                                                                  \
    switch (kb) {                                                                                       \
    case 5: XP_DW(OB, 5); break;                                                                        \
    case 4: XP_DW(OB, 4); break;                                                                        \
    case 3: XP_DW(OB, 3); break;                                                                        \
    case 2: XP_DW(OB, 2); break;                                                                        \
    default: XP_DW(OB, 1); break;                                                                       \
    }

/* dw[o * T + t] += sum_n sum_{p < P} g[n * g_img + o * g_ch + p] x[n * x_img + tap[t] + p]
 * (P a multiple of 8). Images go in groups of `block` so that a group's planes stay in cache while
 * every (channel, tap) block streams over them; 2 channels x 5 taps keep 10 accumulators. */
static void conv_wide_dw_images(const float *x, ptrdiff_t x_img, const ptrdiff_t *tap, int T, const float *g,
                                ptrdiff_t g_img, ptrdiff_t g_ch, int O, ptrdiff_t P, int N, int block, float *dw) {
    if (block < 1)
        block = 1;
    for (int n0 = 0; n0 < N; n0 += block) {
        const int nb = N - n0 < block ? N - n0 : block;
        const float *xb = x + n0 * x_img;
        const float *gb = g + n0 * g_img;
        for (int o0 = 0; o0 < O; o0 += 2) {
            const int ob = O - o0 < 2 ? O - o0 : 2;
            for (int t0 = 0; t0 < T; t0 += 5) {
                const int kb = T - t0 < 5 ? T - t0 : 5;
                if (ob == 2) {
                    XP_DW_TAPS(2)
                } else {
                    XP_DW_TAPS(1)
                }
            }
        }
    }
}

struct dw_job {
    const float *x, *g;
    const ptrdiff_t *tap;
    ptrdiff_t x_img, g_img, g_ch, P;
    int T, O, block;
    float *dw;
};

static void dw_part(void *ctx, ptrdiff_t n0, ptrdiff_t n1, int part) {
    const struct dw_job *j = ctx;
    conv_wide_dw_images(j->x + n0 * j->x_img, j->x_img, j->tap, j->T, j->g + n0 * j->g_img, j->g_img, j->g_ch, j->O,
                        j->P, (int)(n1 - n0), j->block, j->dw + (ptrdiff_t)part * j->O * j->T);
}

/* As conv_wide_dw_images, the images split into `parts`; part p adds to its own dw + p O T. */
void xp_conv_wide_dw(const float *x, ptrdiff_t x_img, const ptrdiff_t *tap, int T, const float *g,
                     ptrdiff_t g_img, ptrdiff_t g_ch, int O, ptrdiff_t P, int N, int block, float *dw, int parts) {
    struct dw_job job = {x, g, tap, x_img, g_img, g_ch, P, T, O, block, dw};
    xp_run_parts(dw_part, &job, N, parts);
}
