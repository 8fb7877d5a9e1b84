/*
 * optim_lanes.h -- element operations of the optimizer kernels beyond fp.h, as scalars and, for
 * float16 storage with F16C (the x86-64-v3 build), as 8 float lanes.
 *
 *   maxnan_f / maxnan_d (a, b)   NaN-propagating maximum (torch.maximum, jnp.maximum): NaN if
 *                                either is NaN, else the larger
 *   where_pos_f / where_pos_d (acc, k)   acc > 0 ? k : +0 (optax's where(t > 0, ..., 0))
 *   round_mu_f / round_mu_d (x, code)    x (a value of the arithmetic format A) rounded once
 *                                to the format of optax's mu_dtype: code 0 none (x itself),
 *                                1 float16, 2 bfloat16, 3 float32 (only from double); from
 *                                double directly, never through float (no double rounding)
 *
 * 8 lanes (only where the compiler targets F16C and AVX, OPTIM_F16C = 1): v8sf is 8 floats in
 * a GCC vector; vcvtps2ph rounds float -> float16 to nearest-even with subnormals and overflow
 * exactly as fp.h's rnd_f16, so a kernel written with these computes the same bits as the
 * scalar one (tests compare the builds).  Stores turn NaN into 0x7E00 with its sign, as
 * st16_f16.
 *   v8_bcast(x)  v8_ldf(p)  v8_stf(p, v)           broadcast, float load/store
 *   v8_ld_f16(p)  v8_st_f16(p, v)                  float16 load/store (exact / rounded once)
 *   v8_rnd_f16(v)  v8_sqrt_f32(v)  v8_sqrt_f16(v)  rounding to float16, square roots
 *   v8_maxnan(a, b)  v8_where_pos(acc, k)          as the scalars above
 */
#ifndef PRECISION_OPTIM_LANES_H
#define PRECISION_OPTIM_LANES_H

#include <stdint.h>
#include <string.h>
#include "fp.h"

static inline float maxnan_f(float a, float b)
{ float m = a >= b ? a : b; m = b != b ? b : m; return a != a ? a : m; }
static inline double maxnan_d(double a, double b)
{ double m = a >= b ? a : b; m = b != b ? b : m; return a != a ? a : m; }

static inline float where_pos_f(float acc, float k) { return acc > 0.0f ? k : 0.0f; }
static inline double where_pos_d(double acc, double k) { return acc > 0.0 ? k : 0.0; }

enum { MU_SAME = 0, MU_F16 = 1, MU_BF16 = 2, MU_F32 = 3 };

static inline float round_mu_f(float x, int code)
{ return code == MU_F16 ? rnd_f16(x) : code == MU_BF16 ? rnd_bf16(x) : x; }
static inline double round_mu_d(double x, int code)
{
    return code == MU_F16 ? (double)f64_to_f16(x) : code == MU_BF16 ? (double)f64_to_bf16(x)
         : code == MU_F32 ? (double)(float)x : x;
}

#if defined(__F16C__) && defined(__AVX__)
#define OPTIM_F16C 1
#include <immintrin.h>
#pragma GCC diagnostic ignored "-Wpsabi"   /* 32-byte vectors in static inline helpers */

typedef float v8sf __attribute__((vector_size(32)));

static inline v8sf v8_bcast(float x) { v8sf v = {x, x, x, x, x, x, x, x}; return v; }
static inline v8sf v8_ldf(const float* p) { v8sf v; memcpy(&v, p, 32); return v; }
static inline void v8_stf(float* p, v8sf v) { memcpy(p, &v, 32); }
static inline v8sf v8_rnd_f16(v8sf x)
{ return (v8sf)_mm256_cvtph_ps(_mm256_cvtps_ph((__m256)x, _MM_FROUND_TO_NEAREST_INT)); }
static inline v8sf v8_sqrt_f32(v8sf x) { return (v8sf)_mm256_sqrt_ps((__m256)x); }
static inline v8sf v8_sqrt_f16(v8sf x) { return v8_rnd_f16(v8_sqrt_f32(x)); }
static inline v8sf v8_ld_f16(const uint16_t* p)
{ return (v8sf)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p)); }
static inline void v8_st_f16(uint16_t* p, v8sf x)
{
    __m256 v = (__m256)x;
    __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
    __m256 canon = _mm256_or_ps(_mm256_and_ps(v, _mm256_set1_ps(-0.0f)),
                                _mm256_castsi256_ps(_mm256_set1_epi32(0x7FC00000)));
    v = _mm256_blendv_ps(v, canon, nan);
    _mm_storeu_si128((__m128i*)p, _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}
static inline v8sf v8_maxnan(v8sf a, v8sf b)
{
    __m256 A = (__m256)a, B = (__m256)b;
    __m256 m = _mm256_blendv_ps(B, A, _mm256_cmp_ps(A, B, _CMP_GE_OQ));
    m = _mm256_blendv_ps(m, B, _mm256_cmp_ps(B, B, _CMP_UNORD_Q));
    m = _mm256_blendv_ps(m, A, _mm256_cmp_ps(A, A, _CMP_UNORD_Q));
    return (v8sf)m;
}
static inline v8sf v8_where_pos(v8sf acc, v8sf k)
{
    return (v8sf)_mm256_and_ps((__m256)k, _mm256_cmp_ps((__m256)acc, _mm256_setzero_ps(), _CMP_GT_OQ));
}
#else
#define OPTIM_F16C 0
#endif

#endif /* PRECISION_OPTIM_LANES_H */
