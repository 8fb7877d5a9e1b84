/*
 * fp.h -- the arithmetic of every precision kernel, one static inline function per primitive.
 *
 * Vocabulary
 *   storage format S : what the caller's arrays hold (f16, bf16, f32, f64).
 *   arithmetic format A : the format in which each +, -, *, /, sqrt is rounded (A is S or wider).
 *   compute type : the C type that holds values of A in registers: float for f16, bf16, f32;
 *                  double for f64.
 *
 * Why float registers are exact for f16 and bf16: float has p = 24 >= 2p + 2 for p = 11 and
 * p = 8, so rounding the float result of +, -, *, /, sqrt once more to the narrow format equals
 * rounding the exact result once (the double-rounding theorem).  The f16 range lies inside
 * float's normal range; bf16 subnormals are float subnormals and the argument still holds
 * (see ../shared/reference/float16-bfloat16-kernels.md, section 1).  Likewise double emulates
 * float exactly (53 >= 2*24 + 2), which is why double -> float casts are used for "A = f64,
 * S = f32" stores only once, at the end.
 *
 * Transcendentals (exp, log, log1p, expm1) are evaluated in double and rounded ONCE to A.
 * For A = f16 and bf16 this is correctly rounded on every input (the exhaustive test over all
 * 2^16 inputs proves it); a float intermediate is not enough (3 float16 inputs come out wrong).
 * The double is libm's (log, log1p, expm1), except exp (fp_exp below) and float32's log1p
 * (log1p_f32.h: within 2^-49 relative before its rounding, proved there), which are written
 * here, branch-free, so that the kernels' loops over them vectorise.
 *
 * Build contract: -ffp-contract=off (no FMA contraction), never -ffast-math,
 * -fno-math-errno (sqrt vectorises), -fno-trapping-math (the selects below vectorise).
 * Everything here is branch-free so that GCC vectorises loops that call it.
 */
#ifndef PRECISION_FP_H
#define PRECISION_FP_H

#include <stdint.h>
#include <string.h>
#include <math.h>

/* A function GCC must not inline: where a restrict pointer argument is what lets a loop
 * vectorise (inlined, the restrict is lost). */
#if defined(__GNUC__)
#define PRECISION_NOINLINE __attribute__((noinline))
#else
#define PRECISION_NOINLINE
#endif

/* ---------------------------------------------------------------- bit casts */
static inline uint32_t fp_f32_bits(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
static inline float fp_bits_f32(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }
static inline uint64_t fp_f64_bits(double x) { uint64_t u; memcpy(&u, &x, 8); return u; }
static inline double fp_bits_f64(uint64_t u) { double x; memcpy(&x, &u, 8); return x; }

#include "log1p_f32.h"   /* needs the bit casts above */

/* ------------------------------------------------- rounding float -> narrow, in place
 * Float in, float out, the result lies on the narrow format's value set.  Round to nearest,
 * ties to even, with subnormals, overflow to +-inf, NaN preserved (as a quiet float NaN). */

static inline float rnd_f16(float x)
{
    float a = fabsf(x);
    uint32_t u = fp_f32_bits(a);
    /* normal range: drop the 13 low mantissa bits, ties to even; a carry moves the exponent */
    float normal = fp_bits_f32((u + 0x0FFFu + ((u >> 13) & 1u)) & 0xFFFFE000u);
    /* subnormal range (|x| < 2^-14): the float ulp at 0.5 is 2^-24, the f16 subnormal step */
    float sub = (a + 0.5f) - 0.5f;
    float r = a < 0x1p-14f ? sub : normal;
    r = r > 65504.0f ? INFINITY : r;     /* |x| >= 65520 rounds past the largest finite */
    r = copysignf(r, x);
    return x != x ? x : r;
}

static inline float rnd_bf16(float x)
{
    uint32_t u = fp_f32_bits(x);
    /* drop the 16 low bits, ties to even; works across subnormals and into inf */
    float r = fp_bits_f32((u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u);
    return x != x ? x : r;
}

static inline float rnd_f32(float x) { return x; }     /* hardware rounds float ops */
static inline double rnd_f64(double x) { return x; }   /* hardware rounds double ops */

/* -------------------------------------------------------- 16-bit loads and stores */

/* float16 bits <-> float, exact.  The exponent is rebiased with integer arithmetic and
 * float16 subnormals (em < 0x400) go through an exact int <-> float conversion, so no float
 * subnormal appears on the way: rebiasing by a multiplication with 2^-112 / 2^112 would turn
 * every float16 subnormal into a float subnormal, which takes a microcode assist on x86
 * (optimizer state and small probabilities are full of float16 subnormals).  Tests compare
 * both functions with numpy's float16 on all 65536 patterns. */
static inline float ld16_f16(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t em = (uint32_t)(h & 0x7FFFu);
    float normal = fp_bits_f32((em << 13) + (112u << 23));          /* exponent + 127 - 15 */
    float sub = (float)(int32_t)em * 0x1p-24f;                        /* em < 0x400: exact */
    float r = em < 0x400u ? sub : normal;
    r = em >= 0x7C00u ? fp_bits_f32((em << 13) | 0x7F800000u) : r;   /* inf, NaN */
    return fp_bits_f32(fp_f32_bits(r) | sign);
}

/* x must already lie on the f16 value set (or be NaN/inf); NaN becomes 0x7E00 with its sign. */
static inline uint16_t st16_f16(float x)
{
    uint32_t u = fp_f32_bits(x);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t au = u & 0x7FFFFFFFu;
    float a = fp_bits_f32(au);
    uint32_t normal = (au - (112u << 23)) >> 13;
    float small = a < 0x1p-14f ? a : 0.0f;                           /* keeps the cast in range */
    uint32_t sub = (uint32_t)(int32_t)(small * 0x1p24f);            /* a multiple of 2^-24 */
    uint32_t h = au < (113u << 23) ? sub : normal;
    h = a > 65504.0f ? 0x7C00u : h;
    h = a != a ? 0x7E00u : h;
    return (uint16_t)(h | sign);
}

static inline float ld16_bf16(uint16_t b) { return fp_bits_f32((uint32_t)b << 16); }

/* x must already lie on the bf16 value set (or be NaN/inf). */
static inline uint16_t st16_bf16(float x)
{
    uint32_t u = fp_f32_bits(x);
    uint32_t b = u >> 16;
    b = x != x ? ((b & 0x8000u) | 0x7FC0u) : b;
    return (uint16_t)b;
}

/* ---------------------------------------------- double -> narrow, rounded ONCE
 * Round to odd into float, then to nearest-even into the narrow format: correct for any
 * target with p <= 22 (Boldo & Melquiond, "Emulation of FMA and correctly rounded sums:
 * proved algorithms using rounding to odd", IEEE TC 2008).  Float's subnormal grid is finer
 * than f16's and bf16's by more than 2 bits, so it also holds for their subnormals. */

static inline float f64_to_f32_odd(double x)
{
    float f = (float)x;                              /* nearest-even */
    uint32_t u = fp_f32_bits(f);
    int inexact = (double)f != x;
    int below = fabs((double)f) < fabs(x);           /* |f| < |x|: odd neighbour is above */
    uint32_t step = below ? 1u : 0xFFFFFFFFu;         /* +-1 in the magnitude's bit pattern */
    u = (inexact && (u & 1u) == 0u) ? u + step : u;
    float r = fp_bits_f32(u);
    return x != x ? (float)x : r;
}

static inline float f64_to_f16(double x) { return rnd_f16(f64_to_f32_odd(x)); }
static inline float f64_to_bf16(double x) { return rnd_bf16(f64_to_f32_odd(x)); }

/* ------------------------------------------------------------- exp in double
 * Branch-free and vectorisable (libm's exp is a scalar call).  x = k ln2 + r, |r| <= ln2/2,
 * Cody-Waite with a 32-bit ln2_hi so k*ln2_hi is exact; e^r by its Taylor polynomial of
 * degree 13 (truncation < 2^-58 on |r| <= 0.347), 2^k applied as two exact power-of-two
 * factors so that subnormal results are rounded once.  Measured error: see tests. */
static inline double fp_exp(double x)
{
    const double LOG2E = 1.4426950408889634074;
    const double LN2_HI = 6.93147180369123816490e-01;   /* 0x3fe62e42 fee00000 */
    const double LN2_LO = 1.90821492927058770002e-10;   /* 0x3dea39ef 35793c76 */
    const double SHIFT = 0x1.8p52;
    double xc = x > 710.0 ? 710.0 : x;
    xc = xc < -746.0 ? -746.0 : xc;
    xc = x != x ? 0.0 : xc;
    double kd = (xc * LOG2E + SHIFT) - SHIFT;        /* k = nearest integer to x/ln2 */
    double r = (xc - kd * LN2_HI) - kd * LN2_LO;
    double p = 1.0 / 6227020800.0;                   /* 1/13! */
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = 1.0 + (r + (r * r) * p);                     /* small terms first, 1 last */
    /* 2^k = 2^k1 * 2^k2 with k1 ~ k/2: both factors are normal even when 2^k is not.  The
     * integers come out of the SHIFT trick's bit patterns (no float->int64 conversion and no
     * 64-bit arithmetic shift, which SSE2/AVX2 lack), so the loop vectorises. */
    double t1 = kd * 0.5 + SHIFT;
    double k1d = t1 - SHIFT;
    double t2 = (kd - k1d) + SHIFT;
    int64_t k1 = (int64_t)(fp_f64_bits(t1) - fp_f64_bits(SHIFT));
    int64_t k2 = (int64_t)(fp_f64_bits(t2) - fp_f64_bits(SHIFT));
    double s1 = fp_bits_f64((uint64_t)(k1 + 1023) << 52);
    double s2 = fp_bits_f64((uint64_t)(k2 + 1023) << 52);
    double y = (p * s1) * s2;
    return x != x ? x : y;
}

/* ----------------------------------------- transcendentals rounded once into A */
static inline float exp_f16(float x) { return f64_to_f16(fp_exp((double)x)); }
static inline float exp_bf16(float x) { return f64_to_bf16(fp_exp((double)x)); }
static inline float exp_f32(float x) { return (float)fp_exp((double)x); }
static inline double exp_f64(double x) { return fp_exp(x); }

static inline float log_f16(float x) { return f64_to_f16(log((double)x)); }
static inline float log_bf16(float x) { return f64_to_bf16(log((double)x)); }
static inline float log_f32(float x) { return (float)log((double)x); }
static inline double log_f64(double x) { return log(x); }

static inline float log1p_f16(float x) { return f64_to_f16(log1p((double)x)); }
static inline float log1p_bf16(float x) { return f64_to_bf16(log1p((double)x)); }
/* log1p_f32: log1p_f32.h (vectorisable, within 0.5 + 2^-25 ulp; the 16-bit and double ones are
   libm's, and the 16-bit ones correctly rounded through it) */
static inline double log1p_f64(double x) { return log1p(x); }

static inline float expm1_f16(float x) { return f64_to_f16(expm1((double)x)); }
static inline float expm1_bf16(float x) { return f64_to_bf16(expm1((double)x)); }
static inline float expm1_f32(float x) { return (float)expm1((double)x); }
static inline double expm1_f64(double x) { return expm1(x); }

/* sqrt: the float sqrt is correctly rounded, so one more rounding is exact (2p+2 rule) */
static inline float sqrt_f16(float x) { return rnd_f16(sqrtf(x)); }
static inline float sqrt_bf16(float x) { return rnd_bf16(sqrtf(x)); }
static inline float sqrt_f32(float x) { return sqrtf(x); }
static inline double sqrt_f64(double x) { return sqrt(x); }

/* ------------------------------------------------ policies: load S into A, store A into S
 * A policy is the pair (S, A); its loads are exact, its stores round once from A to S. */
static inline float ld_f16_f16(uint16_t h) { return ld16_f16(h); }
static inline float ld_f16_f32(uint16_t h) { return ld16_f16(h); }
static inline double ld_f16_f64(uint16_t h) { return (double)ld16_f16(h); }
static inline float ld_bf16_bf16(uint16_t h) { return ld16_bf16(h); }
static inline float ld_bf16_f32(uint16_t h) { return ld16_bf16(h); }
static inline double ld_bf16_f64(uint16_t h) { return (double)ld16_bf16(h); }
static inline float ld_f32_f32(float x) { return x; }
static inline double ld_f32_f64(float x) { return (double)x; }
static inline double ld_f64_f64(double x) { return x; }

static inline uint16_t st_f16_f16(float x) { return st16_f16(x); }
static inline uint16_t st_f16_f32(float x) { return st16_f16(rnd_f16(x)); }
static inline uint16_t st_f16_f64(double x) { return st16_f16(f64_to_f16(x)); }
static inline uint16_t st_bf16_bf16(float x) { return st16_bf16(x); }
static inline uint16_t st_bf16_f32(float x) { return st16_bf16(rnd_bf16(x)); }
static inline uint16_t st_bf16_f64(double x) { return st16_bf16(f64_to_bf16(x)); }
static inline float st_f32_f32(float x) { return x; }
static inline float st_f32_f64(double x) { return (float)x; }
static inline double st_f64_f64(double x) { return x; }

/* Round a compute value of A to the storage format S, staying in the compute type
 * (what a store followed by a load gives). */
static inline float to_f16_f16(float x) { return x; }
static inline float to_f16_f32(float x) { return rnd_f16(x); }
static inline double to_f16_f64(double x) { return (double)f64_to_f16(x); }
static inline float to_bf16_bf16(float x) { return x; }
static inline float to_bf16_f32(float x) { return rnd_bf16(x); }
static inline double to_bf16_f64(double x) { return (double)f64_to_bf16(x); }
static inline float to_f32_f32(float x) { return x; }
static inline double to_f32_f64(double x) { return (double)(float)x; }
static inline double to_f64_f64(double x) { return x; }

/* A double scalar (a hyperparameter) rounded once into A. */
static inline float from64_f16(double x) { return f64_to_f16(x); }
static inline float from64_bf16(double x) { return f64_to_bf16(x); }
static inline float from64_f32(double x) { return (float)x; }
static inline double from64_f64(double x) { return x; }

#endif /* PRECISION_FP_H */
