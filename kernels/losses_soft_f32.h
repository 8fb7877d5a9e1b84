/*
 * losses_soft_f32.h -- softmax cross-entropy of one row of float32 logits with soft targets in
 * float32 arithmetic (policy f32_f32), in three passes over the row, for the AVX2 and AVX-512
 * builds.  The row code of losses.pyx.tp (_shift_, _exps_, the target check and copy,
 * _ce_soft_grad_ / _ce_row_) makes seven: the max, the exps, their sum, the check, the targets'
 * sum, the loss terms with the gradient, their sum.  Here every sum is built in the pass that
 * makes its terms, with the same operations in the same order, so the results are the same bits
 * (tests compare the builds; the baseline build runs the row code):
 *
 *   pass 1  a = max x_i and k = the first index attaining it.  Floats compared as floats: -0 and
 *           +0 are equal, so k (the first x_k equal to the max) and a = x_k are the row code's,
 *           which orders bit patterns and then looks for the first value equal to the max.  A
 *           NaN or infinite logit: return 0 having written nothing (the row code takes the row).
 *   pass 2  e_i = exp(R(x_i - a)) (exp_nonpositive.h) into e, and in summation.h's pairwise
 *           order (leaves of 128 values summed in 8 lanes: a chunk of 16 values adds its first
 *           8, then its last 8, one to each lane) s = sum e_i and Tk = sum t'_i, both with the
 *           k-th term replaced by +0 as the row code does (t' = t, or R(R(c1 t) + c2) when
 *           smoothing); and whether some t_i < 0.
 *   pass 3  L = log1p(s), D = R(1 + s), T = R(Tk + t'_k); the loss sum of
 *           w_i = t'_i != 0 ? R(t'_i R(L - R(x_i - a))) : 0, and
 *           g_i = R(R(T R(e_i / D)) - t'_i), times the exact 1/N (N a power of 2) or divided by
 *           N, except g_k = R(R(Tk - R(t'_k s)) / D) (times 1/N or / N).
 *
 * The target check (validate, no smoothing) is the row code's code: PROBS_NONFINITE if some t_i
 * is NaN or infinite, else PROBS_NEGATIVE if some t_i < 0, else PROBS_SUM_OFF if
 * |S_d - 1| > tolerance, S_d the double pairwise sum of the row.  Here the float sum
 * T = R(Tk + t_k) decides where it can: T is finite exactly when no t_i is NaN or infinite (NaN
 * and +-inf survive every addition, and a finite T cannot hold one; an overflow to inf also goes
 * to the row code's check), and for t_i >= 0 with S = sum t_i the pairwise float sum is within
 * gamma_(d+1)(2^-24) S of S (d: the depth of the pairwise sum, pairwise_depth(C), plus 1 for
 * the last addition of t_k), S_d within gamma_d(2^-53) S, so
 *     |T - S_d| <= ((d + 1) 2^-24 + d 2^-53) (1 + 2^-10) S < M = (d + 2) 2^-23 T + 2^-50
 * (d <= 64 so d 2^-24 < 2^-17; S <= T (1 + 2^-16)); the 2^-50 covers the rounding of
 * |T - 1| - tolerance in double.  If | |T - 1| - tolerance | > M, |S_d - 1| is on the same side
 * of the tolerance; otherwise (a row summing to within M of 1 +- tolerance) the row code's check
 * runs: the same code in every case.  With smoothing the row code's check runs first (T sums t',
 * not t).
 */
#ifndef PRECISION_LOSSES_SOFT_F32_H
#define PRECISION_LOSSES_SOFT_F32_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include "fp.h"
#include "exp_nonpositive.h"
#include "summation.h"
#include "losses_rows.h"

#if defined(__AVX2__)
#define LOSSES_SOFT_F32 1
#include <immintrin.h>

/* ---- 16 floats as two 8-float registers, in both builds: the leaf lanes take them as they are
   (a 16-float register would be split for every sum), and the exp widens each to 8 doubles */
typedef struct { __m256 lo, hi; } lsv16;
static inline lsv16 lsv_load(const float* p) {
    lsv16 v = {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)};
    return v;
}
static inline void lsv_store(float* p, lsv16 v) {
    _mm256_storeu_ps(p, v.lo);
    _mm256_storeu_ps(p + 8, v.hi);
}
static inline lsv16 lsv_set1(float a) {
    lsv16 v = {_mm256_set1_ps(a), _mm256_set1_ps(a)};
    return v;
}
#define LSV_BINARY(NAME, OP)                                                                      \
    static inline lsv16 NAME(lsv16 a, lsv16 b) {                                                  \
        lsv16 v = {OP(a.lo, b.lo), OP(a.hi, b.hi)};                                               \
        return v;                                                                                 \
    }
LSV_BINARY(lsv_add, _mm256_add_ps)
LSV_BINARY(lsv_sub, _mm256_sub_ps)
LSV_BINARY(lsv_mul, _mm256_mul_ps)
LSV_BINARY(lsv_div, _mm256_div_ps)
LSV_BINARY(lsv_min, _mm256_min_ps)
static inline float lsv_min_value(lsv16 v) {
    float a[8];
    _mm256_storeu_ps(a, _mm256_min_ps(v.lo, v.hi));
    float m = a[0];
    for (int j = 1; j < 8; j++) m = a[j] < m ? a[j] : m;
    return m;
}
/* the 8 leaf lanes after adding the chunk's first 8 values, then its last 8 */
static inline __m256 lsv_lanes(__m256 acc, lsv16 v) {
    return _mm256_add_ps(_mm256_add_ps(acc, v.lo), v.hi);
}
static inline ptrdiff_t lsv_find(const float* x, ptrdiff_t C, float v) {
    __m256 vv = _mm256_set1_ps(v);      /* the first index i with x_i == v (-0 == +0); one exists */
    ptrdiff_t i = 0;
    for (; i + 8 <= C; i += 8) {
        int m = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), vv, _CMP_EQ_OQ));
        if (m) return i + __builtin_ctz((unsigned)m);
    }
    while (x[i] != v) i++;
    return i;
}

#if defined(__AVX512F__)
static inline __mmask16 lsv_first_mask(ptrdiff_t n) {        /* bits 0 .. n-1, n <= 16 */
    return (__mmask16)(n >= 16 ? 0xFFFFu : (1u << n) - 1);
}
/* the first n < 16 values, the others +0 */
static inline lsv16 lsv_load_n(const float* p, ptrdiff_t n) {
    __mmask16 m = lsv_first_mask(n);
    lsv16 v = {_mm256_maskz_loadu_ps((__mmask8)m, p), _mm256_maskz_loadu_ps((__mmask8)(m >> 8), p + 8)};
    return v;
}
static inline void lsv_store_n(float* p, lsv16 v, ptrdiff_t n) {
    __mmask16 m = lsv_first_mask(n);
    _mm256_mask_storeu_ps(p, (__mmask8)m, v.lo);
    _mm256_mask_storeu_ps(p + 8, (__mmask8)(m >> 8), v.hi);
}
/* v with lane j (any j; lanes 0..15 exist) and lanes n.. (n <= 16) replaced by +0 */
static inline lsv16 lsv_keep(lsv16 v, ptrdiff_t j, ptrdiff_t n) {
    unsigned keep = lsv_first_mask(n) & ~((j >= 0 && j < 16) ? 1u << j : 0u);
    lsv16 r = {_mm256_maskz_mov_ps((__mmask8)keep, v.lo), _mm256_maskz_mov_ps((__mmask8)(keep >> 8), v.hi)};
    return r;
}
/* t != 0 ? t * y : +0 (as the row code's select: a NaN t is != 0) */
static inline lsv16 lsv_times_nonzero(lsv16 t, lsv16 y) {
    const __m256 zero = _mm256_setzero_ps();
    lsv16 r = {_mm256_maskz_mul_ps(_mm256_cmp_ps_mask(t.lo, zero, _CMP_NEQ_UQ), t.lo, y.lo),
               _mm256_maskz_mul_ps(_mm256_cmp_ps_mask(t.hi, zero, _CMP_NEQ_UQ), t.hi, y.hi)};
    return r;
}
typedef struct { __m512d t0, t1; } lsv_exp_table;
static inline lsv_exp_table lsv_exp_table_load(void) {
    lsv_exp_table tab = {_mm512_loadu_pd(EXP2_J16), _mm512_loadu_pd(EXP2_J16 + 8)};
    return tab;
}
/* e = exp_nonpositive_f32 of the 16 z's (each 8 as 8 doubles); the first n (<= 16) stored at out */
static inline lsv16 lsv_exp_store(float* out, lsv16 z, ptrdiff_t n, const lsv_exp_table* tab) {
    lsv16 e = {_mm512_cvtpd_ps(exp_nonpositive_f32_x8(_mm512_cvtps_pd(z.lo), tab->t0, tab->t1)),
               _mm512_cvtpd_ps(exp_nonpositive_f32_x8(_mm512_cvtps_pd(z.hi), tab->t0, tab->t1))};
    if (n >= 16) lsv_store(out, e);
    else lsv_store_n(out, e, n);
    return e;
}
/* pass 1: 0 if some x_i is NaN or infinite, else 1 with *max = the largest value */
static inline int lsv_row_max(const float* x, ptrdiff_t C, float* max) {
    __m256 top0 = _mm256_set1_ps(-INFINITY), top1 = top0;
    __mmask8 special = 0;
    ptrdiff_t i = 0;
    for (; i + 16 <= C; i += 16) {
        __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
        top0 = _mm256_max_ps(top0, v0);
        top1 = _mm256_max_ps(top1, v1);
        special |= _mm256_fpclass_ps_mask(v0, 0x99) | _mm256_fpclass_ps_mask(v1, 0x99);
    }                                               /* 0x99: QNaN, +inf, -inf, SNaN */
    if (i < C) {
        __mmask16 m = lsv_first_mask(C - i);
        __m256 v0 = _mm256_mask_loadu_ps(_mm256_set1_ps(-INFINITY), (__mmask8)m, x + i);
        __m256 v1 = _mm256_mask_loadu_ps(_mm256_set1_ps(-INFINITY), (__mmask8)(m >> 8), x + i + 8);
        top0 = _mm256_max_ps(top0, v0);
        top1 = _mm256_max_ps(top1, v1);
        special |= _mm256_mask_fpclass_ps_mask((__mmask8)m, v0, 0x99)
                   | _mm256_mask_fpclass_ps_mask((__mmask8)(m >> 8), v1, 0x99);
    }
    float a[8], top;
    _mm256_storeu_ps(a, _mm256_max_ps(top0, top1));
    top = a[0];
    for (int j = 1; j < 8; j++) top = a[j] > top ? a[j] : top;
    *max = top;
    return special == 0;
}
#else   /* AVX2 */
static inline __m256i lsv_first(ptrdiff_t n) {      /* lane j: all ones iff j < n */
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline lsv16 lsv_load_n(const float* p, ptrdiff_t n) {
    lsv16 v = {_mm256_maskload_ps(p, lsv_first(n)),
               n > 8 ? _mm256_maskload_ps(p + 8, lsv_first(n - 8)) : _mm256_setzero_ps()};
    return v;
}
static inline void lsv_store_n(float* p, lsv16 v, ptrdiff_t n) {
    _mm256_maskstore_ps(p, lsv_first(n), v.lo);
    if (n > 8) _mm256_maskstore_ps(p + 8, lsv_first(n - 8), v.hi);
}
static inline lsv16 lsv_keep(lsv16 v, ptrdiff_t j, ptrdiff_t n) {
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i jv = _mm256_set1_epi32((int)(j >= 0 && j < 16 ? j : -1));
    __m256i klo = _mm256_andnot_si256(_mm256_cmpeq_epi32(iota, jv), lsv_first(n));
    __m256i khi = _mm256_andnot_si256(
        _mm256_cmpeq_epi32(_mm256_add_epi32(iota, _mm256_set1_epi32(8)), jv), lsv_first(n - 8));
    lsv16 r = {_mm256_and_ps(v.lo, _mm256_castsi256_ps(klo)),
               _mm256_and_ps(v.hi, _mm256_castsi256_ps(khi))};
    return r;
}
static inline lsv16 lsv_times_nonzero(lsv16 t, lsv16 y) {
    const __m256 zero = _mm256_setzero_ps();
    lsv16 r = {_mm256_and_ps(_mm256_cmp_ps(t.lo, zero, _CMP_NEQ_UQ), _mm256_mul_ps(t.lo, y.lo)),
               _mm256_and_ps(_mm256_cmp_ps(t.hi, zero, _CMP_NEQ_UQ), _mm256_mul_ps(t.hi, y.hi))};
    return r;
}
typedef struct { __m256 tab[4]; } lsv_exp_table;
static inline lsv_exp_table lsv_exp_table_load(void) {
    EXP_NONPOSITIVE_AVX2_TAB(tab);
    lsv_exp_table t = {{tab[0], tab[1], tab[2], tab[3]}};
    return t;
}
static inline lsv16 lsv_exp_store(float* out, lsv16 z, ptrdiff_t n, const lsv_exp_table* tab) {
    float buf[16];
    float* dst = n >= 16 ? out : buf;
    exp_nonpositive_f32_x8_avx2(_mm256_castps256_ps128(z.lo), _mm256_extractf128_ps(z.lo, 1),
                                tab->tab, dst);
    exp_nonpositive_f32_x8_avx2(_mm256_castps256_ps128(z.hi), _mm256_extractf128_ps(z.hi, 1),
                                tab->tab, dst + 8);
    lsv16 e = lsv_load(dst);
    if (n < 16) lsv_store_n(out, e, n);
    return e;
}
static inline int lsv_row_max(const float* x, ptrdiff_t C, float* max) {
    const __m256i EXP = _mm256_set1_epi32(0x7F800000);
    __m256 top0 = _mm256_set1_ps(-INFINITY), top1 = top0;
    __m256i special = _mm256_setzero_si256();
    ptrdiff_t i = 0;
    for (; i + 16 <= C; i += 16) {
        __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
        top0 = _mm256_max_ps(top0, v0);
        top1 = _mm256_max_ps(top1, v1);
        special = _mm256_or_si256(special, _mm256_cmpeq_epi32(
            _mm256_and_si256(_mm256_castps_si256(v0), EXP), EXP));
        special = _mm256_or_si256(special, _mm256_cmpeq_epi32(
            _mm256_and_si256(_mm256_castps_si256(v1), EXP), EXP));
    }
    float a[8], top;
    _mm256_storeu_ps(a, _mm256_max_ps(top0, top1));
    top = a[0];
    for (int j = 1; j < 8; j++) top = a[j] > top ? a[j] : top;
    uint32_t tail = 0;
    for (; i < C; i++) {
        top = x[i] > top ? x[i] : top;
        tail |= (fp_f32_bits(x[i]) & 0x7F800000u) == 0x7F800000u;
    }
    *max = top;
    return _mm256_testz_si256(special, special) && !tail;
}
#endif

static inline float lsv_leaf_sum(__m256 acc) {      /* ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)) */
    float l[8];
    _mm256_storeu_ps(l, acc);
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

/* how the gradient is scaled: by nothing (N = 1), by the exact inverse of N, or divided by N */
enum { LOSSES_SOFT_GRAD_NONE = 0, LOSSES_SOFT_GRAD_ONE, LOSSES_SOFT_GRAD_INVERSE, LOSSES_SOFT_GRAD_DIVIDE };

static inline __attribute__((always_inline)) float losses_soft_pass3_f32(
        const float* restrict x, const float* restrict t, ptrdiff_t C, lsv16 av, int smooth,
        lsv16 c1v, lsv16 c2v, float L, float D, float T, const int mode, float scale,
        float* restrict g, const float* restrict e) {
    lsv16 Lv = lsv_set1(L), Dv = lsv_set1(D), Tv = lsv_set1(T), sv = lsv_set1(scale);
    SUMMATION_TREE_DECLARE_AS(wsum, float);
    float loss;
    for (ptrdiff_t s = 0; s < C; s += SUMMATION_LEAF) {
        ptrdiff_t m = C - s < SUMMATION_LEAF ? C - s : SUMMATION_LEAF;
        __m256 aw = _mm256_setzero_ps();
        for (ptrdiff_t i = s; i < s + m; i += 16) {
            ptrdiff_t n = s + m - i;
            lsv16 xv = n >= 16 ? lsv_load(x + i) : lsv_load_n(x + i, n);
            lsv16 tv = n >= 16 ? lsv_load(t + i) : lsv_load_n(t + i, n);
            if (smooth) {
                tv = lsv_add(lsv_mul(c1v, tv), c2v);
                if (n < 16) tv = lsv_keep(tv, -1, n);
            }
            aw = lsv_lanes(aw, lsv_times_nonzero(tv, lsv_sub(Lv, lsv_sub(xv, av))));
            if (mode != LOSSES_SOFT_GRAD_NONE) {
                lsv16 ev = n >= 16 ? lsv_load(e + i) : lsv_load_n(e + i, n);
                lsv16 gv = lsv_sub(lsv_mul(Tv, lsv_div(ev, Dv)), tv);
                if (mode == LOSSES_SOFT_GRAD_INVERSE) gv = lsv_mul(gv, sv);
                if (mode == LOSSES_SOFT_GRAD_DIVIDE) gv = lsv_div(gv, sv);
                if (n >= 16) lsv_store(g + i, gv);
                else lsv_store_n(g + i, gv, n);
            }
        }
        SUMMATION_TREE_PUSH_AS(wsum, float, rnd_f32, lsv_leaf_sum(aw));
    }
    SUMMATION_TREE_FINISH_AS(wsum, float, rnd_f32, loss);
    return loss;
}

/* One row (x, t: C values, C >= 1).  Returns 0, writing nothing, if some logit is NaN or
 * infinite; else 1, with *loss = the row's loss in float32, g (if grad_mode is not
 * LOSSES_SOFT_GRAD_NONE) the gradient row, e (C floats) scratch.  grad_scale: the exact 1/N or
 * N (LOSSES_SOFT_GRAD_INVERSE / _DIVIDE).  validate: *code = the target check's code of t (see
 * the top of this file). */
static int losses_soft_row_f32(const float* restrict x, const float* restrict t, ptrdiff_t C,
                               int smooth, float c1, float c2, int grad_mode, float grad_scale,
                               float* restrict g, float* restrict e, int validate,
                               unsigned char* code, double tolerance, float* loss) {
    float a;
    if (!lsv_row_max(x, C, &a)) return 0;
    ptrdiff_t k = lsv_find(x, C, a);
    a = x[k];
    if (validate && smooth) {       /* the check reads t, the sums below t' */
        int flags;
        double total = losses_check_row_f32(t, C, &flags);
        *code = losses_probs_code(flags, total, tolerance);
    }
    lsv16 av = lsv_set1(a), c1v = lsv_set1(c1), c2v = lsv_set1(c2);
    lsv16 tmin = lsv_set1(0.0f);
    lsv_exp_table tab = lsv_exp_table_load();
    SUMMATION_TREE_DECLARE_AS(esum, float);
    SUMMATION_TREE_DECLARE_AS(tsum, float);
    for (ptrdiff_t s = 0; s < C; s += SUMMATION_LEAF) {
        ptrdiff_t m = C - s < SUMMATION_LEAF ? C - s : SUMMATION_LEAF;
        __m256 ae = _mm256_setzero_ps(), at = _mm256_setzero_ps();
        for (ptrdiff_t i = s; i < s + m; i += 16) {
            ptrdiff_t n = s + m - i, kr = k - i;
            lsv16 xv = n >= 16 ? lsv_load(x + i) : lsv_load_n(x + i, n);
            lsv16 ev = lsv_exp_store(e + i, lsv_sub(xv, av), n, &tab);
            lsv16 tv = n >= 16 ? lsv_load(t + i) : lsv_load_n(t + i, n);
            tmin = lsv_min(tmin, tv);
            if (smooth) tv = lsv_add(lsv_mul(c1v, tv), c2v);
            if (n < 16 || (kr >= 0 && kr < 16)) {
                ev = lsv_keep(ev, kr, n);
                tv = lsv_keep(tv, kr, n);
            }
            ae = lsv_lanes(ae, ev);
            at = lsv_lanes(at, tv);
        }
        SUMMATION_TREE_PUSH_AS(esum, float, rnd_f32, lsv_leaf_sum(ae));
        SUMMATION_TREE_PUSH_AS(tsum, float, rnd_f32, lsv_leaf_sum(at));
    }
    float total, Tk;
    SUMMATION_TREE_FINISH_AS(esum, float, rnd_f32, total);
    SUMMATION_TREE_FINISH_AS(tsum, float, rnd_f32, Tk);
    float tk = smooth ? (c1 * t[k]) + c2 : t[k];
    float T = Tk + tk;
    if (validate && !smooth) {
        double margin = (double)(pairwise_depth(C) + 3) * 0x1p-23 * fabs((double)T) + 0x1p-50;
        double off = fabs((double)T - 1.0) - tolerance;
        if (T - T == 0 && fabs(off) > margin)
            *code = lsv_min_value(tmin) < 0 ? PROBS_NEGATIVE : (off > 0 ? PROBS_SUM_OFF : PROBS_OK);
        else {
            int flags;
            double sum = losses_check_row_f32(t, C, &flags);
            *code = losses_probs_code(flags, sum, tolerance);
        }
    }
    float L = log1p_f32(total), D = 1 + total;
    float gk = (Tk - tk * total) / D;
    float loss_row;
    switch (grad_mode) {
    case LOSSES_SOFT_GRAD_ONE:
        loss_row = losses_soft_pass3_f32(x, t, C, av, smooth, c1v, c2v, L, D, T,
                                         LOSSES_SOFT_GRAD_ONE, grad_scale, g, e);
        break;
    case LOSSES_SOFT_GRAD_INVERSE:
        loss_row = losses_soft_pass3_f32(x, t, C, av, smooth, c1v, c2v, L, D, T,
                                         LOSSES_SOFT_GRAD_INVERSE, grad_scale, g, e);
        gk = gk * grad_scale;
        break;
    case LOSSES_SOFT_GRAD_DIVIDE:
        loss_row = losses_soft_pass3_f32(x, t, C, av, smooth, c1v, c2v, L, D, T,
                                         LOSSES_SOFT_GRAD_DIVIDE, grad_scale, g, e);
        gk = gk / grad_scale;
        break;
    default:
        loss_row = losses_soft_pass3_f32(x, t, C, av, smooth, c1v, c2v, L, D, T,
                                         LOSSES_SOFT_GRAD_NONE, grad_scale, g, e);
    }
    if (grad_mode != LOSSES_SOFT_GRAD_NONE) g[k] = gk;
    *loss = loss_row;
    return 1;
}
#else
#define LOSSES_SOFT_F32 0
enum { LOSSES_SOFT_GRAD_NONE = 0, LOSSES_SOFT_GRAD_ONE, LOSSES_SOFT_GRAD_INVERSE, LOSSES_SOFT_GRAD_DIVIDE };
static inline int losses_soft_row_f32(const float* x, const float* t, ptrdiff_t C, int smooth,
                                      float c1, float c2, int grad_mode, float grad_scale,
                                      float* g, float* e, int validate, unsigned char* code,
                                      double tolerance, float* loss) {
    (void)x; (void)t; (void)C; (void)smooth; (void)c1; (void)c2; (void)grad_mode;
    (void)grad_scale; (void)g; (void)e; (void)validate; (void)code; (void)tolerance;
    (void)loss;
    return 0;       /* the baseline build runs the row code */
}
#endif

#endif /* PRECISION_LOSSES_SOFT_F32_H */
