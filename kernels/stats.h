/*
 * stats.h -- reductions over the reduced axes of an array and the batch-norm elementwise maps,
 * for precision.stats and precision.batchnorm (kernels/stats.pyx.tp calls these).
 *
 * Layout.  Every call sees a C-contiguous array of shape (A, K, B): K kept channels, and for
 * channel k the reduced sequence s = 0 .. A*B - 1 with element s = (a, b) at
 * x[(a*K + k)*B + b], a = s / B, b = s % B (row-major over the reduced axes).  (N, C) over N is
 * (N, C, 1); (N, C, H, W) over N, H, W is (N, C, H*W); a full reduction is (1, 1, n).
 *
 * Terms.  A reduction sums one term per element, every operation rounded to the arithmetic
 * format A (R(.) below; v = x loaded exactly into A, c_k the channel's centre, y a second
 * array of x's layout):
 *     STATS_TERM_X       v
 *     STATS_TERM_SQ      R(v * v)
 *     STATS_TERM_DEV2    R(d * d),          d = R(v - c_k)
 *     STATS_TERM_DEVDOT  R(d * y),          d = R(v - c_k),  y loaded exactly into A
 *
 * Orders (the same as precision/exact/emulate.py, which the tests replay):
 *     sequential  s = +0; s = R(s + t) in sequence order
 *     kahan       s = c = +0; per t: u = R(t - c); n = R(s + u); c = R(R(n - s) - u); s = n
 *     pairwise    leaves of STATS_LEAF = 128 consecutive terms (the last may be shorter); in
 *                 a leaf lane j = 0..7 starts at +0 and adds terms j, j+8, j+16, ...; the
 *                 leaf's sum is ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)); leaf sums are combined
 *                 level by level, (s0+s1), (s2+s3), ..., an odd last one moving up unchanged.
 * Welford (Welford 1962), sequential: m = M2 = +0; for the k-th element (k = 1, 2, ...):
 *     d = R(v - m);  m = R(m + R(d / k_A));  M2 = R(M2 + R(d * R(v - m)))
 * with k_A = k rounded once into A.
 *
 * The pairwise order is summation.h's (the project's one copy): the gather path fills a leaf
 * of terms and sums it with sum_leaf_<A> and the SUMMATION_TREE_* binary counter.  The column
 * path, stats_cols_pairwise, keeps a loop of its own because its layout differs: lane j of a
 * leaf is a vector of per-column accumulators, so the loop vectorises across columns.  It is
 * the same order -- on each column exactly the additions of summation.h's sum_pairwise, the
 * level-by-level tree built with the same binary counter -- and tests/test_stats.py compares
 * both paths with precision.exact.emulate's pairwise sum.
 *
 * Work on different channels is independent; the kernels split channels (or blocks of
 * columns) between threads, so no result depends on the number of threads.
 *
 * Batch norm, per element of channel k (mu, s, g, b per channel, already values of A):
 *     forward     y = R(R(R(R(v - mu) * s) * g) + b)          (affine; R(R(v - mu) * s) if not)
 *     backward    dx = R(R(R(R(dy - gm) - R(R(v - mu) * kk)) * s) * g)          (training)
 *                 dx = R(R(dy * s) * g)                                         (inference)
 * stored once into the storage format.
 */
#ifndef PRECISION_STATS_H
#define PRECISION_STATS_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "fp.h"
#include "summation.h"

#define STATS_LEAF SUMMATION_LEAF       /* summation.h's leaf and lanes */
#define STATS_LANES SUMMATION_LANES
/* at most 2^63 elements: a binary counter of leaves needs fewer levels than this */
#define STATS_LEVELS 64
/* columns per block of the column path: 8 lanes of float fill 16 KiB (L1) */
#define STATS_COLUMN_BLOCK 512

enum { STATS_TERM_X = 0, STATS_TERM_SQ = 1, STATS_TERM_DEV2 = 2, STATS_TERM_DEVDOT = 3 };
enum { STATS_PAIRWISE = 0, STATS_SEQUENTIAL = 1, STATS_KAHAN = 2 };


/* Strict float16 with F16C (the x86-64-v3 build): vcvtps2ph rounds float -> float16 to nearest
 * even with subnormals and overflow exactly as rnd_f16, and vcvtph2ps loads exactly, so the
 * column loops of the f16_f16 policy run 8 columns per instruction with the same bits (tests
 * compare the builds).  Software rounding costs ~17 instructions per operation, this pair 2. */
#if defined(__F16C__) && defined(__AVX__)
#include <immintrin.h>
#define STATS_F16C 1
static inline __m256 stats_v8_rnd_f16(__m256 x)
{ return _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT)); }
static inline __m256 stats_v8_ld_f16(const uint16_t* p)
{ return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p)); }
/* acc[c] = R(acc[c] + x[c]) (centre == NULL) or R(acc[c] + R(d * d)), d = R(x[c] - centre[c]),
 * for the multiple-of-8 part of w; returns where the scalar tail starts */
static inline ptrdiff_t stats_v8_add_row_f16(float* acc, const uint16_t* row, const float* centre,
                                             ptrdiff_t w)
{
    ptrdiff_t c = 0;
    if (centre == NULL) {
        for (; c + 8 <= w; c += 8) {
            __m256 a = _mm256_loadu_ps(acc + c);
            _mm256_storeu_ps(acc + c, stats_v8_rnd_f16(_mm256_add_ps(a, stats_v8_ld_f16(row + c))));
        }
    } else {
        for (; c + 8 <= w; c += 8) {
            __m256 a = _mm256_loadu_ps(acc + c);
            __m256 d = stats_v8_rnd_f16(_mm256_sub_ps(stats_v8_ld_f16(row + c),
                                                      _mm256_loadu_ps(centre + c)));
            __m256 t = stats_v8_rnd_f16(_mm256_mul_ps(d, d));
            _mm256_storeu_ps(acc + c, stats_v8_rnd_f16(_mm256_add_ps(a, t)));
        }
    }
    return c;
}
#else
#define STATS_F16C 0
#endif

/* One instantiation of stats_policy.h per (storage, arithmetic) policy of kernels/policies.py
 * (it #undefs these four at its end). */
#define STATS_S f16
#define STATS_A f16
#define STATS_ST uint16_t
#define STATS_T float
#define STATS_F16_STRICT 1
#include "stats_policy.h"
#define STATS_S f16
#define STATS_A f32
#define STATS_ST uint16_t
#define STATS_T float
#include "stats_policy.h"
#define STATS_S f16
#define STATS_A f64
#define STATS_ST uint16_t
#define STATS_T double
#include "stats_policy.h"
#define STATS_S bf16
#define STATS_A bf16
#define STATS_ST uint16_t
#define STATS_T float
#include "stats_policy.h"
#define STATS_S bf16
#define STATS_A f32
#define STATS_ST uint16_t
#define STATS_T float
#include "stats_policy.h"
#define STATS_S bf16
#define STATS_A f64
#define STATS_ST uint16_t
#define STATS_T double
#include "stats_policy.h"
#define STATS_S f32
#define STATS_A f32
#define STATS_ST float
#define STATS_T float
#include "stats_policy.h"
#define STATS_S f32
#define STATS_A f64
#define STATS_ST float
#define STATS_T double
#include "stats_policy.h"
#define STATS_S f64
#define STATS_A f64
#define STATS_ST double
#define STATS_T double
#include "stats_policy.h"

#endif /* PRECISION_STATS_H */
