"""Collective reductions across workers, in every format: what data-parallel training computes.

    import precision as pr
    from precision import parallel
    g = ...                                             # (k, ...): worker i's gradient is g[i]
    parallel.allreduce(g)                               # mean, ring, pre-divided: DDP's default
    parallel.allreduce(g, divide="post")                # Horovod's Average, DeepSpeed's default
    parallel.allreduce(g, divide="split")               # FSDP: factor fsdp_predivide_factor(k)
    parallel.allreduce(g32, wire_format="float16")      # DDP's fp16_compress_hook
    parallel.allreduce(g16, accum="float32")            # apex allreduce_always_fp32 / Megatron
    parallel.allreduce(g, algorithm="pairwise")         # any of ALGORITHMS
    parallel.allreduce(g, **parallel.GLOO_RING)         # gloo's CPU ring order, bit for bit

Every worker's result is returned, shape (k, ...): an all-reduce leaves the same bits on every
worker in this model (each partial sum lives in the wire buffer).  The kernel is
``kernels/parallel.pyx.tp``; its emulated and exact twins are ``precision.exact.parallel``.

Also here: what unequal shards do to the average (:func:`shard_weights`, :func:`mean_of_means`,
:func:`distributed_sampler_indices`) and the learning-rate rules for k workers
(:func:`linear_scaling_lr`, :func:`sqrt_scaling_lr`, :func:`warmup_lr`, :func:`goyal_lr`,
:func:`sum_reduction_lr`).
"""
from __future__ import annotations

import math
import numbers
from fractions import Fraction

import numpy as np

from . import _checks
from . import formats as _formats
from ._kernels import load as _load

__all__ = [
    "ALGORITHMS",
    "DIVIDE_MODES",
    "GLOO_RING",
    "allreduce",
    "fsdp_predivide_factor",
    "gloo_ring_chunk_size",
    "ring_chunk_size",
    "scale_factors",
    "shard_weights",
    "mean_of_means",
    "distributed_sampler_indices",
    "linear_scaling_lr",
    "sqrt_scaling_lr",
    "warmup_lr",
    "goyal_lr",
    "sum_reduction_lr",
]

ALGORITHMS = ("ring", "tree", "halving_doubling", "pairwise", "sequential")
DIVIDE_MODES = ("pre", "post", "split")
DIRECTIONS = ("ascending", "descending")
SCALINGS = ("div", "mul")
MAX_THREADS = _checks.MAX_THREADS
# gloo's ring (gloo/allreduce.cc): data flows to rank - 1, and its chunking (gloo_ring_chunk_size)
GLOO_RING = {"algorithm": "ring", "direction": "descending", "chunk_size": "gloo"}
# gloo::AllreduceOptions::kMaxSegmentSize: a ring segment carries at most 1 MiB
GLOO_MAX_SEGMENT_BYTES = 1024 * 1024
# Below this many additions a parallel region costs more than it saves.
_PARALLEL_MIN_WORK = 1 << 18


def _kernels():
    return _load("parallel")


def _threads(num_threads, work: int) -> int:
    return _checks.threads(num_threads, work, _PARALLEL_MIN_WORK)


def _positive_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


# ------------------------------------------------------------------------- divide factors
def fsdp_predivide_factor(k: int) -> int:
    """FSDP's split of the division by k (torch/distributed/fsdp, ``_get_gradient_predivide_factor``):
    f = 1, doubled while k % f == 0 and k / f > f.  Pre-divide by f, post-divide by k / f
    (k = 64: 8 and 8; k = 256: 16 and 16; k = 2: 2 and 1; k = 6: 4 and 1.5 -- the loop tests
    k % f before doubling, so f need not divide k)."""
    k = _positive_int(k, "k")
    factor = 1
    while k % factor == 0 and k / factor > factor:
        factor *= 2
    return factor


def scale_factors(k: int, op: str = "mean", divide=None, factor=None):
    """(f_pre, f_post) as exact Fractions: the divisors applied before and after the sum.

    op="sum": (1, 1) (divide must be None).  op="mean": divide="pre" (the default; DDP and
    its compression hooks) (k, 1);
    "post" (Horovod's Average, DeepSpeed's default ``allreduce_bucket``) (1, k); "split"
    (FSDP, apex ``gradient_predivide_factor``, Horovod's and DeepSpeed's predivide factor)
    (f, k / f) with f = ``factor`` or, by default, :func:`fsdp_predivide_factor` (k).
    """
    k = _positive_int(k, "k")
    if op not in ("mean", "sum"):
        raise ValueError(f"op must be 'mean' or 'sum', got {op!r}")
    if op == "sum":
        if divide is not None or factor is not None:
            raise ValueError("divide and factor apply to op='mean' only")
        return Fraction(1), Fraction(1)
    if divide is None:
        divide = "pre"
    if divide not in DIVIDE_MODES:
        raise ValueError(f"divide must be one of {DIVIDE_MODES}, got {divide!r}")
    if factor is not None and divide != "split":
        raise ValueError(f"factor applies to divide='split' only, not {divide!r}")
    if divide == "pre":
        return Fraction(k), Fraction(1)
    if divide == "post":
        return Fraction(1), Fraction(k)
    if factor is None:
        factor = fsdp_predivide_factor(k)
    if isinstance(factor, (bool, np.bool_)) or not isinstance(factor, numbers.Real):
        raise TypeError(f"factor must be a real number, got {type(factor).__name__}")
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"factor must be finite and > 0, got {factor}")
    f = Fraction(factor)
    return f, Fraction(k) / f


# ------------------------------------------------------------------------- ring chunking
def ring_chunk_size(n: int, k: int) -> int:
    """Elements per ring chunk by default: ceil(n / k) (chunk c = elements [c·L, (c+1)·L))."""
    return max(1, -(-_positive_int(n, "n") // _positive_int(k, "k")))


def gloo_ring_chunk_size(n: int, k: int, itemsize: int) -> int:
    """The chunk of gloo's ring (gloo/allreduce.cc): segments of s = ceil(n / 2k) elements, at most
    1 MiB; the number of segments rounded up to a multiple of k (at least 2k); chunk c (owned by
    rank c) is the c-th run of numSegments / k segments."""
    n, k, itemsize = (_positive_int(n, "n"), _positive_int(k, "k"), _positive_int(itemsize, "itemsize"))
    segment = min(-(-n // (2 * k)), max(1, GLOO_MAX_SEGMENT_BYTES // itemsize))
    n_segments = max(-(-n // segment), 2 * k)
    n_segments = -(-n_segments // k) * k
    return (n_segments // k) * segment


# ------------------------------------------------------------------------- the all-reduce
def allreduce(grads, op: str = "mean", *, algorithm: str = "ring", direction: str = "ascending",
              chunk_size=None, divide=None, factor=None, scaling: str = "div",
              wire_format=None, accum=None, out=None, num_threads=None):
    """All-reduce of ``grads`` (k, ...) over its leading worker axis; every worker's result.

    grads: array of float16, bfloat16, float32 or float64, shape (k, ...), k >= 1 workers, at
    least one element each.  Returns an array of grads' shape and dtype whose rows are the k
    workers' results (identical bits).

    Formats: S = grads' format; A = ``accum`` (default S; S or wider), the format of every
    operation; W = ``wire_format`` (default A), the format of the communication buffer in which
    contributions and partial sums travel (a value of W must be a value of A: float16 or
    bfloat16 inside float32 inside float64).  With R_X rounding to X::

        b_i   = R_W(g_i)                                     cast into the buffer
        b_i   = R_W(R_A(b_i / f_pre))                        pre-divide (if f_pre != 1)
        a ⊕ b = R_W(R_A(a + b))                              every add of the algorithm
        t     = ⊕ over b_0 .. b_{k-1} in the algorithm's order
        t     = R_W(R_A(t / f_post))                         post-divide (if f_post != 1)
        out_i = R_S(t)                                       cast back, on every worker i

    With ``scaling="mul"`` the divisions are multiplications by c = R_A(1 / f) instead, as DDP's
    default (no hook: grad × (1/k) while copying into the bucket), apex, DeepSpeed and
    Horovod's pre/postscale factors do; ``scaling="div"`` is the ``div_`` of DDP's
    communication hooks and FSDP.  (Because A ⊇ W, R_W(R_A(x)) = R_W(x) for + and / -- the
    double-rounding theorem -- so A matters only for the narrow-wire case's scalars.)

    op: "mean" or "sum" (no division).  divide (mean only; default "pre"): "pre" (f_pre, f_post) = (k, 1) --
    DDP, its fp16/bf16 hooks (cast, divide in the wire format, all-reduce, cast back: the hook
    divides *after* the cast); "post" (1, k) -- Horovod's Average, DeepSpeed; "split"
    (f, k/f) -- FSDP, with f = ``factor`` or FSDP's rule :func:`fsdp_predivide_factor` (f = 1,
    doubled while k % f == 0 and k/f > f; 64 -> 8·8, 256 -> 16·16).
    Each factor enters rounded to A (:class:`precision.PrecisionWarning` if that changes it by
    more than 1 %, or makes it 0 or inf).

    algorithm (the order of ⊕; ``precision.exact.parallel`` states each op by op):
      "ring"  reduce-scatter then all-gather; column j is in chunk c = j // L (L =
              ``chunk_size``, default ceil(n/k); "gloo" for :func:`gloo_ring_chunk_size`),
              owned by worker c.  ``direction="ascending"`` (NCCL: data flows to rank + 1): the
              chunk's sum starts as b_{c+1}, then workers c+2, ..., c add theirs; "descending"
              (gloo: to rank − 1): starts as b_{c−1}, then c−2, ..., c (indices mod k). Each
              step s = b_r ⊕ s, so the owner adds its own contribution last.
      "tree"  recursive doubling (MPICH's non-power-of-two prelude: the first 2r workers,
              r = k − 2^⌊log2 k⌋, fold pairwise b_{2i} ⊕ b_{2i+1}); then distance 1, 2, 4, ...
      "halving_doubling"  Rabenseifner's recursive halving: same prelude, then distance
              p/2, p/4, ..., 1 (p = 2^⌊log2 k⌋).
      "pairwise"  gather, then the project's pairwise order over workers (DESIGN.md §3.4:
              128-worker leaves in 8 lanes from +0, leaves combined level by level) -- the order
              of ``precision.exact.emulate(W).sum(b, order="pairwise")``.
      "sequential"  a chain: t = ((b_0 ⊕ b_1) ⊕ b_2) ⊕ ... ⊕ b_{k−1}.

    out: optional C-contiguous writable array of grads' shape and dtype; may be grads itself
    (in place, as ``torch.distributed.all_reduce``), must not otherwise overlap it.
    num_threads: 1..256 threads over columns (default 1 for small inputs, else all CPUs); the
    result is bit-identical for any value.

    Reference facts (training-statistics.md §B): float16, k = 256 workers each holding 300:
    post-division overflows (the sum 76800 > 65504) to inf, pre-division keeps 300 in a tree;
    a sequential bfloat16 sum of 512 ones stops at 256 (256 + 1 ties to 256), so its mean is
    0.5, while pairwise and tree orders are exact.
    """
    if not isinstance(grads, np.ndarray):
        raise TypeError(f"grads must be a numpy array, got {type(grads).__name__}")
    if _formats.of(grads) and not grads.flags.aligned:
        grads = grads.copy()    # the kernel reads through typed pointers (see _checks.float_array)
    storage = _formats.of(grads)
    if grads.ndim < 1:
        raise ValueError("grads needs a leading worker axis (shape (k, ...))")
    k = grads.shape[0]
    if k < 1:
        raise ValueError("allreduce needs at least one worker (k >= 1)")
    n = int(np.prod(grads.shape[1:], dtype=np.int64))
    if n < 1:
        raise ValueError(f"allreduce of empty gradients (shape {grads.shape})")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    arith = _formats.arithmetic_format(accum, storage)
    wire = arith if wire_format is None else _wire_format(wire_format, arith)
    if chunk_size is None:
        chunk = ring_chunk_size(n, k)
    elif isinstance(chunk_size, str):
        if chunk_size != "gloo":
            raise ValueError(f"chunk_size must be an int, None or 'gloo', got {chunk_size!r}")
        chunk = gloo_ring_chunk_size(n, k, wire.bits // 8)
    else:
        chunk = _positive_int(chunk_size, "chunk_size")
        if chunk * k < n:
            raise ValueError(f"chunk_size={chunk} gives more than k={k} chunks of {n} elements "
                             f"(need chunk_size >= {ring_chunk_size(n, k)})")
    if algorithm != "ring":
        chunk = n
    f_pre, f_post = scale_factors(k, op, divide, factor)
    pre_mode, pre = _scalar(f_pre, scaling, arith, "f_pre")
    post_mode, post = _scalar(f_post, scaling, arith, "f_post")
    threads = _threads(num_threads, k * n)
    if out is None:
        out = np.empty(grads.shape, dtype=grads.dtype)
    else:
        _checks.check_out(out, "out", grads.shape, grads.dtype, [("grads", grads)], in_place=True)
    g2 = grads.reshape(k, n)
    o2 = out.reshape(k, n)
    kern = _kernels()
    kernel = getattr(kern, f"allreduce_{storage.short}_{arith.short}")
    kernel(storage.storage_view(g2), storage.storage_view(o2), kern.ALGORITHMS[algorithm], chunk,
           1 if direction == "ascending" else -1, kern.WIRES[wire.short],
           kern.SCALINGS[pre_mode], pre, kern.SCALINGS[post_mode], post, threads)
    return out


# A wire format W must lie inside A (every W value is an A value): float16/bfloat16 ⊂ float32 ⊂ float64.
_WIRE_FOR = {"f16": ("f16",), "bf16": ("bf16",), "f32": ("f16", "bf16", "f32"),
             "f64": ("f16", "bf16", "f32", "f64")}


def _wire_format(spec, arith):
    try:
        wire = _formats.format(spec)
    except (TypeError, ValueError) as error:
        raise type(error)(f"wire_format: {error}") from None
    if wire.short not in _WIRE_FOR[arith.short]:
        raise ValueError(f"wire_format={wire.name} does not lie inside the arithmetic format "
                         f"{arith.name}; use accum= at least as wide as the wire format")
    return wire


def _scalar(f: Fraction, scaling: str, arith, name: str):
    """(mode, value in A) for a divisor f: no-op for f = 1; f or 1/f rounded once into A."""
    if f == 1:
        return "none", 1.0
    if scaling == "div":
        return "div", _formats.round_scalar(f, arith, name, stacklevel=4)
    return "mul", _formats.round_scalar(1 / f, arith, f"1/{name}", stacklevel=4)


# ------------------------------------------------------------------------- unequal shards
def _shard_sizes(shard_sizes) -> list:
    sizes = [int(s) for s in shard_sizes]
    if not sizes:
        raise ValueError("shard_sizes is empty")
    if any(isinstance(s, (bool, np.bool_)) for s in shard_sizes):
        raise TypeError("shard sizes must be ints")
    if any(s < 1 for s in sizes):
        raise ValueError(f"every shard needs at least one sample, got sizes {sizes}")
    return sizes


def shard_weights(shard_sizes, rule: str = "mean_of_means") -> list:
    """The weight each sample gets in the averaged gradient, per shard, as exact Fractions.

    rule="mean_of_means": each of the K workers averages its n_j samples, then the K means are
    averaged (DDP, Horovod: the loss is mean-reduced per worker and gradients divided by K), so
    a sample of shard j weighs 1 / (K·n_j).  rule="global": the big-batch mean, 1 / N with
    N = Σ n_j.  They agree iff all shards are equal: ``shard_weights([3, 1])`` = [1/6, 1/2] (a
    sample of the short shard counts three times as much) against ``shard_weights([3, 1],
    "global")`` = [1/4, 1/4].
    rule="sum": DataParallel-style sum of per-sample losses: weight 1 each.
    """
    sizes = _shard_sizes(shard_sizes)
    if rule == "mean_of_means":
        return [Fraction(1, len(sizes) * s) for s in sizes]
    if rule == "global":
        total = sum(sizes)
        return [Fraction(1, total) for _ in sizes]
    if rule == "sum":
        return [Fraction(1) for _ in sizes]
    raise ValueError(f"rule must be 'mean_of_means', 'global' or 'sum', got {rule!r}")


def mean_of_means(values, shard_sizes):
    """(mean of per-shard means, global mean) of ``values`` split into consecutive shards of the
    given sizes, both in float64 from exact rational arithmetic on the float64 inputs (rounded
    once).  Their difference is Σ_j (w_j − 1/N)·Σ_{i∈j} x_i with w_j = 1/(K·n_j)."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    sizes = _shard_sizes(shard_sizes)
    if sum(sizes) != x.size:
        raise ValueError(f"shard sizes sum to {sum(sizes)}, but there are {x.size} values")
    if not np.all(np.isfinite(x)):
        raise ValueError("values must be finite")
    exact = [Fraction(v) for v in x.tolist()]
    shard_sums, start = [], 0
    for s in sizes:
        shard_sums.append(sum(exact[start:start + s], Fraction(0)))
        start += s
    mom = sum((t / s for t, s in zip(shard_sums, sizes)), Fraction(0)) / len(sizes)
    glob = sum(shard_sums, Fraction(0)) / x.size
    return float(mom), float(glob)


def distributed_sampler_indices(n: int, num_replicas: int, *, drop_last: bool = False) -> list:
    """Sample indices of each replica as ``torch.utils.data.DistributedSampler(shuffle=False)``
    assigns them: without drop_last, the index list 0..n−1 is padded *by repeating it from the
    start* to total = R·⌈n/R⌉ (so the first total − n samples count twice in an epoch); with
    drop_last, cut to R·⌈(n − R)/R⌉ = R·⌊n/R⌋ samples when n % R != 0.  Replica r gets
    indices[r::R].  (With shuffle=True the same padding applies to the permuted list.)"""
    n = _positive_int(n, "n")
    r = _positive_int(num_replicas, "num_replicas")
    if drop_last and n % r != 0:
        per = math.ceil((n - r) / r)
    else:
        per = math.ceil(n / r)
    total = per * r
    indices = list(range(n))
    if not drop_last:
        pad = total - n
        if pad <= n:
            indices += indices[:pad]
        else:
            indices += (indices * math.ceil(pad / n))[:pad]
    else:
        indices = indices[:total]
    return [np.array(indices[i:total:r], dtype=np.int64) for i in range(r)]


# ------------------------------------------------------------------------- learning-rate rules
def _positive_real(value, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return float(value)


def linear_scaling_lr(base_lr: float, batch_size: int, base_batch_size: int = 256) -> float:
    """Goyal et al. (2017), "Accurate, Large Minibatch SGD": multiply the learning rate by the
    batch's growth, η = base_lr · B / B₀.  ResNet-50: η = 0.1·kn/256 (B = kn, k workers of n)."""
    return _positive_real(base_lr, "base_lr") * _positive_int(batch_size, "batch_size") / \
        _positive_int(base_batch_size, "base_batch_size")


def sqrt_scaling_lr(base_lr: float, batch_size: int, base_batch_size: int = 256) -> float:
    """Square-root scaling (Krizhevsky 2014; Hoffer et al. 2017): η = base_lr · √(B / B₀), which
    keeps the variance of the update constant; Goyal et al. found it worse than linear for SGD."""
    return _positive_real(base_lr, "base_lr") * math.sqrt(
        _positive_int(batch_size, "batch_size") / _positive_int(base_batch_size, "base_batch_size"))


def warmup_lr(step, start_lr: float, target_lr: float, warmup_steps: int):
    """Gradual warm-up (Goyal et al. §2.2): η_t = start + (target − start)·t / T for t < T,
    then target; evaluated per iteration t (an int or an int array), T = ``warmup_steps``."""
    start = _positive_real(start_lr, "start_lr")
    target = _positive_real(target_lr, "target_lr")
    total = _positive_int(warmup_steps, "warmup_steps")
    t = np.asarray(step)
    if t.dtype.kind not in "iu":
        raise TypeError(f"step must be an int or int array, got dtype {t.dtype}")
    if np.any(t < 0):
        raise ValueError("step must be >= 0")
    lr = np.where(t < total, start + (target - start) * np.minimum(t, total) / total, target)
    return float(lr) if lr.ndim == 0 else lr


def goyal_lr(step, iters_per_epoch: int, batch_size: int, *, base_lr: float = 0.1,
             base_batch_size: int = 256, warmup_epochs: float = 5):
    """Goyal et al.'s schedule up to the first decay: η = linear_scaling_lr(base_lr, B, B₀), reached
    by a linear ramp from base_lr over ``warmup_epochs`` epochs, per iteration (8k batch:
    0.1 -> 3.2).  ``warmup_epochs=0``: no warm-up."""
    target = linear_scaling_lr(base_lr, batch_size, base_batch_size)
    ipe = _positive_int(iters_per_epoch, "iters_per_epoch")
    if warmup_epochs == 0:
        t = np.asarray(step)
        return target if t.ndim == 0 else np.full(t.shape, target)
    steps = max(1, round(_positive_real(warmup_epochs, "warmup_epochs") * ipe))
    return warmup_lr(step, base_lr, target, steps)


def sum_reduction_lr(lr: float, k: int) -> float:
    """The learning rate that makes a *mean*-reduced SGD step equal a *sum*-reduced one with ``lr``:
    k·lr (Σ g_i = k·mean g_i), which is why "summing with the original lr" is linear scaling
    in disguise.  For Adam the two differ only through ε (the update is invariant to the
    gradient's scale except for ε, which a k-times larger gradient makes k times less important)."""
    return _positive_real(lr, "lr") * _positive_int(k, "k")
