"""Soft targets: one tolerance rule for the row mass T (precision.losses docstring, "Targets").

Honest rows (normalised in any format, stored in any format, or a softmax of ours) pass at every
C; rows that are not distributions (zeros, sums of 2 to 4, negatives, NaN) are refused at every
C and in every format; rows of mass T != 1 give T times the values of t/T.
"""
import math

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings, HealthCheck
from hypothesis import strategies as st

import precision as pr
from precision import losses
from precision.exact.emulate import pairwise_depth

FORMATS = pr.FORMATS
FMT_IDS = [f.name for f in FORMATS]


@pytest.fixture(params=["kernel check", "float64 check"])
def check_path(request, monkeypatch):
    """Both ways a row is checked: the kernels' (float lanes for 16-bit storage) and the numpy
    float64 pass used for rows too long for the kernels' float sum."""
    if request.param == "float64 check":
        monkeypatch.setattr(losses, "_CHECK_ERROR_LIMIT", -1.0)
    return request.param


def every_entry_point(x, t, **kw):
    """CE (check in the kernel, and before it with out/grad_out), KL and entropy of t."""
    with np.errstate(all="ignore"):
        losses.softmax_cross_entropy(x, t, return_grad=True, **kw)
        losses.softmax_cross_entropy(x, t, return_grad=True, grad_out=np.empty_like(x), **kw)
        tol = kw.pop("target_tolerance", None)
        losses.kl_divergence(t, x, target_tolerance=tol, **kw)
        losses.entropy(t, probs_tolerance=tol, **kw)


def refused(x, t, match="sums to", **kw):
    with np.errstate(all="ignore"):
        for call in (lambda: losses.softmax_cross_entropy(x, t, return_grad=True, **kw),
                     lambda: losses.softmax_cross_entropy(x, t, out=np.empty((), x.dtype), **kw),
                     lambda: losses.kl_divergence(t, x, **kw),
                     lambda: losses.entropy(t, probs_tolerance=kw.get("target_tolerance"))):
            with pytest.raises(ValueError, match=match):
                call()


# ------------------------------------------------------------------------ the examples
def test_float32_normalised_targets_work_in_float64():
    """Issue #9 item 4: Dirichlet rows normalised in float32, cast to float64 (|T - 1| ~ 4e-10,
    far beyond float64's old (C + 1) u)."""
    rng = np.random.default_rng(4)
    t = rng.dirichlet(np.ones(1000), 64).astype(np.float32).astype(np.float64)
    x = rng.standard_normal((64, 1000))
    assert np.abs(t.sum(1) - 1).max() > 1e-10
    every_entry_point(x, t)


@pytest.mark.parametrize("fmt", [pr.bfloat16, pr.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("c", [255, 1000, 2047, 2048, 70000])
def test_zero_rows_and_rows_of_four_ones_are_refused_in_16_bits(fmt, c):
    """Issue #9 item 4: (C + 1) u reached 1 for bfloat16 at C >= 255 and float16 at C >= 2047,
    and then an all-zero row (loss 0) and a row of four ones (loss 27.625) passed."""
    x = np.zeros((1, c), fmt.dtype)
    refused(x, np.zeros((1, c), fmt.dtype), "sums to 0.0")
    four = np.zeros((1, c), fmt.dtype)
    four[0, :4] = 1
    refused(x, four, "sums to 4.0")


def test_the_message_names_the_tolerance_and_the_ways_out():
    x = np.zeros((1, 10))
    with pytest.raises(ValueError) as info:
        losses.softmax_cross_entropy(x, np.full((1, 10), 0.2))
    message = str(info.value)
    assert "sums to 2.0" in message
    assert f"target_tolerance = {losses.default_target_tolerance(10):.3g}" in message
    assert "Normalise the rows" in message and "pass target_tolerance=" in message
    with pytest.raises(ValueError, match=r"probs_tolerance = 1e-06 \(given"):
        losses.entropy(np.full((1, 10), 0.2), probs_tolerance=1e-6)


# ------------------------------------------------------------------------ the rule
def test_the_default_is_the_error_of_normalising_in_bfloat16():
    u = 2.0 ** -8
    for c in (1, 2, 3, 8, 9, 128, 129, 1000, 10 ** 6, 2 ** 40):
        k = pairwise_depth(c) + 2
        assert losses.default_target_tolerance(c) == k * u / (1 - k * u)
    # it grows like log2 C and stays far from 1 (zeros) and 1 (twice the mass)
    assert losses.default_target_tolerance(2 ** 40) < 0.3
    assert losses.default_target_tolerance(10) < 0.03


def test_an_explicit_tolerance_tightens_and_loosens(check_path):
    x = np.zeros((1, 4))
    exact = np.full((1, 4), 0.25)
    every_entry_point(x, exact, target_tolerance=0.0)
    off = exact * (1 + 1e-9)
    every_entry_point(x, off)
    refused(x, off, "_tolerance = 1e-12", target_tolerance=1e-12)
    # inf: any mass, but still finite and non-negative
    every_entry_point(x, exact * 4, target_tolerance=math.inf)
    refused(x, -exact, "negative", target_tolerance=math.inf)
    refused(x, exact * np.nan, "NaN", target_tolerance=math.inf)


# ------------------------------------------------------------------------ properties
sizes = st.one_of(st.integers(1, 40), st.integers(41, 3000))
formats = st.sampled_from(FORMATS)


def logit_rows(seed, n, c, scale):
    return np.random.default_rng(seed).standard_normal((n, c)) * scale


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                HealthCheck.function_scoped_fixture])
@given(c=sizes, made_in=formats, stored_in=formats, seed=st.integers(0, 2 ** 32 - 1),
       scale=st.sampled_from([0.0, 1e-3, 1.0, 4.0, 30.0]))
def test_honest_rows_pass_at_every_c_and_format(check_path, c, made_in, stored_in, seed, scale):
    """Rows made in any format and stored in any format pass: our own softmax in the format it
    was made in (A = that format, pairwise sums), a float64 normalisation rounded once into
    the format, and either of those rounded into the storage format."""
    n = 3
    z = logit_rows(seed, n, c, scale)
    with np.errstate(all="ignore"):
        if made_in is pr.float16 and c > 65504:
            return      # s = C - 1 overflows float16 (module docstring): not a distribution
        soft = losses.softmax(made_in.round(z)).astype(np.float64)
        w = np.exp(z - z.max(axis=1, keepdims=True))
        normalised = made_in.round(w / w.sum(axis=1, keepdims=True)).astype(np.float64)
    x = stored_in.round(np.random.default_rng(seed + 1).standard_normal((n, c)))
    for rows in (soft, normalised):
        t = stored_in.round(rows)
        if stored_in is pr.float16 and made_in is not pr.float16:
            # entries below float16's normal range lose up to half a subnormal each
            lost = np.where(np.abs(rows) < pr.float16.tiny, 2.0 ** -25, 0).sum(axis=1)
            if lost.max() > 2.0 ** -10:
                continue
        every_entry_point(x, t)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                HealthCheck.function_scoped_fixture])
@given(c=sizes, fmt=formats, seed=st.integers(0, 2 ** 32 - 1),
       kind=st.sampled_from(["zeros", "double", "quadruple", "half", "negative", "nan", "inf"]))
def test_non_distributions_are_refused_at_every_c_and_format(check_path, c, fmt, seed, kind):
    rng = np.random.default_rng(seed)
    x = fmt.round(rng.standard_normal((2, c)))
    good = rng.dirichlet(np.ones(c), 2)
    t = good.copy()
    if kind == "zeros":
        t[1] = 0
        match = "row 1 sums to 0.0"
    elif kind in ("double", "quadruple", "half"):
        t[1] *= {"double": 2, "quadruple": 4, "half": 0.5}[kind]
        match = "row 1 sums to"
    elif kind == "negative":
        t[1, rng.integers(c)] = -0.5 if c > 1 else -1.0
        match = "row 1 has a negative value"
    else:
        t[1, rng.integers(c)] = np.nan if kind == "nan" else np.inf
        match = "row 1 contains NaN or infinity"
    with np.errstate(all="ignore"):
        t = fmt.round(t)
    if kind == "half" and fmt is pr.float16 and c > 2000:
        return  # half of 1/C is subnormal in float16; the row's rounding is covered above
    refused(x, t, match)


# ------------------------------------------------------------------------ rows of mass T != 1
@pytest.mark.parametrize("mass", [0.95, 1.0 + 2 ** -20, 1.08])
def test_a_row_of_mass_t_gives_t_times_the_normalised_values(mass):
    """Docstring: CE(t) = T CE(t/T), grad = T (p - t/T), KL(t) = T KL(t/T) + T log T,
    H(t) = T H(t/T) - T log T, against the exact references: float32 storage computed in
    float64, so within the documented 1 ulp of float32."""
    rng = np.random.default_rng(7)
    c = 6
    x = pr.float32.round(rng.standard_normal((2, c)))
    t = pr.float32.round(rng.dirichlet(np.ones(c), 2) * mass)
    wide = dict(reduction="none", accum="float64")
    with mpmath.workdps(80):     # T exactly (six float64 values in [0, 1]), t / T to 80 digits
        T = [mpmath.fsum(mpmath.mpf(float(v)) for v in row) for row in t]
        q_exact = np.array([[mpmath.mpf(float(v)) / s for v in row] for row, s in zip(t, T)],
                           dtype=object)
    loss, grad = losses.softmax_cross_entropy(x, t, return_grad=True, target_tolerance=0.1,
                                              **wide)
    ref_loss, ref_grad = pr.exact.softmax_cross_entropy(x, q_exact, reduction="none",
                                                        return_grad=True)
    kl = losses.kl_divergence(t, x, target_tolerance=0.1, **wide)
    ref_kl = pr.exact.kl_divergence(q_exact, x, reduction="none")
    h = losses.entropy(t, probs_tolerance=0.1, **wide)
    ref_h = pr.exact.entropy(q_exact, reduction="none")
    for r in range(2):
        Tr = T[r]
        for got, want in ((loss[r], Tr * ref_loss[r]), (kl[r], Tr * ref_kl[r] + Tr * mpmath.log(Tr)),
                          (h[r], Tr * ref_h[r] - Tr * mpmath.log(Tr))):
            assert abs(pr.errors.ulp_error(got, want, pr.float32)) <= 1
        scaled = np.array([Tr * g for g in ref_grad[r]], dtype=object)
        assert np.all(np.abs(pr.errors.ulp_error(grad[r], scaled, pr.float32)) <= 1)
