/*
 * rl.h -- the primitives the RL diagnostics kernels (rl.pyx.tp) add to fp.h: k3(x) = e^x - 1 - x
 * and phi(s) = log1p(s) - s, both without cancellation.  Their sums are summation.h's
 * sum_pairwise_<A> (the project's pairwise order, the same as
 * precision.exact.emulate(A).sum(order="pairwise")).
 */
#ifndef PRECISION_RL_H
#define PRECISION_RL_H

#include <stddef.h>
#include <math.h>
#include "fp.h"
#include "summation.h"

/* ------------------------------------------------------------------ k3(x) = e^x - 1 - x
 * In double, with relative error below 6u (u = 2^-53) for normal results, and within one
 * subnormal step for subnormal ones.  Proof (first order in u):
 *
 * |x| < 1: k3 = x^2 p(x), p(x) = sum_{k=2}^{20} x^(k-2)/k!, by Horner with the coefficients
 *   1/k! rounded to double.  Truncation: sum_{k>20} |x|^(k-2)/k! < 1.05/21! < 2^-63 p(x)
 *   (p is increasing, p(-1) = 1/e).  Rounding: the term c_k x^(k-2) passes through at most
 *   2k - 3 roundings (its coefficient, k-2 products, k-3 sums, the last sum), so
 *   |p^ - p| <= u sum_k (2k - 3)|x|^(k-2)/k! <= 1.2818 u <= 3.49 u p(x) on |x| <= 1; x*x and the
 *   final product add one rounding each: relative error < 5.5 u.  All terms of p have one sign
 *   for x > 0 and shrink geometrically (ratio |x|/k) for x < 0: nothing cancels.
 * |x| >= 1: k3 = fl(expm1(x) - x) with libm's expm1 within 1 ulp (glibc's published bound), so
 *   relative error <= u + 2u |expm1 x| / |expm1 x - x| <= u + 2u * 2.392 < 5.8 u (the ratio is
 *   largest at x = 1, 1.7183/0.7183; at x = -1 it is 1.718).
 * x = +-inf: +inf; NaN: NaN.
 *
 * Rounded once more into a narrower A (float32, bfloat16, float16), through rl_k3_narrow
 * below, the result is within 1/2 + 6 * 2^-29 ulp of A: always within 1 ulp, and correctly
 * rounded unless the exact value lies within 6 * 2^-29 ulp of a rounding boundary without
 * being of the form x*x/2 (exhaustive tests: every float16 and bfloat16 input is correctly
 * rounded). */
static const double RL_INV_FACT[21] = {
    1.0, 1.0,
    0x1.0000000000000p-1, 0x1.5555555555555p-3, 0x1.5555555555555p-5, 0x1.1111111111111p-7,
    0x1.6c16c16c16c17p-10, 0x1.a01a01a01a01ap-13, 0x1.a01a01a01a01ap-16, 0x1.71de3a556c734p-19,
    0x1.27e4fb7789f5cp-22, 0x1.ae64567f544e4p-26, 0x1.1eed8eff8d898p-29, 0x1.6124613a86d09p-33,
    0x1.93974a8c07c9dp-37, 0x1.ae7f3e733b81fp-41, 0x1.ae7f3e733b81fp-45, 0x1.952c77030ad4ap-49,
    0x1.6827863b97d97p-53, 0x1.2f49b46814157p-57, 0x1.e542ba4020225p-62
};

static inline double rl_k3_double(double x)
{
    if (x != x) return x;
    if (fabs(x) < 1.0) {
        double p = RL_INV_FACT[20];
        for (int k = 19; k >= 2; k--) p = p * x + RL_INV_FACT[k];
        return (x * x) * p;
    }
    if (isinf(x)) return INFINITY;
    return expm1(x) - x;
}

/* k3 of a float x (a value of float32 or narrower) for rounding into A = float32, bfloat16,
 * float16.  For |x| < 2^-40 the double evaluation would return x*x/2 itself (the next term,
 * x/3 relative, is below 6u), and x*x/2 -- 48 significant bits at most -- can be exactly a
 * midpoint of A (it is for many inputs with short significands), where the sign of x^3/6
 * decides the rounding.  So: h = x*x/2 (exact in double), moved one double ulp in the
 * direction of x (the sign of the remainder x^3/6 + ...).  h has at most 49 significant bits
 * and A's rounding boundaries at most 25, so the move lands strictly on the correct side of h
 * if h is a boundary and crosses no other one: the rounding into A is then correct.  For
 * |x| >= 2^-40 the remainder's relative size |x|/3 > 2^-41.6 exceeds the evaluation error
 * 6 * 2^-53 many times, so a value of the form x*x/2 on a boundary cannot mislead either. */
static inline double rl_k3_narrow(double x)
{
    if (fabs(x) < 0x1p-40) {
        double h = 0.5 * (x * x);
        return h == 0 ? h : nextafter(h, x > 0 ? INFINITY : 0.0);
    }
    return rl_k3_double(x);
}

static inline float k3_f16(float x) { return f64_to_f16(rl_k3_narrow((double)x)); }
static inline float k3_bf16(float x) { return f64_to_bf16(rl_k3_narrow((double)x)); }
static inline float k3_f32(float x) { return (float)rl_k3_narrow((double)x); }
static inline double k3_f64(double x) { return rl_k3_double(x); }

/* ------------------------------------------------------------------ phi(s) = log1p(s) - s
 * The second-order remainder of categorical_kl (rl.pyx.tp): KL = b + phi(a + b).  In double,
 * with relative error below 18u (u = 2^-53) for normal results.  Proof (first order in u):
 *
 * |s| < 1/4: phi = -s^2 p(s), p(s) = sum_{k=2}^{32} (-s)^(k-2)/k, by Horner with 1/k rounded to
 *   double.  Truncation: |s|^31/32 / p(s) < 2^-65.  Rounding: the term of k passes through at
 *   most 2k - 3 roundings, so |p^ - p| <= u sum_k (2k - 3)|s|^(k-2)/k <= 0.858 u <= 2.0 u p(s)
 *   (p >= p(1/4) = 0.4297 on |s| <= 1/4); s*s and the final product add one rounding each:
 *   relative error < 4.1 u.
 * |s| >= 1/4: fl(log1p(s) - s) with libm's log1p within 1 ulp (2u relative): relative error
 *   <= u + 2u |log1p s| / |phi s| <= u + 2u * 8.31 < 18 u (the ratio is largest at s = 1/4;
 *   7.63 at s = -1/4, and it falls as |s| grows).
 * s = -1: -inf; s < -1 or NaN: NaN; s = +inf: -inf.
 *
 * Rounded once into a narrower A through rl_log1pmx_narrow: within 1/2 + 18 * 2^-29 ulp of A,
 * so within 1 ulp; for |s| < 2^-40 the double value would be -s*s/2 itself, possibly a
 * midpoint of A, so it is moved one double ulp towards the remainder s^3/3 (as rl_k3_narrow). */
static inline double rl_log1pmx_double(double s)
{
    if (s != s) return s;
    if (fabs(s) < 0.25) {
        double p = 1.0 / 32;
        for (int k = 31; k >= 2; k--) p = p * (-s) + 1.0 / k;
        return -((s * s) * p);
    }
    if (isinf(s)) return s > 0 ? -INFINITY : NAN;
    return log1p(s) - s;
}

static inline double rl_log1pmx_narrow(double s)
{
    if (fabs(s) < 0x1p-40) {
        double h = -(0.5 * (s * s));
        return h == 0 ? h : nextafter(h, s > 0 ? INFINITY : -INFINITY);
    }
    return rl_log1pmx_double(s);
}

static inline float log1pmx_f16(float s) { return f64_to_f16(rl_log1pmx_narrow((double)s)); }
static inline float log1pmx_bf16(float s) { return f64_to_bf16(rl_log1pmx_narrow((double)s)); }
static inline float log1pmx_f32(float s) { return (float)rl_log1pmx_narrow((double)s); }
static inline double log1pmx_f64(double s) { return rl_log1pmx_double(s); }

#endif /* PRECISION_RL_H */
