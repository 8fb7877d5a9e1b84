/*
 * losses_block.h -- softmax cross-entropy, softmax, log_softmax and logsumexp for SHORT rows,
 * LOSSES_BLOCK_ROWS rows at a time.
 *
 * The row kernels of losses.pyx.tp (_shift_*, _exps_*, _targets_*, _ce_row_*) spend most of a
 * short row (C = 10) on fixed costs: loop set-up, three 8-lane pairwise leaves, calls.  Here a
 * block of R = LOSSES_BLOCK_ROWS consecutive rows is transposed into tiles
 *
 *     X[i][r] = x[row r, class i]        (i < C <= LOSSES_BLOCK_MAX_C, r < R)
 *
 * (in the AVX2 and AVX-512 builds by 8 x 8 or 4 x 4 transposes in registers for float32 and
 * float64, by 8 x 8 transposes of 16-bit words for the 16-bit formats in every build; GCC copies
 * strided tiles one element at a time) and every step of the row algorithm becomes a loop over r
 * of constant length R, which GCC turns into vector instructions with the ROW as the vector
 * lane.  Each lane executes exactly
 * the operations of the row code, in the same order, with the same primitives (fp.h's rounding,
 * the kernels' exp of z <= 0, fp.h's log1p once per row): the results are the same bits.
 * In particular the pairwise sum of a row with C <= 128 is one leaf: lane j of the leaf adds
 * elements j, j+8, ... from +0, and the lanes are combined ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7));
 * here acc[i % 8][r] += v[i][r] for i = 0, 1, ..., which is the same sequence per row.
 *
 * The block is not used (the function returns 1 and writes nothing) when any logit of the
 * block is NaN or infinite: those rows take the row code, whose special-value handling
 * (NaN rows, the plain max loop) is not repeated here.  For finite logits the row code's max
 * (the largest integer key, then the first x_k with the same value: -0 and +0 equal) is the
 * first index attaining the maximum under '>', which is what the vector loop computes.
 *
 * Self-contained: fp.h, exp_nonpositive.h, summation.h, losses_rows.h, losses_refine.h.
 */
#ifndef PRECISION_LOSSES_BLOCK_H
#define PRECISION_LOSSES_BLOCK_H

#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include "fp.h"
#include "exp_nonpositive.h"
#include "summation.h"
#include "losses_rows.h"
#include "losses_refine.h"

#define LOSSES_BLOCK_ROWS 16          /* R: rows per block, the vector lanes */
#define LOSSES_BLOCK_MAX_C 128        /* tiles are sized for one pairwise leaf */

/* exp_A(z) for z = R(x_i - a) <= 0, as the row code evaluates it.  In a block the logits are
   finite, so z is a finite value of A or -inf (when x_i - a overflows).  The 16-bit formats
   look up the module's tables (passed in: they are Cython globals).  float16: the row code's
   index (_exp_nonpositive_f16 in losses.pyx.tp) is the magnitude's float16 bit pattern, 0 for
   the float16 subnormals, 0x7C00 for -inf.  Here the float's magnitude bits are clamped to
   [2^-15, 2^16] and rebiased: normal magnitudes get the same index, -inf (clamped to 2^16,
   which no finite float16 reaches) gets 0x7C00, and subnormal ones an index in [0, 0x3FF],
   whose entries all equal the entry of 0, 1 (exp(-y) for y <= 2^-14 is within 2^-14 of 1,
   closer to 1 than to 1 - 2^-11); a NaN (magnitude bits above infinity's) gets one more,
   0x7C01, the table's NaN entry.  Integer min/max instead of _exp_nonpositive_f16's selects:
   GCC turns those into conditional loads, which it does not vectorise. */
static inline uint32_t losses_exp_index_f16(float z) {
    uint32_t au = fp_f32_bits(z) & 0x7FFFFFFFu;
    uint32_t c = au > (112u << 23) ? au : (112u << 23);
    c = c < 0x47800000u ? c : 0x47800000u;
    return ((c - (112u << 23)) >> 13) + (uint32_t)(au > 0x7F800000u);
}
static inline float losses_block_exp_f16(float z, const float* restrict table) {
    return table[losses_exp_index_f16(z)];
}
/* The row code's float16 exp over a row in place, any z of the float16 grid: the same index,
   in a loop GCC vectorises (a gather; the restrict pointers, lost if inlined, tell it the row is
   not the table). */
PRECISION_NOINLINE static void losses_exp_row_f16(float* restrict e, ptrdiff_t n,
                                                  const float* restrict table) {
    for (ptrdiff_t i = 0; i < n; i++) e[i] = table[losses_exp_index_f16(e[i])];
}
static inline float losses_block_exp_bf16(float z, const float* restrict table) {
    return table[(fp_f32_bits(z) & 0x7FFFFFFFu) >> 16];
}
static inline float losses_block_exp_f32(float z, const float* restrict table) {
    (void)table;
    return exp_nonpositive_f32(z);
}
static inline double losses_block_exp_f64(double z, const float* restrict table) {
    (void)table;
    return exp_nonpositive_f64(z);
}
/* E[i][r] = exp_A(Z[i][r]) over the tile: float32 through exp_nonpositive.h's tile function
   (the tile is contiguous; its AVX-512 and AVX2 loops look the table up in registers, where
   GCC's vectorisation of the per-element exp loads table entries one by one) */
#define losses_block_exp_f16_tile(Z, E, C, table)                                                  \
    LOSSES_BLOCK_FOR(C, (E)[i][r] = losses_block_exp_f16((Z)[i][r], table))
#define losses_block_exp_bf16_tile(Z, E, C, table)                                                 \
    LOSSES_BLOCK_FOR(C, (E)[i][r] = losses_block_exp_bf16((Z)[i][r], table))
#define losses_block_exp_f32_tile(Z, E, C, table)                                                  \
    exp_nonpositive_tile_f32(&(Z)[0][0], &(E)[0][0], (C) * LOSSES_BLOCK_ROWS)
#define losses_block_exp_f64_tile(Z, E, C, table)                                                  \
    LOSSES_BLOCK_FOR(C, (E)[i][r] = losses_block_exp_f64((Z)[i][r], table))

/* log1p_A(s) for A = float16 / bfloat16: fp.h's own log1p_f16 / log1p_bf16 of every value
   s >= +0 of A, tabulated by losses_block_init (at import) and looked up by s's bits.  In a
   block s is a pairwise sum, from +0, of values in [0, 1] (the logits are finite): never
   negative, never NaN, at most C - 1. */
static float LOSSES_BLOCK_LOG1P_F16[0x7C01];     /* float16 bits 0 .. 0x7C00 (+inf) */
static float LOSSES_BLOCK_LOG1P_BF16[0x7F81];    /* bfloat16 bits 0 .. 0x7F80 (+inf) */
static void losses_block_init(void) {
    for (uint32_t m = 0; m <= 0x7C00u; m++)
        LOSSES_BLOCK_LOG1P_F16[m] = log1p_f16(ld16_f16((uint16_t)m));
    for (uint32_t m = 0; m <= 0x7F80u; m++)
        LOSSES_BLOCK_LOG1P_BF16[m] = log1p_bf16(ld16_bf16((uint16_t)m));
}
static inline float losses_block_log1p_f16(float s) {
    return LOSSES_BLOCK_LOG1P_F16[st16_f16(s) & 0x7FFFu];
}
static inline float losses_block_log1p_bf16(float s) {
    return LOSSES_BLOCK_LOG1P_BF16[(fp_f32_bits(s) & 0x7FFFFFFFu) >> 16];
}

/* The statement for every lane r < R, as a loop that is not unrolled: GCC unrolls a loop of
   constant length R early, and the unrolled selects stay scalar (with branches); as a loop,
   each statement becomes a few vector instructions. */
#define LOSSES_BLOCK_LANES(STMT)                                                                   \
    _Pragma("GCC unroll 1")                                                                        \
    for (int r = 0; r < LOSSES_BLOCK_ROWS; r++) { STMT; }

/* The statement for every class i < C and every lane r (an R x C tile). */
#define LOSSES_BLOCK_FOR(C, STMT)                                                                  \
    for (ptrdiff_t i = 0; i < (C); i++) {                                                          \
        LOSSES_BLOCK_LANES(STMT)                                                                   \
    }

/* One pairwise leaf per lane (C <= 128): acc[j][r] starts at +0, acc[i % 8][r] = R(acc + v_i)
   for i = 0, 1, ... (what lane j of summation.h's sum_leaf_A adds), then the lanes are combined
   ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)) into OUT[r]. */
#define LOSSES_BLOCK_LEAF_START(ACC)                                                               \
    for (int j = 0; j < 8; j++) LOSSES_BLOCK_LANES((ACC)[j][r] = 0)
#define LOSSES_BLOCK_LEAF_END(RND, ACC, OUT)                                                       \
    LOSSES_BLOCK_LANES((OUT)[r] = RND(RND(RND((ACC)[0][r] + (ACC)[1][r])                           \
                                          + RND((ACC)[2][r] + (ACC)[3][r]))                        \
                                      + RND(RND((ACC)[4][r] + (ACC)[5][r])                         \
                                            + RND((ACC)[6][r] + (ACC)[7][r]))))

/* c ? x : y, for the running selects a[r] = c ? v : a[r] and the leaf terms, by bit
   operations: written as a conditional, GCC makes these masked stores (vmaskmov), whose value
   the next iteration's load cannot take from the store buffer (a stall per class: a quarter to
   a third of the float32 block's time on 65536 x 10, in the AVX2 and the AVX-512 build). */
static inline float losses_block_select_f32(int c, float x, float y) {
    uint32_t m = (uint32_t)0 - (uint32_t)(c != 0);
    return fp_bits_f32((fp_f32_bits(x) & m) | (fp_f32_bits(y) & ~m));
}
static inline double losses_block_select_f64(int c, double x, double y) {
    uint64_t m = (uint64_t)0 - (uint64_t)(c != 0);
    return fp_bits_f64((fp_f64_bits(x) & m) | (fp_f64_bits(y) & ~m));
}

/* Float and double tiles (rows of R = 16 lanes) in the AVX2 and AVX-512 builds, written with
   vector instructions, for each T of float (suffix ps, 8 lanes a register) and double (pd, 4):
     losses_block_max_S     a[r] = max_i Z[i][r], kf[r] = the first i attaining it (the first
                            under '>'); returns 1 if a Z[i][r] is NaN or infinite (then the row
                            code does the block).  GCC left this loop scalar in the AVX2 build (a
                            fifth of the float32 block's time on 65536 x 10).  Selects only, and
                            the same sums nonfinite + (v - v): the same values either way.
     losses_block_load_S    Z[i][r] = x[r * rs + i] (i < C, r < R) and back,
     losses_block_store_S   g[r * gs + i] = Z[i][r], by W x W transposes in registers (W lanes):
                            GCC copies strided tiles one element at a time (a quarter of the
                            float32 block's time); here W rows of W classes are W loads, a few
                            shuffles and W stores.  A row's last C % W classes are read by a
                            masked load and written by stores of 4, 2 and 1 values: nothing
                            outside the rows is touched. */
#if defined(__AVX2__)
#include <immintrin.h>
#define LOSSES_BLOCK_TRANSPOSES 1
/* the W x W transposes */
static inline void losses_block_transpose_ps(__m256 v[8]) {
    __m256 t[8], u[8];
    for (int j = 0; j < 8; j += 2) {
        t[j] = _mm256_unpacklo_ps(v[j], v[j + 1]);
        t[j + 1] = _mm256_unpackhi_ps(v[j], v[j + 1]);
    }
    for (int j = 0; j < 8; j += 4) {
        u[j] = _mm256_shuffle_ps(t[j], t[j + 2], 0x44);
        u[j + 1] = _mm256_shuffle_ps(t[j], t[j + 2], 0xEE);
        u[j + 2] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0x44);
        u[j + 3] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0xEE);
    }
    for (int j = 0; j < 4; j++) {
        v[j] = _mm256_permute2f128_ps(u[j], u[j + 4], 0x20);
        v[j + 4] = _mm256_permute2f128_ps(u[j], u[j + 4], 0x31);
    }
}
static inline void losses_block_transpose_pd(__m256d v[4]) {
    __m256d t0 = _mm256_unpacklo_pd(v[0], v[1]), t1 = _mm256_unpackhi_pd(v[0], v[1]);
    __m256d t2 = _mm256_unpacklo_pd(v[2], v[3]), t3 = _mm256_unpackhi_pd(v[2], v[3]);
    v[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
    v[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
    v[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
    v[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
}
/* the mask of the first n lanes (a masked load's) */
static inline __m256i losses_block_lanes_ps(ptrdiff_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline __m256i losses_block_lanes_pd(ptrdiff_t n) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
}
/* the first n lanes of v to p */
static inline void losses_block_store_n_ps(float* p, __m256 v, ptrdiff_t n) {
    if (n == 8) {
        _mm256_storeu_ps(p, v);
        return;
    }
    __m128 w = _mm256_castps256_ps128(v);
    if (n & 4) {
        _mm_storeu_ps(p, w);
        w = _mm256_extractf128_ps(v, 1);
        p += 4;
    }
    if (n & 2) {
        _mm_storel_pi((__m64*)p, w);
        w = _mm_movehl_ps(w, w);
        p += 2;
    }
    if (n & 1) _mm_store_ss(p, w);
}
static inline void losses_block_store_n_pd(double* p, __m256d v, ptrdiff_t n) {
    if (n == 4) {
        _mm256_storeu_pd(p, v);
        return;
    }
    __m128d w = _mm256_castpd256_pd128(v);
    if (n & 2) {
        _mm_storeu_pd(p, w);
        w = _mm256_extractf128_pd(v, 1);
        p += 2;
    }
    if (n & 1) _mm_store_sd(p, w);
}
#define LOSSES_BLOCK_DEFINE_TILES(S, T, V, SFX, W)                                                 \
static inline int losses_block_max_##S(const T* Z, ptrdiff_t C, T* a, T* kf) {                     \
    enum { N = LOSSES_BLOCK_ROWS / (W) };                                                          \
    V av[N], kv[N], nv[N];                                                                         \
    for (int q = 0; q < N; q++) {                                                                  \
        av[q] = _mm256_loadu_##SFX(Z + (W) * q);                                                   \
        kv[q] = _mm256_setzero_##SFX();                                                            \
        nv[q] = _mm256_sub_##SFX(av[q], av[q]);                                                    \
    }                                                                                              \
    for (ptrdiff_t i = 1; i < C; i++) {                                                            \
        V fi = _mm256_set1_##SFX((T)i);                                                            \
        for (int q = 0; q < N; q++) {                                                              \
            V v = _mm256_loadu_##SFX(Z + i * LOSSES_BLOCK_ROWS + (W) * q);                         \
            V bigger = _mm256_cmp_##SFX(v, av[q], _CMP_GT_OQ);      /* false for a NaN */          \
            av[q] = _mm256_blendv_##SFX(av[q], v, bigger);                                         \
            kv[q] = _mm256_blendv_##SFX(kv[q], fi, bigger);                                        \
            nv[q] = _mm256_add_##SFX(nv[q], _mm256_sub_##SFX(v, v));                               \
        }                                                                                          \
    }                                                                                              \
    V special = _mm256_setzero_##SFX();                                                            \
    for (int q = 0; q < N; q++) {                                                                  \
        _mm256_storeu_##SFX(a + (W) * q, av[q]);                                                   \
        _mm256_storeu_##SFX(kf + (W) * q, kv[q]);                                                  \
        special = _mm256_or_##SFX(special, _mm256_cmp_##SFX(nv[q], _mm256_setzero_##SFX(),         \
                                                             _CMP_NEQ_UQ));                        \
    }                                                                                              \
    return _mm256_movemask_##SFX(special) != 0;                                                    \
}                                                                                                  \
static inline void losses_block_load_##S(const T* x, ptrdiff_t rs, ptrdiff_t C, T* Z) {            \
    for (int r0 = 0; r0 < LOSSES_BLOCK_ROWS; r0 += (W))                                            \
        for (ptrdiff_t i0 = 0; i0 < C; i0 += (W)) {                                                \
            ptrdiff_t n = C - i0 < (W) ? C - i0 : (W);                                             \
            __m256i m = losses_block_lanes_##SFX(n);                                               \
            V v[W];                                                                                \
            for (int j = 0; j < (W); j++)                                                          \
                v[j] = n == (W) ? _mm256_loadu_##SFX(x + (r0 + j) * rs + i0)                       \
                                : _mm256_maskload_##SFX(x + (r0 + j) * rs + i0, m);                \
            losses_block_transpose_##SFX(v);                                                       \
            for (ptrdiff_t c = 0; c < n; c++)                                                      \
                _mm256_storeu_##SFX(Z + (i0 + c) * LOSSES_BLOCK_ROWS + r0, v[c]);                  \
        }                                                                                          \
}                                                                                                  \
static inline void losses_block_store_##S(const T* Z, ptrdiff_t C, T* g, ptrdiff_t gs) {           \
    for (int r0 = 0; r0 < LOSSES_BLOCK_ROWS; r0 += (W))                                            \
        for (ptrdiff_t i0 = 0; i0 < C; i0 += (W)) {                                                \
            ptrdiff_t n = C - i0 < (W) ? C - i0 : (W);                                             \
            V v[W];                                                                                \
            for (int c = 0; c < (W); c++)                                                          \
                v[c] = c < n ? _mm256_loadu_##SFX(Z + (i0 + c) * LOSSES_BLOCK_ROWS + r0)           \
                             : _mm256_setzero_##SFX();                                             \
            losses_block_transpose_##SFX(v);                                                       \
            for (int j = 0; j < (W); j++)                                                          \
                losses_block_store_n_##SFX(g + (r0 + j) * gs + i0, v[j], n);                      \
        }                                                                                          \
}
LOSSES_BLOCK_DEFINE_TILES(f32, float, __m256, ps, 8)
LOSSES_BLOCK_DEFINE_TILES(f64, double, __m256d, pd, 4)
#undef LOSSES_BLOCK_DEFINE_TILES
#else
/* never called (LOSSES_BLOCK_TRANSPOSES is 0): the block code names them in dead branches */
#define LOSSES_BLOCK_TRANSPOSES 0
#define LOSSES_BLOCK_NEVER(T, S)                                                                   \
static inline int losses_block_max_##S(const T* Z, ptrdiff_t C, T* a, T* kf) {                     \
    (void)Z; (void)C; (void)a; (void)kf;                                                           \
    return -1;                                                                                     \
}                                                                                                  \
static inline void losses_block_load_##S(const T* x, ptrdiff_t rs, ptrdiff_t C, T* Z) {            \
    (void)x; (void)rs; (void)C; (void)Z;                                                           \
}                                                                                                  \
static inline void losses_block_store_##S(const T* Z, ptrdiff_t C, T* g, ptrdiff_t gs) {           \
    (void)Z; (void)C; (void)g; (void)gs;                                                           \
}
LOSSES_BLOCK_NEVER(float, f32)
LOSSES_BLOCK_NEVER(double, f64)
#undef LOSSES_BLOCK_NEVER
#endif

/* The 16-bit formats' tiles: T[i][r] = x[r * rs + i] and back, g[r * gs + i] = T[i][r], by
   8 x 8 transposes of 16-bit words (SSE2: every x86-64 build) for each 8 classes, the last
   C % 8 one by one (a 16-byte load there would read past the row). */
#if defined(__SSE2__)
#include <emmintrin.h>
static inline void losses_block_t8_u16(__m128i v[8]) {
    __m128i a[8], b[8];
    for (int j = 0; j < 8; j += 2) {
        a[j] = _mm_unpacklo_epi16(v[j], v[j + 1]);
        a[j + 1] = _mm_unpackhi_epi16(v[j], v[j + 1]);
    }
    for (int j = 0; j < 8; j += 4) {
        b[j] = _mm_unpacklo_epi32(a[j], a[j + 2]);
        b[j + 1] = _mm_unpackhi_epi32(a[j], a[j + 2]);
        b[j + 2] = _mm_unpacklo_epi32(a[j + 1], a[j + 3]);
        b[j + 3] = _mm_unpackhi_epi32(a[j + 1], a[j + 3]);
    }
    for (int j = 0; j < 4; j++) {
        v[2 * j] = _mm_unpacklo_epi64(b[j], b[j + 4]);
        v[2 * j + 1] = _mm_unpackhi_epi64(b[j], b[j + 4]);
    }
}
#define LOSSES_BLOCK_C8(C) ((C) / 8 * 8)        /* the classes the 16-bit transposes take */
#else
#define LOSSES_BLOCK_C8(C) 0
#endif
static inline void losses_block_load_u16(const uint16_t* x, ptrdiff_t rs, ptrdiff_t C,
                                         uint16_t* T) {
    enum { R = LOSSES_BLOCK_ROWS };
#if defined(__SSE2__)
    for (int r0 = 0; r0 < R; r0 += 8)
        for (ptrdiff_t i0 = 0; i0 < LOSSES_BLOCK_C8(C); i0 += 8) {
            __m128i v[8];
            for (int j = 0; j < 8; j++)
                v[j] = _mm_loadu_si128((const __m128i*)(x + (r0 + j) * rs + i0));
            losses_block_t8_u16(v);
            for (int c = 0; c < 8; c++) _mm_storeu_si128((__m128i*)(T + (i0 + c) * R + r0), v[c]);
        }
#endif
    for (ptrdiff_t i = LOSSES_BLOCK_C8(C); i < C; i++)
        LOSSES_BLOCK_LANES(T[i * R + r] = x[r * rs + i])
}
static inline void losses_block_store_u16(const uint16_t* T, ptrdiff_t C, uint16_t* g,
                                          ptrdiff_t gs) {
    enum { R = LOSSES_BLOCK_ROWS };
#if defined(__SSE2__)
    for (int r0 = 0; r0 < R; r0 += 8)
        for (ptrdiff_t i0 = 0; i0 < LOSSES_BLOCK_C8(C); i0 += 8) {
            __m128i v[8];
            for (int c = 0; c < 8; c++)
                v[c] = _mm_loadu_si128((const __m128i*)(T + (i0 + c) * R + r0));
            losses_block_t8_u16(v);
            for (int j = 0; j < 8; j++) _mm_storeu_si128((__m128i*)(g + (r0 + j) * gs + i0), v[j]);
        }
#endif
    for (ptrdiff_t i = LOSSES_BLOCK_C8(C); i < C; i++)
        LOSSES_BLOCK_LANES(g[r * gs + i] = T[i * R + r])
}

/* The start of every block function: the logits X[i][r] transposed into Z (declared by the
   caller, as are XS, a, kf), a = the row's max, kf = its first index; returns 1 from the caller
   when a logit of the block is NaN or infinite. */
#define LOSSES_BLOCK_SHIFT(S, T, LD, SEL)                                                          \
    /* the logits, transposed (16-bit formats: a plain strided copy, then the loads, so that       \
       each loop vectorises) */                                                                    \
    if (sizeof(S) == 2) {                                                                          \
        losses_block_load_u16((const uint16_t*)x, rs, C, (uint16_t*)&XS[0][0]);                    \
        LOSSES_BLOCK_FOR(C, Z[i][r] = LD(XS[i][r]))                                                \
    } else if (LOSSES_BLOCK_TRANSPOSES && sizeof(S) == 4 && sizeof(T) == 4) {     /* float32 */  \
        losses_block_load_f32((const float*)x, rs, C, (float*)&Z[0][0]);                           \
    } else if (LOSSES_BLOCK_TRANSPOSES && sizeof(S) == 8) {                        /* float64 */  \
        losses_block_load_f64((const double*)x, rs, C, (double*)&Z[0][0]);                        \
    } else {                                                                                       \
        LOSSES_BLOCK_FOR(C, Z[i][r] = LD(x[r * rs + i]))                                           \
    }                                                                                              \
    /* a = max x, k = the first index attaining it (kept as a value of T: exact); nonfinite[r]     \
       is NaN if the row holds a NaN or an infinity (then the row code does the block) */          \
    int special = 0;                                                                               \
    if (LOSSES_BLOCK_TRANSPOSES && sizeof(T) == 4) {                                               \
        special = losses_block_max_f32((const float*)&Z[0][0], C, (float*)a, (float*)kf);          \
    } else if (LOSSES_BLOCK_TRANSPOSES) {                                                          \
        special = losses_block_max_f64((const double*)&Z[0][0], C, (double*)a, (double*)kf);      \
    } else {                                                                                       \
        T nonfinite[R];                                                                            \
        LOSSES_BLOCK_LANES(a[r] = Z[0][r]; kf[r] = 0; nonfinite[r] = Z[0][r] - Z[0][r])            \
        for (ptrdiff_t i = 1; i < C; i++) {                                                        \
            T fi = (T)i;                                                                           \
            LOSSES_BLOCK_LANES({ T v = Z[i][r]; int bigger = v > a[r];                             \
                                 a[r] = SEL(bigger, v, a[r]); kf[r] = SEL(bigger, fi, kf[r]);      \
                                 nonfinite[r] = nonfinite[r] + (v - v); })                         \
        }                                                                                          \
        for (int r = 0; r < R; r++) special |= nonfinite[r] != 0;                                  \
    }                                                                                              \
    if (special) return 1;                                                                         \

/* e = exp_A(z) into E (the exp in a loop of its own: the table lookups of the 16-bit formats
   vectorise only there), s = pairwise(e with e_k -> 0) into s, with the caller's acc lanes */
#define LOSSES_BLOCK_EXPS(T, RND, EXP, SEL)                                                        \
    EXP##_tile(Z, E, C, table);                                                                    \
    LOSSES_BLOCK_LEAF_START(acc);                                                                  \
    LOSSES_BLOCK_FOR(C, acc[i & 7][r] = RND(acc[i & 7][r] + SEL((T)i == kf[r], (T)0, E[i][r])))    \
    LOSSES_BLOCK_LEAF_END(RND, acc, s);

/* One target value U of the soft-target check (see losses_ce_block_*). */
#define LOSSES_BLOCK_CHECK(T, ACC, U)                                                              \
    { T u_ = (U);                                                                                  \
      nonfinite_t[r] = nonfinite_t[r] + (u_ - u_);                                                 \
      negative[r] |= u_ < 0;                                                                       \
      sum[i & 7][r] += (ACC)u_; }

/* The gradient row into Z (as _ce_row): soft R(R(T p_i) - t_i) with p_i = R(e_i / D), one-hot
   p_i and R(p_y - 1) at y; g_k at k (after y, as the row code stores them); then SCALED(v),
   the batch scaling. */
#define LOSSES_BLOCK_GRADIENT(T, RND, SCALED)                                                      \
    if (use_t) {                                                                                   \
        LOSSES_BLOCK_FOR(C, { T v = RND(RND(Tt[r] * RND(E[i][r] / D[r])) - TT[i][r]);              \
                              v = (T)i == kf[r] ? gk[r] : v; Z[i][r] = SCALED; })                  \
    } else {                                                                                       \
        LOSSES_BLOCK_FOR(C, { T p = RND(E[i][r] / D[r]); T v = (T)i == yf[r] ? RND(p - 1) : p;     \
                              v = (T)i == kf[r] ? gk[r] : v; Z[i][r] = SCALED; })                  \
    }

/*
 * losses_ce_block_<S>_<A>: rows x[r * rs + 0..C) for r < R, as softmax_cross_entropy_<S>_<A>
 * computes them row by row:
 *   t != NULL: soft targets t[r * ts + i] (smoothed when smooth); else labels y[r], one-hot
 *              (smoothed into c2 / top when smooth);
 *   row_loss[r] = the row's loss in A; if want_grad, the gradient row into g[r * gs + i],
 *   scaled by the batch as _ce_row does (batch = 1: none; binv != 0: times binv; else / batch);
 *   codes != NULL: codes[r] = the soft-target check of the row (losses_check_row_S, then the
 *   PROBS_* codes of losses_rows.h with tolerance tol), as the row loop does.
 * Returns 0, or 1 without writing anything when a logit of the block is NaN or infinite.
 */
#define LOSSES_DEFINE_CE_BLOCK(P, S, T, LD, ST, RND, EXP, LOG1P, ACC, SEL, WIDE, REFINE, TIGHT)    \
static int losses_ce_block_##P(                                                                    \
        const S* restrict x, ptrdiff_t rs, const S* restrict t, ptrdiff_t ts,                      \
        const int64_t* restrict y, int smooth, T c1, T c2, T top, int want_grad,                   \
        T batch, T binv, S* restrict g, ptrdiff_t gs, T* restrict row_loss,                        \
        unsigned char* restrict codes, double tol, const float* restrict table, ptrdiff_t C,       \
        double eps)                                                                                \
{                                                                                                  \
    enum { R = LOSSES_BLOCK_ROWS };                                                                \
    T Z[LOSSES_BLOCK_MAX_C][R];      /* x, then z = R(x - a), then the gradient */                 \
    T E[LOSSES_BLOCK_MAX_C][R];      /* e = exp_A(z) */                                            \
    T TT[LOSSES_BLOCK_MAX_C][R];     /* the targets in A (smoothed) */                             \
    T a[R], kf[R], yf[R], s[R], L[R], loss[R], tk[R], Tk[R];                                       \
    T acc[8][R], acc2[8][R];         /* lanes of pairwise leaves */                                \
    S XS[LOSSES_BLOCK_MAX_C][R];     /* 16-bit storage: the logits, later the gradient */          \
    int soft = t != NULL, use_t = soft || smooth;                                                  \
    LOSSES_BLOCK_SHIFT(S, T, LD, SEL)                                                              \
    /* z = R(x - a) */                                                                             \
    LOSSES_BLOCK_FOR(C, Z[i][r] = RND(Z[i][r] - a[r]))                                             \
    /* min_i z_i, for the refinement check (= R(min x - a): rounding is monotone) */               \
    T zmin[R];                                                                                     \
    int check = (WIDE) && use_t && want_grad;                                                      \
    if (check) {                                                                                   \
        LOSSES_BLOCK_LANES(zmin[r] = 0)                                                            \
        LOSSES_BLOCK_FOR(C, zmin[r] = Z[i][r] < zmin[r] ? Z[i][r] : zmin[r])                       \
    }                                                                                              \
    LOSSES_BLOCK_EXPS(T, RND, EXP, SEL)                                                            \
    LOSSES_BLOCK_LANES(L[r] = LOG1P(s[r]))                                                         \
    /* the targets */                                                                              \
    if (soft) {                                                                                    \
        /* the targets in A: transposed (float32, float64), or transposed into XS (free until   \
           the gradient) and converted (16-bit storage) */                                         \
        if (LOSSES_BLOCK_TRANSPOSES && sizeof(S) == 4 && sizeof(T) == 4) {                         \
            losses_block_load_f32((const float*)t, ts, C, (float*)&TT[0][0]);                      \
        } else if (LOSSES_BLOCK_TRANSPOSES && sizeof(S) == 8) {                                    \
            losses_block_load_f64((const double*)t, ts, C, (double*)&TT[0][0]);                    \
        } else if (sizeof(S) == 2) {                                                               \
            losses_block_load_u16((const uint16_t*)t, ts, C, (uint16_t*)&XS[0][0]);                \
            LOSSES_BLOCK_FOR(C, TT[i][r] = LD(XS[i][r]))                                           \
        } else {                                                                                   \
            LOSSES_BLOCK_FOR(C, TT[i][r] = LD(t[r * ts + i]))                                      \
        }                                                                                          \
        if (codes != NULL) {                                                                       \
            /* the check of losses_check_row_S, lane by lane, on the values (exact in T): a NaN    \
               or an infinity (u - u is not 0), a value < 0 (not -0), the 8-lane sum in ACC */     \
            ACC sum[8][R];                                                                         \
            T nonfinite_t[R];                                                                      \
            int negative[R];                                                                       \
            for (int j = 0; j < 8; j++) LOSSES_BLOCK_LANES(sum[j][r] = 0)                          \
            LOSSES_BLOCK_LANES(nonfinite_t[r] = 0; negative[r] = 0)                                \
            LOSSES_BLOCK_FOR(C, LOSSES_BLOCK_CHECK(T, ACC, TT[i][r]))                              \
            for (int r = 0; r < R; r++) {                                                          \
                ACC total = ((sum[0][r] + sum[1][r]) + (sum[2][r] + sum[3][r]))                    \
                            + ((sum[4][r] + sum[5][r]) + (sum[6][r] + sum[7][r]));                 \
                codes[r] = losses_probs_code((nonfinite_t[r] != 0 ? PROBS_FLAG_NONFINITE : 0)      \
                                             | (negative[r] ? PROBS_FLAG_NEGATIVE : 0),     \
                                             (double)total, tol);                            \
            }                                                                                      \
        }                                                                                          \
        if (smooth) LOSSES_BLOCK_FOR(C, TT[i][r] = RND(RND(c1 * TT[i][r]) + c2))                   \
    } else {                                                                                       \
        LOSSES_BLOCK_LANES(yf[r] = (T)y[r])                                                        \
        if (smooth) LOSSES_BLOCK_FOR(C, TT[i][r] = (T)i == yf[r] ? top : c2)                       \
    }                                                                                              \
    /* the loss; for the gradient also Tk = pairwise(t with t_k -> 0) and t_k (same pass) */       \
    if (use_t) {                                                                                   \
        LOSSES_BLOCK_LEAF_START(acc);                                                              \
        LOSSES_BLOCK_LEAF_START(acc2);                                                             \
        LOSSES_BLOCK_LANES(tk[r] = 0)                                                              \
        LOSSES_BLOCK_FOR(C, { T u = TT[i][r]; int at_k = (T)i == kf[r];                            \
                              acc[i & 7][r] = RND(acc[i & 7][r]                                    \
                                                  + SEL(u != 0, RND(u * RND(L[r] - Z[i][r])), (T)0)); \
                              acc2[i & 7][r] = RND(acc2[i & 7][r] + SEL(at_k, (T)0, u));           \
                              tk[r] = SEL(at_k, u, tk[r]); })                                      \
        LOSSES_BLOCK_LEAF_END(RND, acc, loss);                                                     \
        LOSSES_BLOCK_LEAF_END(RND, acc2, Tk);                                                      \
    } else {                                                                                       \
        T zy[R];                                                                                   \
        LOSSES_BLOCK_LANES(zy[r] = 0)                                                              \
        LOSSES_BLOCK_FOR(C, zy[r] = SEL((T)i == yf[r], Z[i][r], zy[r]))                            \
        LOSSES_BLOCK_LANES(loss[r] = RND(L[r] - zy[r]); tk[r] = yf[r] == kf[r] ? (T)1 : (T)0;      \
                           Tk[r] = 1 - tk[r])                                                      \
    }                                                                                              \
    LOSSES_BLOCK_LANES(row_loss[r] = loss[r])                                                      \
    if (!want_grad) return 0;                                                                      \
    /* the gradient (T = 1 for one-hot targets), built in Z, then stored */                        \
    T D[R], Tt[R], gk[R];                                                                          \
    LOSSES_BLOCK_LANES(D[r] = RND(1 + s[r]); Tt[r] = RND(Tk[r] + tk[r]);     /* one-hot: 1 */      \
                       gk[r] = RND(RND(Tk[r] - RND(tk[r] * s[r])) / D[r]))                         \
    if (batch == 1) {                                                                              \
        LOSSES_BLOCK_GRADIENT(T, RND, v)                                                           \
    } else if (binv != 0) {        /* N_A a power of two: the same as dividing */                  \
        LOSSES_BLOCK_GRADIENT(T, RND, RND(v * binv))                                               \
    } else {                                                                                       \
        LOSSES_BLOCK_GRADIENT(T, RND, RND(v / batch))                                              \
    }                                                                                              \
    /* the refinement check of the row code (a conjunction of pure functions of the row, so     \
       any order gives the same decision), lane by lane: losses_cancels with the row's own Z    \
       (it flags only rows that the stage with Z at its cap flags too: the bound grows with Z); \
       with a tight check (TIGHT: float32 arithmetic, 16-bit storage) that one too, on the     \
       lanes still flagged */                                                                    \
    int refine[R];                                                                                 \
    if (check) {                                                                                   \
        double cu[R], abs_err[R], two_inv = 2.0 / (double)batch;                                   \
        T mk[R];                                                                                   \
        LOSSES_BLOCK_LANES({ T tks = RND(tk[r] * s[r]);                                            \
                             mk[r] = RND((Tk[r] < tks ? Tk[r] : tks) / D[r]);                      \
                             cu[r] = losses_cancel_cu((double)zmin[r], LOSSES_ZCAP_##P, C,           \
                                                      LOSSES_UA_##P);                              \
                             abs_err[r] = (4.0 * (double)Tt[r] + 5.0) * LOSSES_ETAA_##P;           \
                             refine[r] = 0; })                                                     \
        if (TIGHT) {               /* A = float32: losses_cancels_f32's float test */              \
            float cA[R], cB[R], cC0[R], cK[R], cE0[R];                                             \
            for (int r = 0; r < R; r++) {                                                          \
                losses_cancels_f32_consts k_ = losses_cancels_consts_f32(                          \
                    cu[r], two_inv, abs_err[r], LOSSES_US8_##P, LOSSES_ETAS8_##P);                 \
                cA[r] = k_.A; cB[r] = k_.B; cC0[r] = k_.C0; cK[r] = k_.K; cE0[r] = k_.E0;          \
            }                                                                                      \
            LOSSES_BLOCK_FOR(C, refine[r] |= losses_cancels_entry_f32(                             \
                                     (float)Z[i][r], (float)((T)i == kf[r] ? mk[r] : TT[i][r]),    \
                                     cA[r], cB[r], cC0[r], cK[r], cE0[r]))                         \
        } else {                                                                                   \
            LOSSES_BLOCK_FOR(C, { double gj = fabs((double)Z[i][r]);                               \
                                  double tj = fabs((double)((T)i == kf[r] ? mk[r] : TT[i][r]));    \
                                  double bound = cu[r] * (gj + two_inv * tj) + abs_err[r];         \
                                  refine[r] |= (bound > LOSSES_US8_##P * gj)                       \
                                               & (bound > LOSSES_ETAS8_##P); })                    \
        }                                                                                          \
        if (TIGHT)                                                                                 \
            for (int r = 0; r < R; r++)                                                            \
                if (refine[r])                                                                     \
                    refine[r] = losses_block_tight_##P(x + r * rs, a[r], (ptrdiff_t)kf[r],          \
                                                       &E[0][r], &TT[0][r], &Z[0][r], R, C, s[r], \
                                                       Tk[r], tk[r], D[r], Tt[r], smooth,          \
                                                       (double)batch, abs_err[r]);                 \
    }                                                                                              \
    if (sizeof(S) == 2) {                                                                          \
        LOSSES_BLOCK_FOR(C, XS[i][r] = ST(Z[i][r]))                                                \
        losses_block_store_u16((const uint16_t*)&XS[0][0], C, (uint16_t*)g, gs);                  \
    } else if (LOSSES_BLOCK_TRANSPOSES && sizeof(S) == 4 && sizeof(T) == 4) {     /* float32 */  \
        losses_block_store_f32((const float*)&Z[0][0], C, (float*)g, gs);                          \
    } else if (LOSSES_BLOCK_TRANSPOSES && sizeof(S) == 8) {                        /* float64 */  \
        losses_block_store_f64((const double*)&Z[0][0], C, (double*)g, gs);                        \
    } else {                                                                                       \
        LOSSES_BLOCK_FOR(C, g[r * gs + i] = ST(Z[i][r]))                                           \
    }                                                                                              \
    if (check) {                                                                                   \
        double work[4 * LOSSES_BLOCK_MAX_C];                                                       \
        for (int r = 0; r < R; r++)                                                                \
            if (refine[r])                                                                         \
                REFINE(x + r * rs, C, soft ? t + r * ts : NULL, soft ? 0 : y[r], eps,              \
                       (double)batch, (ptrdiff_t)kf[r], (double)a[r], g + r * gs, work);           \
    }                                                                                              \
    return 0;                                                                                      \
}

/* the refinement chain of the row code per policy: double, then double-double (A = float32),
   or double-double directly (A = float64); policies without wider arithmetic never call it (the
   check's constants LOSSES_UA_<P> ... are losses_refine.h's) */
#define LOSSES_REFINE_VIA_F64(S)                                                                   \
static void losses_block_refine_##S##_f32(const uint16_t* x, ptrdiff_t C, const uint16_t* t,      \
                                          int64_t y, double eps, double batch, ptrdiff_t k,       \
                                          double a, uint16_t* g, double* work) {                   \
    if (losses_refine_f64_##S(x, C, t, y, eps, batch, k, a, g, work))                              \
        losses_refine_dd_##S(x, C, t, y, eps, batch, k, a, g, work);                               \
}
LOSSES_REFINE_VIA_F64(f16)
LOSSES_REFINE_VIA_F64(bf16)
#define losses_block_refine_f16_f64 losses_refine_dd_f16
#define losses_block_refine_bf16_f64 losses_refine_dd_bf16
#define losses_block_refine_f32_f64 losses_refine_dd_f32
/* the tight second stage of the check (losses_refine.h) where the row code has it */
#define losses_block_tight_f16_f32(x, a, k, e, t, g, stride, C, s, Tk, tk, D, T, sm, batch, ae)   \
    losses_cancels_tight_f16(x, a, k, e, t, g, stride, C, s, Tk, tk, D, T, sm, batch, ae,         \
                             LOSSES_US_HALF_f16, LOSSES_ETAS_HALF_f16)
#define losses_block_tight_bf16_f32(x, a, k, e, t, g, stride, C, s, Tk, tk, D, T, sm, batch, ae)  \
    losses_cancels_tight_bf16(x, a, k, e, t, g, stride, C, s, Tk, tk, D, T, sm, batch, ae,        \
                              LOSSES_US_HALF_bf16, LOSSES_ETAS_HALF_bf16)
#define LOSSES_BLOCK_NO_TIGHT(P)                                                                   \
    static inline int losses_block_tight_##P(const void* x, double a, ptrdiff_t k, void* e,        \
                                             void* t, const void* g, ptrdiff_t stride,             \
                                             ptrdiff_t C, double s, double Tk, double tk,          \
                                             double D, double T, int sm, double batch, double ae)  \
    { (void)x; (void)a; (void)k; (void)e; (void)t; (void)g; (void)stride; (void)C; (void)s;       \
      (void)Tk; (void)tk; (void)D; (void)T; (void)sm; (void)batch; (void)ae; return 1; }
LOSSES_BLOCK_NO_TIGHT(f16_f16)
LOSSES_BLOCK_NO_TIGHT(f16_f64)
LOSSES_BLOCK_NO_TIGHT(bf16_bf16)
LOSSES_BLOCK_NO_TIGHT(bf16_f64)
LOSSES_BLOCK_NO_TIGHT(f32_f32)
LOSSES_BLOCK_NO_TIGHT(f32_f64)
LOSSES_BLOCK_NO_TIGHT(f64_f64)
/* never called (WIDE is 0): any function of the right shape */
#define losses_block_refine_none(x, C, t, y, eps, batch, k, a, g, work) ((void)0)

/* the nine policies: name, storage type, compute type, load, store, rounding, exp, log1p,
   the soft-target check's accumulator (LOSSES_DEFINE_CHECK's: float for the 16-bit storage
   formats, double otherwise), the select of the compute type */
LOSSES_DEFINE_CE_BLOCK(f16_f16, uint16_t, float, ld_f16_f16, st_f16_f16,
                       rnd_f16, losses_block_exp_f16, losses_block_log1p_f16, float, losses_block_select_f32,
                       0, losses_block_refine_none, 0)
LOSSES_DEFINE_CE_BLOCK(f16_f32, uint16_t, float, ld_f16_f32, st_f16_f32,
                       rnd_f32, losses_block_exp_f32, log1p_f32, float, losses_block_select_f32,
                       1, losses_block_refine_f16_f32, 1)
LOSSES_DEFINE_CE_BLOCK(f16_f64, uint16_t, double, ld_f16_f64, st_f16_f64,
                       rnd_f64, losses_block_exp_f64, log1p_f64, float, losses_block_select_f64,
                       1, losses_block_refine_f16_f64, 0)
LOSSES_DEFINE_CE_BLOCK(bf16_bf16, uint16_t, float, ld_bf16_bf16, st_bf16_bf16,
                       rnd_bf16, losses_block_exp_bf16, losses_block_log1p_bf16, float, losses_block_select_f32,
                       0, losses_block_refine_none, 0)
LOSSES_DEFINE_CE_BLOCK(bf16_f32, uint16_t, float, ld_bf16_f32, st_bf16_f32,
                       rnd_f32, losses_block_exp_f32, log1p_f32, float, losses_block_select_f32,
                       1, losses_block_refine_bf16_f32, 1)
LOSSES_DEFINE_CE_BLOCK(bf16_f64, uint16_t, double, ld_bf16_f64, st_bf16_f64,
                       rnd_f64, losses_block_exp_f64, log1p_f64, float, losses_block_select_f64,
                       1, losses_block_refine_bf16_f64, 0)
LOSSES_DEFINE_CE_BLOCK(f32_f32, float, float, ld_f32_f32, st_f32_f32,
                       rnd_f32, losses_block_exp_f32, log1p_f32, double, losses_block_select_f32,
                       0, losses_block_refine_none, 0)
LOSSES_DEFINE_CE_BLOCK(f32_f64, float, double, ld_f32_f64, st_f32_f64,
                       rnd_f64, losses_block_exp_f64, log1p_f64, double, losses_block_select_f64,
                       1, losses_block_refine_f32_f64, 0)
LOSSES_DEFINE_CE_BLOCK(f64_f64, double, double, ld_f64_f64, st_f64_f64,
                       rnd_f64, losses_block_exp_f64, log1p_f64, double, losses_block_select_f64,
                       0, losses_block_refine_none, 0)

/*
 * losses_softmax_block_<S>_<A>: rows x[r * rs + 0..C) for r < R, as logsumexp_<S>_<A> and
 * softmax_<S>_<A> compute them row by row:
 *   what = LOSSES_BLOCK_LOGSUMEXP: out[r * os] = R(a + L);
 *          LOSSES_BLOCK_SOFTMAX: out[r * os + i] = R(e_i / D), D = R(1 + s);
 *          LOSSES_BLOCK_LOG_SOFTMAX: out[r * os + i] = R(z_i - L).
 * Returns 0, or 1 without writing anything when a logit of the block is NaN or infinite.
 */
enum { LOSSES_BLOCK_LOGSUMEXP = 0, LOSSES_BLOCK_SOFTMAX = 1, LOSSES_BLOCK_LOG_SOFTMAX = 2 };
#define LOSSES_DEFINE_SOFTMAX_BLOCK(P, S, T, LD, ST, RND, EXP, LOG1P, SEL)                         \
static int losses_softmax_block_##P(const S* restrict x, ptrdiff_t rs, S* restrict out,           \
                                    ptrdiff_t os, int what, const float* restrict table,          \
                                    ptrdiff_t C)                                                  \
{                                                                                                  \
    enum { R = LOSSES_BLOCK_ROWS };                                                                \
    T Z[LOSSES_BLOCK_MAX_C][R];      /* x, then z = R(x - a), then the output */                   \
    T E[LOSSES_BLOCK_MAX_C][R];      /* e = exp_A(z) */                                            \
    T a[R], kf[R], s[R], L[R];                                                                     \
    T acc[8][R];                                                                                   \
    S XS[LOSSES_BLOCK_MAX_C][R];     /* 16-bit storage: the logits, later the output */            \
    LOSSES_BLOCK_SHIFT(S, T, LD, SEL)                                                              \
    LOSSES_BLOCK_FOR(C, Z[i][r] = RND(Z[i][r] - a[r]))                                             \
    LOSSES_BLOCK_EXPS(T, RND, EXP, SEL)                                                            \
    if (what == LOSSES_BLOCK_LOGSUMEXP) {                                                          \
        for (int r = 0; r < R; r++) out[r * os] = ST(RND(a[r] + LOG1P(s[r])));                     \
        return 0;                                                                                  \
    }                                                                                              \
    if (what == LOSSES_BLOCK_SOFTMAX) {                                                            \
        T D[R];                                                                                    \
        LOSSES_BLOCK_LANES(D[r] = RND(1 + s[r]))                                                   \
        LOSSES_BLOCK_FOR(C, Z[i][r] = RND(E[i][r] / D[r]))                                         \
    } else {                                                                                       \
        LOSSES_BLOCK_LANES(L[r] = LOG1P(s[r]))                                                     \
        LOSSES_BLOCK_FOR(C, Z[i][r] = RND(Z[i][r] - L[r]))                                         \
    }                                                                                              \
    if (sizeof(S) == 2) {                                                                          \
        LOSSES_BLOCK_FOR(C, XS[i][r] = ST(Z[i][r]))                                                \
        losses_block_store_u16((const uint16_t*)&XS[0][0], C, (uint16_t*)out, os);                 \
    } else if (LOSSES_BLOCK_TRANSPOSES && sizeof(S) == 4 && sizeof(T) == 4) {     /* float32 */  \
        losses_block_store_f32((const float*)&Z[0][0], C, (float*)out, os);                        \
    } else if (LOSSES_BLOCK_TRANSPOSES && sizeof(S) == 8) {                        /* float64 */  \
        losses_block_store_f64((const double*)&Z[0][0], C, (double*)out, os);                      \
    } else {                                                                                       \
        LOSSES_BLOCK_FOR(C, out[r * os + i] = ST(Z[i][r]))                                         \
    }                                                                                              \
    return 0;                                                                                      \
}
LOSSES_DEFINE_SOFTMAX_BLOCK(f16_f16, uint16_t, float, ld_f16_f16, st_f16_f16, rnd_f16,
                            losses_block_exp_f16, losses_block_log1p_f16, losses_block_select_f32)
LOSSES_DEFINE_SOFTMAX_BLOCK(f16_f32, uint16_t, float, ld_f16_f32, st_f16_f32, rnd_f32,
                            losses_block_exp_f32, log1p_f32, losses_block_select_f32)
LOSSES_DEFINE_SOFTMAX_BLOCK(f16_f64, uint16_t, double, ld_f16_f64, st_f16_f64, rnd_f64,
                            losses_block_exp_f64, log1p_f64, losses_block_select_f64)
LOSSES_DEFINE_SOFTMAX_BLOCK(bf16_bf16, uint16_t, float, ld_bf16_bf16, st_bf16_bf16, rnd_bf16,
                            losses_block_exp_bf16, losses_block_log1p_bf16, losses_block_select_f32)
LOSSES_DEFINE_SOFTMAX_BLOCK(bf16_f32, uint16_t, float, ld_bf16_f32, st_bf16_f32, rnd_f32,
                            losses_block_exp_f32, log1p_f32, losses_block_select_f32)
LOSSES_DEFINE_SOFTMAX_BLOCK(bf16_f64, uint16_t, double, ld_bf16_f64, st_bf16_f64, rnd_f64,
                            losses_block_exp_f64, log1p_f64, losses_block_select_f64)
LOSSES_DEFINE_SOFTMAX_BLOCK(f32_f32, float, float, ld_f32_f32, st_f32_f32, rnd_f32,
                            losses_block_exp_f32, log1p_f32, losses_block_select_f32)
LOSSES_DEFINE_SOFTMAX_BLOCK(f32_f64, float, double, ld_f32_f64, st_f32_f64, rnd_f64,
                            losses_block_exp_f64, log1p_f64, losses_block_select_f64)
LOSSES_DEFINE_SOFTMAX_BLOCK(f64_f64, double, double, ld_f64_f64, st_f64_f64, rnd_f64,
                            losses_block_exp_f64, log1p_f64, losses_block_select_f64)

#endif /* PRECISION_LOSSES_BLOCK_H */
