/*
 * losses_soft.h -- softmax cross-entropy of one row of logits with soft targets, in the
 * arithmetic of the storage format, for the AVX2 and AVX-512 builds: float32 (policy f32_f32),
 * float16 (f16_f16), bfloat16 (bf16_bf16) and float64 (f64_f64).  The row code of losses.pyx.tp (_shift_, _exps_,
 * the target check and copy, _ce_soft_grad_ / _ce_row_) makes seven passes over a row: the
 * max, the exps, their sum, the check, the targets' sum, the loss terms with the gradient, their
 * sum.  Here every sum is built
 * in the pass that makes its terms, with the same operations in the same order and the same
 * roundings R to the format (float16: every result rounded by the F16C conversions, which round to
 * nearest-even with subnormals and overflow as fp.h's rnd_f16 does for every value that is not a
 * NaN; bfloat16: by rnd_bf16's bit trick on 8 lanes, without its NaN select; float64: no rounding
 * but the operations' own), so the results are the same bits (tests
 * compare the builds; the baseline build runs the row code).  The passes are written once
 * (losses_soft_passes.h) over 16 values of the compute type: lsv16 (16 floats, float32 and
 * the 16-bit formats) and ldv16 (16 doubles, float64), with the same operation names:
 *
 *   pass 1  a = max x_i and k = the first index attaining it.  Values compared as floats: -0 and
 *           +0 are equal, so k (the first x_k equal to the max) and a = x_k are the row code's,
 *           which orders bit patterns and then looks for the first value equal to the max.  A
 *           NaN or infinite logit: return 0 having written nothing (the row code takes the row).
 *   pass 2  e_i = exp(R(x_i - a)) (float32, float64: exp_nonpositive.h's vector forms of
 *           exp_nonpositive_f32 / _f64; float16: the module's table, at the index of
 *           losses_exp_index_f16 in losses_block.h) into e, and in summation.h's
 *           pairwise order (leaves of 128 values summed in 8 lanes: a chunk of 16 values adds its
 *           first 8, then its last 8, one to each lane) s = sum e_i and Tk = sum t'_i, both with
 *           the k-th term replaced by +0 as the row code does (t' = t, or R(R(c1 t) + c2) when
 *           smoothing); whether some t_i < 0; float16: the check's float sum of t.
 *   pass 3  L = log1p(s) (fp.h's, per row), D = R(1 + s), T = R(Tk + t'_k); the loss sum of
 *           w_i = t'_i != 0 ? R(t'_i R(L - R(x_i - a))) : 0, and
 *           g_i = R(R(T R(e_i / D)) - t'_i), times the exact 1/N (N a power of 2) or divided by
 *           N, except g_k = R(R(Tk - R(t'_k s)) / D) (times 1/N or / N).
 * float64 gradient rows whose address is a multiple of 64 bytes (the API allocates its gradients so)
 * are written with streaming stores, past the caches: the gradient is not read again here, and a
 * normal store first reads each line from memory, a quarter of the row's traffic (x, t, the
 * gradient's read and its write); 13 % of the AVX-512 time on 4096 x 1000 in a harness.  For
 * float32 the same measured slower (a fifth slower in the AVX2 build).  An sfence ends the row's
 * streamed stores.  The values are the same; only how they reach memory differs.
 * float16 and bfloat16: a row whose T is not finite (a NaN or infinite target, or a sum past the
 * format's largest value) goes to the row code before anything is written: NaNs are the one
 * place where the F16C rounding or the bfloat16 bit trick without its select and rnd_f16 /
 * rnd_bf16 differ, and a finite T means no NaN can arise (e <= 1, D >= 1, every t' finite,
 * t' != 0 guards the product with L - z, z <= 0; bfloat16's x - a may overflow to -inf, whose
 * exp is 0 and whose L - z is +inf, a NaN only times a zero t', which the guard skips).
 *
 * The target check (validate) is the row code's code: PROBS_NONFINITE if some t_i is NaN or
 * infinite, else PROBS_NEGATIVE if some t_i < 0, else PROBS_SUM_OFF if |S - 1| > tolerance, S
 * the pairwise sum of the row (float16: in float, built in pass 2; float32, float64: in double).
 * float32 and float64 avoid that second sum: T = R(Tk + t_k) decides where it can.  T is
 * finite exactly when no t_i is NaN or infinite (NaN and +-inf survive every addition, and a finite T cannot hold
 * one; an overflow to inf also goes to the row code's check), and for t_i >= 0 with
 * S = sum t_i the pairwise float sum is within gamma_(d+1)(2^-24) S of S (d: the depth of the
 * pairwise sum, pairwise_depth(C), plus 1 for the last addition of t_k), the double sum S_d
 * within gamma_d(2^-53) S, so
 *     |T - S_d| <= ((d + 1) 2^-24 + d 2^-53) (1 + 2^-10) S < M = (d + 2) 2^-23 T + 2^-50
 * (d <= 64 so d 2^-24 < 2^-17; S <= T (1 + 2^-16)); the 2^-50 covers the rounding of
 * |T - 1| - tolerance in double.  If | |T - 1| - tolerance | > M, |S_d - 1| is on the same side
 * of the tolerance; otherwise (a row summing to within M of 1 +- tolerance) the row code's check
 * runs: the same code in every case.  float64: T and S_d are both pairwise double sums, T's of
 * depth d = pairwise_depth(C) + 1, S_d's of depth d - 1, so for t_i >= 0
 *     |T - S_d| <= (2d - 1) 2^-53 (1 + 2^-44) S,   S <= T (1 + 2^-45),
 * and now T - 1 rounds too: |R(|T - 1|) - |T - 1|| <= 2^-53 (T + 1), the same for S_d, and
 * off = R(R(|T - 1|) - tolerance) is within 2^-53 |off| of its operands' difference; all these
 * stay below (d + 1) 2^-52 T + 2^-52 + 2^-53 |off|, so the margin is taken twice that:
 *     M = (d + 2) 2^-51 T + 2^-50     (the code's (pairwise_depth(C) + 3) 2^-51 T + 2^-50),
 * and past it |S_d - 1| as the row code rounds it is on the same side of the tolerance as off.
 * A negative t_i (the bound does not hold) gives PROBS_NEGATIVE either way.  With smoothing the
 * row code's check runs first (T sums t', not t).
 */
#ifndef PRECISION_LOSSES_SOFT_H
#define PRECISION_LOSSES_SOFT_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include "fp.h"
#include "exp_nonpositive.h"
#include "summation.h"
#include "losses_rows.h"

#if defined(__AVX2__)
#define LOSSES_SOFT_ROWS 1
#include <immintrin.h>

/* ---- 16 floats as two 8-float registers, in both builds: the leaf lanes take them as they are
   (a 16-float register would be split for every sum), and the exp widens each to 8 doubles */
typedef struct { __m256 lo, hi; } lsv16;
static inline lsv16 lsv_pair(__m256 lo, __m256 hi) {
    lsv16 v = {lo, hi};
    return v;
}
static inline lsv16 lsv_set1(float a) { return lsv_pair(_mm256_set1_ps(a), _mm256_set1_ps(a)); }
#define LSV_BINARY(NAME, OP)                                                                      \
    static inline lsv16 NAME(lsv16 a, lsv16 b) { return lsv_pair(OP(a.lo, b.lo), OP(a.hi, b.hi)); }
LSV_BINARY(lsv_add, _mm256_add_ps)
LSV_BINARY(lsv_sub, _mm256_sub_ps)
LSV_BINARY(lsv_mul, _mm256_mul_ps)
LSV_BINARY(lsv_div, _mm256_div_ps)
LSV_BINARY(lsv_min, _mm256_min_ps)
LSV_BINARY(lsv_max, _mm256_max_ps)
static inline float lsv_min_value(lsv16 v) {
    float a[8];
    _mm256_storeu_ps(a, _mm256_min_ps(v.lo, v.hi));
    float m = a[0];
    for (int j = 1; j < 8; j++) m = a[j] < m ? a[j] : m;
    return m;
}
static inline float lsv_max_value(lsv16 v) {
    float a[8];
    _mm256_storeu_ps(a, _mm256_max_ps(v.lo, v.hi));
    float m = a[0];
    for (int j = 1; j < 8; j++) m = a[j] > m ? a[j] : m;
    return m;
}
/* the first index (< 16) of a lane equal to v (-0 == +0), or -1 */
static inline int lsv_first_equal(lsv16 x, float v) {
    __m256 vv = _mm256_set1_ps(v);
    unsigned m = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(x.lo, vv, _CMP_EQ_OQ))
                 | (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(x.hi, vv, _CMP_EQ_OQ)) << 8;
    return m ? __builtin_ctz(m) : -1;
}
/* nonzero if some lane is NaN or infinite */
static inline unsigned lsv_special(lsv16 x) {
#if defined(__AVX512F__)
    return (unsigned)(_mm256_fpclass_ps_mask(x.lo, 0x99) | _mm256_fpclass_ps_mask(x.hi, 0x99));
#else
    const __m256i EXP = _mm256_set1_epi32(0x7F800000);
    __m256i lo = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(x.lo), EXP), EXP);
    __m256i hi = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(x.hi), EXP), EXP);
    return (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_or_si256(lo, hi)));
#endif
}
/* the 8 leaf lanes after adding the chunk's first 8 values, then its last 8, each sum rounded
   by rnd (float32: nothing) */
static inline __m256 lsv_lanes(__m256 acc, lsv16 v, __m256 (*rnd)(__m256)) {
    return rnd(_mm256_add_ps(rnd(_mm256_add_ps(acc, v.lo)), v.hi));
}

#if defined(__AVX512F__)
/* v with lane j (any j; lanes 0..15 exist) and lanes n.. (n <= 16) replaced by +0 */
static inline lsv16 lsv_keep(lsv16 v, ptrdiff_t j, ptrdiff_t n) {
    unsigned keep = (n >= 16 ? 0xFFFFu : (1u << n) - 1) & ~((j >= 0 && j < 16) ? 1u << j : 0u);
    return lsv_pair(_mm256_maskz_mov_ps((__mmask8)keep, v.lo),
                    _mm256_maskz_mov_ps((__mmask8)(keep >> 8), v.hi));
}
/* lanes 0..n-1 of v, the others fill */
static inline lsv16 lsv_keep_or(lsv16 v, ptrdiff_t n, float fill) {
    unsigned keep = (1u << n) - 1;
    __m256 f = _mm256_set1_ps(fill);
    return lsv_pair(_mm256_mask_mov_ps(f, (__mmask8)keep, v.lo),
                    _mm256_mask_mov_ps(f, (__mmask8)(keep >> 8), v.hi));
}
/* t != 0 ? y : +0 (as the row code's select: a NaN t is != 0), and t != 0 ? t y : +0 */
static inline lsv16 lsv_where_nonzero(lsv16 t, lsv16 y) {
    const __m256 zero = _mm256_setzero_ps();
    return lsv_pair(_mm256_maskz_mov_ps(_mm256_cmp_ps_mask(t.lo, zero, _CMP_NEQ_UQ), y.lo),
                    _mm256_maskz_mov_ps(_mm256_cmp_ps_mask(t.hi, zero, _CMP_NEQ_UQ), y.hi));
}
static inline lsv16 lsv_times_nonzero(lsv16 t, lsv16 y) {
    const __m256 zero = _mm256_setzero_ps();
    return lsv_pair(_mm256_maskz_mul_ps(_mm256_cmp_ps_mask(t.lo, zero, _CMP_NEQ_UQ), t.lo, y.lo),
                    _mm256_maskz_mul_ps(_mm256_cmp_ps_mask(t.hi, zero, _CMP_NEQ_UQ), t.hi, y.hi));
}
typedef struct { __m512d t0, t1; } lsv_exp_table;
static inline lsv_exp_table lsv_exp_table_load(void) {
    lsv_exp_table tab = {_mm512_loadu_pd(EXP2_J16_SCALED), _mm512_loadu_pd(EXP2_J16_SCALED + 8)};
    return tab;
}
/* exp_nonpositive_f32 of the 16 z's, each 8 as 8 doubles */
static inline lsv16 lsv_exp_f32(lsv16 z, const lsv_exp_table* tab) {
    __m256 lo = _mm256_max_ps(_mm256_set1_ps(-110.0f), z.lo);  /* exp_nonpositive_f32_x8's clamp */
    __m256 hi = _mm256_max_ps(_mm256_set1_ps(-110.0f), z.hi);
    return lsv_pair(_mm512_cvtpd_ps(exp_nonpositive_f32_x8(_mm512_cvtps_pd(lo), tab->t0, tab->t1)),
                    _mm512_cvtpd_ps(exp_nonpositive_f32_x8(_mm512_cvtps_pd(hi), tab->t0, tab->t1)));
}
#else   /* AVX2 */
static inline lsv16 lsv_keep(lsv16 v, ptrdiff_t j, ptrdiff_t n) {
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i eight = _mm256_set1_epi32(8);
    __m256i jv = _mm256_set1_epi32((int)(j >= 0 && j < 16 ? j : -1)), nv = _mm256_set1_epi32((int)n);
    __m256i klo = _mm256_andnot_si256(_mm256_cmpeq_epi32(iota, jv), _mm256_cmpgt_epi32(nv, iota));
    __m256i ihi = _mm256_add_epi32(iota, eight);
    __m256i khi = _mm256_andnot_si256(_mm256_cmpeq_epi32(ihi, jv), _mm256_cmpgt_epi32(nv, ihi));
    return lsv_pair(_mm256_and_ps(v.lo, _mm256_castsi256_ps(klo)),
                    _mm256_and_ps(v.hi, _mm256_castsi256_ps(khi)));
}
static inline lsv16 lsv_keep_or(lsv16 v, ptrdiff_t n, float fill) {
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i nv = _mm256_set1_epi32((int)n);
    __m256 f = _mm256_set1_ps(fill);
    __m256 klo = _mm256_castsi256_ps(_mm256_cmpgt_epi32(nv, iota));
    __m256 khi = _mm256_castsi256_ps(_mm256_cmpgt_epi32(nv, _mm256_add_epi32(iota, _mm256_set1_epi32(8))));
    return lsv_pair(_mm256_blendv_ps(f, v.lo, klo), _mm256_blendv_ps(f, v.hi, khi));
}
static inline lsv16 lsv_where_nonzero(lsv16 t, lsv16 y) {
    const __m256 zero = _mm256_setzero_ps();
    return lsv_pair(_mm256_and_ps(_mm256_cmp_ps(t.lo, zero, _CMP_NEQ_UQ), y.lo),
                    _mm256_and_ps(_mm256_cmp_ps(t.hi, zero, _CMP_NEQ_UQ), y.hi));
}
static inline lsv16 lsv_times_nonzero(lsv16 t, lsv16 y) { return lsv_where_nonzero(t, lsv_mul(t, y)); }
typedef struct { char none; } lsv_exp_table;   /* the AVX2 exp reads its constants from memory */
static inline lsv_exp_table lsv_exp_table_load(void) {
    lsv_exp_table t = {0};
    return t;
}
static inline lsv16 lsv_exp_f32(lsv16 z, const lsv_exp_table* tab) {
    (void)tab;
    lsv16 e;
    exp_nonpositive_f32_x16_avx2(z.lo, z.hi, &e.lo, &e.hi);
    return e;
}
#endif

/* ---- the policies: storage = arithmetic = float32, float16, bfloat16 or float64 ---------- */
/* LS_F16A32, LS_BF16A32: 16-bit storage, float32 arithmetic (accum="float32"), whose gradient
   row goes to a float scratch for the refinement check (losses_soft_row_f16_f32 below) */
enum { LS_F32 = 0, LS_F16 = 1, LS_F64 = 2, LS_BF16 = 3, LS_F16A32 = 4, LS_BF16A32 = 5 };
#define LS_IS16(P) ((P) == LS_F16 || (P) == LS_BF16)           /* 16-bit arithmetic */
#define LS_S16(P) (LS_IS16(P) || (P) == LS_F16A32 || (P) == LS_BF16A32)     /* 16-bit storage */
#define LS_SF16(P) ((P) == LS_F16 || (P) == LS_F16A32)
#define LS_SBF16(P) ((P) == LS_BF16 || (P) == LS_BF16A32)
#define LS_INLINE static inline __attribute__((always_inline))

/* ---- 16 doubles: two 8-double registers (AVX-512) or four of 4 (AVX2), for float64 (policy
   f64_f64, LS_F64); the same operations as lsv16's.  ldm: the mask of register q of a 16-bit
   lane set */
#if defined(__AVX512F__)
#define LDW 8
typedef __m512d ldr;
typedef __mmask8 ldm;
#define LDR_(op) _mm512_##op
static inline ldm ldm_bits(unsigned bits, int q) { return (ldm)(bits >> (8 * q)); }
static inline ldr ldr_keep(ldm m, ldr v) { return _mm512_maskz_mov_pd(m, v); }
static inline ldr ldr_select(ldm m, ldr v, ldr fill) { return _mm512_mask_mov_pd(fill, m, v); }
static inline ldr ldr_load_n(const double* p, ldm m) { return _mm512_maskz_loadu_pd(m, p); }
static inline void ldr_store_n(double* p, ldm m, ldr v) { _mm512_mask_storeu_pd(p, m, v); }
static inline unsigned ldr_equal_bits(ldr x, ldr v) { return _mm512_cmp_pd_mask(x, v, _CMP_EQ_OQ); }
static inline unsigned ldr_special_bits(ldr x) { return _mm512_fpclass_pd_mask(x, 0x99); }
static inline ldm ldr_nonzero(ldr t) { return _mm512_cmp_pd_mask(t, _mm512_setzero_pd(), _CMP_NEQ_UQ); }
static inline ldr ldr_times_nonzero(ldr t, ldr y) { return _mm512_maskz_mul_pd(ldr_nonzero(t), t, y); }
#define LDR_EXP exp_nonpositive_f64_x8
#else
#define LDW 4
typedef __m256d ldr;
typedef __m256i ldm;
#define LDR_(op) _mm256_##op
static inline ldm ldm_bits(unsigned bits, int q) {
    const __m256i sel = _mm256_setr_epi64x(1, 2, 4, 8);
    return _mm256_cmpeq_epi64(_mm256_and_si256(_mm256_set1_epi64x((long long)(bits >> (4 * q))), sel), sel);
}
static inline ldr ldr_keep(ldm m, ldr v) { return _mm256_and_pd(_mm256_castsi256_pd(m), v); }
static inline ldr ldr_select(ldm m, ldr v, ldr fill) { return _mm256_blendv_pd(fill, v, _mm256_castsi256_pd(m)); }
static inline ldr ldr_load_n(const double* p, ldm m) { return _mm256_maskload_pd(p, m); }
static inline void ldr_store_n(double* p, ldm m, ldr v) { _mm256_maskstore_pd(p, m, v); }
static inline unsigned ldr_equal_bits(ldr x, ldr v) {
    return (unsigned)_mm256_movemask_pd(_mm256_cmp_pd(x, v, _CMP_EQ_OQ));
}
static inline unsigned ldr_special_bits(ldr x) {
    const __m256i EXP = _mm256_set1_epi64x(0x7FF0000000000000ll);
    return (unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(
        _mm256_cmpeq_epi64(_mm256_and_si256(_mm256_castpd_si256(x), EXP), EXP)));
}
static inline ldm ldr_nonzero(ldr t) {
    return _mm256_castpd_si256(_mm256_cmp_pd(t, _mm256_setzero_pd(), _CMP_NEQ_UQ));
}
static inline ldr ldr_times_nonzero(ldr t, ldr y) { return ldr_keep(ldr_nonzero(t), _mm256_mul_pd(t, y)); }
#define LDR_EXP exp_nonpositive_f64_x4
#endif
#define LDN (16 / LDW)     /* registers per 16 values */
typedef struct { ldr r[LDN]; } ldv16;
typedef struct { ldr r[8 / LDW]; } ldv_lanes;
#define LDV_EACH(q) for (int q = 0; q < LDN; q++)
static inline ldv16 ldv_set1(double a) {
    ldv16 v;
    LDV_EACH(q) v.r[q] = LDR_(set1_pd)(a);
    return v;
}
#define LDV_BINARY(NAME, OP)                                                                      \
    static inline ldv16 NAME(ldv16 a, ldv16 b) {                                                  \
        ldv16 v;                                                                                  \
        LDV_EACH(q) v.r[q] = OP(a.r[q], b.r[q]);                                                  \
        return v;                                                                                 \
    }
LDV_BINARY(ldv_add, LDR_(add_pd))
LDV_BINARY(ldv_sub, LDR_(sub_pd))
LDV_BINARY(ldv_mul, LDR_(mul_pd))
LDV_BINARY(ldv_div, LDR_(div_pd))
LDV_BINARY(ldv_min, LDR_(min_pd))
LDV_BINARY(ldv_max, LDR_(max_pd))
LDV_BINARY(ldv_times_nonzero, ldr_times_nonzero)
static inline double ldv_min_value(ldv16 v) {
    double a[16];
    LDV_EACH(q) LDR_(storeu_pd)(a + LDW * q, v.r[q]);
    double m = a[0];
    for (int j = 1; j < 16; j++) m = a[j] < m ? a[j] : m;
    return m;
}
static inline double ldv_max_value(ldv16 v) {
    double a[16];
    LDV_EACH(q) LDR_(storeu_pd)(a + LDW * q, v.r[q]);
    double m = a[0];
    for (int j = 1; j < 16; j++) m = a[j] > m ? a[j] : m;
    return m;
}
static inline int ldv_first_equal(ldv16 x, double v) {
    unsigned m = 0;
    LDV_EACH(q) m |= ldr_equal_bits(x.r[q], LDR_(set1_pd)(v)) << (LDW * q);
    return m ? __builtin_ctz(m) : -1;
}
static inline unsigned ldv_special(ldv16 x) {
    unsigned m = 0;
    LDV_EACH(q) m |= ldr_special_bits(x.r[q]);
    return m;
}
static inline unsigned ldv_keep_bits(ptrdiff_t j, ptrdiff_t n) {
    return (n >= 16 ? 0xFFFFu : (1u << n) - 1) & ~((j >= 0 && j < 16) ? 1u << j : 0u);
}
static inline ldv16 ldv_keep(ldv16 v, ptrdiff_t j, ptrdiff_t n) {
    unsigned keep = ldv_keep_bits(j, n);
    LDV_EACH(q) v.r[q] = ldr_keep(ldm_bits(keep, q), v.r[q]);
    return v;
}
static inline ldv16 ldv_keep_or(ldv16 v, ptrdiff_t n, double fill) {
    unsigned keep = (1u << n) - 1;
    LDV_EACH(q) v.r[q] = ldr_select(ldm_bits(keep, q), v.r[q], LDR_(set1_pd)(fill));
    return v;
}
static inline ldv16 ldv_where_nonzero(ldv16 t, ldv16 y) {
    LDV_EACH(q) y.r[q] = ldr_keep(ldr_nonzero(t.r[q]), y.r[q]);
    return y;
}
typedef struct { ldr t[16]; } ldv_exp_table;
static inline ldv_exp_table ldv_exp_table_load(void) {
    ldv_exp_table tab;
#if defined(__AVX512F__)
    EXP_NONPOSITIVE_F64_TAB(regs);
    for (int q = 0; q < 16; q++) tab.t[q] = regs[q];
#else
    for (int q = 0; q < 16; q++) tab.t[q] = _mm256_setzero_pd();     /* the AVX2 exp gathers */
#endif
    return tab;
}

/* the policy operations of float64 (storage = arithmetic: no rounding R, loads and stores as
   they are) */
LS_INLINE ldv16 lsd_rnd(const int P, ldv16 v) { (void)P; return v; }
LS_INLINE double lsd_rnd1(const int P, double v) { (void)P; return v; }
LS_INLINE ldv16 lsd_load(const int P, const void* p, ptrdiff_t i) {
    (void)P;
    ldv16 v;
    LDV_EACH(q) v.r[q] = LDR_(loadu_pd)((const double*)p + i + LDW * q);
    return v;
}
LS_INLINE ldv16 lsd_load_n(const int P, const void* p, ptrdiff_t i, ptrdiff_t n) {
    (void)P;
    unsigned m = (1u << n) - 1;
    ldv16 v;
    LDV_EACH(q) v.r[q] = ldr_load_n((const double*)p + i + LDW * q, ldm_bits(m, q));
    return v;
}
LS_INLINE ldv16 lsd_load_any(const int P, const void* p, ptrdiff_t i, ptrdiff_t n) {
    return n >= 16 ? lsd_load(P, p, i) : lsd_load_n(P, p, i, n);
}
LS_INLINE void lsd_store_any(const int P, void* p, ptrdiff_t i, ldv16 v, ptrdiff_t n) {
    (void)P;
    double* d = (double*)p + i;
    if (n >= 16) {
        LDV_EACH(q) LDR_(storeu_pd)(d + LDW * q, v.r[q]);
        return;
    }
    unsigned m = (1u << n) - 1;
    LDV_EACH(q) ldr_store_n(d + LDW * q, ldm_bits(m, q), v.r[q]);
}
LS_INLINE ldv16 lsd_load_e(const double* e, ptrdiff_t i, ptrdiff_t n) { return lsd_load_any(LS_F64, e, i, n); }
LS_INLINE void lsd_store_e(double* e, ptrdiff_t i, ldv16 v, ptrdiff_t n) { lsd_store_any(LS_F64, e, i, v, n); }
/* 16 doubles to p + i, 64-byte aligned, past the caches (see the top) */
LS_INLINE void lsd_stream16(void* p, ptrdiff_t i, ldv16 v) {
    double* d = (double*)p + i;
    LDV_EACH(q) LDR_(stream_pd)(d + LDW * q, v.r[q]);
}
LS_INLINE double lsd_ld1(const int P, const void* p, ptrdiff_t i) { (void)P; return ((const double*)p)[i]; }
LS_INLINE void lsd_st1(const int P, void* p, ptrdiff_t i, double v) { (void)P; ((double*)p)[i] = v; }
LS_INLINE ldv16 lsd_exp(const int P, ldv16 z, const ldv_exp_table* tab, const float* table) {
    (void)P; (void)table;
    LDV_EACH(q) z.r[q] = LDR_EXP(z.r[q], tab->t);
    return z;
}
LS_INLINE double lsd_log1p(const int P, double s) { (void)P; return log1p_f64(s); }
LS_INLINE ldv_lanes lsd_lanes_zero(void) {
    ldv_lanes l;
    for (int q = 0; q < 8 / LDW; q++) l.r[q] = LDR_(setzero_pd)();
    return l;
}
/* a chunk's first 8 values into the lanes, then its last 8 */
LS_INLINE ldv_lanes lsd_lanes(const int P, ldv_lanes acc, ldv16 v) {
    (void)P;
    for (int q = 0; q < 8 / LDW; q++)
        acc.r[q] = LDR_(add_pd)(LDR_(add_pd)(acc.r[q], v.r[q]), v.r[q + 8 / LDW]);
    return acc;
}
LS_INLINE double lsd_leaf_sum(const int P, ldv_lanes acc) {
    (void)P;
    double l[8];
    for (int q = 0; q < 8 / LDW; q++) LDR_(storeu_pd)(l + LDW * q, acc.r[q]);
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}
LS_INLINE double lsd_check_row(const void* t, ptrdiff_t C, int* flags) {
    return losses_check_row_f64((const double*)t, C, flags);
}


static inline __m256 ls_round_none(__m256 v) { return v; }
/* rnd_bf16 of 8 floats that are not NaN (fp.h's bit trick: drop the 16 low bits, ties to even) */
static inline __m256 ls_round_bf16(__m256 v) {
    __m256i u = _mm256_castps_si256(v);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    u = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF)));
    return _mm256_castsi256_ps(_mm256_and_si256(u, _mm256_set1_epi32((int)0xFFFF0000u)));
}
/* 8 bfloat16 values as floats, and back (exact: the floats are values of bfloat16) */
static inline __m256 ls_widen_bf16(__m128i h) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
static inline __m256i ls_narrow_bf16(lsv16 v) {     /* 16 bfloat16 values, in order */
    __m256i p = _mm256_packus_epi32(_mm256_srli_epi32(_mm256_castps_si256(v.lo), 16),
                                    _mm256_srli_epi32(_mm256_castps_si256(v.hi), 16));
    return _mm256_permute4x64_epi64(p, _MM_SHUFFLE(3, 1, 2, 0));
}
/* rnd_f16 of 8 floats that are not NaN */
static inline __m256 ls_round_f16(__m256 v) {
    return _mm256_cvtph_ps(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
LS_INLINE lsv16 ls_rnd(const int P, lsv16 v) {
    if (P == LS_F16) return lsv_pair(ls_round_f16(v.lo), ls_round_f16(v.hi));
    if (P == LS_BF16) return lsv_pair(ls_round_bf16(v.lo), ls_round_bf16(v.hi));
    return v;
}
LS_INLINE float ls_rnd1(const int P, float v) {
    return P == LS_F16 ? rnd_f16(v) : P == LS_BF16 ? rnd_bf16(v) : v;
}
/* 16 values of the storage format from element i of p, exactly as floats */
LS_INLINE lsv16 ls_load(const int P, const void* p, ptrdiff_t i) {
    if (LS_SF16(P)) {
        const uint16_t* h = (const uint16_t*)p + i;
        return lsv_pair(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)h)),
                        _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(h + 8))));
    }
    if (LS_SBF16(P)) {
        const uint16_t* h = (const uint16_t*)p + i;
        return lsv_pair(ls_widen_bf16(_mm_loadu_si128((const __m128i*)h)),
                        ls_widen_bf16(_mm_loadu_si128((const __m128i*)(h + 8))));
    }
    const float* f = (const float*)p + i;
    return lsv_pair(_mm256_loadu_ps(f), _mm256_loadu_ps(f + 8));
}
/* the first n (< 16) of them, the others +0 (once per leaf) */
LS_INLINE lsv16 ls_load_n(const int P, const void* p, ptrdiff_t i, ptrdiff_t n) {
#if defined(__AVX512F__)
    unsigned m = (1u << n) - 1;
    if (LS_SF16(P)) {
        __m256i h = _mm256_castsi128_si256(_mm_maskz_loadu_epi16((__mmask8)m, (const uint16_t*)p + i));
        h = _mm256_inserti128_si256(h, _mm_maskz_loadu_epi16((__mmask8)(m >> 8), (const uint16_t*)p + i + 8), 1);
        return lsv_pair(_mm256_cvtph_ps(_mm256_castsi256_si128(h)),
                        _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)));
    }
    if (LS_SBF16(P)) {
        __m128i h0 = _mm_maskz_loadu_epi16((__mmask8)m, (const uint16_t*)p + i);
        __m128i h1 = _mm_maskz_loadu_epi16((__mmask8)(m >> 8), (const uint16_t*)p + i + 8);
        return lsv_pair(ls_widen_bf16(h0), ls_widen_bf16(h1));
    }
    const float* f = (const float*)p + i;
    return lsv_pair(_mm256_maskz_loadu_ps((__mmask8)m, f), _mm256_maskz_loadu_ps((__mmask8)(m >> 8), f + 8));
#else
    if (LS_S16(P)) {
        uint16_t buf[16] = {0};
        for (ptrdiff_t j = 0; j < n; j++) buf[j] = ((const uint16_t*)p)[i + j];
        return ls_load(P, buf, 0);
    }
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i nv = _mm256_set1_epi32((int)n);
    const float* f = (const float*)p + i;
    return lsv_pair(_mm256_maskload_ps(f, _mm256_cmpgt_epi32(nv, iota)),
                    _mm256_maskload_ps(f + 8, _mm256_cmpgt_epi32(nv, _mm256_add_epi32(iota, _mm256_set1_epi32(8)))));
#endif
}
LS_INLINE lsv16 ls_load_any(const int P, const void* p, ptrdiff_t i, ptrdiff_t n) {
    return n >= 16 ? ls_load(P, p, i) : ls_load_n(P, p, i, n);
}
/* store 16 values of the format (exact: they are values of it) at element i of p */
LS_INLINE void ls_store(const int P, void* p, ptrdiff_t i, lsv16 v) {
    if (P == LS_F16) {
        uint16_t* h = (uint16_t*)p + i;
        _mm_storeu_si128((__m128i*)h, _mm256_cvtps_ph(v.lo, _MM_FROUND_TO_NEAREST_INT));
        _mm_storeu_si128((__m128i*)(h + 8), _mm256_cvtps_ph(v.hi, _MM_FROUND_TO_NEAREST_INT));
        return;
    }
    if (P == LS_BF16) {
        _mm256_storeu_si256((__m256i*)((uint16_t*)p + i), ls_narrow_bf16(v));
        return;
    }
    float* f = (float*)p + i;
    _mm256_storeu_ps(f, v.lo);
    _mm256_storeu_ps(f + 8, v.hi);
}
LS_INLINE void ls_store_any(const int P, void* p, ptrdiff_t i, lsv16 v, ptrdiff_t n) {
    if (n >= 16) {
        ls_store(P, p, i, v);
        return;
    }
#if defined(__AVX512F__)
    unsigned m = (1u << n) - 1;
    if (P == LS_F16) {
        uint16_t* h = (uint16_t*)p + i;
        _mm_mask_storeu_epi16(h, (__mmask8)m, _mm256_cvtps_ph(v.lo, _MM_FROUND_TO_NEAREST_INT));
        _mm_mask_storeu_epi16(h + 8, (__mmask8)(m >> 8), _mm256_cvtps_ph(v.hi, _MM_FROUND_TO_NEAREST_INT));
        return;
    }
    if (P == LS_BF16) {
        _mm256_mask_storeu_epi16((uint16_t*)p + i, (__mmask16)m, ls_narrow_bf16(v));
        return;
    }
    float* f = (float*)p + i;
    _mm256_mask_storeu_ps(f, (__mmask8)m, v.lo);
    _mm256_mask_storeu_ps(f + 8, (__mmask8)(m >> 8), v.hi);
#else
    if (LS_IS16(P)) {
        uint16_t buf[16];
        ls_store(P, buf, 0, v);
        for (ptrdiff_t j = 0; j < n; j++) ((uint16_t*)p)[i + j] = buf[j];
        return;
    }
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i nv = _mm256_set1_epi32((int)n);
    float* f = (float*)p + i;
    _mm256_maskstore_ps(f, _mm256_cmpgt_epi32(nv, iota), v.lo);
    _mm256_maskstore_ps(f + 8, _mm256_cmpgt_epi32(nv, _mm256_add_epi32(iota, _mm256_set1_epi32(8))), v.hi);
#endif
}
LS_INLINE float ls_ld1(const int P, const void* p, ptrdiff_t i) {
    return LS_SF16(P) ? ld16_f16(((const uint16_t*)p)[i])
         : LS_SBF16(P) ? ld16_bf16(((const uint16_t*)p)[i]) : ((const float*)p)[i];
}
LS_INLINE void ls_st1(const int P, void* p, ptrdiff_t i, float v) {
    if (P == LS_F16) ((uint16_t*)p)[i] = st16_f16(v);
    else if (P == LS_BF16) ((uint16_t*)p)[i] = st16_bf16(v);
    else ((float*)p)[i] = v;
}
/* the float16 exp of z <= 0: table[losses_exp_index_f16(z)] (losses_block.h), 8 lanes */
static inline __m256 ls_exp8_f16(__m256 z, const float* table) {
    __m256i au = _mm256_and_si256(_mm256_castps_si256(z), _mm256_set1_epi32(0x7FFFFFFF));
    __m256i c = _mm256_max_epu32(au, _mm256_set1_epi32(112 << 23));
    c = _mm256_min_epu32(c, _mm256_set1_epi32(0x47800000));
    __m256i index = _mm256_srli_epi32(_mm256_sub_epi32(c, _mm256_set1_epi32(112 << 23)), 13);
    index = _mm256_sub_epi32(index, _mm256_cmpgt_epi32(au, _mm256_set1_epi32(0x7F800000)));
    return _mm256_i32gather_ps(table, index, 4);
}
/* the bfloat16 exp of z <= 0: table[magnitude bits >> 16] (losses.pyx.tp's _exp_nonpositive_bf16) */
static inline __m256 ls_exp8_bf16(__m256 z, const float* table) {
    __m256i au = _mm256_and_si256(_mm256_castps_si256(z), _mm256_set1_epi32(0x7FFFFFFF));
    return _mm256_i32gather_ps(table, _mm256_srli_epi32(au, 16), 4);
}
LS_INLINE lsv16 ls_exp(const int P, lsv16 z, const lsv_exp_table* tab, const float* table) {
    if (P == LS_F16) return lsv_pair(ls_exp8_f16(z.lo, table), ls_exp8_f16(z.hi, table));
    if (P == LS_BF16) return lsv_pair(ls_exp8_bf16(z.lo, table), ls_exp8_bf16(z.hi, table));
    return lsv_exp_f32(z, tab);
}
LS_INLINE float ls_log1p(const int P, float s) {
    return P == LS_F16 ? log1p_f16(s) : P == LS_BF16 ? log1p_bf16(s) : log1p_f32(s);
}
LS_INLINE __m256 ls_lanes(const int P, __m256 acc, lsv16 v) {
    return lsv_lanes(acc, v, P == LS_F16 ? ls_round_f16 : P == LS_BF16 ? ls_round_bf16 : ls_round_none);
}
/* ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)), each sum rounded */
LS_INLINE float ls_leaf_sum(const int P, __m256 acc) {
    float l[8];
    _mm256_storeu_ps(l, acc);
    if (P == LS_F16) return summation_lanes_f16(l);
    if (P == LS_BF16)
        return rnd_bf16(rnd_bf16(rnd_bf16(l[0] + l[1]) + rnd_bf16(l[2] + l[3]))
                        + rnd_bf16(rnd_bf16(l[4] + l[5]) + rnd_bf16(l[6] + l[7])));
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}
/* the scratch row e (floats), 16 at element i, the first n (< 16) if n is smaller */
LS_INLINE lsv16 ls_load_e(const float* e, ptrdiff_t i, ptrdiff_t n) {
    return n >= 16 ? lsv_pair(_mm256_loadu_ps(e + i), _mm256_loadu_ps(e + i + 8))
                   : ls_load_n(LS_F32, e, i, n);
}
LS_INLINE void ls_store_e(float* e, ptrdiff_t i, lsv16 v, ptrdiff_t n) {
    if (n >= 16) {
        _mm256_storeu_ps(e + i, v.lo);
        _mm256_storeu_ps(e + i + 8, v.hi);
    } else {
        ls_store_any(LS_F32, e, i, v, n);
    }
}
LS_INLINE __m256 ls_lanes_zero(void) { return _mm256_setzero_ps(); }
/* the row code's check of float32 targets (the float16 one is built in pass 2) */
LS_INLINE double ls_check_row(const void* t, ptrdiff_t C, int* flags) {
    return losses_check_row_f32((const float*)t, C, flags);
}
#define LS_RND_F32(x) (x)
#define LS_RND_P(x) P_(rnd1)(P, x)     /* the policy's rounding, in the passes (P in scope) */

/* how the gradient is scaled: by nothing (N = 1), by the exact inverse of N, or divided by N */
enum { LOSSES_SOFT_GRAD_NONE = 0, LOSSES_SOFT_GRAD_ONE, LOSSES_SOFT_GRAD_INVERSE, LOSSES_SOFT_GRAD_DIVIDE };

/* the passes for float32 and float16 (float values), then for float64 */
#define LS_E float
#define LS_V lsv16
#define LS_LANES __m256
#define V_(op) lsv_##op
#define P_(op) ls_##op
#define LS_FN(f) f
#define LS_FLOAT 1
#include "losses_soft_passes.h"
#undef LS_E
#undef LS_V
#undef LS_LANES
#undef V_
#undef P_
#undef LS_FN
#undef LS_FLOAT
#define LS_E double
#define LS_V ldv16
#define LS_LANES ldv_lanes
#define V_(op) ldv_##op
#define P_(op) lsd_##op
#define LS_FN(f) f##_f64
#define LS_FLOAT 0
#include "losses_soft_passes.h"

/* One row (x, t: C values, C >= 1).  Returns 0, writing nothing, if the row code must take it
 * (a NaN or infinite logit; float16: also a NaN or infinite target); else 1, with *loss = the
 * row's loss in the arithmetic format, g (if grad_mode is not LOSSES_SOFT_GRAD_NONE) the
 * gradient row, e (C values of the compute type: float; float64: double) scratch.  grad_scale:
 * the exact 1/N or N (LOSSES_SOFT_GRAD_INVERSE / _DIVIDE).  validate: *code = the target check's
 * code of t (see the top of this file).  table: the 16-bit formats' exp table (losses.pyx.tp's
 * _exp_neg_f16 / _exp_neg_bf16).  float64's next_x, next_t: the next row this thread takes (or NULL), fetched
 * into cache during pass 2 (float64 moves twice the bytes per value; for float32 the prefetches
 * measured slower). */
PRECISION_NOINLINE static int losses_soft_row_f32(
        const float* restrict x, const float* restrict t, ptrdiff_t C, int smooth, float c1,
        float c2, int grad_mode, float grad_scale, float* restrict g, float* restrict e,
        int validate, unsigned char* code, double tolerance, const float* table, float* loss) {
    return ls_row(LS_F32, x, t, C, smooth, c1, c2, grad_mode, grad_scale, g, e, validate, code,
                  tolerance, table, NULL, NULL, NULL, NULL, loss);
}
/* float16, bfloat16: the same with 16-bit storage and arithmetic */
#define LS_DEFINE_ROW16(S, POLICY)                                                                \
PRECISION_NOINLINE static int losses_soft_row_##S(                                               \
        const uint16_t* restrict x, const uint16_t* restrict t, ptrdiff_t C, int smooth, float c1, \
        float c2, int grad_mode, float grad_scale, uint16_t* restrict g, float* restrict e,      \
        int validate, unsigned char* code, double tolerance, const float* table, float* loss) {  \
    return ls_row(POLICY, x, t, C, smooth, c1, c2, grad_mode, grad_scale, g, e, validate, code,  \
                  tolerance, table, NULL, NULL, NULL, NULL, loss);                              \
}
LS_DEFINE_ROW16(f16, LS_F16)
LS_DEFINE_ROW16(bf16, LS_BF16)
/* 16-bit storage, float32 arithmetic (accum="float32"): the row in A into the float scratch w
 * (not stored to S: the caller runs the row code's refinement check on it, then rounds it into
 * S), the targets in A into tt, the exps into e, and a, k, s, Tk, t_k, D, T into state[0..6]. */
#define LS_DEFINE_ROW_A32(S, POLICY)                                                              \
PRECISION_NOINLINE static int losses_soft_row_##S##_f32(                                         \
        const uint16_t* restrict x, const uint16_t* restrict t, ptrdiff_t C, int smooth, float c1, \
        float c2, int grad_mode, float grad_scale, float* restrict w, float* restrict e,        \
        float* restrict tt, int validate, unsigned char* code, double tolerance, double* state,  \
        float* loss) {                                                                            \
    return ls_row(POLICY, x, t, C, smooth, c1, c2, grad_mode, grad_scale, w, e, validate, code,  \
                  tolerance, NULL, NULL, NULL, tt, state, loss);                                \
}
LS_DEFINE_ROW_A32(f16, LS_F16A32)
LS_DEFINE_ROW_A32(bf16, LS_BF16A32)
/* float64: the same with doubles (table unused) */
PRECISION_NOINLINE static int losses_soft_row_f64(
        const double* restrict x, const double* restrict t, ptrdiff_t C, int smooth, double c1,
        double c2, int grad_mode, double grad_scale, double* restrict g, double* restrict e,
        int validate, unsigned char* code, double tolerance, const float* table,
        const double* next_x, const double* next_t, double* loss) {
    return ls_row_f64(LS_F64, x, t, C, smooth, c1, c2, grad_mode, grad_scale, g, e, validate,
                      code, tolerance, table, next_x, next_t, NULL, NULL, loss);
}
#else
#define LOSSES_SOFT_ROWS 0
enum { LOSSES_SOFT_GRAD_NONE = 0, LOSSES_SOFT_GRAD_ONE, LOSSES_SOFT_GRAD_INVERSE, LOSSES_SOFT_GRAD_DIVIDE };
/* the baseline build runs the row code */
static inline int losses_soft_row_f32(const float* x, const float* t, ptrdiff_t C, int smooth,
                                      float c1, float c2, int grad_mode, float grad_scale,
                                      float* g, float* e, int validate, unsigned char* code,
                                      double tolerance, const float* table, float* loss) {
    (void)x; (void)t; (void)C; (void)smooth; (void)c1; (void)c2; (void)grad_mode;
    (void)grad_scale; (void)g; (void)e; (void)validate; (void)code; (void)tolerance;
    (void)table; (void)loss;
    return 0;
}
static inline int losses_soft_row_f16(const uint16_t* x, const uint16_t* t, ptrdiff_t C,
                                      int smooth, float c1, float c2, int grad_mode,
                                      float grad_scale, uint16_t* g, float* e, int validate,
                                      unsigned char* code, double tolerance, const float* table,
                                      float* loss) {
    (void)x; (void)t; (void)C; (void)smooth; (void)c1; (void)c2; (void)grad_mode;
    (void)grad_scale; (void)g; (void)e; (void)validate; (void)code; (void)tolerance;
    (void)table; (void)loss;
    return 0;
}
#define losses_soft_row_bf16 losses_soft_row_f16
static inline int losses_soft_row_f16_f32(const uint16_t* x, const uint16_t* t, ptrdiff_t C,
                                          int smooth, float c1, float c2, int grad_mode,
                                          float grad_scale, float* w, float* e, float* tt,
                                          int validate, unsigned char* code, double tolerance,
                                          double* state, float* loss) {
    (void)x; (void)t; (void)C; (void)smooth; (void)c1; (void)c2; (void)grad_mode;
    (void)grad_scale; (void)w; (void)e; (void)tt; (void)validate; (void)code; (void)tolerance;
    (void)state; (void)loss;
    return 0;
}
#define losses_soft_row_bf16_f32 losses_soft_row_f16_f32
static inline int losses_soft_row_f64(const double* x, const double* t, ptrdiff_t C,
                                      int smooth, double c1, double c2, int grad_mode,
                                      double grad_scale, double* g, double* e, int validate,
                                      unsigned char* code, double tolerance, const float* table,
                                      const double* next_x, const double* next_t, double* loss) {
    (void)x; (void)t; (void)C; (void)smooth; (void)c1; (void)c2; (void)grad_mode;
    (void)grad_scale; (void)g; (void)e; (void)validate; (void)code; (void)tolerance;
    (void)table; (void)next_x; (void)next_t; (void)loss;
    return 0;
}
#endif

#endif /* PRECISION_LOSSES_SOFT_H */
