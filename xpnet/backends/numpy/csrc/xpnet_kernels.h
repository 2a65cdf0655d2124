/* Every function the NumPy backend's compiled kernels export, declared once.
 *
 * Each .c file here includes this header, so the compiler holds every definition to its declaration
 * (a mismatch is a build error), and the build's -Werror=missing-prototypes makes an exported function
 * declared nowhere here one too. The Python side reads its ctypes signatures from this file
 * (xpnet/backends/numpy/header.py): keep to one plain prototype per function,
 *     void name(type a, type b, ...);
 * with the types that parser knows (int, long, ptrdiff_t, size_t, int32_t, int64_t, float, double and
 * pointers to them, to unsigned char or to void; const allowed). What each function computes is
 * described beside its definition.
 */
#ifndef XPNET_KERNELS_H
#define XPNET_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* parallel.c: the kernels' worker threads (threads in all, the caller's included; spin_us: how long
 * an idle worker waits for the next part before it sleeps) */
void xp_threads_configure(int threads, int spin_us);

/* conv.c: few-channel float32 convolutions on wide rows (-ffp-contract=fast); the images split into
 * `parts` over the worker threads, each part with its own slice of scratch (scratch_part floats
 * apart), of the channel sums (C doubles apart) and of the weight gradient (O T floats apart) */
void xp_conv_wide(const float *x, ptrdiff_t x_img, const ptrdiff_t *tap, int T, const float *w, int O,
                  const float *b, ptrdiff_t P16, int rows, int row, int col0, int cols, float *scratch,
                  ptrdiff_t scratch_part, float *y, ptrdiff_t y_img, ptrdiff_t y_ch, int N, int parts);
void xp_frame(const float *src, ptrdiff_t s_n, ptrdiff_t s_c, ptrdiff_t s_h, ptrdiff_t s_w, int N, int C, int H,
              int W, float *dst, ptrdiff_t d_img, ptrdiff_t d_plane, int row, ptrdiff_t head, int top, int left,
              double *sums, int parts);
void xp_conv_wide_dw(const float *x, ptrdiff_t x_img, const ptrdiff_t *tap, int T, const float *g,
                     ptrdiff_t g_img, ptrdiff_t g_ch, int O, ptrdiff_t P, int N, int block, float *dw, int parts);

/* direct.c: direct NHWC float32 convolutions (-ffp-contract=fast) over zero-framed input, W's rows (and
 * the bias) padded with zeros to Op, a multiple of xp_direct_lanes(); split into `parts` over the
 * worker threads: the output positions, or for the weight gradient the images, part p adding its
 * partial to dw + p T C O */
int xp_direct_lanes(void);
void xp_direct_conv(const float *x, ptrdiff_t Hp, ptrdiff_t Wp, ptrdiff_t C, const ptrdiff_t *off, int T,
                    const float *w, ptrdiff_t O, ptrdiff_t Op, const float *b, ptrdiff_t N, ptrdiff_t OH,
                    ptrdiff_t OW, ptrdiff_t SH, ptrdiff_t SW, float *y, int parts);
void xp_direct_conv_dw(const float *x, ptrdiff_t Hp, ptrdiff_t Wp, ptrdiff_t C, const ptrdiff_t *off, int T,
                       const float *g, ptrdiff_t O, ptrdiff_t N, ptrdiff_t OH, ptrdiff_t OW, ptrdiff_t SH,
                       ptrdiff_t SW, float *dw, int parts);
void xp_frame_nhwc(const float *src, ptrdiff_t s_n, ptrdiff_t s_h, ptrdiff_t s_w, ptrdiff_t s_c, ptrdiff_t N,
                   ptrdiff_t H, ptrdiff_t W, ptrdiff_t C, float *dst, ptrdiff_t Hp, ptrdiff_t Wp, ptrdiff_t top,
                   ptrdiff_t left, int parts);

/* winograd.c: Winograd F(2x2, 3x3) transforms (-ffp-contract=off) */
void xp_wino_in_f32(const float *x, ptrdiff_t x_img, int Wq, int C, int N, int TH, int TW, float *v,
                    ptrdiff_t v_tile, ptrdiff_t v_k);
void xp_wino_in_f64(const double *x, ptrdiff_t x_img, int Wq, int C, int N, int TH, int TW, double *v,
                    ptrdiff_t v_tile, ptrdiff_t v_k);
void xp_wino_out_f32(const float *m, ptrdiff_t m_tile, ptrdiff_t m_k, int O, int N, int TH, int TW,
                     const float *bias, float *y, ptrdiff_t y_img, int OH, int OW);
void xp_wino_out_f64(const double *m, ptrdiff_t m_tile, ptrdiff_t m_k, int O, int N, int TH, int TW,
                     const double *bias, double *y, ptrdiff_t y_img, int OH, int OW);
void xp_wino_grad_f32(const float *g, ptrdiff_t g_img, int O, int N, int TH, int TW, int OH, int OW, float *dm,
                      ptrdiff_t dm_tile, ptrdiff_t dm_k);
void xp_wino_grad_f64(const double *g, ptrdiff_t g_img, int O, int N, int TH, int TW, int OH, int OW,
                      double *dm, ptrdiff_t dm_tile, ptrdiff_t dm_k);

/* pool.c: channels-last max pooling with the winning window offset (-ffp-contract=off) */
void xp_max_pool_fwd_f32(const float *x, const ptrdiff_t *xs, int N, int H, int W, int C, float *y,
                         unsigned char *arg, const ptrdiff_t *ys, int OH, int OW, int kh, int kw, int sh, int sw,
                         int pt, int pl, int dh, int dw);
void xp_max_pool_fwd_f64(const double *x, const ptrdiff_t *xs, int N, int H, int W, int C, double *y,
                         unsigned char *arg, const ptrdiff_t *ys, int OH, int OW, int kh, int kw, int sh, int sw,
                         int pt, int pl, int dh, int dw);
void xp_max_pool_bwd_f32(const float *g, const ptrdiff_t *gs, const unsigned char *arg, const ptrdiff_t *as,
                         int N, int OH, int OW, int C, float *dx, const ptrdiff_t *xs, int kh, int kw, int sh,
                         int sw, int pt, int pl, int dh, int dw, int tiles);
void xp_max_pool_bwd_f64(const double *g, const ptrdiff_t *gs, const unsigned char *arg, const ptrdiff_t *as,
                         int N, int OH, int OW, int C, double *dx, const ptrdiff_t *xs, int kh, int kw, int sh,
                         int sw, int pt, int pl, int dh, int dw, int tiles);

/* pool.c: max pooling over (H, W) planes, columns contiguous (-ffp-contract=off) */
void xp_max_pool_planes_fwd_f32(const float *x, ptrdiff_t x_plane, ptrdiff_t x_row, ptrdiff_t P, int H, int W,
                                float *y, unsigned char *arg, int OH, int OW, int kh, int kw, int sh, int sw, int pt,
                                int pl, int dh, int dw);
void xp_max_pool_planes_fwd_f64(const double *x, ptrdiff_t x_plane, ptrdiff_t x_row, ptrdiff_t P, int H, int W,
                                double *y, unsigned char *arg, int OH, int OW, int kh, int kw, int sh, int sw,
                                int pt, int pl, int dh, int dw);
void xp_max_pool_planes_bwd_f32(const float *g, const unsigned char *arg, ptrdiff_t P, int OH, int OW, float *dx,
                                ptrdiff_t x_plane, ptrdiff_t x_row, int H, int W, int kh, int kw, int sh, int sw,
                                int pt, int pl, int dh, int dw, int tiles);
void xp_max_pool_planes_bwd_f64(const double *g, const unsigned char *arg, ptrdiff_t P, int OH, int OW,
                                double *dx, ptrdiff_t x_plane, ptrdiff_t x_row, int H, int W, int kh, int kw, int sh,
                                int sw, int pt, int pl, int dh, int dw, int tiles);

/* norm.c: batch norm on the (M, C) channels-last matrix, sums in double (-ffp-contract=off) */
void xp_bn_moments_f32(const float *x, ptrdiff_t M, int C, const float *k, double *sum, double *sq);
void xp_bn_moments_f64(const double *x, ptrdiff_t M, int C, const double *k, double *sum, double *sq);
void xp_bn_affine_f32(const float *x, ptrdiff_t M, int C, const float *scale, const float *shift, float *y);
void xp_bn_affine_f64(const double *x, ptrdiff_t M, int C, const double *scale, const double *shift, double *y);
void xp_bn_grad_sums_f32(const float *g, const float *x, ptrdiff_t M, int C, const float *mean, double *sg,
                         double *sgx);
void xp_bn_grad_sums_f64(const double *g, const double *x, ptrdiff_t M, int C, const double *mean, double *sg,
                         double *sgx);
void xp_bn_grad_f32(const float *g, const float *x, ptrdiff_t M, int C, const float *mean, const float *a,
                    const float *b, const float *s, float *dx);
void xp_bn_grad_f64(const double *g, const double *x, ptrdiff_t M, int C, const double *mean, const double *a,
                    const double *b, const double *s, double *dx);

/* activation.c: ReLU (-ffp-contract=off) */
void xp_relu_fwd_f32(const float *x, float *y, ptrdiff_t n);
void xp_relu_fwd_f64(const double *x, double *y, ptrdiff_t n);
void xp_relu_bwd_f32(const float *g, const float *y, float *out, ptrdiff_t n);
void xp_relu_bwd_f64(const double *g, const double *y, double *out, ptrdiff_t n);

/* loss.c: softmax cross-entropy over (M, C) logits and int64 class targets (-ffp-contract=off); out: the
 * count of rows with a class target and the first row with an out-of-range one (or -1) */
void xp_ce_fwd_f32(const float *x, const int64_t *t, ptrdiff_t M, ptrdiff_t C, int64_t ignore_index, float *log_p,
                   float *rows, int64_t *out);
void xp_ce_fwd_f64(const double *x, const int64_t *t, ptrdiff_t M, ptrdiff_t C, int64_t ignore_index,
                   double *log_p, double *rows, int64_t *out);
void xp_ce_bwd_f32(const float *log_p, const int64_t *t, ptrdiff_t M, ptrdiff_t C, int64_t ignore_index,
                   const float *s, ptrdiff_t s_stride, float *dx);
void xp_ce_bwd_f64(const double *log_p, const int64_t *t, ptrdiff_t M, ptrdiff_t C, int64_t ignore_index,
                   const double *s, ptrdiff_t s_stride, double *dx);

/* optim.c: one SGD update (-ffp-contract=off) */
void xp_sgd_f32(float *w, const float *g, float *buf, ptrdiff_t n, float neg_lr, int decay, float wd, int maximize,
                float mu, float damp_keep, int damped, int nesterov);
void xp_sgd_f64(double *w, const double *g, double *buf, ptrdiff_t n, double neg_lr, int decay, double wd,
                int maximize, double mu, double damp_keep, int damped, int nesterov);
/* optim.c: the SGD update of a parameter group in one call: count tensors, given by tables of their
 * addresses (w, g, buf; buf NULL without momentum) and sizes; fresh[t]: tensor t's buffer was just
 * made (its first momentum step, undamped) */
void xp_sgd_group_f32(const int64_t *w, const int64_t *g, const int64_t *buf, const int64_t *n,
                      const unsigned char *fresh, ptrdiff_t count, float neg_lr, int decay, float wd, int maximize,
                      float mu, float damp_keep, int damped, int nesterov);
void xp_sgd_group_f64(const int64_t *w, const int64_t *g, const int64_t *buf, const int64_t *n,
                      const unsigned char *fresh, ptrdiff_t count, double neg_lr, int decay, double wd, int maximize,
                      double mu, double damp_keep, int damped, int nesterov);

#endif /* XPNET_KERNELS_H */
