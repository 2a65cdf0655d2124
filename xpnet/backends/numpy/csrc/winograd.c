/* Winograd F(2x2, 3x3) transforms of the NumPy backend (float32 and float64;
 * xpnet/backends/numpy/winograd.py), compiled without floating-point contraction. */
#include <stddef.h>

#include "xpnet_kernels.h"

/* Winograd F(2x2, 3x3) transforms for stride-1 3x3 convolutions (winograd.py).
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

/* The weight gradient's side of Winograd F(2x2, 3x3): each 2x2 block of the output gradient G (NHWC,
 * zero past odd edges) becomes dM = A dY A^T (A = [1 0; 1 1; 1 -1; 0 -1]), the gradient of the
 * tile's M; then dU_k = sum over tiles V_k^T dM_k and dW = G^T dU G (winograd.py). */
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
