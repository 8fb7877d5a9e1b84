"""precision.losses rejects bad input with a clear ValueError/TypeError, before writing anything.

Every case below passes sentinel-filled ``out``/``grad_out`` buffers where the call accepts
them and checks they are untouched afterwards.
"""
import numpy as np
import pytest

import precision as pr
from precision import losses

F16, BF16, F32, F64 = (f.dtype for f in pr.FORMATS)
SENTINEL = 7.0


def logits(n=3, c=4, dtype=F32):
    return pr.format(dtype).round(np.linspace(-1, 1, n * c).reshape(n, c))


def probs(n=3, c=4, dtype=F32):
    return pr.format(dtype).round(np.full((n, c), 1.0 / c))


def buffers(shape_loss=(), shape_grad=(3, 4), dtype=F32):
    return np.full(shape_loss, SENTINEL, dtype=dtype), np.full(shape_grad, SENTINEL, dtype=dtype)


def ce(x=None, t=None, **kw):
    """softmax_cross_entropy with untouched-checked sentinel buffers unless given."""
    x = logits() if x is None else x
    t = probs(*x.shape, dtype=x.dtype) if t is None else t
    return losses.softmax_cross_entropy(x, t, **kw)


BAD_CE = {
    # logits
    "int logits": (lambda: ce(np.ones((3, 4), dtype=np.int32), np.zeros(3, dtype=np.int64)),
                   TypeError, "logits must be float16, bfloat16, float32 or float64"),
    "bool logits": (lambda: ce(np.ones((3, 4), dtype=bool), np.zeros(3, dtype=np.int64)),
                    TypeError, "boolean"),
    "complex logits": (lambda: ce(np.ones((3, 4), dtype=complex), np.zeros(3, dtype=np.int64)),
                       TypeError, "complex128"),
    "object logits": (lambda: ce(np.ones((3, 4), dtype=object), np.zeros(3, dtype=np.int64)),
                      TypeError, "object"),
    "3-D logits": (lambda: ce(np.ones((2, 3, 4), F32), np.ones((2, 3, 4), F32) / 4), ValueError,
                   r"shape \(N, C\) or \(C,\)"),
    "0-D logits": (lambda: ce(np.float32(1.0), np.float32(1.0)), ValueError, r"shape \(N, C\)"),
    "empty batch": (lambda: ce(np.ones((0, 4), F32), np.ones((0, 4), F32)), ValueError,
                    "empty batch"),
    "no classes": (lambda: ce(np.ones((3, 0), F32), np.ones((3, 0), F32)), ValueError,
                   "no classes"),
    # soft targets
    "mixed dtypes": (lambda: ce(logits(), probs(dtype=F64)), TypeError, "share one storage"),
    "float16 targets for bfloat16 logits": (lambda: ce(logits(dtype=BF16), probs(dtype=F16)),
                                             TypeError, "share one storage"),
    "target shape": (lambda: ce(logits(), probs(3, 5)), ValueError, "logits' shape"),
    "NaN target": (lambda: ce(t=np.array([[0.5, np.nan, 0.25, 0.25]] * 3, F32)), ValueError,
                   "row 0 contains NaN or infinity"),
    "inf target": (lambda: ce(t=np.array([[0.25] * 4, [0.25] * 4, [np.inf, 0, 0, 0]], F32)),
                   ValueError, "row 2 contains NaN or infinity"),
    "negative target": (lambda: ce(t=np.array([[0.5, -0.25, 0.5, 0.25]] * 3, F32)),
                        ValueError, r"negative value \(-0.25\)"),
    "row not summing to 1": (lambda: ce(t=np.array([[0.5, 0.25, 0.125, 0.0]] * 3, F32)),
                             ValueError, "sums to 0.875"),
    "all-zero row": (lambda: ce(t=np.zeros((3, 4), F32)), ValueError, "sums to 0.0"),
    # class indices
    "index too large": (lambda: ce(t=np.array([0, 4, 1])), ValueError,
                        r"class index 4 is out of range for 4 classes"),
    "negative index": (lambda: ce(t=np.array([0, -1, 1])), ValueError, "class index -1"),
    "float indices": (lambda: ce(t=np.array([0.0, 1.0, 2.0], F32)), ValueError,
                      "logits' shape"),
    "float64 indices": (lambda: ce(t=np.array([0.0, 1.0, 2.0])), TypeError,
                        "share one storage"),
    "bool indices": (lambda: ce(t=np.array([True, False, True])), TypeError,
                     "must be integers"),
    "string indices": (lambda: ce(t=np.array(["a", "b", "c"])), TypeError, "must be integers"),
    "index count": (lambda: ce(t=np.array([0, 1])), ValueError, r"shape \(3,\)"),
    "2-D indices": (lambda: ce(t=np.zeros((3, 4), dtype=np.int64)), ValueError,
                    r"shape \(3,\)"),
    "2-D index for one row": (lambda: ce(logits()[0], np.array([[1]])), ValueError,
                              r"shape \(1,\)"),
    # options
    "reduction": (lambda: ce(reduction="avg"), ValueError, "reduction must be one of"),
    "batchmean for CE": (lambda: ce(reduction="batchmean"), ValueError, "reduction"),
    "negative smoothing": (lambda: ce(label_smoothing=-0.1), ValueError, r"in \[0, 1\]"),
    "smoothing above 1": (lambda: ce(label_smoothing=1.5), ValueError, r"in \[0, 1\]"),
    "NaN smoothing": (lambda: ce(label_smoothing=float("nan")), ValueError, r"in \[0, 1\]"),
    "string smoothing": (lambda: ce(label_smoothing="0.1"), TypeError, "real number"),
    "bool smoothing": (lambda: ce(label_smoothing=True), TypeError, "real number"),
    "narrower accum": (lambda: ce(accum="float16"), ValueError, "not at least as wide"),
    "bfloat16 accum for float16": (lambda: ce(logits(dtype=F16), probs(dtype=F16),
                                              accum="bfloat16"), ValueError,
                                   "not at least as wide"),
    "float64 has no wider": (lambda: ce(logits(dtype=F64), probs(dtype=F64), accum="float32"),
                             ValueError, "float64 has no wider"),
    "unknown accum": (lambda: ce(accum="float8"), ValueError, "unknown format"),
    "accum of a wrong type": (lambda: ce(accum=3.5), TypeError, "accum"),
    "zero threads": (lambda: ce(num_threads=0), ValueError, "num_threads must be >= 1"),
    "too many threads": (lambda: ce(num_threads=65536), ValueError, "<= 256"),
    "2**31 threads": (lambda: ce(num_threads=2 ** 31), ValueError, "<= 256"),
    "smoothing beyond float64": (lambda: ce(label_smoothing=10 ** 400), ValueError,
                                 "beyond float64"),
    "negative target_tolerance": (lambda: ce(target_tolerance=-1e-3), ValueError,
                                  "target_tolerance must be >= 0"),
    "NaN target_tolerance": (lambda: ce(target_tolerance=float("nan")), ValueError,
                             "target_tolerance must be >= 0"),
    "target_tolerance a string": (lambda: ce(target_tolerance="1e-3"), TypeError,
                                  "target_tolerance must be a real number"),
    "fractional threads": (lambda: ce(num_threads=1.5), TypeError, "num_threads"),
    "bool threads": (lambda: ce(num_threads=True), TypeError, "num_threads"),
    "return_grad not a bool": (lambda: ce(return_grad="yes"), TypeError, "return_grad"),
}


@pytest.mark.parametrize("name", sorted(BAD_CE))
def test_bad_cross_entropy_arguments(name):
    call, error, match = BAD_CE[name]
    with pytest.raises(error, match=match):
        call()


def read_only(shape):
    a = np.full(shape, SENTINEL, F32)
    a.setflags(write=False)
    return a


def out_cases(x, t):
    """name -> (keyword arguments, error, match): out/grad_out problems for CE of x, t."""
    strided = np.full((3, 8), SENTINEL, F32)[:, ::2]
    return {
        "out dtype": (dict(out=np.full((), SENTINEL, F64)), TypeError, "storage dtype float32"),
        "out shape for mean": (dict(out=np.full(3, SENTINEL, F32)), ValueError,
                               r"shape \(\)"),
        "out shape for none": (dict(out=np.full((), SENTINEL, F32), reduction="none"),
                               ValueError, r"shape \(3,\)"),
        "out read-only": (dict(out=read_only(())), ValueError, "read-only"),
        "out not an array": (dict(out=[0.0]), TypeError, "numpy array"),
        "out over logits": (dict(out=x[0, :3], reduction="none"), ValueError,
                            "out overlaps logits"),
        "out over targets": (dict(out=t[1, :3], reduction="none"), ValueError,
                             "out overlaps targets"),
        "grad_out dtype": (dict(return_grad=True, grad_out=np.full((3, 4), SENTINEL, F16)),
                           TypeError, "grad_out must have the storage dtype"),
        "grad_out shape": (dict(return_grad=True, grad_out=np.full((4, 3), SENTINEL, F32)),
                           ValueError, r"grad_out must have shape \(3, 4\)"),
        "grad_out read-only": (dict(return_grad=True, grad_out=read_only((3, 4))), ValueError,
                               "read-only"),
        "grad_out strided": (dict(return_grad=True, grad_out=strided), ValueError,
                             "C-contiguous"),
        "grad_out is the logits": (dict(return_grad=True, grad_out=x), ValueError,
                                   "overlaps logits"),
        "grad_out without return_grad": (dict(grad_out=np.full((3, 4), SENTINEL, F32)),
                                         ValueError, "return_grad is False"),
    }


@pytest.mark.parametrize("name", sorted(out_cases(logits(), probs())))
def test_bad_out_buffers(name):
    x, t = logits(), probs()
    kwargs, error, match = out_cases(x, t)[name]
    before_x, before_t = x.copy(), t.copy()
    with pytest.raises(error, match=match):
        losses.softmax_cross_entropy(x, t, **kwargs)
    assert np.array_equal(x, before_x) and np.array_equal(t, before_t)
    for value in kwargs.values():
        if isinstance(value, np.ndarray) and value is not x and value is not t \
                and not np.shares_memory(value, x) and not np.shares_memory(value, t):
            assert (value == SENTINEL).all()


def test_out_and_grad_out_overlapping_each_other():
    block = np.full(12, SENTINEL, F32)
    with pytest.raises(ValueError, match="out overlaps grad_out"):
        losses.softmax_cross_entropy(logits(), probs(), return_grad=True, reduction="mean",
                                     out=block[11:].reshape(()), grad_out=block.reshape(3, 4))
    with pytest.raises(ValueError, match="overlaps grad_out"):
        losses.softmax_cross_entropy(logits(), probs(), return_grad=True, reduction="none",
                                     out=block[9:12], grad_out=block[:12].reshape(3, 4))
    assert (block == SENTINEL).all()


@pytest.mark.parametrize("name", ["NaN target", "negative target", "row not summing to 1",
                                  "index too large", "reduction", "smoothing above 1",
                                  "narrower accum", "zero threads", "too many threads",
                                  "negative target_tolerance"])
def test_nothing_is_written_when_an_argument_is_bad(name):
    """The same bad calls with valid out/grad_out buffers leave both untouched."""
    call, error, _ = BAD_CE[name]
    out, grad_out = buffers()
    original = losses.softmax_cross_entropy

    def with_buffers(x, t, **kw):
        kw.setdefault("return_grad", True)
        return original(x, t, out=out, grad_out=grad_out, **kw)

    losses.softmax_cross_entropy = with_buffers
    try:
        with pytest.raises(error):
            call()
    finally:
        losses.softmax_cross_entropy = original
    assert (out == SENTINEL).all() and (grad_out == SENTINEL).all()


BAD_OTHERS = {
    "kl shapes": (lambda: losses.kl_divergence(probs(3, 4), logits(3, 5)), ValueError,
                  "same shape"),
    "kl dtypes": (lambda: losses.kl_divergence(probs(dtype=F64), logits()), TypeError,
                  "share one storage"),
    "kl targets not probabilities": (lambda: losses.kl_divergence(probs() * 2, logits()),
                                     ValueError, "sums to 2"),
    "kl negative target": (lambda: losses.kl_divergence(-probs(), logits()), ValueError,
                           "negative"),
    "kl reduction": (lambda: losses.kl_divergence(probs(), logits(), reduction="max"),
                     ValueError, "reduction"),
    "kl int logits": (lambda: losses.kl_divergence(probs(), np.ones((3, 4), int)), TypeError,
                      "logits must be"),
    "entropy NaN": (lambda: losses.entropy(np.array([[np.nan, 1.0]])), ValueError,
                    "NaN or infinity"),
    "entropy not normalised": (lambda: losses.entropy(np.array([[0.5, 0.6]])), ValueError,
                               "sums to"),
    "entropy bool": (lambda: losses.entropy(np.array([[True, False]])), TypeError, "boolean"),
    "entropy scalar": (lambda: losses.entropy(np.float64(1.0)), ValueError, "dimension"),
    "entropy empty": (lambda: losses.entropy(np.ones((0, 3))), ValueError, "empty batch"),
    "softmax ints": (lambda: losses.softmax(np.arange(4)), TypeError, "x must be"),
    "softmax scalar": (lambda: losses.softmax(np.float32(1)), ValueError, "dimension"),
    "softmax no classes": (lambda: losses.softmax(np.ones((2, 0), F32)), ValueError,
                           "no classes"),
    "log_softmax out dtype": (lambda: losses.log_softmax(logits(), out=np.empty((3, 4), F64)),
                              TypeError, "dtype"),
    "softmax out over x": (lambda: (lambda x: losses.softmax(x, out=x))(logits()), ValueError,
                           "overlaps x"),
    "logsumexp out shape": (lambda: losses.logsumexp(logits(), out=np.empty(4, F32)),
                            ValueError, r"shape \(3,\)"),
    "logsumexp accum": (lambda: losses.logsumexp(logits(dtype=BF16), accum="float16"),
                        ValueError, "not at least as wide"),
    "entropy out read-only": (lambda: losses.entropy(probs(), out=read_only(())), ValueError,
                              "read-only"),
}


@pytest.mark.parametrize("name", sorted(BAD_OTHERS))
def test_bad_arguments_of_the_other_functions(name):
    call, error, match = BAD_OTHERS[name]
    with pytest.raises(error, match=match):
        call()


def test_infinite_and_nan_logits_are_not_errors():
    with np.errstate(all="ignore"):
        x = np.array([[np.inf, 0.0], [np.nan, 1.0], [-np.inf, -np.inf]])
        losses.softmax_cross_entropy(x, np.array([0, 1, 0]), return_grad=True)
        losses.softmax(x)
        losses.kl_divergence(np.full((3, 2), 0.5), x)


@pytest.mark.parametrize("dtype", [F16, BF16, F32, F64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("given_out", [False, True], ids=["own buffers", "out given"])
def test_target_checks_agree_inside_and_before_the_kernel(dtype, given_out):
    """Without out/grad_out the kernel checks the targets itself (no separate pass); with them
    a pass runs first.  The same rows are rejected with the same message either way."""
    fmt = pr.format(dtype)
    x = logits(3, 4, dtype)
    good = np.full((3, 4), 0.25)
    for row, bad_row, match in ((1, [0.5, np.nan, 0.25, 0.25], "row 1 contains NaN"),
                                (2, [0.5, -0.25, 0.5, 0.25], r"row 2 has a negative value"),
                                (0, [0.5, 0.25, 0.125, 0.0], "row 0 sums to 0.875")):
        t = good.copy()
        t[row] = bad_row
        with np.errstate(invalid="ignore"):
            t = fmt.round(t)
        kwargs = {}
        if given_out:
            kwargs = dict(out=np.full((), SENTINEL, dtype), return_grad=True,
                          grad_out=np.full((3, 4), SENTINEL, dtype))
        with pytest.raises(ValueError, match=match):
            losses.softmax_cross_entropy(x, t, **kwargs)
        if given_out:
            assert (kwargs["out"] == SENTINEL).all() and (kwargs["grad_out"] == SENTINEL).all()
