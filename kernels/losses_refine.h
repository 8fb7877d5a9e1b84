/*
 * losses_refine.h -- the gradient refinement of the loss kernels (losses.pyx.tp, losses_block.h).
 *
 * With arithmetic A wider than storage S the loss kernels promise every gradient entry within
 * 1 ulp of S.  The gradient g_j = T p_j - t'_j cancels when the model's prediction is close to
 * the target (distillation, late training), and then no fixed wider format suffices.  So each
 * row's gradient, computed in A, is checked entry by entry against a rigorous bound of its
 * error in A (losses_cancels below, the formula in precision/losses.py's docstring; with
 * A = float32 and 16-bit S its second stage is losses_cancels_tight_S, which measures the sums'
 * roundings); a row that fails is recomputed here, with more digits, and rounded once into S:
 *
 *   level 1, double (A = float32 with 16-bit S): the same formulas in double, the same check
 *            with u = 2^-53; a row that still fails goes on to level 2;
 *   level 2, double-double (~106 bits): z_i = x_i - a exactly (TwoSum), exp and expm1 to a
 *            relative error below 2^-96; each entry in the direct form T e_j/(1+s) - t'_j or
 *            the tie form (exact rational part, then T f_j - t'_j F with f = expm1 z), the one
 *            with the smaller running-error bound, rounded once (round-to-odd to double, then
 *            to S).  It returns whether every entry's bound is below 1/8 ulp of S: it is unless
 *            both forms cancel (T p_j ~ t'_j to ~60 bits and T f_j ~ t'_j F).
 *
 * Exact ingredients: TwoSum (Knuth) and Dekker's product (Veltkamp split: no FMA, so both
 * builds give the same bits without relying on hardware FMA), the double-double add, multiply
 * and divide in their accurate forms (every renormalisation a TwoSum).
 */
#ifndef PRECISION_LOSSES_REFINE_H
#define PRECISION_LOSSES_REFINE_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include "fp.h"
#include "summation.h"
#include "exp_nonpositive.h"

/* ----------------------------------------------------------------- double-double */
typedef struct { double hi, lo; } double_double;

static inline double_double dd_make(double hi, double lo) { double_double r; r.hi = hi; r.lo = lo; return r; }
static inline double_double dd_from(double v) { return dd_make(v, 0.0); }

/* s + e == a + b exactly, s = fl(a + b) (Knuth's TwoSum: no condition on a, b) */
static inline double_double dd_two_sum(double a, double b) {
    double s = a + b;
    double bb = s - a;
    double e = (a - (s - bb)) + (b - bb);
    return dd_make(s, e);
}

/* Veltkamp's split: a = hi + lo, each with at most 26 significant bits (|a| < 2^995) */
static inline void dd_split(double a, double* hi, double* lo) {
    double t = 134217729.0 * a;                      /* 2^27 + 1 */
    *hi = t - (t - a);
    *lo = a - *hi;
}

/* p + e == a * b exactly, p = fl(a * b) (Dekker; no underflow of the parts assumed) */
static inline double_double dd_two_prod(double a, double b) {
    double p = a * b, ah, al, bh, bl;
    dd_split(a, &ah, &al);
    dd_split(b, &bh, &bl);
    double e = ((ah * bh - p) + ah * bl + al * bh) + al * bl;
    return dd_make(p, e);
}

static inline double_double dd_neg(double_double a) { return dd_make(-a.hi, -a.lo); }

static inline double_double dd_add(double_double a, double_double b) {
    double_double s = dd_two_sum(a.hi, b.hi), t = dd_two_sum(a.lo, b.lo);
    double_double u = dd_two_sum(s.hi, s.lo + t.hi);
    return dd_two_sum(u.hi, u.lo + t.lo);
}

static inline double_double dd_mul(double_double a, double_double b) {
    double_double p = dd_two_prod(a.hi, b.hi);
    return dd_two_sum(p.hi, p.lo + (a.hi * b.lo + a.lo * b.hi));
}

static inline double_double dd_div(double_double a, double_double b) {
    double q1 = a.hi / b.hi;
    double_double r = dd_add(a, dd_neg(dd_mul(b, dd_from(q1))));
    double q2 = r.hi / b.hi;
    r = dd_add(r, dd_neg(dd_mul(b, dd_from(q2))));
    double q3 = r.hi / b.hi;
    return dd_add(dd_two_sum(q1, q2), dd_from(q3));
}

/* 1/n!, n = 0..13, each as hi + lo (the exact value to ~2^-106 relative) */
static const double DD_INV_FACT[14][2] = {
    {0x1.0000000000000p+0, 0x0.0p+0},
    {0x1.0000000000000p+0, 0x0.0p+0},
    {0x1.0000000000000p-1, 0x0.0p+0},
    {0x1.5555555555555p-3, 0x1.5555555555555p-57},
    {0x1.5555555555555p-5, 0x1.5555555555555p-59},
    {0x1.1111111111111p-7, 0x1.1111111111111p-63},
    {0x1.6c16c16c16c17p-10, -0x1.f49f49f49f49fp-65},
    {0x1.a01a01a01a01ap-13, 0x1.a01a01a01a01ap-73},
    {0x1.a01a01a01a01ap-16, 0x1.a01a01a01a01ap-76},
    {0x1.71de3a556c734p-19, -0x1.c154f8ddc6c00p-73},
    {0x1.27e4fb7789f5cp-22, 0x1.cbbc05b4fa99ap-76},
    {0x1.ae64567f544e4p-26, -0x1.c062e06d1f209p-80},
    {0x1.1eed8eff8d898p-29, -0x1.2aec959e14c06p-83},
    {0x1.6124613a86d09p-33, 0x1.f28e0cc748ebep-87},
};

/* exp(z) for a double-double z <= 0: z = k ln2/64 + r, |r| <= ln2/128 (ln2/64 in three parts:
   36 + 53 + 53 bits, so k*L1 is exact for |k| < 2^17 and the residual is ~2^-155), e^r by its
   Taylor polynomial of degree 13 in double-double (truncation < 2^-140), times 2^(j/64) as
   hi + lo from exp_nonpositive.h's EXP2_J64_HI/LO_INIT, times 2^m.  Relative
   error below 2^-100 for results above 2^-960 (measured 2^-104.5; below it the low part is
   subnormal: absolute error below 2^-1066); 0 below exp(-746). */
static double_double dd_exp_nonpositive(double_double z) {
    const double SHIFT = 0x1.8p52;
    const double SIXTYFOUR_OVER_LN2 = 0x1.71547652b82fep+6;
    const double L1 = 0x1.62e42fefa0000p-7, L2 = 0x1.cf79abc9e3b3ap-46,
                 L3 = -0x1.ff0342542fc33p-100;
    if (!(z.hi >= -746.0)) return dd_from(0.0);          /* also -inf (and NaN: 0, unused) */
    double kd = (z.hi * SIXTYFOUR_OVER_LN2 + SHIFT) - SHIFT;
    double_double r = dd_add(z, dd_from(-kd * L1));
    r = dd_add(r, dd_neg(dd_two_prod(kd, L2)));
    r = dd_add(r, dd_from(-kd * L3));
    double_double p = dd_make(DD_INV_FACT[13][0], DD_INV_FACT[13][1]);
    for (int n = 12; n >= 0; n--)
        p = dd_add(dd_mul(p, r), dd_make(DD_INV_FACT[n][0], DD_INV_FACT[n][1]));
    long k = (long)kd;
    int j = (int)(k & 63);
    int m = (int)((k - j) / 64);
    p = dd_mul(p, dd_make(EXP2_J64_HI_INIT[j], EXP2_J64_LO_INIT[j]));
    return dd_make(ldexp(p.hi, m), ldexp(p.lo, m));
}

/* the double nearest to a + b rounded to odd: rounding it to any format of <= 51 bits then
   rounds a + b correctly (round-to-odd composes) */
static inline double dd_round_to_odd(double_double v) {
    uint64_t b = fp_f64_bits(v.hi);
    if (v.lo == 0 || v.hi - v.hi != 0) return v.hi;      /* exact, or not finite */
    if ((v.lo > 0) != (v.hi > 0)) b -= 1;                 /* truncation: the next toward 0 */
    return fp_bits_f64(b | 1);
}

/* (e, f) = (exp z, expm1 z) of a double-double z <= 0, for level 2.  z < -1/2: e by
   dd_exp_nonpositive, f = e - 1 (|f| > 0.39: no cancellation).  -1/2 <= z <= 0: w = z / 2^s with
   |w| <= 2^-8 (exact), expm1(w) = w sum_{n=1..13} w^(n-1)/n! (truncation below 2^-140 relative),
   then s <= 7 doublings expm1(2w) = expm1(w) (expm1(w) + 2), which do not amplify a relative
   error (the factor (2f + 2)/(f + 2) is at most 1 for -1 < f <= 0); e = 1 + f (e > 0.6).
   Relative error of either below DD_EXP_REL (2^-96; a few 2^-103 per operation, measured in the
   tests against mpmath) above 2^-960, plus DD_TINY absolutely; f is exactly 0 for z = 0. */
#define DD_REL 0x1p-100        /* per double-double multiply or divide (at most 7 u^2 = 2^-103.2) */
#define DD_EXP_REL 0x1p-96     /* dd_exp_nonpositive, dd_exp_expm1_nonpositive */
#define DD_TINY 0x1p-1000      /* absolute, per operation: underflow of the low parts */
static void dd_exp_expm1_nonpositive(double_double z, double_double* e, double_double* f) {
    if (z.hi < -0.5) {
        *e = dd_exp_nonpositive(z);
        *f = dd_add(*e, dd_from(-1.0));
        return;
    }
    int s = 0;
    double_double w = z;
    while (w.hi < -0x1p-8) { w.hi *= 0.5; w.lo *= 0.5; s++; }
    double_double q = dd_make(DD_INV_FACT[13][0], DD_INV_FACT[13][1]);
    for (int n = 12; n >= 1; n--)
        q = dd_add(dd_mul(q, w), dd_make(DD_INV_FACT[n][0], DD_INV_FACT[n][1]));
    double_double r = dd_mul(w, q);
    for (int i = 0; i < s; i++) r = dd_mul(r, dd_add(r, dd_from(2.0)));
    *f = r;
    *e = dd_add(dd_from(1.0), r);
}

/* dd_add with its rounding error: the same result, and *err grows by |r1| + |r2|, the two
   roundings dd_add commits (its other steps are exact TwoSums), so a sum of values exact in
   double-double reports 0: an a-posteriori bound that sees exact cancellation as exact. */
static inline double_double dd_add_err(double_double a, double_double b, double* err) {
    double_double s = dd_two_sum(a.hi, b.hi), t = dd_two_sum(a.lo, b.lo);
    double_double v1 = dd_two_sum(s.lo, t.hi);
    double_double u = dd_two_sum(s.hi, v1.hi);
    double_double v2 = dd_two_sum(u.lo, t.lo);
    *err += fabs(v1.lo) + fabs(v2.lo);
    return dd_two_sum(u.hi, v2.hi);
}

/* ----------------------------------------------------------------- the cancellation check */
/* 1 if some entry of g might be more than 1/8 ulp of S from its exact value (then the row is
   refined).  g_j, t_j: the gradient and the (smoothed) target in A; cu = c u_A with the row's
   constant c = 2 Z + 2 d + 17; two_inv = 2 / N (1 for "none"/"sum"); abs_err: the underflow
   term (4 T + 5) eta_A; us8, etas8: u_S / 8 and (smallest subnormal of S) / 8.  Every operation
   in double, in this order (precision/exact/losses.py replays it); for A = float32 in float,
   below. */
#define LOSSES_CANCELS_CHUNK 64  /* entries per chunk: the check returns after a chunk that flags */
#define LOSSES_DEFINE_CANCELS(A, T)                                                           \
static inline int losses_cancels_##A(const T* g, const T* t, ptrdiff_t n, double cu,          \
                                     double two_inv, double abs_err, double us8,              \
                                     double etas8) {                                          \
    for (ptrdiff_t j0 = 0; j0 < n; j0 += LOSSES_CANCELS_CHUNK) {                              \
        ptrdiff_t j1 = n - j0 > LOSSES_CANCELS_CHUNK ? j0 + LOSSES_CANCELS_CHUNK : n;         \
        int flag = 0;                                                                         \
        for (ptrdiff_t j = j0; j < j1; j++) {                                                 \
            double gj = fabs((double)g[j]);                                                   \
            double bound = cu * (gj + two_inv * fabs((double)t[j])) + abs_err;                \
            flag |= (bound > us8 * gj) & (bound > etas8);                                     \
        }                                                                                     \
        if (flag) return 1;                                                                   \
    }                                                                                         \
    return 0;                                                                                 \
}
LOSSES_DEFINE_CANCELS(f64, double)

/* The same check for A = float32 (16-bit S), in float: the stage runs on every row (in the
   blocks on every lane), and a float test is half the work of the double one.  With
   G = |g_j|, M = |t_j| (floats) and the row's doubles cu, two_inv, abs_err, us8, etas8:

     A  = room(1 - 2^-16) rounded to float if room = us8 - cu > 2^-10 us8, else 0
     B  = R(cu two_inv (1 + 2^-16)) + 2^-147      C0 = R(abs_err (1 + 2^-16)) + 2^-147
     K  = R(cu (1 + 2^-16))                       E0 = R(y) if y > 0 else 0,
                                                  y = (etas8 - abs_err)(1 - 2^-20) - 2^-147
     entry j flags iff  fl(G A) < fl(fl(M B) + C0)  and  fl(fl(G K) + fl(M B)) >= E0

   (R: double to float, nearest; fl: float operations; the additions of the constants' tails
   are float additions).  Claim: an entry that does not flag has E = cu (G + (2/N) M) + abs_err
   <= us8 G or E <= etas8, for the real E of the formula above (cu and us8 exact in double,
   two_inv within 2^-53 of 2/N).  Each float product or sum is within 2^-24 relative plus
   2^-150 absolute of its value (RN; an addition whose result is subnormal is exact).
   * first test false: fl(G A) >= fl(fl(M B) + C0).  Left <= G A (1 + 2^-24) + 2^-150 and
     A <= room (1 - 2^-16)(1 + 2^-24), so left <= room G (1 - 2^-17) + 2^-150.  Right >=
     (M B (1 - 2^-24) - 2^-150 + C0)(1 - 2^-24) with B >= cu (2/N)(1 + 2^-17) and C0 >=
     abs_err (1 + 2^-17) + 2^-148 (C0 < 2^-126: the 2^-147 tail and the rounding of abs_err
     to a multiple of 2^-149 (error <= 2^-150) are exact float terms; above, abs_err 2^-17
     >= 2^-143 covers the absolute terms), so right >= cu (2/N) M + abs_err + 2^-149 and
     room G + 2^-150 > cu (2/N) M + abs_err: E < us8 G + 2^-150 - 2^-149 < us8 G.
     (A = 0: the right side is >= C0 > 0 = the left, so the first test holds.)
   * second test false: fl(fl(G K) + fl(M B)) < E0.  K >= cu (1 + 2^-17), so the left is
     >= (cu G + cu (2/N) M)(1 + 2^-17)(1 - 2^-24)^2 - 2^-149 >= cu (G + (2/N) M) - 2^-149,
     and E0 <= y (1 + 2^-24) + 2^-150 <= etas8 - abs_err - 2^-148: E < etas8.
   (E0 = 0: the left is >= 0, the second test holds.)  With 2^-16 margins against relative
   errors of a few 2^-24 the chain has room to spare; NaN entries do not flag (as in double).
   Monotone in cu (A falls, B and K grow with it, every rounding is monotone): an entry that
   flags with the row's own Z flags with Z at its cap too, so the two stages stay nested. */
typedef struct { float A, B, C0, K, E0; } losses_cancels_f32_consts;
static inline losses_cancels_f32_consts losses_cancels_consts_f32(double cu, double two_inv,
                                                                  double abs_err, double us8,
                                                                  double etas8) {
    losses_cancels_f32_consts k;
    double room = us8 - cu, y = (etas8 - abs_err) * (1.0 - 0x1p-20) - 0x1p-147;
    k.A = room > us8 * 0x1p-10 ? (float)(room * (1.0 - 0x1p-16)) : 0.0f;
    k.B = (float)(cu * two_inv * (1.0 + 0x1p-16)) + 0x1p-147f;
    k.C0 = (float)(abs_err * (1.0 + 0x1p-16)) + 0x1p-147f;
    k.K = (float)(cu * (1.0 + 0x1p-16));
    k.E0 = y > 0 ? (float)y : 0.0f;
    return k;
}
static inline int losses_cancels_entry_f32(float g, float m, float A, float B, float C0, float K,
                                           float E0) {
    float G = fabsf(g), MB = fabsf(m) * B;
    return (G * A < MB + C0) & (G * K + MB >= E0);
}
static inline int losses_cancels_f32(const float* g, const float* t, ptrdiff_t n, double cu,
                                     double two_inv, double abs_err, double us8, double etas8) {
    losses_cancels_f32_consts k = losses_cancels_consts_f32(cu, two_inv, abs_err, us8, etas8);
    for (ptrdiff_t j0 = 0; j0 < n; j0 += LOSSES_CANCELS_CHUNK) {
        ptrdiff_t j1 = n - j0 > LOSSES_CANCELS_CHUNK ? j0 + LOSSES_CANCELS_CHUNK : n;
        int flag = 0;
        for (ptrdiff_t j = j0; j < j1; j++)
            flag |= losses_cancels_entry_f32(g[j], t[j], k.A, k.B, k.C0, k.K, k.E0);
        if (flag) return 1;
    }
    return 0;
}

/* the check's constants per policy P = <S>_<A>: u and smallest subnormal of A, Zcap (beyond it
   exp(z) is 0 or subnormal in A), u_S / 8 and (smallest subnormal of S) / 8; one table for the
   row code (losses.pyx.tp) and the blocks (losses_block.h); 0 where A is not wider than S */
#define LOSSES_REFINE_CONSTS(P, UA, ETAA, ZCAP, US8, ETAS8)                                   \
    static const double LOSSES_UA_##P = UA, LOSSES_ETAA_##P = ETAA, LOSSES_ZCAP_##P = ZCAP,   \
                        LOSSES_US8_##P = US8, LOSSES_ETAS8_##P = ETAS8;
LOSSES_REFINE_CONSTS(f16_f16, 0, 0, 0, 0, 0)
LOSSES_REFINE_CONSTS(bf16_bf16, 0, 0, 0, 0, 0)
LOSSES_REFINE_CONSTS(f32_f32, 0, 0, 0, 0, 0)
LOSSES_REFINE_CONSTS(f64_f64, 0, 0, 0, 0, 0)
LOSSES_REFINE_CONSTS(f16_f32, 0x1p-24, 0x1p-149, 104.0, 0x1p-14, 0x1p-27)
LOSSES_REFINE_CONSTS(bf16_f32, 0x1p-24, 0x1p-149, 104.0, 0x1p-11, 0x1p-136)
LOSSES_REFINE_CONSTS(f16_f64, 0x1p-53, 0x1p-1074, 745.0, 0x1p-14, 0x1p-27)
LOSSES_REFINE_CONSTS(bf16_f64, 0x1p-53, 0x1p-1074, 745.0, 0x1p-11, 0x1p-136)
LOSSES_REFINE_CONSTS(f32_f64, 0x1p-53, 0x1p-1074, 745.0, 0x1p-27, 0x1p-152)
/* the tight check's thresholds, u_S / 2 and eta_S / 2 */
static const double LOSSES_US_HALF_f16 = 0x1p-12, LOSSES_ETAS_HALF_f16 = 0x1p-25,
                    LOSSES_US_HALF_bf16 = 0x1p-9, LOSSES_ETAS_HALF_bf16 = 0x1p-134;

/* c u_A for a row: Z = min(-min_i z_i, zcap) over the finite z_i (beyond zcap every e_i is 0
   or subnormal in A and counts in abs_err instead), d the pairwise depth of C terms */
static inline double losses_cancel_cu(double zmin, double zcap, ptrdiff_t C, double u) {
    double Z = -zmin < zcap ? -zmin : zcap;
    return (2.0 * Z + (double)(2 * pairwise_depth(C) + 17)) * u;
}

/* ------------------------------------------------ the tight check (A = float32, 16-bit S)
   The second stage of the check for the policies f16_f32 and bf16_f32, run on a row that the
   first stage (losses_cancels with Z at its cap, which is cheap and vectorises) could not clear.
   Instead of a-priori constants it measures what it can:
     * z_i = R(x_i - a) is exact when the row's spread fits float's 24 bits (below: then the
       2 Z u term is 0; else eps_z = u Z, Z = min(-min z, Zcap));
     * the roundings of the sums s (D = R(1 + s)), T_k and T: each compared with the double
       pairwise sum of the same float terms (summation.h, error <= gamma = 1.01 d 2^-53 of it);
     * exp: 1/2 ulp + 2^-20 (exp_nonpositive.h), eps_e = u (1 + 2^-18) relative;
     * smoothed targets t' = R(R(c1 t) + c2): eps_t = 3 u relative (0 unsmoothed).
   First order, per entry (G = |g_j| N before the batch division N, t_j = |t'_j|):
     errS = |s - s_d| + gamma s_d + (eps_e + eps_z) s_d,     relD = (errS + u D) / D
     relP = eps_e + eps_z + relD + u,   relT = (|T - T_d| + (gamma + 2^-53) T_d + eps_t T_d) / T
     E_j = u G + (relT + relP + u)(G + t_j)(1 + 4 u) + eps_t t_j                   (j != k)
     E_k = (errTk + t_k errS + (eps_t + u) t_k s + u G D) / D + G (relD + u)
           errTk = |T_k - T_k,d| + gamma T_k,d + eps_t T_k,d
   then E = (E / N + u |g_j| [if N != 1]) (1 + 2^-20) + abs_err (abs_err as for
   losses_cancels: the underflow term), and the row is refined if some E > u_S |g_j| / 2 and
   E > eta_S / 2: an error below half an ulp of S leaves the stored entry within 1 ulp
   (a rounding adds at most another half; across a power of two the rounding goes to it).
   e, t, g (strided by `stride`): the row's e_i, targets in A (t[k] may hold anything: t_k is
   passed), gradient in A after the batch division.  Every operation in double, in this order
   (tests/losses_reference.py replays it). */
/* the per-entry bounds of losses_cancels_tight_S over entries j (stride ST): the largest
   E_j - max(u_S/2 |g_j|, eta_S/2) (> 0: refine), kept in 4 running maxima (a max is exact and
   order-free: the same result, 4 independent dependency chains) */
#define LOSSES_TIGHT_ENTRY(ST, J, W)                                                          \
    {   double gj = fabs((double)g[(J) * (ST)]);                                              \
        double tj = fabs((double)t[(J) * (ST)]);                                              \
        double G = gj * batch;                                                                \
        double E = u * G + relQ4 * (G + tj) + eps_t * tj;                                     \
        E = (J) == k ? Ek : E;                                                                \
        E = (E * inv_batch + ub * gj) * (1.0 + 0x1p-20) + abs_err;                            \
        double thr = us_half * gj > etas_half ? us_half * gj : etas_half;                     \
        double over = E - thr;                                                                \
        W = over > W ? over : W; }
#define LOSSES_TIGHT_ENTRIES(ST)                                                              \
    {   double w0 = -INFINITY, w1 = -INFINITY, w2 = -INFINITY, w3 = -INFINITY;                \
        ptrdiff_t j = 0;                                                                      \
        for (; j + 4 <= C; j += 4) {                                                          \
            LOSSES_TIGHT_ENTRY(ST, j, w0) LOSSES_TIGHT_ENTRY(ST, j + 1, w1)                   \
            LOSSES_TIGHT_ENTRY(ST, j + 2, w2) LOSSES_TIGHT_ENTRY(ST, j + 3, w3)               \
        }                                                                                     \
        for (; j < C; j++) LOSSES_TIGHT_ENTRY(ST, j, w0)                                      \
        w0 = w1 > w0 ? w1 : w0;                                                               \
        w2 = w3 > w2 ? w3 : w2;                                                               \
        worst = w2 > w0 ? w2 : w0; }
/* a value's order key (finite 16-bit bits h, magnitude m): -m for negatives, m otherwise */
#define LOSSES_TIGHT_BIG (1 << 30)
#define LOSSES_DEFINE_CANCELS_TIGHT(S, TS, LD, PS, INF_BITS)                                  \
/* min x (finite) and the least nonzero finite |x| of a row of 16-bit logits, by integer keys  \
   (the loop vectorises); LOSSES_TIGHT_BIG for none */                                        \
static inline void losses_tight_keys_##S(const TS* restrict x, ptrdiff_t C, int32_t* kmin,    \
                                         int32_t* mmin) {                                     \
    int32_t a = LOSSES_TIGHT_BIG, b = LOSSES_TIGHT_BIG;                                       \
    for (ptrdiff_t i = 0; i < C; i++) {                                                       \
        int32_t h = x[i];                                                                     \
        int32_t mag = h & 0x7FFF;                                                             \
        int32_t finite = mag < (INF_BITS);                                                    \
        int32_t key = (h & 0x8000) ? -mag : mag;                                              \
        key = finite ? key : LOSSES_TIGHT_BIG;                                                \
        int32_t m2 = (finite & (mag != 0)) ? mag : LOSSES_TIGHT_BIG;                          \
        a = key < a ? key : a;                                                                \
        b = m2 < b ? m2 : b;                                                                  \
    }                                                                                         \
    *kmin = a;                                                                                \
    *mmin = b;                                                                                \
}                                                                                             \
/* 1 if some entry j may fail the check (a superset of those that do): |g_j| A < |t_j| B + C0 \
   in float, with A, B, C0 rounded so that the float products err on the safe side (the      \
   loop vectorises) */                                                                        \
static inline int losses_tight_candidates_##S(const float* restrict g, const float* restrict t, \
                                              ptrdiff_t C, float A, float B, float C0) {      \
    int n = 0;                                                                                \
    for (ptrdiff_t j = 0; j < C; j++) n += fabsf(g[j]) * A < fabsf(t[j]) * B + C0;           \
    return n;                                                                                 \
}                                                                                             \
static int losses_cancels_tight_##S(const TS* x, float a, ptrdiff_t k, float* e, float* t,    \
                                    const float* g, ptrdiff_t stride, ptrdiff_t C, float s,   \
                                    float Tk, float tk, float D, float T, int smoothed,       \
                                    double batch, double abs_err, double us_half,             \
                                    double etas_half) {                                       \
    const double u = 0x1p-24, eps_e = 0x1p-24 * (1.0 + 0x1p-18);                              \
    /* z exact: every x_i and a are multiples of 2^q, q = the exponent of the least nonzero   \
       |x_i| minus p_S - 1, and |x_i - a| <= M = 2 max(|a|, |min x|) < 2^(24 + q) */          \
    int32_t kmin, mmin;                                                                       \
    losses_tight_keys_##S(x, C, &kmin, &mmin);                                                \
    float xmin = kmin == LOSSES_TIGHT_BIG ? a                                                 \
                 : LD((uint16_t)(kmin < 0 ? (0x8000 | -kmin) : kmin));                        \
    int exact = 1;                                                                            \
    if (mmin != LOSSES_TIGHT_BIG) {                                                           \
        int q;                                                                                \
        frexpf(LD((uint16_t)mmin), &q);                                                       \
        float M = 2.0f * (fabsf(a) > fabsf(xmin) ? fabsf(a) : fabsf(xmin));                   \
        exact = (double)M < ldexp(1.0, 24 + (q - 1) - ((PS) - 1));                            \
    }                                                                                         \
    float zmin = xmin - a;                                                                    \
    double Z = -(double)zmin < LOSSES_ZCAP_##S##_f32 ? -(double)zmin : LOSSES_ZCAP_##S##_f32; \
    double eps_z = exact ? 0.0 : u * Z;                                                       \
    double eps_t = smoothed ? 3.0 * u : 0.0;                                                  \
    float ek = e[k * stride], tkeep = t[k * stride];                                          \
    e[k * stride] = 0;                                                                        \
    t[k * stride] = 0;                                                                        \
    double s_d, Tk_d;                                                                         \
    if (stride == 1) {                                                                        \
        s_d = sum_pairwise_f32_f64(e, C, 1);                                                  \
        Tk_d = sum_pairwise_f32_f64(t, C, 1);                                                 \
    } else {                                                                                  \
        s_d = sum_pairwise_f32_f64(e, C, stride);                                             \
        Tk_d = sum_pairwise_f32_f64(t, C, stride);                                            \
    }                                                                                         \
    e[k * stride] = ek;                                                                       \
    t[k * stride] = tkeep;                                                                    \
    double gamma = 1.01 * (double)pairwise_depth(C) * 0x1p-53;                                \
    double errS = fabs((double)s - s_d) + gamma * s_d + (eps_e + eps_z) * s_d;                \
    double relD = (errS + u * (double)D) / (double)D;                                         \
    double relP = eps_e + eps_z + relD + u;                                                   \
    double T_d = Tk_d + (double)tk;                                                           \
    double errT = fabs((double)T - T_d) + (gamma + 0x1p-53) * T_d + eps_t * T_d;              \
    double relT = T > 0 ? errT / (double)T : 0.0;                                             \
    double relQ = relT + relP + u;                                                            \
    double errTk = fabs((double)Tk - Tk_d) + gamma * Tk_d + eps_t * Tk_d;                     \
    double tks = (double)tk * (double)s;                                                      \
    double Gk = fabs((double)g[k * stride]) * batch;                                          \
    double Ek = (errTk + (double)tk * errS + (eps_t + u) * tks + u * Gk * (double)D) / (double)D \
                + Gk * (relD + u);                                                            \
    /* entry k's bound by a select; the batch division as a product with 1/N (the factor     \
       1 + 2^-20 covers its extra rounding) */                                                \
    double relQ4 = relQ * (1.0 + 4.0 * u), inv_batch = 1.0 / batch, ub = batch != 1 ? u : 0.0; \
    /* E_j <= (|g_j| (u + relQ4 + ub) + |t_j| (relQ4 + eps_t) / N)(1 + 2^-20) + abs_err:      \
       an entry with E_j <= u_S/2 |g_j| by that bound cannot fail; the float test below has   \
       margins of 2^-16 (each float product is within 2^-24) */                              \
    double Ag = (u + relQ4 + ub) * (1.0 + 0x1p-20), Bt = (relQ4 + eps_t) * inv_batch * (1.0 + 0x1p-20); \
    int all = 1;                                                                              \
    if (stride == 1 && us_half > Ag * (1.0 + 0x1p-10)) {                                      \
        float A = (float)((us_half - Ag) * (1.0 - 0x1p-16));                                  \
        float B = (float)(Bt * (1.0 + 0x1p-16)) + 0x1p-149f;                                  \
        float C0 = (float)(abs_err * (1.0 + 0x1p-16)) + 0x1p-149f;                            \
        all = losses_tight_candidates_##S(g, t, C, A, B, C0) > 0;                             \
    }                                                                                         \
    double worst = -INFINITY;                                                                 \
    if (!all) {                                                                               \
        double gj = fabs((double)g[k * stride]);                                              \
        double E = (Ek * inv_batch + ub * gj) * (1.0 + 0x1p-20) + abs_err;                    \
        double thr = us_half * gj > etas_half ? us_half * gj : etas_half;                     \
        worst = E - thr;                                                                      \
    } else if (stride == 1) {                                                                 \
        LOSSES_TIGHT_ENTRIES(1)                                                               \
    } else {                                                                                  \
        LOSSES_TIGHT_ENTRIES(stride)                                                          \
    }                                                                                         \
    return worst > 0;                                                                         \
}
static inline float losses_ld32_f16(uint16_t h) { return ld16_f16(h); }
static inline float losses_ld32_bf16(uint16_t h) { return ld16_bf16(h); }
LOSSES_DEFINE_CANCELS_TIGHT(f16, uint16_t, losses_ld32_f16, 11, 0x7C00)
LOSSES_DEFINE_CANCELS_TIGHT(bf16, uint16_t, losses_ld32_bf16, 8, 0x7F80)

/* ----------------------------------------------------------------- the refinement per S */
/* LD64: S value -> double (exact); ST64: a double -> S rounded once (the stored bits) */
#define LOSSES_DEFINE_REFINE(S, TS, LD64, ST64, US, ETAS)                                     \
LOSSES_DEFINE_LEVEL2(S, TS, LD64, ST64, US, ETAS)                                             \
LOSSES_DEFINE_LEVEL1(S, TS, LD64, ST64, US, ETAS)

/* Level 2: the row's gradient in double-double, rounded once into g (S).  Returns 0 if every
   entry is certified within 1/8 ulp of S before that rounding (so within 1 ulp after it), 1 if
   some entry's bound is not (the best estimate is written all the same).

   Notation: m = number of finite logits, t'_i = (1 - eps) t_i + eps/C the smoothed target (t_i
   the raw target, one-hot for class indices), Traw = sum_i t_i, T = (1 - eps) Traw + eps,
   z_i = x_i - a (exact, TwoSum), e_i = exp z_i, f_i = expm1 z_i (finite z_i), F = sum f_i <= 0,
   D = m + F = sum e_i, s = sum_{i != k} e_i.  Two exact forms of each entry:

     tie form    g_j = [ ((1 - eps)(Traw - m t_j) + eps (C - m)/C) + (T f_j - t'_j F) ] / D
     direct      g_j = T (e_j / (1 + s)) - t'_j,    g_k = (T_k - t'_k s) / (1 + s)
     (x_j = -inf: g_j = -t'_j)

   The tie form's first part is rational (Traw - m t_j exact in double-double for targets
   spanning <= ~100 bits; with all logits equal it is the whole gradient) and its second is
   small when the logits are nearly tied (|f_i| ~ |z_i|): nearly tied logits with targets that
   match the tie to first order cancel in the direct form below its rounding error, not in
   this one.  Far-apart logits are the other way round (1 + f_j loses a tiny e_j).  So each
   entry gets a first-order running-error bound for both forms -- every double-double add's
   rounding taken a posteriori (dd_add_err: exact sums count 0), DD_REL per multiply/divide,
   DD_EXP_REL per exp/expm1, DD_TINY for underflow -- and the form with the smaller bound is
   stored; the check is the one of losses_cancels: bound <= u_S/8 |g_j| or <= eta_S/8.  What
   remains uncertified: rows whose tie form cancels a second time (T f_j ~ t'_j F: logits whose
   differences nearly tie) while the direct form cancels too. */
#define LOSSES_DEFINE_LEVEL2(S, TS, LD64, ST64, US, ETAS)                                     \
static int losses_refine_dd_##S(const TS* x, ptrdiff_t C, const TS* t, int64_t y,             \
                                double eps, double batch, ptrdiff_t k, double a, TS* g,       \
                                double* work) {                                               \
    double_double* e = (double_double*)work;                                                  \
    double_double* f = e + C;                                                                 \
    const double safety = 1.0 + 0x1p-40;           /* covers the bounds' own roundings */     \
    double_double keep = dd_two_sum(1.0, -eps);     /* 1 - eps, exactly */                    \
    double_double share = dd_div(dd_from(eps), dd_from((double)C));                           \
    double_double Traw = dd_from(0.0), TrawK = dd_from(0.0), F = dd_from(0.0), s = dd_from(0.0); \
    double errTraw = 0, errTrawK = 0, errF = 0, errs = 0, absF = 0;                           \
    ptrdiff_t m = 0;                                                                          \
    for (ptrdiff_t i = 0; i < C; i++) {                                                       \
        double v = LD64(x[i]);                                                                \
        double ti = t ? LD64(t[i]) : (i == y ? 1.0 : 0.0);                                    \
        Traw = dd_add_err(Traw, dd_from(ti), &errTraw);                                       \
        if (i != k) TrawK = dd_add_err(TrawK, dd_from(ti), &errTrawK);                        \
        if (v == -INFINITY) { e[i] = dd_from(0.0); f[i] = dd_from(-1.0); continue; }          \
        m++;                                                                                  \
        if (i == k) { e[i] = dd_from(1.0); f[i] = dd_from(0.0); continue; }                   \
        dd_exp_expm1_nonpositive(dd_two_sum(v, -a), &e[i], &f[i]);                            \
        F = dd_add_err(F, f[i], &errF);                                                       \
        errF += DD_EXP_REL * fabs(f[i].hi) + DD_TINY;                                         \
        absF += fabs(f[i].hi);                                                                \
        s = dd_add_err(s, e[i], &errs);                                                       \
        errs += DD_EXP_REL * e[i].hi + DD_TINY;                                               \
    }                                                                                         \
    (void)absF;                                                                               \
    /* T and T_k (smoothed): (1 - eps) Traw + eps, (1 - eps) TrawK + eps (C - 1)/C */         \
    double_double T = Traw, Tk = TrawK;                                                       \
    double errT = errTraw, errTk = errTrawK;                                                  \
    double_double extra = dd_from(0.0);             /* eps (C - m) / C */                     \
    double errExtra = 0;                                                                      \
    if (eps != 0) {                                                                           \
        double_double kT = dd_mul(keep, Traw), kTk = dd_mul(keep, TrawK);                     \
        errT = keep.hi * errTraw + DD_REL * fabs(kT.hi) + DD_TINY;                            \
        T = dd_add_err(kT, dd_from(eps), &errT);                                              \
        double_double shareK = dd_div(dd_mul(dd_from(eps), dd_from((double)(C - 1))),         \
                                      dd_from((double)C));                                    \
        errTk = keep.hi * errTrawK + DD_REL * (fabs(kTk.hi) + shareK.hi) + DD_TINY;           \
        Tk = dd_add_err(kTk, shareK, &errTk);                                                 \
        extra = dd_div(dd_mul(dd_from(eps), dd_from((double)(C - m))), dd_from((double)C));   \
        errExtra = DD_REL * extra.hi + DD_TINY;                                               \
    }                                                                                         \
    double errD = errF;                                                                       \
    double_double D = dd_add_err(dd_from((double)m), F, &errD);                               \
    double errD1 = errs;                                                                      \
    double_double D1 = dd_add_err(dd_from(1.0), s, &errD1);                                   \
    int uncertain = 0;                                                                        \
    for (ptrdiff_t j = 0; j < C; j++) {                                                       \
        double tj = t ? LD64(t[j]) : (j == y ? 1.0 : 0.0);                                    \
        double_double tpj = dd_from(tj);            /* t'_j */                                \
        double errTpj = 0;                                                                    \
        if (eps != 0) {                                                                       \
            double_double kt = dd_mul(keep, tpj);                                             \
            errTpj = DD_REL * (fabs(kt.hi) + share.hi) + DD_TINY;                             \
            tpj = dd_add_err(kt, share, &errTpj);                                             \
        }                                                                                     \
        double_double gj;                                                                     \
        double err;                                                                           \
        if (LD64(x[j]) == -INFINITY) {                                                        \
            gj = dd_neg(tpj);                                                                 \
            err = errTpj;                                                                     \
        } else {                                                                              \
            /* tie form */                                                                    \
            double errR = errTraw;                                                            \
            double_double R = dd_add_err(Traw, dd_neg(dd_two_prod((double)m, tj)), &errR);    \
            if (eps != 0) {                                                                   \
                double_double kR = dd_mul(keep, R);                                           \
                errR = keep.hi * errR + DD_REL * fabs(kR.hi) + errExtra + DD_TINY;            \
                R = dd_add_err(kR, extra, &errR);                                             \
            }                                                                                 \
            double_double Q1 = dd_mul(T, f[j]), Q2 = dd_mul(tpj, F);                          \
            double errQ = errT * fabs(f[j].hi)                                                \
                          + fabs(T.hi) * (DD_EXP_REL * fabs(f[j].hi) + DD_TINY)               \
                          + DD_REL * (fabs(Q1.hi) + fabs(Q2.hi))                              \
                          + errTpj * fabs(F.hi) + fabs(tpj.hi) * errF + 2 * DD_TINY;          \
            double_double Q = dd_add_err(Q1, dd_neg(Q2), &errQ);                              \
            double errN = errR + errQ;                                                        \
            double_double N = dd_add_err(R, Q, &errN);                                        \
            double_double gt = dd_div(N, D);                                                  \
            double errTie = (errN + fabs(gt.hi) * errD) / (D.hi - errD)                       \
                            + DD_REL * fabs(gt.hi) + DD_TINY;                                 \
            /* direct form */                                                                 \
            double_double gd;                                                                 \
            double errDirect;                                                                 \
            if (j == k) {                                                                     \
                double_double ts = dd_mul(tpj, s);                                            \
                double errN2 = errTk + errTpj * s.hi + fabs(tpj.hi) * errs                    \
                               + DD_REL * fabs(ts.hi) + DD_TINY;                              \
                double_double N2 = dd_add_err(Tk, dd_neg(ts), &errN2);                        \
                gd = dd_div(N2, D1);                                                          \
                errDirect = (errN2 + fabs(gd.hi) * errD1) / (D1.hi - errD1)                   \
                            + DD_REL * fabs(gd.hi) + DD_TINY;                                 \
            } else {                                                                          \
                double_double p = dd_div(e[j], D1);                                           \
                double errp = (DD_EXP_REL * e[j].hi + DD_TINY + p.hi * errD1) / (D1.hi - errD1) \
                              + DD_REL * p.hi + DD_TINY;                                      \
                double_double q = dd_mul(T, p);                                               \
                double errq = errT * p.hi + fabs(T.hi) * errp + DD_REL * fabs(q.hi) + DD_TINY; \
                errDirect = errq + errTpj;                                                    \
                gd = dd_add_err(q, dd_neg(tpj), &errDirect);                                  \
            }                                                                                 \
            int tie = errTie < errDirect;                                                     \
            gj = tie ? gt : gd;                                                               \
            err = tie ? errTie : errDirect;                                                   \
        }                                                                                     \
        if (batch != 1) {                                                                     \
            gj = dd_div(gj, dd_from(batch));                                                  \
            err = err / batch + DD_REL * fabs(gj.hi) + DD_TINY;                               \
        }                                                                                     \
        err *= safety;                                                                        \
        double gabs = fabs(gj.hi) * (1 - 0x1p-50);                                            \
        uncertain |= (err > (US) / 8 * gabs) & (err > (ETAS) / 8);                            \
        g[j] = ST64(dd_round_to_odd(gj));                                                     \
    }                                                                                         \
    return uncertain;                                                                         \
}

#define LOSSES_DEFINE_LEVEL1(S, TS, LD64, ST64, US, ETAS)                                     \
/* level 1: the same formulas in double; returns 1 (nothing written) if the check fails.     \
   Written as separate branch-free loops so that each vectorises (the exp through the       \
   noinline restrict helper of exp_nonpositive.h) */                                            \
static int losses_refine_f64_##S(const TS* x, ptrdiff_t C, const TS* t, int64_t y,            \
                                 double eps, double batch, ptrdiff_t k, double a, TS* g,      \
                                 double* work) {                                              \
    double* e = work;                                                                         \
    double* tp = work + C;                                                                    \
    double* gg = work + 2 * C;                                                                \
    double keep = 1.0 - eps, share = eps / (double)C, zmin = 0.0;                             \
    for (ptrdiff_t i = 0; i < C; i++) {                                                       \
        double z = LD64(x[i]) - a;                                                            \
        zmin = (z < zmin && z - z == 0) ? z : zmin;                                           \
        e[i] = z;                                                                             \
    }                                                                                         \
    exp_nonpositive_inplace_f64(e, C);                                                             \
    if (t && eps != 0)                                                                        \
        for (ptrdiff_t i = 0; i < C; i++) tp[i] = keep * LD64(t[i]) + share;                  \
    else if (t)                                                                               \
        for (ptrdiff_t i = 0; i < C; i++) tp[i] = LD64(t[i]);                                 \
    else {                                                                                    \
        for (ptrdiff_t i = 0; i < C; i++) tp[i] = eps != 0 ? share : 0.0;                     \
        tp[y] = eps != 0 ? keep + share : 1.0;                                                \
    }                                                                                         \
    double ek = e[k], tk = tp[k];                                                             \
    e[k] = 0;                                                                                 \
    double s = sum_pairwise_f64(e, C);                                                     \
    e[k] = ek;                                                                                \
    tp[k] = 0;                                                                                \
    double Tk = sum_pairwise_f64(tp, C);                                                   \
    tp[k] = tk;                                                                               \
    double T = Tk + tk, D = 1.0 + s;                                                          \
    for (ptrdiff_t j = 0; j < C; j++) gg[j] = T * (e[j] / D) - tp[j];                         \
    gg[k] = (Tk - tk * s) / D;                                                                \
    if (batch != 1)                                                                           \
        for (ptrdiff_t j = 0; j < C; j++) gg[j] = gg[j] / batch;                              \
    double cu = losses_cancel_cu(zmin, LOSSES_ZCAP_f32_f64, C, LOSSES_UA_f32_f64);                                   \
    /* entry k's magnitude, as in the kernel: |g_k| + 2 min(Tk, t_k s) / D */                 \
    double tk_check = (Tk < tk * s ? Tk : tk * s) / D;                                        \
    tp[k] = tk_check;                                                                         \
    int cancels = losses_cancels_f64(gg, tp, C, cu, 2.0 / batch, (4.0 * T + 5.0) * LOSSES_ETAA_f32_f64, \
                                     (US) / 8, (ETAS) / 8);                                   \
    tp[k] = tk;                                                                               \
    if (cancels) return 1;                                                                    \
    losses_store_f64_##S(gg, g, C);                                                           \
    return 0;                                                                                 \
}

static inline double losses_ld64_f16(uint16_t h) { return (double)ld16_f16(h); }
static inline double losses_ld64_bf16(uint16_t h) { return (double)ld16_bf16(h); }
static inline double losses_ld64_f32(float v) { return (double)v; }
static inline uint16_t losses_st64_f16(double v) { return st16_f16(f64_to_f16(v)); }
static inline uint16_t losses_st64_bf16(double v) { return st16_bf16(f64_to_bf16(v)); }
static inline float losses_st64_f32(double v) { return (float)v; }

/* g[j] = v[j] rounded once into S: a loop of its own, so that it vectorises */
#define LOSSES_DEFINE_STORE64(S, TS, ST64)                                                    \
PRECISION_NOINLINE static void losses_store_f64_##S(const double* restrict v, TS* restrict g,   \
                                                 ptrdiff_t n) {                               \
    for (ptrdiff_t j = 0; j < n; j++) g[j] = ST64(v[j]);                                      \
}
LOSSES_DEFINE_STORE64(f16, uint16_t, losses_st64_f16)
LOSSES_DEFINE_STORE64(bf16, uint16_t, losses_st64_bf16)
LOSSES_DEFINE_STORE64(f32, float, losses_st64_f32)

LOSSES_DEFINE_REFINE(f16, uint16_t, losses_ld64_f16, losses_st64_f16, 0x1p-11, 0x1p-24)
LOSSES_DEFINE_REFINE(bf16, uint16_t, losses_ld64_bf16, losses_st64_bf16, 0x1p-8, 0x1p-133)
LOSSES_DEFINE_REFINE(f32, float, losses_ld64_f32, losses_st64_f32, 0x1p-24, 0x1p-149)

#endif
