/*
 * exp_nonpositive.h -- exp(z) for z <= 0 (or -inf, NaN), evaluated in double and rounded once,
 * for the kernels' e_i = exp(z_i) with z_i = x_i - max x.  Faster than fp.h's general exp_A on
 * this domain, with the same contract (rounded once from a double within a stated error):
 *
 *   exp_nonpositive_f32  z = (16 m + j) ln2/16 + r with k = 16 m + j = round(16 z / ln 2),
 *       e^z = 2^m * 2^(j/16) * e^r, 2^(j/16) correctly rounded from a 16-entry table, e^r by its
 *       Taylor polynomial of degree 6 (|r| <= ln2/32: truncation < 2^-50.9).  The operations,
 *       in double, with four fused multiply-adds (one rounding each; the baseline build calls
 *       libm's fma, which rounds the same way, in software where the CPU has no FMA):
 *           t = fma(z, C16, SHIFT), kd = t - SHIFT           k = round(z C16), C16 = R(16/ln2)
 *           r = fma(kd, -C, z)                              C = R(ln2/16)
 *           r2 = r r, a = fma(r, 1/6, 1/2), b = fma(r, 1/120, 1/24), b = fma(r2, 1/720, b)
 *           p1 = fma(r2, fma(r2, b, a), r)                    e^r - 1, in Estrin's order
 *           e = fma(T_j, p1, T_j) 2^m, rounded to float         T_j e^r, rounded once
 *       Error of r: |kd| |C - ln2/16| <= 2540 * 2^-59.26 = 2^-47.9 (|k| <= 2540), plus its
 *       rounding, 2^-59; the double e has a relative error below 2^-47.6 (r, the truncation,
 *       the table and the last fma; the polynomial's own roundings weigh 2^-58 or less), so
 *       the float is within 0.5 + 2^-23.6 ulp (tests: against MPFR).
 *       z is clamped at -110 (exp(-110) is below half of float's smallest subnormal: 0 either
 *       way); 2^m >= 2^-159 scales exactly.  Every build computes the same bits: the vector
 *       loops below do the same operations, the lookup as a permute of the table held in two
 *       registers (AVX-512) or permutes of its 32-bit halves (AVX2, written in assembly), and
 *       both scale the entry T_j by 2^m before the fma instead of its result after it (exact
 *       either way).  exp_nonpositive_f32_wide is the double before the rounding to float, for the
 *       test that compares the builds on it (a float compare would miss a changed operation in
 *       all but one value in 2^29).
 *   exp_nonpositive_f64  z = (64 m + j) ln2/64 + r with |r| <= ln2/128 (Cody-Waite, ln2/64 in
 *       two parts, k*hi exact for |k| < 2^20), 2^(j/64) = TH + TL to twice double precision;
 *       e^r - 1 = q by its Taylor polynomial of degree 6 (truncation < 2^-65), with fused
 *       multiply-adds as the float32 exp (libm's fma in the baseline build):
 *           t = fma(z, R(64/ln2), SHIFT), kd = t - SHIFT, r = fma(kd, -lo, fma(kd, -hi, z))
 *           r2 = r r, a = fma(r, 1/6, 1/2), b = fma(r, 1/120, 1/24), b = fma(r2, 1/720, b)
 *           q = fma(r2, fma(r2, b, a), r)
 *       e^z = 2^m (TH + fma(TH, q, TL)): one final rounding of a sum whose other terms are
 *       2^-6 ulp accurate, so within 0.5 + 2^-6 ulp for normal results.  2^m is applied as two normal
 *       factors 2^m1 2^m2, so results in the subnormal range are rounded once more (within
 *       1 ulp).  z is clamped at -746 (exp(-746) rounds to 0).
 *   NaN z: k is garbage but k & 63 (k & 15) still indexes the table and NaN * anything is NaN,
 *   so no select is needed (a select makes GCC turn the lookup into a masked gather, which it does
 *   not vectorise).
 *
 * EXP2_J64_HI_INIT / EXP2_J64_LO_INIT: 2^(j/64), j = 0..63, as the correctly rounded double
 * (HI) and the rounding error of it (LO); also used by the double-double exp of
 * losses_refine.h; EXP2_J16[j] = EXP2_J64_HI_INIT[4 j] is the float32 exp's table.  Call
 * exp_nonpositive_init() once (at module import) before any exp: it copies the tables into
 * EXP2_J64_HI / EXP2_J64_LO / EXP2_J16, because GCC 12 does not vectorise a loop
 * that gathers from a statically initialised table.
 */
#ifndef PRECISION_EXP_NONPOSITIVE_H
#define PRECISION_EXP_NONPOSITIVE_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include "fp.h"

static const double EXP2_J64_HI_INIT[64] = {
    0x1.0000000000000p+0, 0x1.02c9a3e778061p+0, 0x1.059b0d3158574p+0, 0x1.0874518759bc8p+0,
    0x1.0b5586cf9890fp+0, 0x1.0e3ec32d3d1a2p+0, 0x1.11301d0125b51p+0, 0x1.1429aaea92de0p+0,
    0x1.172b83c7d517bp+0, 0x1.1a35beb6fcb75p+0, 0x1.1d4873168b9aap+0, 0x1.2063b88628cd6p+0,
    0x1.2387a6e756238p+0, 0x1.26b4565e27cddp+0, 0x1.29e9df51fdee1p+0, 0x1.2d285a6e4030bp+0,
    0x1.306fe0a31b715p+0, 0x1.33c08b26416ffp+0, 0x1.371a7373aa9cbp+0, 0x1.3a7db34e59ff7p+0,
    0x1.3dea64c123422p+0, 0x1.4160a21f72e2ap+0, 0x1.44e086061892dp+0, 0x1.486a2b5c13cd0p+0,
    0x1.4bfdad5362a27p+0, 0x1.4f9b2769d2ca7p+0, 0x1.5342b569d4f82p+0, 0x1.56f4736b527dap+0,
    0x1.5ab07dd485429p+0, 0x1.5e76f15ad2148p+0, 0x1.6247eb03a5585p+0, 0x1.6623882552225p+0,
    0x1.6a09e667f3bcdp+0, 0x1.6dfb23c651a2fp+0, 0x1.71f75e8ec5f74p+0, 0x1.75feb564267c9p+0,
    0x1.7a11473eb0187p+0, 0x1.7e2f336cf4e62p+0, 0x1.82589994cce13p+0, 0x1.868d99b4492edp+0,
    0x1.8ace5422aa0dbp+0, 0x1.8f1ae99157736p+0, 0x1.93737b0cdc5e5p+0, 0x1.97d829fde4e50p+0,
    0x1.9c49182a3f090p+0, 0x1.a0c667b5de565p+0, 0x1.a5503b23e255dp+0, 0x1.a9e6b5579fdbfp+0,
    0x1.ae89f995ad3adp+0, 0x1.b33a2b84f15fbp+0, 0x1.b7f76f2fb5e47p+0, 0x1.bcc1e904bc1d2p+0,
    0x1.c199bdd85529cp+0, 0x1.c67f12e57d14bp+0, 0x1.cb720dcef9069p+0, 0x1.d072d4a07897cp+0,
    0x1.d5818dcfba487p+0, 0x1.da9e603db3285p+0, 0x1.dfc97337b9b5fp+0, 0x1.e502ee78b3ff6p+0,
    0x1.ea4afa2a490dap+0, 0x1.efa1bee615a27p+0, 0x1.f50765b6e4540p+0, 0x1.fa7c1819e90d8p+0
};
static const double EXP2_J64_LO_INIT[64] = {
    0x0.0p+0, -0x1.19083535b085dp-56, 0x1.d73e2a475b465p-55, 0x1.186be4bb284ffp-57,
    0x1.8a62e4adc610bp-54, 0x1.03a1727c57b53p-59, -0x1.6c51039449b3ap-54, -0x1.32fbf9af1369ep-54,
    -0x1.19041b9d78a76p-55, 0x1.e5b4c7b4968e4p-55, 0x1.e016e00a2643cp-54, 0x1.dc775814a8495p-55,
    0x1.9b07eb6c70573p-54, 0x1.2bd339940e9d9p-55, 0x1.612e8afad1255p-55, 0x1.0024754db41d5p-54,
    0x1.6f46ad23182e4p-55, 0x1.32721843659a6p-54, -0x1.63aeabf42eae2p-54, -0x1.5e436d661f5e3p-56,
    0x1.ada0911f09ebcp-55, -0x1.ef3691c309278p-58, 0x1.89b7a04ef80d0p-59, 0x1.3c1a3b69062f0p-56,
    0x1.d4397afec42e2p-56, -0x1.4b309d25957e3p-54, -0x1.07abe1db13cadp-55, 0x1.9bb2c011d93adp-54,
    0x1.6324c054647adp-54, 0x1.ba6f93080e65ep-54, -0x1.383c17e40b497p-54, -0x1.bb60987591c34p-54,
    -0x1.bdd3413b26456p-54, -0x1.bbe3a683c88abp-57, -0x1.16e4786887a99p-55, -0x1.0245957316dd3p-54,
    -0x1.41577ee04992fp-55, 0x1.05d02ba15797ep-56, -0x1.d4c1dd41532d8p-54, -0x1.fc6f89bd4f6bap-54,
    0x1.6e9f156864b27p-54, 0x1.5cc13a2e3976cp-55, -0x1.75fc781b57ebcp-57, -0x1.d185b7c1b85d1p-54,
    0x1.c7c46b071f2bep-56, -0x1.359495d1cd533p-54, -0x1.d2f6edb8d41e1p-54, 0x1.0fac90ef7fd31p-54,
    0x1.7a1cd345dcc81p-54, -0x1.2805e3084d708p-57, -0x1.5584f7e54ac3bp-56, 0x1.23dd07a2d9e84p-55,
    0x1.11065895048ddp-55, 0x1.2884dff483cadp-54, 0x1.503cbd1e949dbp-56, -0x1.cbc3743797a9cp-54,
    0x1.2ed02d75b3707p-55, 0x1.c2300696db532p-54, -0x1.1a5cd4f184b5cp-54, 0x1.39e8980a9cc8fp-55,
    -0x1.e9c23179c2893p-54, 0x1.dc7f486a4b6b0p-54, 0x1.9d3e12dd8a18bp-54, 0x1.74853f3a5931ep-55
};
static double EXP2_J64_HI[64], EXP2_J64_LO[64];
static double EXP2_J16[16];
static double EXP2_J16_SCALED[16];      /* bits of EXP2_J16[j] - (j << 48) (the AVX-512 lookup) */
#if defined(__AVX2__) && !defined(__AVX512F__)
static void exp_nonpositive_init_avx2(void);        /* the AVX2 lookup's tables: see there */
#endif

static void exp_nonpositive_init(void)
{
    for (int j = 0; j < 64; j++) {
        EXP2_J64_HI[j] = EXP2_J64_HI_INIT[j];
        EXP2_J64_LO[j] = EXP2_J64_LO_INIT[j];
    }
    for (int j = 0; j < 16; j++) {
        EXP2_J16[j] = EXP2_J64_HI_INIT[4 * j];
        EXP2_J16_SCALED[j] = fp_bits_f64(fp_f64_bits(EXP2_J16[j]) - ((uint64_t)j << 48));
    }
#if defined(__AVX2__) && !defined(__AVX512F__)
    exp_nonpositive_init_avx2();
#endif
}

#define EXP_F32_SHIFT 0x1.8p52
#define EXP_F32_C16 0x1.71547652b82fep+4             /* 16 / ln 2, rounded */
#define EXP_F32_C 0x1.62e42fefa39efp-5                /* ln 2 / 16, rounded */
static inline double exp_nonpositive_f32_wide(float zf) {
    double z = (double)zf;
    z = z < -110.0 ? -110.0 : z;
    double t = fma(z, EXP_F32_C16, EXP_F32_SHIFT);                    /* k = round(16 z / ln 2) */
    double kd = t - EXP_F32_SHIFT;
    double r = fma(kd, -EXP_F32_C, z);
    double r2 = r * r;
    double a = fma(r, 1.0 / 6.0, 0.5);
    double b = fma(r, 1.0 / 120.0, 1.0 / 24.0);
    b = fma(r2, 1.0 / 720.0, b);
    double p1 = fma(r2, fma(r2, b, a), r);
    int64_t k = (int64_t)(fp_f64_bits(t) - fp_f64_bits(EXP_F32_SHIFT));
    /* 2^m, m = k >> 4 >= -159: the bias 16 * 1023 makes k non-negative, so a logical
       shift does it (AVX2 has no 64-bit arithmetic shift; with one, nothing vectorises) */
    double scale = fp_bits_f64((((uint64_t)(k + 16 * 1023)) >> 4) << 52);
    /* NaN z: k is garbage but k & 15 still indexes the table, and p1 is NaN */
    double T = EXP2_J16[k & 15];
    return fma(T, p1, T) * scale;                                    /* the power of 2: exact */
}
static inline float exp_nonpositive_f32(float z) { return (float)exp_nonpositive_f32_wide(z); }

#ifdef __AVX512F__
#include <immintrin.h>
/* exp_nonpositive_f32 of 8 doubles, exact conversions of floats already clamped at -110 (the
   clamp is done on the floats, 16 at a time: the same values): the same operations in the same
   order, but the table lookup is a two-register permute (its index is the low 4 bits of t's bits,
   which are k's: SHIFT's low bits are 0) of EXP2_J16_SCALED, whose entry j holds the bits of T_j
   minus j << 48; adding t's bits << 48 (= k << 48 mod 2^64, k = 16 m + j) makes it T_j 2^m, a
   normal double (m >= -159), so R(p (T_j 2^m)) is the scalar R(R(T_j p) 2^m) -- as the AVX2 loop
   below, without a scalef (two cycles on AMD's AVX-512) and its multiply by 1/16 */
static inline __m512d exp_nonpositive_f32_x8(__m512d z, __m512d tab0, __m512d tab1) {
    const __m512d SHIFT = _mm512_set1_pd(EXP_F32_SHIFT);
    __m512d t = _mm512_fmadd_pd(z, _mm512_set1_pd(EXP_F32_C16), SHIFT);
    __m512d kd = _mm512_sub_pd(t, SHIFT);
    __m512d r = _mm512_fnmadd_pd(kd, _mm512_set1_pd(EXP_F32_C), z);   /* fma(kd, -C, z) */
    __m512d r2 = _mm512_mul_pd(r, r);
    __m512d a = _mm512_fmadd_pd(r, _mm512_set1_pd(1.0 / 6.0), _mm512_set1_pd(0.5));
    __m512d b = _mm512_fmadd_pd(r, _mm512_set1_pd(1.0 / 120.0), _mm512_set1_pd(1.0 / 24.0));
    b = _mm512_fmadd_pd(r2, _mm512_set1_pd(1.0 / 720.0), b);
    __m512d p1 = _mm512_fmadd_pd(r2, _mm512_fmadd_pd(r2, b, a), r);
    __m512i bits = _mm512_castpd_si512(t);
    __m512i T = _mm512_castpd_si512(_mm512_permutex2var_pd(tab0, bits, tab1));
    __m512d Tm = _mm512_castsi512_pd(_mm512_add_epi64(T, _mm512_slli_epi64(bits, 48)));
    return _mm512_fmadd_pd(Tm, p1, Tm);           /* NaN z: p1 is NaN, and so is the result */
}
#define EXP_NONPOSITIVE_CLAMP_F32(z) _mm512_max_ps(_mm512_set1_ps(-110.0f), z)  /* NaN: z */

/* exp of 16 floats z (<= 0, -inf, NaN); tab0, tab1: EXP2_J16_SCALED[0..7], [8..15] */
static inline __m512 exp_nonpositive_f32_x16(__m512 z, __m512d tab0, __m512d tab1) {
    z = EXP_NONPOSITIVE_CLAMP_F32(z);
    __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(z));
    __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(z), 1)));
    __m256 elo = _mm512_cvtpd_ps(exp_nonpositive_f32_x8(lo, tab0, tab1));
    __m256 ehi = _mm512_cvtpd_ps(exp_nonpositive_f32_x8(hi, tab0, tab1));
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(elo)),
                                               _mm256_castps_pd(ehi), 1));
}
#endif

#if defined(__AVX2__) && !defined(__AVX512F__)
#include <immintrin.h>
/* exp_nonpositive_f32_wide for the AVX2 build, 16 floats z0, z1 -> 16 doubles d[0..3] (d[0]:
   z0[0..3], d[1]: z0[4..7], d[2], d[3]: z1's): the scalar code's operations in its order, for
   the four 4-double vectors in lockstep through the reduction (one vector's chain alone leaves
   the FP units idle), then each vector's polynomial.  Written in assembly: GCC's register
   allocation of the same steps as intrinsics, with 16 vector registers, came out at some 145
   instructions per 16 values in the row loop (copies of constants, spills of t and a, the
   table held in registers); here it is 85, every constant an operand in memory, 12 registers,
   and the row loop 8-10 % faster (docs/losses.md).  The table lookup is done in registers: the
   table is held as its 16 high and 16 low 32-bit words, the high ones less j << 16; the 8 k's
   of a pair of vectors (the low words of t's bits: SHIFT's low word is 0) are packed into one
   vector, a lane-crossing permute of each half of the table picks word k & 7, a blend on bit 3
   of k picks the half, and unpacking the low and high words gives the doubles back in the order
   of the two vectors.  Adding k << 16 (= m << 20 + j << 16 mod 2^32, m = k >> 4) to the high
   word makes it T_j 2^m, a normal double (|m| <= 176): R(T_j 2^m + T_j 2^m p1) is the scalar
   R(R(T_j + T_j p1) 2^m), since a normal double scales exactly by a power of 2.  GCC's
   default AT&T syntax: the destination is the last operand. */
typedef struct {
    float m110[8];                          /* the clamp */
    double c16[4], shift[4], c[4];          /* EXP_F32_C16, EXP_F32_SHIFT, EXP_F32_C */
    double p6[4], p2[4], p120[4], p24[4], p720[4];   /* 1/6, 1/2, 1/120, 1/24, 1/720 */
    uint32_t hi0[8], hi1[8], lo0[8], lo1[8];  /* EXP2_J16[j]'s words, hi less j << 16 */
} __attribute__((aligned(32))) exp_avx2_constants;
static exp_avx2_constants EXP_AVX2;
static void exp_nonpositive_init_avx2(void)
{
    for (int i = 0; i < 8; i++) EXP_AVX2.m110[i] = -110.0f;
    for (int i = 0; i < 4; i++) {
        EXP_AVX2.c16[i] = EXP_F32_C16;
        EXP_AVX2.shift[i] = EXP_F32_SHIFT;
        EXP_AVX2.c[i] = EXP_F32_C;
        EXP_AVX2.p6[i] = 1.0 / 6.0;
        EXP_AVX2.p2[i] = 0.5;
        EXP_AVX2.p120[i] = 1.0 / 120.0;
        EXP_AVX2.p24[i] = 1.0 / 24.0;
        EXP_AVX2.p720[i] = 1.0 / 720.0;
    }
    for (uint32_t j = 0; j < 8; j++) {
        uint64_t b0 = fp_f64_bits(EXP2_J16[j]), b1 = fp_f64_bits(EXP2_J16[j + 8]);
        EXP_AVX2.hi0[j] = (uint32_t)(b0 >> 32) - (j << 16);
        EXP_AVX2.hi1[j] = (uint32_t)(b1 >> 32) - ((j + 8) << 16);
        EXP_AVX2.lo0[j] = (uint32_t)b0;
        EXP_AVX2.lo1[j] = (uint32_t)b1;
    }
}
#define EXP_AVX2_AT(field) "%c[o_" #field "](%[K])"     /* a field of EXP_AVX2, in memory */
#define EXP_AVX2_OFFSET(field) [o_##field] "i"(offsetof(exp_avx2_constants, field))
/* one vector's polynomial and product (R: r in, the double e out; T: T_j 2^m; Q, A, B scratch):
     r2 = r r, a = fma(r, 1/6, 1/2), b = fma(r, 1/120, 1/24), b = fma(r2, 1/720, b),
     a = fma(r2, b, a), p1 = fma(r2, a, r), e = fma(T, p1, T) */
#define EXP_AVX2_POLY(R, T, Q, A, B)                                                           \
    "vmulpd %[" R "], %[" R "], %[" Q "]\n\t"                                                  \
    "vmovapd " EXP_AVX2_AT(p6) ", %[" A "]\n\t"                                                \
    "vfmadd213pd " EXP_AVX2_AT(p2) ", %[" R "], %[" A "]\n\t"                                  \
    "vmovapd " EXP_AVX2_AT(p120) ", %[" B "]\n\t"                                              \
    "vfmadd213pd " EXP_AVX2_AT(p24) ", %[" R "], %[" B "]\n\t"                                 \
    "vfmadd231pd " EXP_AVX2_AT(p720) ", %[" Q "], %[" B "]\n\t"                                \
    "vfmadd231pd %[" B "], %[" Q "], %[" A "]\n\t"                                             \
    "vfmadd231pd %[" A "], %[" Q "], %[" R "]\n\t"                                             \
    "vfmadd213pd %[" T "], %[" T "], %[" R "]\n\t"
/* the table lookup of a pair of vectors (K: their packed k's, clobbered; T0, T1 out; M, H, L,
   X scratch) */
#define EXP_AVX2_LOOKUP(Kv, T0, T1, M, H, L, X)                                                \
    "vpslld $28, %[" Kv "], %[" M "]\n\t"                /* bit 3 of k -> the sign: the blend's */ \
    "vpermps " EXP_AVX2_AT(hi0) ", %[" Kv "], %[" H "]\n\t"                                    \
    "vpermps " EXP_AVX2_AT(hi1) ", %[" Kv "], %[" X "]\n\t"                                    \
    "vblendvps %[" M "], %[" X "], %[" H "], %[" H "]\n\t"                                     \
    "vpermps " EXP_AVX2_AT(lo0) ", %[" Kv "], %[" L "]\n\t"                                    \
    "vpermps " EXP_AVX2_AT(lo1) ", %[" Kv "], %[" X "]\n\t"                                    \
    "vblendvps %[" M "], %[" X "], %[" L "], %[" L "]\n\t"                                     \
    "vpslld $16, %[" Kv "], %[" Kv "]\n\t"                                                     \
    "vpaddd %[" Kv "], %[" H "], %[" H "]\n\t"                  /* high words + k << 16 */     \
    "vunpcklps %[" H "], %[" L "], %[" T0 "]\n\t"                                              \
    "vunpckhps %[" H "], %[" L "], %[" T1 "]\n\t"
static inline __attribute__((always_inline)) void exp_nonpositive_f32_x16_wide_avx2(
        __m256 z0, __m256 z1, __m256d d[4]) {
    __m256d v0, v1, v2, v3, s0, s1, s2, s3, s4, s5, s6, s7;
    v0 = _mm256_castps_pd(z0);
    v1 = _mm256_castps_pd(z1);
    __asm__(
        /* w = (double)max(-110, z) (the max's first operand -110: a NaN z stays NaN) */
        "vmovaps " EXP_AVX2_AT(m110) ", %[s3]\n\t"
        "vmaxps %[v0], %[s3], %[v0]\n\t"
        "vmaxps %[v1], %[s3], %[v1]\n\t"
        "vcvtps2pd %x[v0], %[s0]\n\t"
        "vextractf128 $1, %[v0], %x[v0]\n\t"
        "vcvtps2pd %x[v0], %[s1]\n\t"
        "vcvtps2pd %x[v1], %[s2]\n\t"
        "vextractf128 $1, %[v1], %x[v1]\n\t"
        "vcvtps2pd %x[v1], %[s3]\n\t"                      /* w: s0, s1, s2, s3 */
        /* t = fma(w, C16, SHIFT) */
        "vmovapd " EXP_AVX2_AT(c16) ", %[v0]\n\t"
        "vfmadd213pd " EXP_AVX2_AT(shift) ", %[s0], %[v0]\n\t"
        "vmovapd " EXP_AVX2_AT(c16) ", %[v1]\n\t"
        "vfmadd213pd " EXP_AVX2_AT(shift) ", %[s1], %[v1]\n\t"
        "vmovapd " EXP_AVX2_AT(c16) ", %[v2]\n\t"
        "vfmadd213pd " EXP_AVX2_AT(shift) ", %[s2], %[v2]\n\t"
        "vmovapd " EXP_AVX2_AT(c16) ", %[v3]\n\t"
        "vfmadd213pd " EXP_AVX2_AT(shift) ", %[s3], %[v3]\n\t"
        /* the k's of each pair: (t0[0], t0[1], t1[0], t1[1] | t0[2], t0[3], t1[2], t1[3]) */
        "vshufps $0x88, %[v1], %[v0], %[s4]\n\t"
        "vshufps $0x88, %[v3], %[v2], %[s5]\n\t"
        /* kd = t - SHIFT, r = fma(kd, -C, w) */
        "vsubpd " EXP_AVX2_AT(shift) ", %[v0], %[v0]\n\t"
        "vsubpd " EXP_AVX2_AT(shift) ", %[v1], %[v1]\n\t"
        "vsubpd " EXP_AVX2_AT(shift) ", %[v2], %[v2]\n\t"
        "vsubpd " EXP_AVX2_AT(shift) ", %[v3], %[v3]\n\t"
        "vfnmadd132pd " EXP_AVX2_AT(c) ", %[s0], %[v0]\n\t"
        "vfnmadd132pd " EXP_AVX2_AT(c) ", %[s1], %[v1]\n\t"
        "vfnmadd132pd " EXP_AVX2_AT(c) ", %[s2], %[v2]\n\t"
        "vfnmadd132pd " EXP_AVX2_AT(c) ", %[s3], %[v3]\n\t"     /* r: v0, v1, v2, v3 */
        EXP_AVX2_LOOKUP("s4", "s0", "s3", "s0", "s1", "s2", "s3")     /* T: s0, s3 */
        EXP_AVX2_LOOKUP("s5", "s1", "s5", "s1", "s2", "s4", "s6")     /* T: s1, s5 */
        EXP_AVX2_POLY("v0", "s0", "s6", "s2", "s4")
        EXP_AVX2_POLY("v1", "s3", "s2", "s7", "s0")
        EXP_AVX2_POLY("v2", "s1", "s7", "s4", "s6")
        EXP_AVX2_POLY("v3", "s5", "s0", "s2", "s3")
        : [v0] "+x"(v0), [v1] "+x"(v1), [v2] "=&x"(v2), [v3] "=&x"(v3), [s0] "=&x"(s0),
          [s1] "=&x"(s1), [s2] "=&x"(s2), [s3] "=&x"(s3), [s4] "=&x"(s4), [s5] "=&x"(s5),
          [s6] "=&x"(s6), [s7] "=&x"(s7)
        : [K] "r"(&EXP_AVX2), "m"(EXP_AVX2), EXP_AVX2_OFFSET(m110), EXP_AVX2_OFFSET(c16),
          EXP_AVX2_OFFSET(shift), EXP_AVX2_OFFSET(c), EXP_AVX2_OFFSET(p6), EXP_AVX2_OFFSET(p2),
          EXP_AVX2_OFFSET(p120), EXP_AVX2_OFFSET(p24), EXP_AVX2_OFFSET(p720),
          EXP_AVX2_OFFSET(hi0), EXP_AVX2_OFFSET(hi1), EXP_AVX2_OFFSET(lo0), EXP_AVX2_OFFSET(lo1));
    d[0] = v0;
    d[1] = v1;
    d[2] = v2;
    d[3] = v3;
}
#undef EXP_AVX2_AT
#undef EXP_AVX2_OFFSET
#undef EXP_AVX2_POLY
#undef EXP_AVX2_LOOKUP
/* the 8 doubles as one vector of floats, not two 4-float stores: a load of 8 right after them
   cannot take its value from the store buffer (a stall per call) */
static inline __m256 exp_nonpositive_f32_narrow_avx2(const __m256d* d) {
    return _mm256_set_m128(_mm256_cvtpd_ps(d[1]), _mm256_cvtpd_ps(d[0]));
}
/* exp of 16 floats (<= 0, -inf, NaN), z0 then z1, into *e0, *e1 */
static inline void exp_nonpositive_f32_x16_avx2(__m256 z0, __m256 z1, __m256* e0, __m256* e1) {
    __m256d d[4];
    exp_nonpositive_f32_x16_wide_avx2(z0, z1, d);
    *e0 = exp_nonpositive_f32_narrow_avx2(d);
    *e1 = exp_nonpositive_f32_narrow_avx2(d + 2);
}
/* exp of 8 floats: the 16-value code on z twice (for the tails only) */
static inline __m256 exp_nonpositive_f32_x8_avx2(__m256 z) {
    __m256d d[4];
    exp_nonpositive_f32_x16_wide_avx2(z, z, d);
    return exp_nonpositive_f32_narrow_avx2(d);
}
#endif

#define EXP_F64_C64 0x1.71547652b82fep+6                  /* 64 / ln 2, rounded */
#define EXP_F64_HI (6.93147180369123816490e-01 / 64)       /* ln 2 / 64 in two parts */
#define EXP_F64_LO (1.90821492927058770002e-10 / 64)
static inline double exp_nonpositive_f64(double z) {
    const double SHIFT = 0x1.8p52;
    z = z < -746.0 ? -746.0 : z;
    double t = fma(z, EXP_F64_C64, SHIFT);
    double kd = t - SHIFT;
    double r = fma(kd, -EXP_F64_LO, fma(kd, -EXP_F64_HI, z));
    int64_t k = (int64_t)(fp_f64_bits(t) - fp_f64_bits(SHIFT));  /* >= -68900 */
    uint64_t K = (uint64_t)(k + 64 * 2048);               /* biased: logical shifts below */
    double r2 = r * r;
    double a = fma(r, 1.0 / 6.0, 0.5);
    double b = fma(r, 1.0 / 120.0, 1.0 / 24.0);
    b = fma(r2, 1.0 / 720.0, b);
    double q = fma(r2, fma(r2, b, a), r);
    double th = EXP2_J64_HI[k & 63], tl = EXP2_J64_LO[k & 63];
    double y = th + fma(th, q, tl);
    /* m = (K >> 6) - 2048 = m1 + m2, m1 = floor(m / 2): both >= -538, normal powers of 2 */
    double s1 = fp_bits_f64(((K >> 7) - 1) << 52);
    double s2 = fp_bits_f64(((K >> 6) - (K >> 7) - 1) << 52);
    return (y * s1) * s2;
}

/* exp_nonpositive_f64 of a vector (8 doubles in the AVX-512 build, 4 in the AVX2 build): the
   scalar code's operations in its order.  k's bits are t's: t = R(64 z / ln2 + SHIFT) is an
   integer below 2^53, so kd = t - SHIFT and kd + SHIFT = t are exact; the clamp is max(-746, z),
   which keeps a NaN z as the scalar select does.  NaN z: the scalar code's NaN (every operation
   has one NaN operand, or two that are both z's).  The entries at k & 63: AVX-512 picks them from
   the tables held in 16 registers (tab: EXP2_J64_HI then EXP2_J64_LO, 8 each; four two-register
   permutes and three blends per table came out faster than two gathers), AVX2 gathers them. */
#define EXP_NONPOSITIVE_F64_VECTOR(W, B, V, VI, P, SET1I, PICK)                                 \
static inline V exp_nonpositive_f64_x##W(V z, const V* tab) {                                 \
    const V SHIFT = P##_set1_pd(0x1.8p52);                                                    \
    z = P##_max_pd(P##_set1_pd(-746.0), z);                                                   \
    V t = P##_fmadd_pd(z, P##_set1_pd(EXP_F64_C64), SHIFT);                                   \
    V kd = P##_sub_pd(t, SHIFT);                                                              \
    V r = P##_fnmadd_pd(kd, P##_set1_pd(EXP_F64_LO),                                          \
                        P##_fnmadd_pd(kd, P##_set1_pd(EXP_F64_HI), z));                       \
    VI K = P##_add_epi64(P##_sub_epi64(P##_castpd_si##B(t),                                   \
                                       SET1I((long long)fp_f64_bits(0x1.8p52))),              \
                         SET1I(64 * 2048));                /* k + 64 * 2048, as the scalar K */ \
    V r2 = P##_mul_pd(r, r);                                                                  \
    V a = P##_fmadd_pd(r, P##_set1_pd(1.0 / 6.0), P##_set1_pd(0.5));                          \
    V b = P##_fmadd_pd(r, P##_set1_pd(1.0 / 120.0), P##_set1_pd(1.0 / 24.0));                 \
    b = P##_fmadd_pd(r2, P##_set1_pd(1.0 / 720.0), b);                                        \
    V q = P##_fmadd_pd(r2, P##_fmadd_pd(r2, b, a), r);                                        \
    VI j = P##_and_si##B(K, SET1I(63));                    /* k & 63 */                       \
    V th = PICK(tab, EXP2_J64_HI, j), tl = PICK(tab + 8, EXP2_J64_LO, j);                    \
    V y = P##_add_pd(th, P##_fmadd_pd(th, q, tl));                                            \
    VI K7 = P##_srli_epi64(K, 7), one = SET1I(1);                                             \
    V s1 = P##_castsi##B##_pd(P##_slli_epi64(P##_sub_epi64(K7, one), 52));                    \
    V s2 = P##_castsi##B##_pd(P##_slli_epi64(                                                 \
        P##_sub_epi64(P##_sub_epi64(P##_srli_epi64(K, 6), K7), one), 52));                    \
    return P##_mul_pd(P##_mul_pd(y, s1), s2);                                                 \
}
#ifdef __AVX512F__
/* entry j (< 64) of the 64-entry table held in T[0..7] */
static inline __m512d exp_nonpositive_pick64(const __m512d* T, __m512i j) {
    __m512d p0 = _mm512_permutex2var_pd(T[0], j, T[1]), p1 = _mm512_permutex2var_pd(T[2], j, T[3]);
    __m512d p2 = _mm512_permutex2var_pd(T[4], j, T[5]), p3 = _mm512_permutex2var_pd(T[6], j, T[7]);
    __mmask8 b4 = _mm512_test_epi64_mask(j, _mm512_set1_epi64(16));
    __mmask8 b5 = _mm512_test_epi64_mask(j, _mm512_set1_epi64(32));
    return _mm512_mask_blend_pd(b5, _mm512_mask_blend_pd(b4, p0, p1), _mm512_mask_blend_pd(b4, p2, p3));
}
#define EXP_NONPOSITIVE_PICK8(tab, table, j) exp_nonpositive_pick64(tab, j)
EXP_NONPOSITIVE_F64_VECTOR(8, 512, __m512d, __m512i, _mm512, _mm512_set1_epi64,
                           EXP_NONPOSITIVE_PICK8)
#define EXP_NONPOSITIVE_F64_TAB(tab)                                                           \
    __m512d tab[16];                                                                          \
    for (int q_ = 0; q_ < 8; q_++) {                                                          \
        tab[q_] = _mm512_loadu_pd(EXP2_J64_HI + 8 * q_);                                      \
        tab[8 + q_] = _mm512_loadu_pd(EXP2_J64_LO + 8 * q_);                                  \
    }
#elif defined(__AVX2__)
#define EXP_NONPOSITIVE_GATHER4(tab, table, j) _mm256_i64gather_pd(table, j, 8)
EXP_NONPOSITIVE_F64_VECTOR(4, 256, __m256d, __m256i, _mm256, _mm256_set1_epi64x,
                           EXP_NONPOSITIVE_GATHER4)
#define EXP_NONPOSITIVE_F64_TAB(tab) const __m256d* tab = NULL
#endif

/* e[i] = exp(R(x[i] - a)) (shift) or exp(x[i]) for the first multiple of the vector width of n
   (0 in the baseline build, whose loops GCC vectorises); returns how many.  x may be e (each
   vector is loaded before its result is stored). */
static inline __attribute__((always_inline)) ptrdiff_t exp_nonpositive_vectors_shift_f32(
        const float* x, float a, const int shift, float* e, ptrdiff_t n) {
    ptrdiff_t i = 0;
#ifdef __AVX512F__
    __m512d tab0 = _mm512_loadu_pd(EXP2_J16_SCALED), tab1 = _mm512_loadu_pd(EXP2_J16_SCALED + 8);
    __m512 av = _mm512_set1_ps(a);
    for (; i + 16 <= n; i += 16) {
        __m512 z = _mm512_loadu_ps(x + i);
        if (shift) z = _mm512_sub_ps(z, av);
        _mm512_storeu_ps(e + i, exp_nonpositive_f32_x16(z, tab0, tab1));
    }
#elif defined(__AVX2__)
    __m256 av = _mm256_set1_ps(a);
    for (; i + 8 <= n; i += 16) {
        __m256 z0 = _mm256_loadu_ps(x + i), e0, e1;
        if (shift) z0 = _mm256_sub_ps(z0, av);
        if (i + 16 > n) {           /* the last 8 */
            _mm256_storeu_ps(e + i, exp_nonpositive_f32_x8_avx2(z0));
            return i + 8;
        }
        __m256 z1 = _mm256_loadu_ps(x + i + 8);
        if (shift) z1 = _mm256_sub_ps(z1, av);
        exp_nonpositive_f32_x16_avx2(z0, z1, &e0, &e1);
        _mm256_storeu_ps(e + i, e0);
        _mm256_storeu_ps(e + i + 8, e1);
    }
#else
    (void)x; (void)a; (void)shift; (void)e; (void)n;
#endif
    return i;
}
static inline ptrdiff_t exp_nonpositive_vectors_f32(const float* z, float* e, ptrdiff_t n) {
    return exp_nonpositive_vectors_shift_f32(z, 0.0f, 0, e, n);
}
/* d[i] = exp_nonpositive_f32_wide(z[i]) by the vector code above, for the first multiple of
   its width of n (0 in the baseline build); returns how many (for the test that compares the
   builds on the doubles) */
static inline ptrdiff_t exp_nonpositive_vectors_wide_f32(const float* z, double* d, ptrdiff_t n) {
    ptrdiff_t i = 0;
#ifdef __AVX512F__
    __m512d tab0 = _mm512_loadu_pd(EXP2_J16_SCALED), tab1 = _mm512_loadu_pd(EXP2_J16_SCALED + 8);
    for (; i + 8 <= n; i += 8) {
        __m256 zc = _mm256_max_ps(_mm256_set1_ps(-110.0f), _mm256_loadu_ps(z + i));
        _mm512_storeu_pd(d + i, exp_nonpositive_f32_x8(_mm512_cvtps_pd(zc), tab0, tab1));
    }
#elif defined(__AVX2__)
    __m256d w[4];
    for (; i + 16 <= n; i += 16) {
        exp_nonpositive_f32_x16_wide_avx2(_mm256_loadu_ps(z + i), _mm256_loadu_ps(z + i + 8), w);
        for (int c = 0; c < 4; c++) _mm256_storeu_pd(d + i + 4 * c, w[c]);
    }
    if (i + 8 <= n) {                   /* the last 8, as the tails of the loops above */
        __m256 zv = _mm256_loadu_ps(z + i);
        exp_nonpositive_f32_x16_wide_avx2(zv, zv, w);
        for (int c = 0; c < 2; c++) _mm256_storeu_pd(d + i + 4 * c, w[c]);
        i += 8;
    }
#else
    (void)z; (void)d; (void)n;
#endif
    return i;
}
/* e[i] = exp(e[i]) over a row in place, and e[i] = exp(x[i] - a) (x already in the arithmetic
   format: one pass, not two).  The restrict pointers tell GCC the row does not alias the
   tables, without which it does not vectorise the gathers of the baseline build's loops;
   inlined, the restrict is lost: hence noinline (one call per row). */
PRECISION_NOINLINE static void exp_nonpositive_inplace_f32(float* restrict e, ptrdiff_t n) {
    ptrdiff_t i = exp_nonpositive_vectors_f32(e, e, n);
    for (; i < n; i++) e[i] = exp_nonpositive_f32(e[i]);
}
PRECISION_NOINLINE static void exp_nonpositive_array_f32(const float* restrict z,
                                                         float* restrict e, ptrdiff_t n) {
    ptrdiff_t i = exp_nonpositive_vectors_f32(z, e, n);
    for (; i < n; i++) e[i] = exp_nonpositive_f32(z[i]);
}
/* the same for losses_block.h's tiles: inline in the AVX2 build (the block code keeps vector
   registers live across it, which a call spills); a call in the baseline build (its loop needs
   the restrict) and in the AVX-512 build (with 32 registers, the block code inlined around it
   came out slower) */
#if defined(__AVX2__) && !defined(__AVX512F__)
static inline void exp_nonpositive_tile_f32(const float* z, float* e, ptrdiff_t n) {
    ptrdiff_t i = exp_nonpositive_vectors_f32(z, e, n);
    for (; i < n; i++) e[i] = exp_nonpositive_f32(z[i]);
}
#else
#define exp_nonpositive_tile_f32 exp_nonpositive_array_f32
#endif
PRECISION_NOINLINE static void exp_nonpositive_inplace_f64(double* restrict e, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) e[i] = exp_nonpositive_f64(e[i]);
}
PRECISION_NOINLINE static void exp_nonpositive_shifted_f32(const float* restrict x, float a,
                                                           float* restrict e, ptrdiff_t n) {
    ptrdiff_t i = exp_nonpositive_vectors_shift_f32(x, a, 1, e, n);
    for (; i < n; i++) e[i] = exp_nonpositive_f32(x[i] - a);
}
/* e[i] = exp(z[i]) by the vector exp above for the first multiple of its width of n (0 in the
   baseline build); returns how many (for the tests that compare it with the scalar exp) */
static inline ptrdiff_t exp_nonpositive_vectors_f64(const double* z, double* e, ptrdiff_t n) {
    ptrdiff_t i = 0;
#ifdef __AVX512F__
    EXP_NONPOSITIVE_F64_TAB(tab);
    for (; i + 8 <= n; i += 8) _mm512_storeu_pd(e + i, exp_nonpositive_f64_x8(_mm512_loadu_pd(z + i), tab));
#elif defined(__AVX2__)
    EXP_NONPOSITIVE_F64_TAB(tab);
    for (; i + 4 <= n; i += 4) _mm256_storeu_pd(e + i, exp_nonpositive_f64_x4(_mm256_loadu_pd(z + i), tab));
#else
    (void)z; (void)e; (void)n;
#endif
    return i;
}
PRECISION_NOINLINE static void exp_nonpositive_shifted_f64(const double* restrict x, double a,
                                                           double* restrict e, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) e[i] = exp_nonpositive_f64(x[i] - a);
}

#endif /* PRECISION_EXP_NONPOSITIVE_H */
