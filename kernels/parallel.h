/*
 * parallel.h -- the one primitive the collective kernels add to fp.h: rounding a value of the
 * arithmetic format A (held in its compute type) to the wire format W in which partial sums
 * travel between workers.  W is chosen at run time (code: 0 f16, 1 bf16, 2 f32, 3 f64); the
 * Python layer only allows a W whose every value is a value of A (f16, bf16 inside f32 inside
 * f64), so the rounding is a narrowing or the identity, and the compute type holds it exactly.
 * A double -> f16/bf16 rounding goes through fp.h's round-to-odd, so it is rounded once.
 */
#ifndef PRECISION_PARALLEL_H
#define PRECISION_PARALLEL_H

#include "fp.h"

enum { WIRE_F16 = 0, WIRE_BF16 = 1, WIRE_F32 = 2, WIRE_F64 = 3 };

static inline float wire_round_float(float x, int wire)
{
    float r = wire == WIRE_F16 ? rnd_f16(x) : x;
    return wire == WIRE_BF16 ? rnd_bf16(x) : r;
}

static inline double wire_round_double(double x, int wire)
{
    if (wire == WIRE_F16) return (double)f64_to_f16(x);
    if (wire == WIRE_BF16) return (double)f64_to_bf16(x);
    if (wire == WIRE_F32) return (double)(float)x;
    return x;
}

#endif /* PRECISION_PARALLEL_H */
