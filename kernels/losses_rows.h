/*
 * losses_rows.h -- row scans of the loss kernels on bit patterns: the first index of a value
 * (the max's index k) and the probability-row check (softmax_cross_entropy's soft targets,
 * check_probabilities_S).  Per storage format S = f16, bf16, f32, f64 (T_S its C type):
 *
 *   ptrdiff_t losses_find_<S>(const T_S* x, ptrdiff_t n, <bits> target, int any_zero)
 *       the first index whose bits equal target (any_zero: whose magnitude bits are 0, +0 or
 *       -0); it must exist.  Runs of 64 are tested at once (GCC makes that vector compares).
 *   double losses_check_row_<S>(const T_S* t, ptrdiff_t n, int* flags)
 *       *flags = PROBS_FLAG_NONFINITE if some value is NaN or infinite, | PROBS_FLAG_NEGATIVE
 *       if some value is < 0 (not -0); returns the row's sum in summation.h's pairwise order
 *       (leaves of 128 in 8 lanes: lane j adds elements j, j+8, ...; lanes combined
 *       ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)); leaves level by level), in float for the 16-bit
 *       formats (its rounding error is far below their tolerance), double otherwise.  A row of
 *       up to 128 values is one leaf: the order of losses_block.h's check.  Several leaves
 *       are independent chains of additions, so a long row's sum is not bound by their latency.
 *   double losses_check_copy_row_<S>(const T_S* t, ptrdiff_t n, int* flags, T_S* out)
 *       the same, and out[i] = t[i] (the kernels' copy of the targets, in the same pass).
 *   unsigned char losses_probs_code(int flags, double total, double tolerance)
 *       the row's check code: PROBS_OK, PROBS_NONFINITE, PROBS_NEGATIVE, PROBS_SUM_OFF (the
 *       first that applies; precision.losses turns a code into its error message).
 */
#ifndef PRECISION_LOSSES_ROWS_H
#define PRECISION_LOSSES_ROWS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include "fp.h"
#include "summation.h"

enum { PROBS_FLAG_NONFINITE = 1, PROBS_FLAG_NEGATIVE = 2 };
/* the codes precision.losses reads (check_probabilities_S, target_codes=) */
enum { PROBS_OK = 0, PROBS_NONFINITE = 1, PROBS_NEGATIVE = 2, PROBS_SUM_OFF = 3 };

static inline unsigned char losses_probs_code(int flags, double total, double tolerance)
{
    if (flags & PROBS_FLAG_NONFINITE) return PROBS_NONFINITE;
    if (flags & PROBS_FLAG_NEGATIVE) return PROBS_NEGATIVE;
    if (!(fabs(total - 1) <= tolerance)) return PROBS_SUM_OFF;
    return PROBS_OK;
}

#define LOSSES_SAME_BITS(x) (x)
/* float64 magnitude and exponent masks, for Cython code that cannot write 64-bit literals */
static const uint64_t LOSSES_MAG64 = 0x7FFFFFFFFFFFFFFFull;
static const uint64_t LOSSES_EXP64 = 0x7FF0000000000000ull;

/* one pass for the flags (and the copy), which reads the row from memory, then the sum from
   cache (in one loop with the flags, GCC unrolls a leaf and spills the lanes) */
#define LOSSES_DEFINE_CHECK(S, T, LD, B, TOBITS, EXP, SIGN, MAG, ACC)                         \
static inline __attribute__((always_inline)) double losses_check_row_impl_##S(                \
        const T* restrict t, ptrdiff_t n, int* flags, T* restrict out, const int copy) {      \
    B special = 0, negative = 0;                                                              \
    for (ptrdiff_t i = 0; i < n; i++) {                                                       \
        B u = TOBITS(t[i]);                                                                   \
        special |= (B)((u & EXP) == EXP);                                                     \
        negative |= (B)(((u & SIGN) != 0) & ((u & MAG) != 0));                                \
        if (copy) out[i] = t[i];                                                              \
    }                                                                                         \
    *flags = (special ? PROBS_FLAG_NONFINITE : 0) | (negative ? PROBS_FLAG_NEGATIVE : 0);     \
    SUMMATION_TREE_DECLARE(ACC);                                                              \
    ACC total;                                                                                \
    for (ptrdiff_t start = 0; start < n; start += SUMMATION_LEAF) {                           \
        ptrdiff_t m = n - start < SUMMATION_LEAF ? n - start : SUMMATION_LEAF;                \
        const T* b = t + start;                                                               \
        ACC acc[8] = {0};                                                                     \
        ptrdiff_t i = 0;                                                                      \
        for (; i + 8 <= m; i += 8) {                                                          \
            _Pragma("GCC unroll 1")                                                           \
            for (int j = 0; j < 8; j++) acc[j] += (ACC)LD(b[i + j]);                          \
        }                                                                                     \
        for (int j = 0; j < m - i; j++) acc[j] += (ACC)LD(b[i + j]);                          \
        SUMMATION_TREE_PUSH(ACC, LOSSES_SAME_BITS,                                            \
                            ((acc[0] + acc[1]) + (acc[2] + acc[3]))                           \
                            + ((acc[4] + acc[5]) + (acc[6] + acc[7])));                       \
    }                                                                                         \
    SUMMATION_TREE_FINISH(ACC, LOSSES_SAME_BITS, total);                                      \
    return total;                                                                             \
}                                                                                             \
static inline double losses_check_row_##S(const T* t, ptrdiff_t n, int* flags) {              \
    return losses_check_row_impl_##S(t, n, flags, NULL, 0);                                   \
}                                                                                             \
static inline double losses_check_copy_row_##S(const T* t, ptrdiff_t n, int* flags, T* out) { \
    return losses_check_row_impl_##S(t, n, flags, out, 1);                                    \
}

#define LOSSES_DEFINE_FIND(S, T, B, TOBITS, MAG)                                              \
static inline ptrdiff_t losses_find_##S(const T* x, ptrdiff_t n, B target, int any_zero) {    \
    B mask = any_zero ? (B)(MAG) : (B)~(B)0;                                                  \
    B want = any_zero ? (B)0 : target;                                                        \
    ptrdiff_t k = 0;                                                                          \
    for (; k < n; k += 64) {                                                                  \
        /* a run of up to 64 tested in one loop without a break: GCC vectorises it (an inner  \
           loop of constant length it unrolls and leaves scalar) */                           \
        ptrdiff_t m = n - k < 64 ? n - k : 64;                                                \
        B hit = 0;                                                                            \
        for (ptrdiff_t j = 0; j < m; j++) hit |= (B)((TOBITS(x[k + j]) & mask) == want);      \
        if (hit) break;                                                                       \
    }                                                                                         \
    while ((TOBITS(x[k]) & mask) != want) k++;                                                \
    return k;                                                                                 \
}

LOSSES_DEFINE_FIND(f16, uint16_t, uint16_t, LOSSES_SAME_BITS, 0x7FFFu)
LOSSES_DEFINE_FIND(bf16, uint16_t, uint16_t, LOSSES_SAME_BITS, 0x7FFFu)
LOSSES_DEFINE_FIND(f32, float, uint32_t, fp_f32_bits, 0x7FFFFFFFu)
LOSSES_DEFINE_FIND(f64, double, uint64_t, fp_f64_bits, 0x7FFFFFFFFFFFFFFFull)
LOSSES_DEFINE_CHECK(f16, uint16_t, ld16_f16, uint16_t, LOSSES_SAME_BITS, 0x7C00u, 0x8000u,
                    0x7FFFu, float)
LOSSES_DEFINE_CHECK(bf16, uint16_t, ld16_bf16, uint16_t, LOSSES_SAME_BITS, 0x7F80u, 0x8000u,
                    0x7FFFu, float)
LOSSES_DEFINE_CHECK(f32, float, LOSSES_SAME_BITS, uint32_t, fp_f32_bits, 0x7F800000u,
                    0x80000000u, 0x7FFFFFFFu, double)
LOSSES_DEFINE_CHECK(f64, double, LOSSES_SAME_BITS, uint64_t, fp_f64_bits, 0x7FF0000000000000ull,
                    0x8000000000000000ull, 0x7FFFFFFFFFFFFFFFull, double)

#endif /* PRECISION_LOSSES_ROWS_H */
