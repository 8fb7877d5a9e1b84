/*
 * summation.h -- the project's summation orders (DESIGN.md 3.4), one copy for every kernel.
 *
 * Orders (R(.) rounds to the arithmetic format A; every sum starts from +0):
 *
 *   sequential  s = +0;  s = R(s + x_i) for i = 0, 1, ..., n-1.
 *   kahan       s = c = +0;  per x_i: y = R(x_i - c); t = R(s + y); c = R(R(t - s) - y); s = t.
 *   pairwise    the fixed block structure:
 *                 1. leaves: x_0..x_127, x_128..x_255, ... (the last may be shorter);
 *                 2. a leaf is summed in 8 lanes: lane j = R(...R(R(+0 + x_j) + x_{j+8})...)
 *                    over the leaf's elements j, j+8, j+16, ...;
 *                 3. its lanes are combined ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7));
 *                 4. leaf sums are combined level by level: (s0 + s1), (s2 + s3), ... ; an odd
 *                    last one moves up unchanged; repeat until one is left.
 *               The structure depends on n only: results are the same for any thread count,
 *               build (baseline / AVX2 / AVX-512) or stride.  The emulated twin is
 *               precision.exact.emulate's pairwise_sum / sequential_sum / kahan_sum.
 *
 * API.  A = f16, bf16, f32, f64 (arithmetic format); T_A its compute type (float, float,
 * float, double); a policy P = <S>_<A> is a storage format S and an arithmetic format A as in
 * kernels/policies.py (A = S or wider), T_S S's C type (uint16_t for f16/bf16, float, double).
 *
 *   Values already in A, contiguous (the fast path: 4 leaves interleaved, vectorised lanes):
 *     T_A sum_pairwise_<A>(const T_A* v, ptrdiff_t n)
 *
 *   A strided run x[0], x[stride], ..., x[(n-1)*stride] of S values (stride in elements, any
 *   sign), each loaded exactly into A (fp.h's ld_<S>_<A>) and summed in A:
 *     T_A sum_pairwise_<S>_<A>(const T_S* x, ptrdiff_t n, ptrdiff_t stride)
 *     T_A sum_sequential_<S>_<A>(const T_S* x, ptrdiff_t n, ptrdiff_t stride)
 *     T_A sum_kahan_<S>_<A>(const T_S* x, ptrdiff_t n, ptrdiff_t stride)
 *   The result stays in the compute type; store it with fp.h's st_<S>_<A> (one rounding).
 *
 *   int pairwise_depth(ptrdiff_t n): additions on the longest path of the pairwise sum of n
 *     values (for error bounds: |error| <= depth * u * sum |x_i| to first order).
 *
 * New reductions in another order or block size do not belong here: the orders above are
 * the ones the emulated twins and the README describe.  Cython: cimport summation
 * (kernels/summation.pxd).
 */
#ifndef PRECISION_SUMMATION_H
#define PRECISION_SUMMATION_H

#include <stddef.h>
#include <stdint.h>
#include "fp.h"

#define SUMMATION_LEAF 128     /* elements per leaf */
#define SUMMATION_LANES 8      /* lanes per leaf */

static inline int pairwise_depth(ptrdiff_t n)
{
    if (n <= SUMMATION_LEAF) return (int)((n + SUMMATION_LANES - 1) / SUMMATION_LANES) + 3;
    int levels = 0;
    for (ptrdiff_t leaves = (n + SUMMATION_LEAF - 1) / SUMMATION_LEAF; leaves > 1;
         leaves = (leaves + 1) / 2)
        levels++;
    return SUMMATION_LEAF / SUMMATION_LANES + 3 + levels;
}

/* The level-by-level combination of step 4 as a binary counter: a stack of partial sums,
 * merged whenever two of one level meet (a leaf that completes a pair at level l merges l + 1
 * times), collapsed right to left at the end; this adds in exactly the order of step 4.
 * PUSH adds one leaf sum; FINISH returns the total (+0 for no leaves).  The _AS forms name the
 * tree N, for code that builds several sums at once. */
#define SUMMATION_TREE_DECLARE_AS(N, T) T N##_stack[64]; int N##_depth = 0; size_t N##_count = 0
#define SUMMATION_TREE_PUSH_AS(N, T, RND, LEAF_SUM)                                            \
    do {                                                                                       \
        T leaf_ = (LEAF_SUM);                                                                  \
        for (size_t carry_ = N##_count; carry_ & 1; carry_ >>= 1)                              \
            leaf_ = RND(N##_stack[--N##_depth] + leaf_);                                       \
        N##_stack[N##_depth++] = leaf_;                                                        \
        N##_count++;                                                                           \
    } while (0)
#define SUMMATION_TREE_FINISH_AS(N, T, RND, OUT)                                               \
    do {                                                                                       \
        T total_ = 0;                                                                          \
        if (N##_depth > 0) {                                                                   \
            total_ = N##_stack[N##_depth - 1];                                                 \
            for (int j_ = N##_depth - 2; j_ >= 0; j_--) total_ = RND(N##_stack[j_] + total_);  \
        }                                                                                      \
        (OUT) = total_;                                                                        \
    } while (0)
#define SUMMATION_TREE_DECLARE(T) SUMMATION_TREE_DECLARE_AS(tree, T)
#define SUMMATION_TREE_PUSH(T, RND, LEAF_SUM) SUMMATION_TREE_PUSH_AS(tree, T, RND, LEAF_SUM)
#define SUMMATION_TREE_FINISH(T, RND, OUT) SUMMATION_TREE_FINISH_AS(tree, T, RND, OUT)

/* Contiguous values of A.  Written so that GCC vectorises the lanes: "GCC unroll 1" keeps
 * the 8-lane update a loop (fully unrolled, it is left scalar), and four leaves are summed
 * interleaved so that their dependency chains overlap; the operations are exactly steps 2-3. */
#define SUMMATION_DEFINE_LEAVES(A, T, RND)                                                     \
static inline T sum_leaf_##A(const T* b, ptrdiff_t m)                                          \
{                                                                                              \
    T acc[SUMMATION_LANES] = {0};                                                              \
    ptrdiff_t i = 0;                                                                           \
    for (; i + SUMMATION_LANES <= m; i += SUMMATION_LANES) {                                   \
        _Pragma("GCC unroll 1")                                                                \
        for (int j = 0; j < SUMMATION_LANES; j++) acc[j] = RND(acc[j] + b[i + j]);             \
    }                                                                                          \
    for (int j = 0; j < m - i; j++) acc[j] = RND(acc[j] + b[i + j]);                           \
    return RND(RND(RND(acc[0] + acc[1]) + RND(acc[2] + acc[3]))                                \
               + RND(RND(acc[4] + acc[5]) + RND(acc[6] + acc[7])));                            \
}                                                                                              \
static inline void sum_leaves4_##A(const T* b, T* out)                                         \
{                                                                                              \
    T acc[4][SUMMATION_LANES];                                                                 \
    for (int L = 0; L < 4; L++)                                                                \
        for (int j = 0; j < SUMMATION_LANES; j++) acc[L][j] = 0;                               \
    for (int r = 0; r < SUMMATION_LEAF; r += SUMMATION_LANES) {                                \
        for (int L = 0; L < 4; L++) {                                                          \
            const T* p = b + L * SUMMATION_LEAF + r;                                           \
            _Pragma("GCC unroll 1")                                                            \
            for (int j = 0; j < SUMMATION_LANES; j++) acc[L][j] = RND(acc[L][j] + p[j]);       \
        }                                                                                      \
    }                                                                                          \
    for (int L = 0; L < 4; L++) {                                                              \
        const T* a = acc[L];                                                                   \
        out[L] = RND(RND(RND(a[0] + a[1]) + RND(a[2] + a[3]))                                  \
                     + RND(RND(a[4] + a[5]) + RND(a[6] + a[7])));                              \
    }                                                                                          \
}
#define SUMMATION_DEFINE_TREE(A, T, RND)                                                       \
static T sum_pairwise_tree_##A(const T* v, ptrdiff_t n)                                        \
{                                                                                              \
    SUMMATION_TREE_DECLARE(T);                                                                 \
    ptrdiff_t start = 0;                                                                       \
    T total;                                                                                   \
    while (start < n) {                                                                        \
        if (n - start >= 4 * SUMMATION_LEAF) {                                                 \
            T sums[4];                                                                         \
            sum_leaves4_##A(v + start, sums);                                                  \
            for (int q = 0; q < 4; q++) SUMMATION_TREE_PUSH(T, RND, sums[q]);                  \
            start += 4 * SUMMATION_LEAF;                                                       \
        } else {                                                                               \
            ptrdiff_t m = n - start < SUMMATION_LEAF ? n - start : SUMMATION_LEAF;             \
            SUMMATION_TREE_PUSH(T, RND, sum_leaf_##A(v + start, m));                           \
            start += m;                                                                        \
        }                                                                                      \
    }                                                                                          \
    SUMMATION_TREE_FINISH(T, RND, total);                                                      \
    return total;                                                                              \
}                                                                                              \
/* one leaf (short rows, the common case) inline, longer runs through the tree */              \
static inline T sum_pairwise_##A(const T* v, ptrdiff_t n)                                      \
{                                                                                              \
    if (n <= SUMMATION_LEAF) return n > 0 ? sum_leaf_##A(v, n) : (T)0;                         \
    return sum_pairwise_tree_##A(v, n);                                                        \
}

#if defined(__F16C__) && defined(__AVX__)
/* float16 arithmetic where the build targets F16C (x86-64-v3/v4): a leaf's 8 lanes are one
 * vector and each lane's sum is rounded by vcvtps2ph/vcvtph2ps, which round float -> float16 to
 * nearest-even with subnormals and overflow exactly as rnd_f16 does; a NaN lane keeps its value
 * (rnd_f16 returns a NaN unchanged; the conversion would drop low payload bits).  The same
 * additions in the same order as the scalar leaves: the same bits (tests compare the builds).
 * rnd_f16 itself stays scalar code: GCC vectorises it in the kernels' loops, not a conversion. */
#include <immintrin.h>
static inline __m256 summation_rnd8_f16(__m256 x)
{
    __m256 r = _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
    return _mm256_blendv_ps(r, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}
static inline float summation_lanes_f16(const float* a)
{
    return rnd_f16(rnd_f16(rnd_f16(a[0] + a[1]) + rnd_f16(a[2] + a[3]))
                   + rnd_f16(rnd_f16(a[4] + a[5]) + rnd_f16(a[6] + a[7])));
}
static inline float sum_leaf_f16(const float* b, ptrdiff_t m)
{
    __m256 acc = _mm256_setzero_ps();
    ptrdiff_t i = 0;
    for (; i + SUMMATION_LANES <= m; i += SUMMATION_LANES)
        acc = summation_rnd8_f16(_mm256_add_ps(acc, _mm256_loadu_ps(b + i)));
    float a[SUMMATION_LANES];
    _mm256_storeu_ps(a, acc);
    for (int j = 0; j < m - i; j++) a[j] = rnd_f16(a[j] + b[i + j]);
    return summation_lanes_f16(a);
}
static inline void sum_leaves4_f16(const float* b, float* out)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    for (int r = 0; r < SUMMATION_LEAF; r += SUMMATION_LANES) {
        acc0 = summation_rnd8_f16(_mm256_add_ps(acc0, _mm256_loadu_ps(b + r)));
        acc1 = summation_rnd8_f16(_mm256_add_ps(acc1, _mm256_loadu_ps(b + SUMMATION_LEAF + r)));
        acc2 = summation_rnd8_f16(_mm256_add_ps(acc2, _mm256_loadu_ps(b + 2 * SUMMATION_LEAF + r)));
        acc3 = summation_rnd8_f16(_mm256_add_ps(acc3, _mm256_loadu_ps(b + 3 * SUMMATION_LEAF + r)));
    }
    float a[4][SUMMATION_LANES];
    _mm256_storeu_ps(a[0], acc0);
    _mm256_storeu_ps(a[1], acc1);
    _mm256_storeu_ps(a[2], acc2);
    _mm256_storeu_ps(a[3], acc3);
    for (int L = 0; L < 4; L++) out[L] = summation_lanes_f16(a[L]);
}
#else
SUMMATION_DEFINE_LEAVES(f16, float, rnd_f16)
#endif
SUMMATION_DEFINE_TREE(f16, float, rnd_f16)
SUMMATION_DEFINE_LEAVES(bf16, float, rnd_bf16)
SUMMATION_DEFINE_TREE(bf16, float, rnd_bf16)
SUMMATION_DEFINE_LEAVES(f32, float, rnd_f32)
SUMMATION_DEFINE_TREE(f32, float, rnd_f32)
SUMMATION_DEFINE_LEAVES(f64, double, rnd_f64)
SUMMATION_DEFINE_TREE(f64, double, rnd_f64)

/* A strided run of S values in policy P: each leaf is loaded into A (exact) and summed by the
 * contiguous leaf above, so both paths add in the same order. */
#define SUMMATION_DEFINE_POLICY(S, A, TS, T)                                                   \
static inline T sum_pairwise_##S##_##A(const TS* x, ptrdiff_t n, ptrdiff_t stride)                  \
{                                                                                              \
    SUMMATION_TREE_DECLARE(T);                                                                 \
    T leaf[SUMMATION_LEAF];                                                                    \
    T total;                                                                                   \
    for (ptrdiff_t start = 0; start < n; start += SUMMATION_LEAF) {                            \
        ptrdiff_t m = n - start < SUMMATION_LEAF ? n - start : SUMMATION_LEAF;                 \
        for (ptrdiff_t i = 0; i < m; i++) leaf[i] = ld_##S##_##A(x[(start + i) * stride]);    \
        SUMMATION_TREE_PUSH(T, rnd_##A, sum_leaf_##A(leaf, m));                                \
    }                                                                                          \
    SUMMATION_TREE_FINISH(T, rnd_##A, total);                                                  \
    return total;                                                                              \
}                                                                                              \
static inline T sum_sequential_##S##_##A(const TS* x, ptrdiff_t n, ptrdiff_t stride)           \
{                                                                                              \
    T s = 0;                                                                                   \
    for (ptrdiff_t i = 0; i < n; i++) s = rnd_##A(s + ld_##S##_##A(x[i * stride]));            \
    return s;                                                                                  \
}                                                                                              \
static inline T sum_kahan_##S##_##A(const TS* x, ptrdiff_t n, ptrdiff_t stride)                \
{                                                                                              \
    T s = 0, c = 0;                                                                            \
    for (ptrdiff_t i = 0; i < n; i++) {                                                        \
        T y = rnd_##A(ld_##S##_##A(x[i * stride]) - c);                                        \
        T t = rnd_##A(s + y);                                                                  \
        c = rnd_##A(rnd_##A(t - s) - y);                                                       \
        s = t;                                                                                 \
    }                                                                                          \
    return s;                                                                                  \
}

SUMMATION_DEFINE_POLICY(f16, f16, uint16_t, float)
SUMMATION_DEFINE_POLICY(f16, f32, uint16_t, float)
SUMMATION_DEFINE_POLICY(f16, f64, uint16_t, double)
SUMMATION_DEFINE_POLICY(bf16, bf16, uint16_t, float)
SUMMATION_DEFINE_POLICY(bf16, f32, uint16_t, float)
SUMMATION_DEFINE_POLICY(bf16, f64, uint16_t, double)
SUMMATION_DEFINE_POLICY(f32, f32, float, float)
SUMMATION_DEFINE_POLICY(f32, f64, float, double)
SUMMATION_DEFINE_POLICY(f64, f64, double, double)

#endif /* PRECISION_SUMMATION_H */
