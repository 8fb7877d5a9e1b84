/*
 * stochastic_rounding.h -- stochastic rounding of a compute value into a storage format, with a
 * counter-based random stream (the optimizers' update rule "stochastic").
 *
 * x (compute type W: float for arithmetic f16/bf16/f32, double for f64) is rounded into the
 * storage format S:  n = round-to-nearest_S(x),  o = the S neighbour of n on x's side;
 *     SR_S(x) = o  if  U < |x - n| / |o - n|,  else n,
 * with U = (r >> 8) * 2^-24 from a 32-bit random word r.  Every quantity is exact: x - n by
 * Sterbenz (or n = 0), o - n is a power of two, so the quotient is exact in float (it stays
 * >= 2^-125) and in double the comparison is made as U |o - n| < |x - n| (products >= 2^-173 or
 * 0).  NaN and inf come out unchanged; past S's largest finite value |o - n| is inf and the
 * result is round-to-nearest's.
 *
 * The random word of element i (a 64-bit index, lo/hi halves) under a 64-bit key k (one per
 * seed, parameter and step): r = mix32(mix32(i_lo ^ k_lo) ^ i_hi ^ k_hi), mix32 = "lowbias32"
 * (C. Wellons, 2018; a bijection of 32-bit words).  So the result depends only on (x, seed,
 * parameter, step, i): not on the thread count or the block structure.
 *
 *   uint32_t sr_random_bits(uint32_t index_lo, uint32_t index_hi, uint32_t key_lo, uint32_t key_hi)
 *   float  sr_f16_float(float x, uint32_t r)     double sr_f16_double(double x, uint32_t r)
 *   float  sr_bf16_float(float x, uint32_t r)    double sr_bf16_double(double x, uint32_t r)
 *                                                double sr_f32_double(double x, uint32_t r)
 * (S = f32 from float and S = f64 are the identity: nothing to round.)
 */
#ifndef PRECISION_STOCHASTIC_ROUNDING_H
#define PRECISION_STOCHASTIC_ROUNDING_H

#include <math.h>
#include <stdint.h>
#include "fp.h"

static inline uint32_t sr_mix32(uint32_t x)
{
    x ^= x >> 16; x *= 0x7feb352dU; x ^= x >> 15; x *= 0x846ca68bU; x ^= x >> 16;
    return x;
}

static inline uint32_t sr_random_bits(uint32_t index_lo, uint32_t index_hi, uint32_t key_lo,
                                      uint32_t key_hi)
{
    return sr_mix32(sr_mix32(index_lo ^ key_lo) ^ index_hi ^ key_hi);
}

/* The S neighbour of n (a value of S in the compute type) one step away from zero (away) or
 * toward it: the magnitude's bit pattern plus or minus one. */
static inline float sr_neighbour_f16(float n, int away)
{
    uint16_t h = st16_f16(n);
    uint16_t mag = h & 0x7FFFu;
    uint16_t om = away ? (uint16_t)(mag + 1u) : (uint16_t)(mag - 1u);
    return ld16_f16((uint16_t)((h & 0x8000u) | (om & 0x7FFFu)));
}
static inline float sr_neighbour_bf16(float n, int away)
{
    uint16_t h = st16_bf16(n);
    uint16_t mag = h & 0x7FFFu;
    uint16_t om = away ? (uint16_t)(mag + 1u) : (uint16_t)(mag - 1u);
    return ld16_bf16((uint16_t)((h & 0x8000u) | (om & 0x7FFFu)));
}
static inline float sr_neighbour_f32(float n, int away)
{
    uint32_t h = fp_f32_bits(n);
    uint32_t mag = h & 0x7FFFFFFFu;
    uint32_t om = away ? mag + 1u : mag - 1u;
    return fp_bits_f32((h & 0x80000000u) | (om & 0x7FFFFFFFu));
}

static inline float sr_uniform_float(uint32_t r) { return (float)(int32_t)(r >> 8) * 0x1p-24f; }
static inline double sr_uniform_double(uint32_t r) { return (double)(int32_t)(r >> 8) * 0x1p-24; }

/* the choice between n and o, exact in each compute type (see the top of this file) */
static inline float sr_choose_float(float x, float n, float o, uint32_t r)
{
    float q = fabsf(x - n) / fabsf(o - n);
    return sr_uniform_float(r) < q ? o : n;
}
static inline double sr_choose_double(double x, double n, double o, uint32_t r)
{
    return sr_uniform_double(r) * fabs(o - n) < fabs(x - n) ? o : n;
}

static inline float sr_f16_float(float x, uint32_t r)
{
    float n = rnd_f16(x);
    return sr_choose_float(x, n, sr_neighbour_f16(n, fabsf(x) > fabsf(n)), r);
}
static inline float sr_bf16_float(float x, uint32_t r)
{
    float n = rnd_bf16(x);
    return sr_choose_float(x, n, sr_neighbour_bf16(n, fabsf(x) > fabsf(n)), r);
}
static inline double sr_f16_double(double x, uint32_t r)
{
    float n = f64_to_f16(x);
    return sr_choose_double(x, (double)n, (double)sr_neighbour_f16(n, fabs(x) > fabs((double)n)), r);
}
static inline double sr_bf16_double(double x, uint32_t r)
{
    float n = f64_to_bf16(x);
    return sr_choose_double(x, (double)n, (double)sr_neighbour_bf16(n, fabs(x) > fabs((double)n)), r);
}
static inline double sr_f32_double(double x, uint32_t r)
{
    float n = (float)x;
    return sr_choose_double(x, (double)n, (double)sr_neighbour_f32(n, fabs(x) > fabs((double)n)), r);
}

#endif /* PRECISION_STOCHASTIC_ROUNDING_H */
