/* Direct convolution in NHWC (float32), the compiled path of the NumPy backend's convolutions with
 * small images and a few dozen channels (see xpnet/backends/numpy/direct.py), compiled with
 * floating-point contraction (fused multiply-adds).
 *
 * Geometry. The input is zero-framed NHWC, (N, Hp, Wp, C) contiguous; output positions q run over the
 * flattened (n, oy, ox) grid of (N, OH, OW), and position q reads its receptive field from
 *     base(q) = ((n Hp + oy SH) Wp + ox SW) C,   tap t = (i, j):  off[t] = (i DH Wp + j DW) C,
 * so with W as (T C, O) rows in (i, j, c) order (T = KH KW taps):
 *
 *     y[q, o]      = b[o] + sum_t sum_c W[t C + c, o] x[base(q) + off[t] + c]          (xp_direct_conv)
 *     dW[t C + c, o] += sum_q x[base(q) + off[t] + c] G[q, o]                          (xp_direct_conv_dw)
 *
 * The input gradient of a stride-1 convolution is the first form again, over the zero-framed G with
 * the flipped, transposed kernel (direct.py). Output channels go in vectors of xp_direct_lanes()
 * floats (16 where the compiler targets AVX-512, else 8); W comes padded with zero columns to Op, a
 * whole number of vectors, and the last vector of y, G and dW is stored and loaded in part.
 *
 * Register blocking. The forward keeps PB positions x up to 2 vectors of output channels in
 * accumulators: per (tap, channel) it loads one weight row (1-2 vectors) and broadcasts one input
 * value per position, so every weight load feeds PB fused multiply-adds. The weight gradient keeps
 * CB input channels x up to 2 vectors of output channels: per position it loads the G row once and
 * broadcasts CB input values; positions go in chunks of DW_CHUNK whose G rows stay in cache while
 * every (tap, channel block, output block) streams over them.
 */
#include <stddef.h>
#include <string.h>

#include "xpnet_kernels.h"
#include "xpnet_parallel.h"

#if defined(__AVX512F__)
#define LANES 16
#define PB 8 /* forward positions per block: 2 x 8 zmm accumulators of 32 */
#define CB 8 /* weight-gradient input channels per block */
#else
#define LANES 8
#define PB 6 /* 2 x 6 ymm accumulators of 16 */
#define CB 6
#endif
#define DW_CHUNK 256

typedef float vf __attribute__((vector_size(LANES * sizeof(float))));

#define XP_INLINE static inline __attribute__((always_inline))

XP_INLINE vf loadv(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
XP_INLINE void storev(float *p, vf v) { memcpy(p, &v, sizeof v); }
XP_INLINE vf splatv(float s) { /* one vbroadcastss, folded into the multiply-add where it can */
#if LANES == 16
    vf v = {s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s};
#else
    vf v = {s, s, s, s, s, s, s, s};
#endif
    return v;
}

int xp_direct_lanes(void) { return LANES; }

/* Where output positions start reading: base(q) for np consecutive positions from (n, oy, ox), which
 * advance (the caller's walk over the flattened grid). */
struct walk {
    ptrdiff_t n, oy, ox;
};

struct geom {
    ptrdiff_t Hp, Wp, C, OH, OW, SH, SW;
};

XP_INLINE ptrdiff_t base_of(const struct geom *g, const struct walk *w) {
    return ((w->n * g->Hp + w->oy * g->SH) * g->Wp + w->ox * g->SW) * g->C;
}

XP_INLINE void advance(const struct geom *g, struct walk *w) {
    if (++w->ox == g->OW) {
        w->ox = 0;
        if (++w->oy == g->OH) {
            w->oy = 0;
            w->n++;
        }
    }
}

XP_INLINE struct walk walk_at(const struct geom *g, ptrdiff_t q) {
    struct walk w;
    w.ox = q % g->OW;
    w.oy = (q / g->OW) % g->OH;
    w.n = q / (g->OW * g->OH);
    return w;
}

/* Stores the first `lanes` of v (all of them when lanes == LANES). */
XP_INLINE void store_part(float *p, vf v, int lanes) {
    if (lanes == LANES) {
        storev(p, v);
    } else {
        float tmp[LANES];
        storev(tmp, v);
        memcpy(p, tmp, (size_t)lanes * sizeof(float));
    }
}

/* A vector of the first `lanes` floats at p, zeros after them. */
XP_INLINE vf load_part(const float *p, int lanes) {
    if (lanes == LANES)
        return loadv(p);
    float tmp[LANES] = {0.0f};
    memcpy(tmp, p, (size_t)lanes * sizeof(float));
    return loadv(tmp);
}

/* y rows (O apart) of NP (1..PB) positions, output channels [o0, o0 + OV LANES), OV 1 or 2, the last
 * vector's first `last` lanes only (W rows Op apart, padded with zeros to whole vectors, and b too);
 * NP and OV are constants after inlining. */
XP_INLINE void fwd_block(const float *x, const ptrdiff_t *base, const ptrdiff_t *off, int T, int C,
                         const float *w, ptrdiff_t Op, const float *b, float *y, ptrdiff_t O, ptrdiff_t o0,
                         int last, const int NP, const int OV) {
    vf acc[PB][2];
    vf b0 = b ? loadv(b + o0) : splatv(0.0f);
    vf b1 = OV > 1 ? (b ? loadv(b + o0 + LANES) : splatv(0.0f)) : b0;
    for (int p = 0; p < NP; p++) {
        acc[p][0] = b0;
        acc[p][1] = b1;
    }
    for (int t = 0; t < T; t++) {
        const float *wt = w + (ptrdiff_t)t * C * Op + o0;
        const float *xt = x + off[t];
        for (int c = 0; c < C; c++) {
            vf w0 = loadv(wt + c * Op);
            vf w1 = OV > 1 ? loadv(wt + c * Op + LANES) : w0;
            for (int p = 0; p < NP; p++) {
                vf xs = splatv(xt[base[p] + c]);
                acc[p][0] += xs * w0;
                if (OV > 1)
                    acc[p][1] += xs * w1;
            }
        }
    }
    for (int p = 0; p < NP; p++) {
        if (OV > 1) {
            storev(y + p * O + o0, acc[p][0]);
            store_part(y + p * O + o0 + LANES, acc[p][1], last);
        } else {
            store_part(y + p * O + o0, acc[p][0], last);
        }
    }
}

#define FWD(NP)                                                                                         \
    case NP:                                                                                            \
        if (ov == 2)                                                                                    \
            fwd_block(j->x, base, j->off, j->T, (int)g->C, j->w, j->Op, j->b, yq, j->O, o0, last, NP, 2); \
        else                                                                                            \
            fwd_block(j->x, base, j->off, j->T, (int)g->C, j->w, j->Op, j->b, yq, j->O, o0, last, NP, 1); \
        break;

struct fwd_job {
    struct geom g;
    const float *x, *w, *b;
    const ptrdiff_t *off;
    int T;
    ptrdiff_t O, Op;
    float *y;
};

static void fwd_part(void *ctx, ptrdiff_t q0, ptrdiff_t q1, int part) {
    (void)part;
    const struct fwd_job *j = ctx;
    const struct geom *g = &j->g;
    struct walk at = walk_at(g, q0);
    ptrdiff_t base[PB];
    for (ptrdiff_t q = q0; q < q1; q += PB) {
        const int np = q1 - q < PB ? (int)(q1 - q) : PB;
        for (int p = 0; p < np; p++) {
            base[p] = base_of(g, &at);
            advance(g, &at);
        }
        float *yq = j->y + q * j->O;
        for (ptrdiff_t o0 = 0; o0 < j->O; o0 += 2 * LANES) {
            const ptrdiff_t left = j->O - o0;
            const int ov = left > LANES ? 2 : 1;
            const int last = left >= ov * LANES ? LANES : (int)(left - (ov - 1) * LANES);
            switch (np) {
#if PB == 8
                FWD(8)
                FWD(7)
#endif
                FWD(6)
                FWD(5)
                FWD(4)
                FWD(3)
                FWD(2)
            default:
                if (ov == 2)
                    fwd_block(j->x, base, j->off, j->T, (int)g->C, j->w, j->Op, j->b, yq, j->O, o0, last, 1, 2);
                else
                    fwd_block(j->x, base, j->off, j->T, (int)g->C, j->w, j->Op, j->b, yq, j->O, o0, last, 1, 1);
                break;
            }
        }
    }
}

void xp_direct_conv(const float *x, ptrdiff_t Hp, ptrdiff_t Wp, ptrdiff_t C, const ptrdiff_t *off, int T,
                    const float *w, ptrdiff_t O, ptrdiff_t Op, const float *b, ptrdiff_t N, ptrdiff_t OH,
                    ptrdiff_t OW, ptrdiff_t SH, ptrdiff_t SW, float *y, int parts) {
    struct fwd_job job = {{Hp, Wp, C, OH, OW, SH, SW}, x, w, b, off, T, O, Op, y};
    xp_run_parts(fwd_part, &job, N * OH * OW, parts);
}

/* dw[(t C + c0 + k) O + o0 + ...] += sum over the np positions of x[base[q] + off + c0 + k] G[q, o],
 * KB (1..CB) channels k, OV (1-2) vectors of output channels, the last one's first `last` lanes only
 * (G rows and dW rows O apart); KB and OV are constants after inlining. */
XP_INLINE void dw_block(const float *x, const ptrdiff_t *base, ptrdiff_t off, const float *g, ptrdiff_t O,
                        ptrdiff_t np, float *dw, int last, const int KB, const int OV) {
    vf acc[CB][2];
    for (int k = 0; k < KB; k++) {
        acc[k][0] = splatv(0.0f);
        acc[k][1] = acc[k][0];
    }
    for (ptrdiff_t q = 0; q < np; q++) {
        const float *gq = g + q * O;
        vf g0, g1;
        if (OV > 1) {
            g0 = loadv(gq);
            g1 = load_part(gq + LANES, last);
        } else {
            g0 = load_part(gq, last);
            g1 = g0;
        }
        const float *xq = x + base[q] + off;
        for (int k = 0; k < KB; k++) {
            vf xs = splatv(xq[k]);
            acc[k][0] += xs * g0;
            if (OV > 1)
                acc[k][1] += xs * g1;
        }
    }
    for (int k = 0; k < KB; k++) {
        float *row = dw + k * O;
        if (OV > 1) {
            storev(row, loadv(row) + acc[k][0]);
            store_part(row + LANES, load_part(row + LANES, last) + acc[k][1], last);
        } else {
            store_part(row, load_part(row, last) + acc[k][0], last);
        }
    }
}

/* whole vectors (`last` the constant LANES: no partial loads in the loop) or a partial last one */
#define DW_OV(KB, LAST)                                                                                 \
    if (ov == 2)                                                                                        \
        dw_block(j->x, base, j->off[t] + c0, gc, j->O, np, dwt, LAST, KB, 2);                           \
    else                                                                                                \
        dw_block(j->x, base, j->off[t] + c0, gc, j->O, np, dwt, LAST, KB, 1);
#define DW(KB)                                                                                          \
    case KB:                                                                                            \
        if (last == LANES) {                                                                            \
            DW_OV(KB, LANES)                                                                            \
        } else {                                                                                        \
            DW_OV(KB, last)                                                                             \
        }                                                                                               \
        break;

struct dw_job {
    struct geom g;
    const float *x, *gr;
    const ptrdiff_t *off;
    int T;
    ptrdiff_t O;
    float *dw;
};

static void dw_part(void *ctx, ptrdiff_t n0, ptrdiff_t n1, int part) {
    const struct dw_job *j = ctx;
    const struct geom *g = &j->g;
    const ptrdiff_t C = g->C, O = j->O;
    const ptrdiff_t q0 = n0 * g->OH * g->OW, q1 = n1 * g->OH * g->OW;
    float *dw = j->dw + (ptrdiff_t)part * j->T * C * O;
    struct walk at = walk_at(g, q0);
    ptrdiff_t base[DW_CHUNK];
    for (ptrdiff_t qc = q0; qc < q1; qc += DW_CHUNK) {
        const ptrdiff_t np = q1 - qc < DW_CHUNK ? q1 - qc : DW_CHUNK;
        for (ptrdiff_t p = 0; p < np; p++) {
            base[p] = base_of(g, &at);
            advance(g, &at);
        }
        for (int t = 0; t < j->T; t++) {
            for (ptrdiff_t c0 = 0; c0 < C; c0 += CB) {
                const int kb = C - c0 < CB ? (int)(C - c0) : CB;
                for (ptrdiff_t o0 = 0; o0 < O; o0 += 2 * LANES) {
                    const ptrdiff_t left = O - o0;
                    const int ov = left > LANES ? 2 : 1;
                    const int last = left >= ov * LANES ? LANES : (int)(left - (ov - 1) * LANES);
                    const float *gc = j->gr + qc * O + o0;
                    float *dwt = dw + ((ptrdiff_t)t * C + c0) * O + o0;
                    switch (kb) {
#if CB == 8
                        DW(8)
                        DW(7)
#endif
                        DW(6)
                        DW(5)
                        DW(4)
                        DW(3)
                        DW(2)
                        DW(1)
                    }
                }
            }
        }
    }
}

void xp_direct_conv_dw(const float *x, ptrdiff_t Hp, ptrdiff_t Wp, ptrdiff_t C, const ptrdiff_t *off, int T,
                       const float *g, ptrdiff_t O, ptrdiff_t N, ptrdiff_t OH, ptrdiff_t OW, ptrdiff_t SH,
                       ptrdiff_t SW, float *dw, int parts) {
    struct dw_job job = {{Hp, Wp, C, OH, OW, SH, SW}, x, g, off, T, O, dw};
    xp_run_parts(dw_part, &job, N, parts);
}

/* Zero-framed NHWC copies: dst (N, Hp, Wp, C) contiguous gets src[n, r, s, c] (element strides s_n,
 * s_h, s_w, s_c) at row top + r, column left + s, zeros elsewhere. top and left may be negative (src
 * cropped) and src may overhang dst: only the overlap is copied. A source with channels innermost
 * copies runs of whole pixels; one with channels outermost (NCHW memory) reads each channel's row
 * contiguously and scatters it C apart. */
struct frame_nhwc_job {
    const float *src;
    ptrdiff_t s_n, s_h, s_w, s_c, H, W, C, Hp, Wp, top, left;
    float *dst;
};

static void frame_nhwc_part(void *ctx, ptrdiff_t n0, ptrdiff_t n1, int part) {
    (void)part;
    const struct frame_nhwc_job *j = ctx;
    const ptrdiff_t C = j->C, Wp = j->Wp, row = Wp * C;
    const ptrdiff_t r0 = j->top > 0 ? j->top : 0, r1 = j->top + j->H < j->Hp ? j->top + j->H : j->Hp;
    const ptrdiff_t c0 = j->left > 0 ? j->left : 0, c1 = j->left + j->W < Wp ? j->left + j->W : Wp;
    for (ptrdiff_t n = n0; n < n1; n++) {
        float *d = j->dst + n * j->Hp * row;
        const float *sn = j->src + n * j->s_n;
        if (r1 <= r0 || c1 <= c0) {
            memset(d, 0, (size_t)(j->Hp * row) * sizeof(float));
            continue;
        }
        memset(d, 0, (size_t)(r0 * row) * sizeof(float));
        for (ptrdiff_t r = r0; r < r1; r++) {
            float *dr = d + r * row;
            const float *sr = sn + (r - j->top) * j->s_h + (c0 - j->left) * j->s_w;
            memset(dr, 0, (size_t)(c0 * C) * sizeof(float));
            const ptrdiff_t cols = c1 - c0;
            float *dc = dr + c0 * C;
            if (j->s_c == 1 && j->s_w == C) {
                memcpy(dc, sr, (size_t)(cols * C) * sizeof(float));
            } else if (j->s_c == 1) {
                for (ptrdiff_t s = 0; s < cols; s++)
                    memcpy(dc + s * C, sr + s * j->s_w, (size_t)C * sizeof(float));
            } else {
                for (ptrdiff_t c = 0; c < C; c++) {
                    const float *sc = sr + c * j->s_c;
                    for (ptrdiff_t s = 0; s < cols; s++)
                        dc[s * C + c] = sc[s * j->s_w];
                }
            }
            memset(dr + c1 * C, 0, (size_t)((Wp - c1) * C) * sizeof(float));
        }
        memset(d + r1 * row, 0, (size_t)((j->Hp - r1) * row) * sizeof(float));
    }
}

void xp_frame_nhwc(const float *src, ptrdiff_t s_n, ptrdiff_t s_h, ptrdiff_t s_w, ptrdiff_t s_c, ptrdiff_t N,
                   ptrdiff_t H, ptrdiff_t W, ptrdiff_t C, float *dst, ptrdiff_t Hp, ptrdiff_t Wp, ptrdiff_t top,
                   ptrdiff_t left, int parts) {
    struct frame_nhwc_job job = {src, s_n, s_h, s_w, s_c, H, W, C, Hp, Wp, top, left, dst};
    xp_run_parts(frame_nhwc_part, &job, N, parts);
}
