"""One hypothesis strategy per public entry point, drawing a :class:`tests.fuzz.spec.Call`.

TARGETS maps a target name to (group, strategy).  A group runs in one fuzz subprocess
(tests/fuzz/test_fuzz_api.py).  Every strategy mixes coherent input (one format, matching
shapes, valid rows) with hostile input (other dtypes, shapes, layouts, special values, aliasing
and read-only ``out=``, argument values beyond their limits).
"""
from __future__ import annotations

import dataclasses

from hypothesis import strategies as st

from . import strategies as S
from .spec import FLOAT_FORMATS, Call, Make, Ref


def _dtype_pair(draw, h):
    """(dtype of the first array, dtype of the others): equal, unless the call is hostile."""
    d = S.dtype(draw, h)
    other = d if not h or draw(st.integers(0, 3)) else S.dtype(draw, h)
    return d, other


def _shape(draw, h, clean):
    """``clean`` (a shape or a strategy), or in a hostile call sometimes any shape."""
    if h and draw(st.integers(0, 3)) == 0:
        return draw(S.shapes())
    return clean if isinstance(clean, tuple) else draw(clean)


@st.composite
def _out(draw, name, h, *, dtype, shape, alias_of=()):
    """An ``out=`` argument: None or a fresh, fitting buffer in a clean call; in a hostile one
    also a buffer of the wrong dtype, shape or layout, read-only, or an input itself."""
    if not draw(st.booleans()):
        return None
    if not h:
        return draw(S.arrays(name, dtype=dtype, shape=shape, huge=False, layouts=("c",),
                             readonly=False))
    if alias_of and draw(st.integers(0, 3)) == 0:
        return Ref(draw(st.sampled_from(alias_of)),
                   draw(st.sampled_from(["same", "reversed", "view", "readonly"])))
    if draw(st.integers(0, 2)) == 0:
        dtype = S.dtype(draw, h)
    shape = _shape(draw, h, shape)
    return draw(S.arrays(name, dtype=dtype, shape=shape, huge=False))


def _rows_shape(draw, h):
    """(N, C) or (C,), nonempty, in a clean call; any shape in a hostile one."""
    if h:
        return draw(st.one_of(S.shapes(min_dims=2, max_dims=2), S.shapes()))
    return draw(S.shapes(min_dims=1, max_dims=2, min_side=1))


def _kwargs(**kwargs):
    return {k: v for k, v in kwargs.items() if v is not None}


# ----------------------------------------------------------------------------- losses
@st.composite
def _unary_loss(draw, fn):
    """softmax, log_softmax, logsumexp: one array."""
    h = draw(S.hostile)
    d = S.dtype(draw, h)
    shape = _rows_shape(draw, h)
    x = draw(S.arrays("x", dtype=d, shape=shape))
    out_shape = shape[:-1] if fn == "logsumexp" else shape
    return Call(fn, (x,), _kwargs(
        accum=S.accum_for(draw, h, d), num_threads=S.arg(draw, h, "num_threads"),
        out=draw(_out("out", h, dtype=d, shape=out_shape, alias_of=("x",)))), outputs=("out",))


@st.composite
def _targets(draw, name, d, shape):
    if draw(st.integers(0, 3)):
        return draw(S.probability_rows(name, dtype=d, shape=shape))
    return draw(S.arrays(name, dtype=d, shape=shape))


@st.composite
def softmax_cross_entropy(draw):
    h = draw(S.hostile)
    d, d2 = _dtype_pair(draw, h)
    shape = _rows_shape(draw, h)
    x = draw(S.arrays("logits", dtype=d, shape=shape))
    if draw(st.booleans()):
        c = shape[-1] if shape else 1
        t = draw(S.arrays("targets", dtype=draw(st.sampled_from(["int64", "int32", "int8", "uint16"]
                                                               + ([d2] if h else []))),
                          shape=_shape(draw, h, shape[:-1]),
                          elements=st.integers(-2 if h else 0, c + 1 if h else max(c - 1, 0))))
    else:
        t = draw(_targets("targets", d2, _shape(draw, h, shape)))
    reduction = S.arg(draw, h, "reduction")
    return Call("softmax_cross_entropy", (x, t), _kwargs(
        reduction=reduction, return_grad=S.arg(draw, h, "bool"),
        label_smoothing=draw(st.sampled_from([0.0, 0.1])) if not draw(st.integers(0, 2))
        else S.arg(draw, h, "hyper"),
        accum=S.accum_for(draw, h, d), num_threads=S.arg(draw, h, "num_threads"),
        target_tolerance=S.arg(draw, h, "tolerance"),
        out=draw(_out("out", h, dtype=d, shape=shape[:-1] if reduction == "none" else (),
                      alias_of=("logits", "targets"))),
        grad_out=draw(_out("grad_out", h, dtype=d, shape=shape, alias_of=("logits", "targets")))),
        outputs=("out", "grad_out"))


@st.composite
def kl_divergence(draw):
    h = draw(S.hostile)
    d, d2 = _dtype_pair(draw, h)
    shape = _rows_shape(draw, h)
    t = draw(_targets("targets", d, shape))
    x = draw(S.arrays("logits", dtype=d2, shape=_shape(draw, h, shape)))
    reduction = S.arg(draw, h, "reduction")
    return Call("kl_divergence", (t, x), _kwargs(
        reduction=reduction, accum=S.accum_for(draw, h, d),
        num_threads=S.arg(draw, h, "num_threads"), target_tolerance=S.arg(draw, h, "tolerance"),
        out=draw(_out("out", h, dtype=d, shape=shape[:-1] if reduction == "none" else (),
                      alias_of=("logits", "targets")))), outputs=("out",))


@st.composite
def entropy(draw):
    h = draw(S.hostile)
    d = S.dtype(draw, h)
    shape = _rows_shape(draw, h)
    p = draw(_targets("probs", d, shape))
    reduction = S.arg(draw, h, "reduction")
    return Call("entropy", (p,), _kwargs(
        reduction=reduction, accum=S.accum_for(draw, h, d),
        num_threads=S.arg(draw, h, "num_threads"), probs_tolerance=S.arg(draw, h, "tolerance"),
        out=draw(_out("out", h, dtype=d, shape=shape[:-1] if reduction == "none" else (),
                      alias_of=("probs",)))), outputs=("out",))


# ----------------------------------------------------------------------------- linalg
@st.composite
def matmul(draw):
    h = draw(S.hostile)
    d, d2 = _dtype_pair(draw, h)
    m, k, n = (draw(st.integers(0, 6)) for _ in range(3))
    a = draw(S.arrays("a", dtype=d, shape=_shape(draw, h, (m, k))))
    b = draw(S.arrays("b", dtype=d2, shape=_shape(draw, h, (k, n))))
    return Call("linalg.matmul", (a, b), _kwargs(
        accum=S.accum_for(draw, h, d), num_threads=S.arg(draw, h, "num_threads"),
        out=draw(_out("out", h, dtype=d, shape=(m, n), alias_of=("a", "b")))), outputs=("out",))


# ----------------------------------------------------------------------------- stats
def _reduced_shape(shape, axis, keepdims):
    if axis is None:
        return tuple(1 for _ in shape) if keepdims else ()
    ax = axis % len(shape) if shape else 0
    return tuple((1 if i == ax else n) for i, n in enumerate(shape) if keepdims or i != ax)


@st.composite
def stats_reduction(draw, fn):
    h = draw(S.hostile)
    d = S.dtype(draw, h)
    shape = draw(S.shapes())
    x = draw(S.arrays("x", dtype=d, shape=shape))
    axis = draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1))) if shape and not h \
        else S.arg(draw, h, "axis")
    kwargs = dict(axis=axis, accum=S.accum_for(draw, h, d),
                  num_threads=S.arg(draw, h, "num_threads"))
    if fn != "moment_parts":
        kwargs["keepdims"] = S.arg(draw, h, "bool")
    if fn in ("sum", "mean"):
        kwargs["order"] = draw(st.sampled_from(["pairwise", "sequential", "kahan"] +
                                               (["fast", None] if h else [])))
    else:
        kwargs["method"] = draw(st.sampled_from(["two-pass", "one-pass", "welford"] +
                                                (["naive"] if h else [])))
        if fn != "moment_parts":
            kwargs["ddof"] = draw(st.integers(0, 1)) if not h else draw(st.one_of(
                st.integers(-1, 3), S.HOSTILE["hyper"]))
    if fn in ("sum", "mean", "var") and isinstance(axis, (int, type(None))) \
            and not isinstance(axis, bool) and isinstance(kwargs["keepdims"], bool):
        try:
            oshape = _reduced_shape(shape, axis, kwargs["keepdims"])
        except ZeroDivisionError:
            oshape = ()
        kwargs["out"] = draw(_out("out", h, dtype=d, shape=oshape, alias_of=("x",)))
    return Call(f"stats.{fn}", (x,), _kwargs(**kwargs), outputs=("out",))


@st.composite
def merge_moments(draw):
    h = draw(S.hostile)
    d = S.dtype(draw, h)
    shape = draw(S.shapes(max_dims=2, max_side=3))
    parts = []
    for i in range(draw(st.integers(0 if h else 1, 3))):
        parts.append((S.arg(draw, h, "int"),
                      draw(S.arrays(f"mean{i}", dtype=d, shape=shape, huge=False)),
                      draw(S.arrays(f"m2_{i}", dtype=d, shape=_shape(draw, h, shape), huge=False))))
    return Call("stats.merge_moments", (parts,), _kwargs(accum=S.accum_for(draw, h, d)))


# ----------------------------------------------------------------------------- batchnorm
@st.composite
def _running_stats(draw, h, c):
    return Make("running_stats", (
        c if not h or draw(st.integers(0, 2)) else S.arg(draw, h, "size"),
        draw(st.sampled_from(["torch", "keras", "flax", "cudnn"] + (["caffe"] if h else []))),
        "default" if draw(st.booleans()) else S.arg(draw, h, "hyper"),
        draw(st.sampled_from(FLOAT_FORMATS)),
        S.arg(draw, h, "accum")))


def _channels(shape, axis):
    try:
        return shape[axis] if isinstance(axis, int) else 1
    except IndexError:
        return 1


@st.composite
def batch_norm(draw):
    h = draw(S.hostile)
    d, d2 = _dtype_pair(draw, h)
    shape = draw(S.shapes(min_dims=2, max_dims=4, max_side=4)) if not h else draw(S.shapes())
    axis = 1 if draw(st.integers(0, 2)) else S.arg(draw, h, "axis")
    c = _channels(shape, axis)
    x = draw(S.arrays("x", dtype=d, shape=shape))
    args = [x]
    if draw(st.booleans()):
        args.append(draw(S.arrays("weight", dtype=d2, shape=_shape(draw, h, (c,)), huge=False)))
        args.append(draw(S.arrays("bias", dtype=d2, shape=(c,), huge=False)))
    return Call("batchnorm.batch_norm", tuple(args), _kwargs(
        training=S.arg(draw, h, "bool"), eps=S.arg(draw, h, "hyper"), channel_axis=axis,
        method=draw(st.sampled_from(["two-pass", "one-pass", "welford"] + (["x"] if h else []))),
        accum=S.accum_for(draw, h, d), num_threads=S.arg(draw, h, "num_threads"),
        return_saved=S.arg(draw, h, "bool"),
        running=draw(_running_stats(h, c)) if draw(st.booleans()) else None,
        out=draw(_out("out", h, dtype=d, shape=shape, alias_of=("x",)))), outputs=("out",))


@st.composite
def batch_norm_backward(draw):
    h = draw(S.hostile)
    d, d2 = _dtype_pair(draw, h)
    shape = draw(S.shapes(min_dims=2, max_dims=4, max_side=4)) if not h else draw(S.shapes())
    axis = 1 if draw(st.integers(0, 2)) else S.arg(draw, h, "axis")
    c = _channels(shape, axis)
    args = (draw(S.arrays("grad_out", dtype=d, shape=shape)),
            draw(S.arrays("x", dtype=d2, shape=_shape(draw, h, shape))))
    if draw(st.booleans()):
        args += (draw(S.arrays("weight", dtype=d2, shape=(c,), huge=False)),)
    return Call("batchnorm.batch_norm_backward", args, _kwargs(
        mean=draw(S.arrays("mean", dtype=d2, shape=(c,), huge=False)),
        invstd=draw(S.arrays("invstd", dtype=d2, shape=_shape(draw, h, (c,)), huge=False)),
        training=S.arg(draw, h, "bool"), channel_axis=axis, accum=S.accum_for(draw, h, d),
        num_threads=S.arg(draw, h, "num_threads")))


@st.composite
def running_stats_update(draw):
    h = draw(S.hostile)
    c = draw(st.integers(1, 4))
    d, d2 = _dtype_pair(draw, h)
    return Call("scenario.running_stats_update", (
        draw(_running_stats(h, c)),
        draw(S.arrays("batch_mean", dtype=d, shape=_shape(draw, h, (c,)), huge=False)),
        draw(S.arrays("batch_var", dtype=d2, shape=(c,), huge=False)),
        S.arg(draw, h, "int"), draw(st.integers(1, 3))))


@st.composite
def population_stats(draw):
    h = draw(S.hostile)
    shape = draw(S.shapes(min_dims=1, max_side=4))
    x = draw(S.arrays("x", dtype=S.dtype(draw, h), shape=shape, huge=False))
    return Call("batchnorm.population_stats", (x,), dict(
        axis=0 if not h else S.arg(draw, h, "axis"),
        ddof=draw(st.integers(0, 1)) if not h else draw(st.one_of(st.integers(-1, 3),
                                                                   S.HOSTILE["hyper"])),
        fmt=draw(st.sampled_from(FLOAT_FORMATS)) if not h else S.arg(draw, h, "accum")))


@st.composite
def inference_stats(draw):
    h = draw(S.hostile)
    d, d2 = _dtype_pair(draw, h)
    shape = draw(S.shapes(min_dims=2, max_dims=2, max_side=4))
    return Call("batchnorm.inference_stats", (
        draw(S.arrays("batch_means", dtype=d, shape=shape, huge=False)),
        draw(S.arrays("batch_vars", dtype=d2, shape=_shape(draw, h, shape), huge=False)),
        draw(st.integers(2, 64)) if not h else S.arg(draw, h, "int")),
        dict(fmt=draw(st.sampled_from(FLOAT_FORMATS)) if not h else S.arg(draw, h, "accum")))


# ----------------------------------------------------------------------------- parallel
@st.composite
def allreduce(draw):
    h = draw(S.hostile)
    d = S.dtype(draw, h)
    shape = draw(S.shapes(min_dims=2, max_dims=3)) if not h else draw(S.shapes())
    g = draw(S.arrays("grads", dtype=d, shape=shape))
    bad = ["avg", None, "butterfly", "up", "both", "x"] if h else []

    def choice(options):
        return draw(st.sampled_from(options + (bad if draw(st.integers(0, 3)) == 0 else [])))

    return Call("parallel.allreduce", (g,), _kwargs(
        op=choice(["mean", "sum"]),
        algorithm=choice(["ring", "tree", "halving_doubling", "pairwise", "sequential"]),
        direction=choice(["ascending", "descending"]),
        chunk_size=draw(st.one_of(st.none(), st.just("gloo"), S.CLEAN["int"]))
        if not h else S.arg(draw, h, "int"),
        divide=choice([None, "pre", "post", "split"]),
        factor=None if draw(st.integers(0, 3)) else S.arg(draw, h, "hyper"),
        scaling=choice(["div", "mul"]),
        wire_format=None if draw(st.booleans()) else S.arg(draw, h, "accum"),
        accum=S.accum_for(draw, h, d), num_threads=S.arg(draw, h, "num_threads"),
        out=draw(_out("out", h, dtype=d, shape=shape, alias_of=("grads",)))), outputs=("out",))


# ----------------------------------------------------------------------------- rl
def _rl_common(draw, h, d, shape, names):
    reduction = S.arg(draw, h, "reduction")
    return dict(reduction=reduction, accum=S.accum_for(draw, h, d),
                num_threads=S.arg(draw, h, "num_threads"),
                out=draw(_out("out", h, dtype=d, shape=shape if reduction == "none" else (),
                              alias_of=names)))


@st.composite
def approx_kl(draw):
    h = draw(S.hostile)
    d = S.dtype(draw, h)
    shape = draw(S.shapes())
    kwargs = _rl_common(draw, h, d, shape, ("log_ratio",))
    kwargs.update(estimator=draw(st.sampled_from(["k1", "k2", "k3"] + (["k4"] if h else []))),
                  method=draw(st.sampled_from(["expm1", "naive"] + (["exact"] if h else []))))
    return Call("rl.approx_kl", (draw(S.arrays("log_ratio", dtype=d, shape=shape)),),
                _kwargs(**kwargs), outputs=("out",))


@st.composite
def gaussian_entropy(draw):
    h = draw(S.hostile)
    d = S.dtype(draw, h)
    shape = draw(S.shapes())
    kwargs = {}
    if draw(st.integers(0, 3)) == 0:
        kwargs["std"] = draw(S.arrays("std", dtype=d, shape=shape))
        args = () if not h or draw(st.booleans()) else (draw(S.arrays("log_std", dtype=d,
                                                                      shape=shape)),)
    else:
        args = (draw(S.arrays("log_std", dtype=d, shape=shape)),)
    names = tuple(a.name for a in args + tuple(kwargs.values()))
    kwargs.update(_rl_common(draw, h, d, shape[:-1], names))
    return Call("rl.gaussian_entropy", args, _kwargs(**kwargs), outputs=("out",))


@st.composite
def gaussian_kl(draw):
    h = draw(S.hostile)
    d, d2 = _dtype_pair(draw, h)
    shape = draw(S.shapes(min_dims=1))
    names = ("mean_p", "log_std_p", "mean_q", "log_std_q")
    arrs = tuple(draw(S.arrays(n, dtype=d if i == 0 else d2,
                               shape=shape if draw(st.integers(0, 3)) else shape[-1:]))
                 for i, n in enumerate(names))
    return Call("rl.gaussian_kl", arrs, _kwargs(**_rl_common(draw, h, d, shape[:-1], names)),
                outputs=("out",))


@st.composite
def squashed_gaussian_entropy(draw):
    h = draw(S.hostile)
    d, d2 = _dtype_pair(draw, h)
    shape = draw(S.shapes(min_dims=1, max_side=3))
    return Call("rl.squashed_gaussian_entropy", (
        draw(S.arrays("mean", dtype=d, shape=shape, huge=False)),
        draw(S.arrays("log_std", dtype=d2, shape=_shape(draw, h, shape), huge=False))), dict(
        n_samples=draw(st.integers(1, 64)) if not h else S.arg(draw, h, "size"),
        seed=draw(st.integers(0, 3)) if not h else S.arg(draw, h, "int"),
        eps=0.0 if not draw(st.integers(0, 2)) else S.arg(draw, h, "hyper")))


@st.composite
def categorical(draw, fn):
    h = draw(S.hostile)
    d, d2 = _dtype_pair(draw, h)
    shape = _rows_shape(draw, h)
    args = (draw(S.arrays("logits_p", dtype=d, shape=shape)),)
    if fn == "categorical_kl":
        args += (draw(S.arrays("logits_q", dtype=d2, shape=_shape(draw, h, shape))),)
    return Call(f"rl.{fn}", args, _kwargs(reduction=S.arg(draw, h, "reduction"),
                                          accum=S.accum_for(draw, h, d),
                                          num_threads=S.arg(draw, h, "num_threads")))


@st.composite
def explained_variance(draw):
    h = draw(S.hostile)
    d, d2 = _dtype_pair(draw, h)
    shape = draw(S.shapes(min_dims=1, max_dims=1)) if not h else draw(S.shapes())
    return Call("rl.explained_variance", (
        draw(S.arrays("y_pred", dtype=d, shape=shape)),
        draw(S.arrays("y_true", dtype=d2, shape=_shape(draw, h, shape)))), dict(
        convention=draw(st.sampled_from(["sb3", "cleanrl", "rllib"] + (["keras"] if h else []))),
        accum=S.accum_for(draw, h, d)))


@st.composite
def value_loss(draw):
    h = draw(S.hostile)
    d, d2 = _dtype_pair(draw, h)
    shape = draw(S.shapes(max_dims=2))
    reduction = S.arg(draw, h, "reduction")
    return Call("rl.value_loss", (
        draw(S.arrays("values", dtype=d, shape=shape)),
        draw(S.arrays("targets", dtype=d2, shape=_shape(draw, h, shape)))), _kwargs(
        convention=draw(st.sampled_from(["sb3", "rllib"] + (["cleanrl"] if h else []))),
        vf_clip_param=draw(st.sampled_from([10.0, 0.2, 1.0])) if not draw(st.integers(0, 2))
        else S.arg(draw, h, "hyper"),
        reduction=reduction, return_grad=S.arg(draw, h, "bool"), accum=S.accum_for(draw, h, d),
        num_threads=S.arg(draw, h, "num_threads"),
        out=draw(_out("out", h, dtype=d, shape=shape if reduction == "none" else (),
                      alias_of=("values", "targets"))),
        grad_out=draw(_out("grad_out", h, dtype=d, shape=shape,
                           alias_of=("values", "targets")))), outputs=("out", "grad_out"))


# ----------------------------------------------------------------------------- formats, errors
@st.composite
def format_round(draw):
    fmt = draw(st.sampled_from(FLOAT_FORMATS))
    kind = draw(st.integers(0, 5))
    if kind == 0:
        x = draw(st.one_of(S.values, st.integers(-10 ** 400, 10 ** 400),
                           st.fractions(), st.sampled_from([None, "1.0", 1j, True, [1.0, 2.0]])))
    else:
        x = draw(S.arrays("x", dtype=draw(st.one_of(st.sampled_from(["longdouble", "object",
                                                                    ">f8", ">f2"]), S.dtypes()))))
    return Call(f"{fmt}.round", (x,))


@st.composite
def errors_metric(draw, fn):
    h = draw(S.hostile)
    d = S.dtype(draw, h)
    shape = draw(S.shapes(max_side=4))
    computed = draw(S.arrays("computed", dtype=d, shape=shape, huge=False))
    exact = draw(S.arrays("exact", dtype=draw(st.sampled_from(["float64", "longdouble", "object",
                                                               d])),
                          shape=_shape(draw, h, shape), huge=False))
    args = (computed, exact)
    if fn != "relative_error":
        args += (draw(st.sampled_from(FLOAT_FORMATS)) if not h else S.arg(draw, h, "accum"),)
    return Call(f"errors.{fn}", args)


# ----------------------------------------------------------------------------- optimizers
OPTIMIZERS = {
    "SGD": ("lr", "momentum", "dampening", "weight_decay"),
    "Adam": ("lr", "eps", "weight_decay"),
    "AdamW": ("lr", "eps", "weight_decay"),
    "Adagrad": ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"),
    "Adadelta": ("lr", "rho", "eps", "weight_decay"),
    "RMSprop": ("lr", "alpha", "eps", "weight_decay", "momentum"),
}
FLAGS = {"SGD": ("nesterov", "maximize"), "Adam": ("amsgrad", "maximize"),
         "AdamW": ("amsgrad", "maximize"), "Adagrad": ("maximize",), "Adadelta": ("maximize",),
         "RMSprop": ("centered", "maximize")}


@st.composite
def optimizer_steps(draw, cls):
    """Construct ``cls`` and step one parameter with up to three gradients; in a hostile call
    hyperparameters, flags and settings beyond their limits, gradients of another dtype or
    shape, or the parameter itself (or a view of it) as its gradient."""
    h = draw(S.hostile)
    ctor = {}
    for name in OPTIMIZERS[cls]:
        if draw(st.integers(0, 2)) == 0:
            ctor[name] = S.arg(draw, h, "hyper")
    if cls in ("Adam", "AdamW") and draw(st.booleans()):
        ctor["betas"] = draw(st.tuples(S.CLEAN["hyper"], S.CLEAN["hyper"]) if not h else st.one_of(
            st.tuples(S.HOSTILE["hyper"], S.CLEAN["hyper"]),
            st.sampled_from([(0.9,), 0.9, None, (0.9, 0.999, 1)])))
    for flag in FLAGS[cls]:
        if draw(st.integers(0, 3)) == 0:
            ctor[flag] = S.arg(draw, h, "bool")
    if draw(st.integers(0, 3)) == 0:
        ctor["convention"] = draw(st.sampled_from(["torch", "keras", "optax"]
                                                  + (["jax"] if h else [])))
    if draw(st.integers(0, 2)) == 0:
        ctor["state_format"] = S.arg(draw, h, "accum")
    if draw(st.integers(0, 3)) == 0:
        ctor["master_weights"] = S.arg(draw, h, "bool")
    if draw(st.integers(0, 3)) == 0:
        ctor["update"] = draw(st.sampled_from(["nearest", "kahan", "stochastic"]
                                              + (["round"] if h else [])))
    if draw(st.integers(0, 4)) == 0:
        ctor["seed"] = draw(st.integers(0, 2 ** 64 - 1)) if not h else draw(
            st.sampled_from([-1, 2 ** 64, 1.0, None, "1"]))
    if draw(st.integers(0, 2)) == 0:
        ctor["num_threads"] = S.arg(draw, h, "num_threads")
    d, d2 = _dtype_pair(draw, h)
    if draw(st.integers(0, 7)) == 0:
        # big enough for the threaded path: finite values, gradients broadcast (cheap to draw)
        shape = ((1 << 16) + 3,)
        param = draw(S.arrays("param", dtype=d, shape=shape, elements=S.finite_values,
                              layouts=("broadcast",), huge=False))
        param = dataclasses.replace(param, layout="c")    # one value filling it, writeable
        grads = [draw(S.arrays(f"grad{i}", dtype=d, shape=shape, layouts=("broadcast",),
                               huge=False))
                 for i in range(2)]
    else:
        shape = draw(S.shapes(min_dims=1))
        param = draw(S.arrays("param", dtype=d, shape=shape, huge=False,
                              layouts=("c",) if not h else S.LAYOUTS,
                              readonly=False if not h else None))
        grads = [draw(S.arrays(f"grad{i}", dtype=d2 if i else d, shape=_shape(draw, h, shape)))
                 for i in range(draw(st.integers(1, 3)))]
    if h:
        grads = [g if draw(st.integers(0, 4)) else draw(st.sampled_from(
            [Ref("param", "same"), Ref("param", "reversed"), Ref("param", "readonly")]))
            for g in grads]
    key = draw(st.sampled_from([None, None, "w"] + ([0, ("a", 1), [1]] if h else [])))
    return Call("scenario.optimizer_steps", (cls, ctor, param, grads, key), outputs=("param",))


# ----------------------------------------------------------------------------- the table
TARGETS = {
    "softmax": ("losses", _unary_loss("softmax")),
    "log_softmax": ("losses", _unary_loss("log_softmax")),
    "logsumexp": ("losses", _unary_loss("logsumexp")),
    "softmax_cross_entropy": ("losses", softmax_cross_entropy()),
    "kl_divergence": ("losses", kl_divergence()),
    "entropy": ("losses", entropy()),
    "matmul": ("linalg", matmul()),
    **{f"optim.{cls}": ("optim", optimizer_steps(cls)) for cls in OPTIMIZERS},
    **{f"stats.{fn}": ("stats", stats_reduction(fn))
       for fn in ("sum", "mean", "var", "moments", "moment_parts")},
    "stats.merge_moments": ("stats", merge_moments()),
    "batchnorm.batch_norm": ("batchnorm", batch_norm()),
    "batchnorm.batch_norm_backward": ("batchnorm", batch_norm_backward()),
    "batchnorm.RunningStats.update": ("batchnorm", running_stats_update()),
    "batchnorm.population_stats": ("batchnorm", population_stats()),
    "batchnorm.inference_stats": ("batchnorm", inference_stats()),
    "parallel.allreduce": ("parallel", allreduce()),
    "rl.approx_kl": ("rl", approx_kl()),
    "rl.gaussian_entropy": ("rl", gaussian_entropy()),
    "rl.gaussian_kl": ("rl", gaussian_kl()),
    "rl.squashed_gaussian_entropy": ("rl", squashed_gaussian_entropy()),
    "rl.categorical_entropy": ("rl", categorical("categorical_entropy")),
    "rl.categorical_kl": ("rl", categorical("categorical_kl")),
    "rl.explained_variance": ("rl", explained_variance()),
    "rl.value_loss": ("rl", value_loss()),
    "Format.round": ("formats", format_round()),
    **{f"errors.{fn}": ("formats", errors_metric(fn))
       for fn in ("ulp_error", "relative_error", "bits_error", "compare")},
}
GROUPS = sorted({group for group, _ in TARGETS.values()})
