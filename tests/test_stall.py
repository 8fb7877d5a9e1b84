"""Stall detection on synthetic traces whose answer is known by construction."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from precision.study.stall import first_at_or_below, floor, loss_freeze_iteration, ulp

FORMATS = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32}
PRECISION = {"float16": 11, "bfloat16": 8, "float32": 24, "float64": 53}


# --------------------------------------------------------------------------------------------------
# ulp

@given(name=st.sampled_from(["float16", "bfloat16", "float32", "float64"]),
       x=st.floats(min_value=0, max_value=1e30, allow_subnormal=True))
def test_ulp_is_the_gap_above(name, x):
    dtype = np.dtype(FORMATS.get(name, np.float64))
    with np.errstate(over="ignore"):
        value = np.array(x).astype(dtype)
    assume(np.isfinite(value) and value < np.finfo(np.float64).max)
    up = np.nextafter(value, np.array(np.inf, dtype))
    assume(np.isfinite(up))
    assert ulp(float(value), dtype) == float(up) - float(value)
    assert ulp(-float(value), name) == ulp(float(value), dtype)


@pytest.mark.parametrize("name", ["float16", "bfloat16", "float32", "float64"])
def test_ulp_agrees_with_the_format_objects(name):
    import precision as pr

    fmt = pr.format(name)
    for value in (0.0, float(fmt.smallest_subnormal), float(fmt.tiny), 1.0, 3.0, float(fmt.max)):
        assert ulp(value, fmt) == ulp(value, fmt.dtype) == ulp(value, fmt.short) == float(fmt.ulp(value))


def test_ulp_edges():
    assert ulp(0.0, np.float16) == 2.0 ** -24
    assert ulp(1.0, "bf16") == 2.0 ** -7
    assert ulp(1.0, "float32") == 2.0 ** -23
    assert ulp(2.0 ** -130, ml_dtypes.bfloat16) == 2.0 ** -133
    assert math.isnan(ulp(math.inf, np.float32))
    with pytest.raises(TypeError):
        ulp(1.0, np.int32)


# --------------------------------------------------------------------------------------------------
# the reported loss: rounding a decreasing sequence to a format's grid

def rounded_losses(name: str, base: float, scale: float, ratio: float, n: int):
    """L_i = base + scale * ratio**i, evaluated in float64 and rounded to the format, plus the grid gap.

    base is on the format's grid in [1, 1.5) and scale < 0.4, so every L_i lies in [1, 2) where the
    grid is uniform with gap U = 2**(1 - p).
    """
    dtype = FORMATS[name]
    H = float(np.array(base).astype(dtype))
    exact = H + scale * ratio ** np.arange(n)
    return H, exact.astype(dtype), 2.0 ** (1 - PRECISION[name])


@given(name=st.sampled_from(["float16", "bfloat16", "float32"]),
       base=st.floats(1.0, 1.45), scale=st.floats(1e-3, 0.39), ratio=st.floats(0.05, 0.95),
       extra_patience=st.integers(0, 5), tail=st.integers(0, 30))
def test_reported_loss_freezes_where_the_rounding_says(name, base, scale, ratio, extra_patience, tail):
    # R_i = H + k_i U with k_i = round(scale * ratio**i / U) non-increasing; R freezes at H from
    # i* = first i with k_i = 0. Values of scale * ratio**i inside one rounding cell [(k - 1/2) U,
    # (k + 1/2) U] span a ratio <= 3, so at most log(3)/log(1/ratio) consecutive iterations repeat a
    # value: a patience above that never fires before i*.
    patience = math.floor(math.log(3) / math.log(1 / ratio)) + 2 + extra_patience
    probe_H, probe, U = rounded_losses(name, base, scale, ratio, 4000)
    frozen_at = int(np.flatnonzero(probe.astype(np.float64) == probe_H)[0])
    n = frozen_at + patience + 1 + tail
    H, reported, U = rounded_losses(name, base, scale, ratio, n)

    result = loss_freeze_iteration(reported, patience=patience, band_ulps=0)
    assert result.patience_iteration == frozen_at == result.iteration
    assert result.band_iteration == frozen_at and result.final == H and result.band == 0.0
    # +-1 ulp band: the first iteration at H + U or below
    one_ulp = loss_freeze_iteration(reported, patience=patience)
    assert one_ulp.band == U
    assert one_ulp.band_iteration == int(np.flatnonzero(reported.astype(np.float64) <= H + U)[0])
    # the same trace widened to float64 needs its format named
    widened = loss_freeze_iteration(reported.astype(np.float64), patience=patience, fmt=name)
    assert widened == one_ulp
    # too short to see `patience` idle iterations after the freeze: not frozen (yet)
    assert loss_freeze_iteration(reported[: frozen_at + patience], patience=patience).iteration is None


def brute_force_patience(values, patience):
    """The patience rule straight from its definition (rel_tol = 0)."""
    def progress(j):
        earlier = [v for v in values[:j] if not math.isnan(v)]
        return not math.isnan(values[j]) and values[j] < (min(earlier) if earlier else math.inf)

    candidates = [0] + [j for j in range(1, len(values)) if progress(j)]
    for i in candidates:
        if i + patience <= len(values) - 1 and not any(progress(j) for j in range(i + 1, i + patience + 1)):
            return i
    return None


def brute_force_band(values, half_width):
    final = values[-1]
    if not math.isfinite(final):
        return None
    for i in range(len(values)):
        if all(abs(v - final) <= half_width for v in values[i:]):
            return i
    return None


@given(values=st.lists(st.one_of(st.integers(0, 6).map(float), st.just(math.nan), st.just(math.inf)),
                       min_size=1, max_size=40),
       patience=st.integers(1, 6), band=st.sampled_from([0.0, 1.0, 2.5]))
def test_freeze_rules_match_their_definitions(values, patience, band):
    result = loss_freeze_iteration(np.array(values), patience=patience, band=band)
    assert result.patience_iteration == brute_force_patience(values, patience)
    assert result.band_iteration == brute_force_band(values, band)
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    assert result.first_nonfinite == (bad[0] if bad else None)


def test_relative_tolerance_ignores_tiny_progress():
    # 1% steps, then 0.01% steps: with rel_tol = 1e-3 the small steps are not progress
    trace = np.r_[100 * 0.99 ** np.arange(10), 100 * 0.99 ** 9 * 0.9999 ** np.arange(1, 30)]
    assert loss_freeze_iteration(trace, patience=5, rel_tol=1e-3).iteration == 9
    assert loss_freeze_iteration(trace, patience=5).iteration is None  # strict progress to the end


def test_a_blown_up_loss_is_reported():
    trace = np.array([3.0, 2.0, 1.5, np.inf, np.nan, np.nan, np.nan], dtype=np.float16)
    result = loss_freeze_iteration(trace, patience=3)
    assert result.iteration == 2 and result.first_nonfinite == 3
    assert result.band_iteration is None and math.isnan(result.final)


def test_signalling_nans_count_as_a_blow_up_without_warnings():
    trace = np.array([0x4040, 0x3F80, 0x7F81, 0x7F81], dtype=np.uint16).view(ml_dtypes.bfloat16)
    assert loss_freeze_iteration(trace, patience=1).first_nonfinite == 2
    assert floor(trace).first_nonfinite == 2 and floor(trace).minimum == 1.0


@pytest.mark.parametrize("trace", [np.array([1 + 1j]), np.array(["a"]), np.array([None])])
def test_traces_must_be_real(trace):
    with pytest.raises(TypeError):
        loss_freeze_iteration(trace)
    with pytest.raises(TypeError):
        floor(trace)


@pytest.mark.parametrize("kwargs", [{"patience": 0}, {"patience": 2.5}, {"rel_tol": -1},
                                    {"band": -1.0}, {"band_ulps": math.nan}])
def test_freeze_parameters_are_checked(kwargs):
    with pytest.raises(ValueError):
        loss_freeze_iteration([3.0, 2.0, 1.0], **kwargs)


@pytest.mark.parametrize("trace", [[], [[1.0, 2.0]]])
def test_freeze_needs_a_series(trace):
    with pytest.raises(ValueError):
        loss_freeze_iteration(np.array(trace))


def test_integer_traces_need_a_format_or_a_band():
    with pytest.raises(TypeError, match="fmt="):
        loss_freeze_iteration(np.array([3, 2, 2]), patience=1)
    assert loss_freeze_iteration(np.array([3, 2, 2]), patience=1, band=0).iteration == 1


# --------------------------------------------------------------------------------------------------
# the floor of an excess

def geometric_to_floor(start, ratio, level, n):
    """g_i = max(start * ratio**i, level): reaches `level` at a known iteration and stays."""
    return np.maximum(start * ratio ** np.arange(n), level)


@given(start=st.floats(1e-3, 1.0), ratio=st.floats(0.3, 0.95), level_exponent=st.floats(-30, -8),
       noise=st.floats(0.0, 0.3), seed=st.integers(0, 2 ** 32 - 1), factor=st.sampled_from([2.0, 3.0, 10.0]))
def test_floor_of_a_noisy_geometric_decrease(start, ratio, level_exponent, noise, seed, factor):
    level = 10.0 ** level_exponent
    reach = math.ceil(math.log(level / start) / math.log(ratio))  # first i with start*ratio**i <= level
    n = 2 * reach + 40  # the plateau covers more than the tail window
    clean = geometric_to_floor(start, ratio, level, n)
    series = clean * (1 + np.random.default_rng(seed).uniform(-noise, noise, n))

    result = floor(series, factor=factor)
    assert result.status == "plateau" and result.plateaued and not result.blew_up
    assert level * (1 - noise) <= result.value <= level * (1 + noise)
    assert result.value in series[result.tail_start:]
    # e_i <= factor * value is impossible while g_i (1 - noise) > factor * level (1 + noise),
    # and certain once g_i (1 + noise) <= factor * level (1 - noise).
    slack = 1 + 1e-12  # for the rounding of the products above
    earliest = int(np.flatnonzero(clean * (1 - noise) <= factor * level * (1 + noise) * slack)[0])
    latest = int(np.flatnonzero(clean * (1 + noise) * slack <= factor * level * (1 - noise))[0])
    assert earliest <= result.iteration <= latest
    if noise == 0:
        assert result.value == level
        assert result.iteration == int(np.flatnonzero(clean <= factor * level)[0])


@given(w_star=st.floats(0.1, 10.0), offset=st.floats(1e-3, 1.0), ratio=st.floats(0.3, 0.9),
       name=st.sampled_from(["float16", "bfloat16", "float32"]))
def test_floor_of_a_parameter_stuck_on_the_grid(w_star, offset, ratio, name):
    # A parameter approaching w* on the format's grid: w_i = fl(w* + offset ratio**i). Its excess
    # (w_i - w*)**2 stops changing once w_i reaches fl(w*): the floor is (fl(w*) - w*)**2 exactly.
    dtype = FORMATS[name]
    n = 400
    w = (w_star + offset * ratio ** np.arange(n)).astype(dtype).astype(np.float64)
    nearest = float(np.array(w_star).astype(dtype))
    assume(nearest != w_star and w[-1] == nearest)
    excess = (w - w_star) * (w - w_star)
    stuck = int(np.flatnonzero(w == nearest)[0])
    assume(stuck < n - 100)
    result = floor(excess)
    assert result.status == "plateau" and result.value == (nearest - w_star) * (nearest - w_star)
    assert result.iteration <= stuck
    assert result.iteration == first_at_or_below(excess, 2 * result.value)


def test_floor_of_an_exact_zero():
    series = np.r_[0.5 ** np.arange(1, 30), np.zeros(60)]
    result = floor(series)
    assert result.status == "plateau" and result.value == 0.0 and result.iteration == 29
    assert result.minimum == 0.0 and result.minimum_iteration == 29


def test_a_series_still_decreasing_has_no_floor_yet():
    series = 0.9 ** np.arange(200)
    result = floor(series)
    assert result.status == "decreasing" and result.iteration is None
    assert result.value == series[-1] == result.minimum and result.minimum_iteration == 199


def test_a_blown_up_run_is_reported():
    series = np.r_[0.5 ** np.arange(10), np.nan, np.nan]
    result = floor(series)
    assert result.status == "blew_up" and result.blew_up and result.value == math.inf
    assert result.iteration is None and result.first_nonfinite == 10
    assert result.minimum == 0.5 ** 9 and result.minimum_iteration == 9
    assert floor([np.inf]).first_nonfinite == 0 and floor([np.inf]).minimum is None


def test_short_series():
    assert floor([0.25]).status == "decreasing"
    result = floor([1.5, 0.5, 0.5, 0.5])
    assert result.status == "plateau" and result.value == 0.5 and result.iteration == 1


@given(series=st.lists(st.floats(0, 1e6), min_size=1, max_size=60),
       factor=st.floats(1.0, 20.0), quantile=st.floats(0.0, 1.0))
def test_floor_invariants(series, factor, quantile):
    values = np.array(series)
    result = floor(values, factor=factor, quantile=quantile)
    assert result.minimum == values.min() and values[result.minimum_iteration] == result.minimum
    if result.status == "plateau":
        assert result.value in values[result.tail_start:]
        assert result.iteration == int(np.flatnonzero(values <= factor * result.value)[0])
    else:
        assert result.status == "decreasing" and result.value == values.min()


@pytest.mark.parametrize("series, kwargs", [([1.0, -1e-300], {}), ([-np.inf], {}), ([], {}),
                                            ([[1.0]], {}), ([1.0], {"factor": 0.5}),
                                            ([1.0], {"tail": 0}), ([1.0], {"quantile": 2})])
def test_floor_rejects_bad_input(series, kwargs):
    with pytest.raises(ValueError):
        floor(np.array(series), **kwargs)


def test_first_at_or_below():
    assert first_at_or_below([3.0, np.nan, 1.0, 0.5], 1.0) == 2
    assert first_at_or_below([3.0, np.nan], 1.0) is None


def test_a_fixed_point_reached_inside_the_window_is_a_plateau():
    # GD in float64 on the linear problem: the excess falls steeply, then the parameters stop moving
    # and the excess is the same value from then on (identical at 3000 and 10000 iterations). The
    # early half of the tail window still holds the fall, but a fixed point is a floor, not a bound.
    fall = 1e-20 * 0.5 ** np.arange(40)
    level = fall[-1]
    series = np.r_[fall, np.full(60, level)]
    result = floor(series)
    assert result.status == "plateau" and result.value == level
    assert result.iteration == first_at_or_below(series, 2 * level)
    # the same fall without the fixed point is still decreasing
    assert floor(0.5 ** np.arange(100)).status == "decreasing"


@given(fall=st.integers(5, 60), held=st.integers(2, 80), ratio=st.floats(0.05, 0.9))
def test_held_final_value_covering_the_late_half_is_a_plateau(fall, held, ratio):
    series = np.r_[ratio ** np.arange(fall), np.full(held, ratio ** fall)]
    n = series.size
    window = max(math.ceil(0.25 * n), min(n, 4))
    result = floor(series)
    if held >= window - window // 2:          # the repeated value fills the late half
        assert result.status == "plateau" and result.value == ratio ** fall
    if result.status == "plateau":
        assert result.value in series[result.tail_start:]
