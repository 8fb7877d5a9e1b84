/*
 * log1p_f32.h -- log1p of a float, evaluated in double and rounded once to float: fp.h's
 * log1p_f32.  Branch-free straight-line code with no table and no libm call, so that GCC
 * vectorises a loop of it (the loss kernels take one log1p per row, 16 rows per block); every
 * build computes the same bits (no FMA: -ffp-contract=off, and none is written).
 *
 * Algorithm, u = 2^-53 (the unit roundoff of double), R() = rounding to double:
 *   |x| < 2^-29 (zeros and subnormals included):  y = R(x - R(R(x x) / 2)).
 *   otherwise  v = R(1 + x) = 2^k m, m in [M0, 2 M0), M0 = R(sqrt(1/2)) (by the bits of v),
 *       f = R(R(m - 1) / R(m + 1)),  s = R(f f),  P = Horner of sum_{j=0..7} s^j / (2j + 3),
 *       lm = R(2f + R(2f R(s P))),   y = R(k LN2_HI + R(R(k LN2_LO) + lm));
 *   then the special values by selects: v = 0 (x = -1): -inf; v < 0 (x < -1, -inf): NaN;
 *   x = +inf: +inf; NaN: x.  The float result is (float)y, one rounding.
 *
 * Error bound: |y - log1p(x)| <= 2^-49 |log1p(x)| for every finite float x != 0, x > -1, so
 * the float is within 0.5 + 2^-25 ulp of log1p(x) (float's ulp is at least 2^-24 of the
 * value); the project states the weaker 0.5 + 2^-21 ulp (a 2^-45 budget).  Proof:
 *   Tiny path, |x| < 2^-29.  log1p(x) = x - x^2/2 + r, |r| <= |x|^3 / (3 (1 - |x|)), and
 *     |log1p(x)| >= |x| (1 - |x|/2): the truncation is below 2^-59.5 relative.  x^2 >= 2^-298
 *     is normal, so x x rounds with relative error <= u and /2 is exact; the term is at most
 *     2^-30 of x, then one subtraction: y has relative error <= 1.01 u + 2^-59.5 < 2^-52.9.
 *     x = +-0 gives +-0 (-0 - +0 = -0), as libm.
 *   1. v = 1 + x is exact for 2^-29 <= |x| and x < 2^53: 1 + x is a multiple of
 *      q = min(1, ulp_float(x)) >= 2^-52 with |1 + x| <= 2^53 q (x < 1: q >= 2^-52 and
 *      |1 + x| < 2; x in [2^e, 2^(e+1)), e <= 23: 1 + x < 2^(e+2) <= 2^53 2^(e-23); e >= 23:
 *      q = 1 and 1 + x <= 2^53), hence a double.  For x >= 2^53, v = (1 + x)(1 + d0),
 *      |d0| <= u, so log v = log1p(x) + t0, |t0| <= 1.01 u, which is < 2^-58 of
 *      log1p(x) >= 36.7.  v lies in [2^-24, 2^128]: a normal double.
 *   2. k and m from v's bits (exact): with b = bits(v) - bits(M0) + 1024 * 2^52 (unsigned,
 *      non-negative for these v), k = (b >> 52) - 1024 and bits(m) = (b mod 2^52) + bits(M0),
 *      so v = 2^k m, m in [M0, 2 M0).  k leaves the integer unit as the double
 *      bits(2^52 + (b >> 52)) - (2^52 + 1024), exact, since AVX2 has neither an int64 ->
 *      double conversion nor a 64-bit arithmetic shift.  |k| <= 128.
 *      M0 = sqrt(1/2)(1 + e0), |e0| < 2^-53, so |log m| <= ln2 / 2 + 2^-52 < 0.34658.
 *   3. m - 1 is exact (Sterbenz: 1/2 <= m <= 2).  R(m + 1) = (m + 1)(1 + d1), then the
 *      division: f = F (1 + e1), F = (m - 1)/(m + 1), |e1| <= 2u / (1 - u), and
 *      |F| <= (sqrt2 - 1)/(sqrt2 + 1) (+ 2^-53), F^2 <= S = 17 - 12 sqrt2 < 0.0294373.
 *   4. log m = 2 atanh F = 2F (1 + F^2 Q(F^2)), Q(s) = sum_{j>=0} s^j / (2j + 3).  P is Q
 *      truncated after s^7 (degree 7 in s, 17 in F): F^2 (Q - P) <= S^9 / (19 (1 - S)) =: T,
 *      T < 2^-49.98, and F^2 P(F^2) <= S P(S) < 0.00999.
 *      Rounding: s = F^2 (1 + es), |es| <= 2|e1| + u (1.01) <= 5.1u.  Horner with non-negative
 *      coefficients and s >= 0: 7 steps of two roundings each and the rounded coefficients
 *      1/(2j + 3): relative error <= 16u; the sensitivity of P to es is
 *      s P'(s) / P(s) < 0.02.  R(s P) then R(2f (.)): the tail term is
 *      2F F^2 P(F^2) (1 + eT), |eT| <= 2.01u + 5.1u + 0.1u + 16u + 2u < 26u (2f exact).
 *      lm = R(2F (1 + e1) + 2F F^2 P (1 + eT)) against log m = 2F (1 + F^2 Q), with
 *      |log m| >= 2|F| and all terms of one sign: |lm - log m| <= (u + 2.01u + 0.00999 * 26u
 *      + T)(1 + 2^-50) |log m| <= (3.28u + T) |log m| =: el |log m|.
 *   5. k = 0: y = lm (0 + lm is exact twice).  k != 0: |log v| = |k ln2 + log m| >=
 *      ln2 / 2 - 2^-52 > 0.346573 (m < 2 M0 and m >= M0).  k LN2_HI is exact (LN2_HI has 32
 *      significant bits, |k| <= 2^7); |k LN2_LO| < 2.5e-8 rounds with an error < 2^-76.7 of
 *      |log v|; |LN2_HI + LN2_LO - ln2| < 2^-85, times |k| <= 128: < 2^-76 of |log v|.  The two
 *      additions: t = R(lo + lm), |t| <= 0.34658 + 2.5e-8 < 1.0001 |log v|, so
 *      |y - log v| <= (u (1 + 2^-49) + 1.0001 (u + el) + 2^-75) |log v| <= (5.29u + 1.0001 T
 *      + 2^-75) |log v| < 2^-49.25 |log v|, and with step 1's 2^-58: < 2^-49 |log1p(x)|.
 * Special values are exactly libm's (log1p(-1) = -inf, x < -1 and NaN give NaN, +inf gives
 * +inf, +-0 gives +-0); the NaN's sign and payload are not promised.  For 2^-29 <= |x| < 2^-25
 * the float result is x itself, as the correctly rounded one: log1p(x) is within 2^-26 |x| of
 * x, so at least 2^-26 |x| (far more than y's error) from the midpoints around x, which are
 * half an ulp >= 2^-25 |x| away from x; below 2^-29 likewise.
 *
 * Tests (tests/test_primitives.py): the float against MPFR's correctly rounded log1p by
 * hypothesis and by a dense sweep, the double y against MPFR (relative error <= 2^-49), the
 * special values against libm, and the same bits from the SSE2, AVX2 and AVX-512 builds.
 */
#ifndef PRECISION_LOG1P_F32_H
#define PRECISION_LOG1P_F32_H

#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include "fp.h"

/* y: log1p(x) in double before its rounding to float (relative error <= 2^-49, see above) */
static inline double log1p_f32_double(float xf)
{
    const uint64_t M0_BITS = 0x3fe6a09e667f3bcdull;              /* R(sqrt(1/2)) */
    const double LN2_HI = 6.93147180369123816490e-01;            /* 0x3fe62e42 fee00000 */
    const double LN2_LO = 1.90821492927058770002e-10;            /* 0x3dea39ef 35793c76 */
    double x = (double)xf;
    double v = 1.0 + x;
    uint64_t b = fp_f64_bits(v) - M0_BITS + (1024ull << 52);
    double kd = fp_bits_f64(0x4330000000000000ull | (b >> 52)) - (0x1p52 + 1024.0);
    double m = fp_bits_f64((b & 0x000fffffffffffffull) + M0_BITS);
    double f = (m - 1.0) / (m + 1.0);
    double s = f * f;
    double p = 1.0 / 17.0;
    p = p * s + 1.0 / 15.0;
    p = p * s + 1.0 / 13.0;
    p = p * s + 1.0 / 11.0;
    p = p * s + 1.0 / 9.0;
    p = p * s + 1.0 / 7.0;
    p = p * s + 1.0 / 5.0;
    p = p * s + 1.0 / 3.0;
    double f2 = f + f;
    double lm = f2 + f2 * (s * p);
    double y = kd * LN2_HI + (kd * LN2_LO + lm);
    double tiny = x - (x * x) * 0.5;
    y = fabs(x) < 0x1p-29 ? tiny : y;
    y = v == 0.0 ? -INFINITY : y;
    y = v < 0.0 ? NAN : y;
    y = x > 0x1p128 ? x : y;                                     /* +inf */
    return x != x ? x : y;
}

static inline float log1p_f32(float x) { return (float)log1p_f32_double(x); }

/* out[i] = log1p_f32(x[i]): the loop the tests run in each build (the restrict pointers, lost
   if inlined, let it vectorise as the kernels' loops do) */
PRECISION_NOINLINE static void log1p_f32_array(const float* restrict x, float* restrict out,
                                               ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++) out[i] = log1p_f32(x[i]);
}

#endif /* PRECISION_LOG1P_F32_H */
