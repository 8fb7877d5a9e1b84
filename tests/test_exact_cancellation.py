"""The exact references keep their promise on inputs built to cancel (issue #17 item 4).

precision.exact promises a relative error below about 10^-dps for every result.  The inputs
below make the results cancel as far as float64 allows: logits that differ by as little as
2^-1074 against targets that make T p_j - t_j vanish to first order.  The judge is the naive
formula evaluated with more digits than any cancellation here can eat (digits spanned by the
inputs, twice, plus a margin).
"""
import mpmath
import numpy as np
import pytest
from hypothesis import given, settings, HealthCheck
from hypothesis import strategies as st
from mpmath import mpf

import precision as pr
from precision import exact

DPS = 40
JUDGE_DPS = 2 * 330 + 200       # 2^-1074 spans 324 digits; second-order terms twice that


def close(a, b, digits=DPS - 2):
    """|a - b| <= 10^-digits |b|; an exact zero only equals zero.  The judge's own rounding
    error is about 10^-JUDGE_DPS, and the smallest nonzero result here (second order in 2^-1074)
    is above 10^-700: a judge below 10^-800 is a zero."""
    if abs(b) < mpf(10) ** -800:
        return a == 0
    return abs(a - b) <= mpf(10) ** -digits * abs(b)


def naive(x, t):
    """loss, gradient and KL of one row by the textbook formulas, at JUDGE_DPS digits."""
    with mpmath.workdps(JUDGE_DPS):
        xs = [mpf(float(v)) for v in x]
        ts = [mpf(float(v)) for v in t]
        lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in xs))
        T = mpmath.fsum(ts)
        loss = mpmath.fsum(ti * (lse - xi) for ti, xi in zip(ts, xs) if ti)
        grad = [T * mpmath.exp(xi - lse) - ti for ti, xi in zip(ts, xs)]
        kl = mpmath.fsum(ti * (mpmath.log(ti) - (xi - lse)) for ti, xi in zip(ts, xs) if ti)
        return loss, grad, kl, lse


def tiny():
    """+-2^-k, k up to 1074: perturbations far below the working precision's reach."""
    return st.builds(lambda k, s: s * 2.0 ** -k, st.integers(1, 1074), st.sampled_from([-1, 1]))


@st.composite
def cancelling_rows(draw):
    c = draw(st.integers(2, 5))
    x = np.zeros(c)
    for i in draw(st.lists(st.integers(0, c - 1), min_size=1, max_size=c, unique=True)):
        x[i] = draw(tiny())
    kind = draw(st.sampled_from(["uniform", "power of two", "one-hot", "softmax of equal"]))
    if kind == "uniform":
        t = np.full(c, 1.0 / c)                  # T p_j - t_j ~ the perturbation / C
    elif kind == "power of two":
        t = np.full(c, 0.25 if c == 4 else 0.5 if c == 2 else 1.0 / c)
    elif kind == "one-hot":
        t = np.zeros(c)
        t[draw(st.integers(0, c - 1))] = 1.0
    else:
        t = exact.to_float64(exact.softmax(np.zeros(c)))
    return x, t


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(row=cancelling_rows())
def test_cross_entropy_and_its_gradient_meet_their_relative_accuracy(row):
    x, t = row
    loss, grad = exact.softmax_cross_entropy(x[None, :], t[None, :], reduction="sum",
                                             return_grad=True, dps=DPS)
    ref_loss, ref_grad, _, _ = naive(x, t)
    assert close(loss, ref_loss)
    for g, ref in zip(grad[0], ref_grad):
        assert close(g, ref), (g, ref)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(row=cancelling_rows())
def test_kl_and_logsumexp_meet_their_relative_accuracy(row):
    x, t = row
    _, _, ref_kl, ref_lse = naive(x, t)
    assert close(exact.kl_divergence(t, x, reduction="sum", dps=DPS), ref_kl)
    assert close(exact.logsumexp(x, dps=DPS), ref_lse)


def test_the_issue_example_is_no_longer_zero():
    """x = [0, 1e-150, 0], t = 1/3 each: zeros at dps=40 before, +-1.1e-151 at dps=200."""
    x = np.array([[0.0, 1e-150, 0.0]])
    t = np.full((1, 3), 1.0 / 3)
    _, grad = exact.softmax_cross_entropy(x, t, return_grad=True)
    _, wide = exact.softmax_cross_entropy(x, t, return_grad=True, dps=200)
    assert all(g != 0 for g in grad[0])
    assert all(close(g, w) for g, w in zip(grad[0], wide[0]))
    # and compare() no longer takes a wrong zero for an exact match
    assert pr.errors.compare(np.zeros(3), grad[0], pr.float64).exact_matches == 0


def test_true_zeros_are_still_exact():
    """All finite logits equal and T = n t_j: the gradient is exactly 0 (proven, not
    measured), also with -inf classes and label smoothing; KL of p against itself is 0."""
    x = np.array([[0.5, 0.5, -np.inf, 0.5]])
    t = np.array([[0.25, 0.25, 0.0, 0.25]])
    _, grad = exact.softmax_cross_entropy(x, t, return_grad=True, label_smoothing=0.0)
    assert grad[0, 0] == 0 and grad[0, 1] == 0 and grad[0, 3] == 0
    assert exact.kl_divergence(np.full(4, 0.25), np.zeros(4)) == 0
    _, grad = exact.softmax_cross_entropy(np.zeros((1, 3)), np.full((1, 3), 1.0 / 3),
                                          return_grad=True, label_smoothing=0.1)
    assert all(g == 0 for g in grad[0])


def test_an_unresolvable_cancellation_raises_instead_of_a_wrong_number(monkeypatch):
    """With the working precision capped below what 1e-150 needs, the reference says so."""
    from precision.exact import mp

    monkeypatch.setattr(mp, "_MAX_DPS_FACTOR", 1)
    monkeypatch.setattr(mp, "_MAX_EXTRA_DIGITS", 0)
    with pytest.raises(exact.PrecisionExhausted, match="larger dps"):
        exact.softmax_cross_entropy(np.array([[0.0, 1e-150, 0.0]]), np.full((1, 3), 1.0 / 3),
                                    return_grad=True)
