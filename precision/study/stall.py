"""Stall detection on per-iteration traces: when the reported loss freezes, and where a series floors.

Two questions are asked of a training run, and they have different answers in low precision:

* :func:`loss_freeze_iteration` — when does the loss *as the format reports it* stop making progress?
  That is what a training loop, a line search or a person watching the loss sees.
* :func:`floor` — where does a positive series that decreases to a plateau level off, and from which
  iteration is it there? Applied to the exact excess of the parameters a run holds, it says how far the
  run really got, whatever its reported loss says.

Both are pure functions of numpy-convertible 1-d traces (index = iteration) and return small frozen
dataclasses. NaN never counts as progress, and non-finite entries are reported, not hidden.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


# --------------------------------------------------------------------------------------------------
# the unit in the last place of a format

def _format_of(fmt: Any):
    """A precision Format from a Format, a name ("f16", "bfloat16", ...) or a float dtype."""
    from precision import formats

    if isinstance(fmt, formats.Format):
        return fmt
    try:
        return formats.format(fmt)
    except (TypeError, ValueError):
        raise TypeError(f"{fmt!r} is not a floating-point format (pass fmt= for a trace that "
                        "is not stored in its format)") from None


def ulp(x: float, fmt: Any) -> float:
    """ulp(x) = 2**(max(e, emin) - p + 1) with 2**e <= |x| < 2**(e+1): the gap above |x| in `fmt`
    (:meth:`precision.Format.ulp`, the one place the spacing is computed). For x = 0 this is the
    smallest subnormal; NaN for NaN and inf."""
    return float(_format_of(fmt).ulp(float(x)))


def _as_trace(values: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(the series as given, the series in float64): a non-empty 1-d real series, widened exactly."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-d series (one entry per iteration), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    if array.dtype.kind in "cOSUMm":
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    try:
        with np.errstate(invalid="ignore"):  # signalling NaNs (e.g. in bfloat16) widen quietly
            wide = array.astype(np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}") from None
    return array, wide


def _first_nonfinite(trace64: np.ndarray) -> int | None:
    bad = np.flatnonzero(~np.isfinite(trace64))
    return int(bad[0]) if bad.size else None


# --------------------------------------------------------------------------------------------------
# the reported loss

@dataclass(frozen=True)
class LossFreeze:
    """When the reported loss stopped making progress, by two rules (see :func:`loss_freeze_iteration`).

    patience_iteration: the patience rule's answer; None if the loss never went `patience` iterations
        without progress.
    band_iteration: the final-band rule's answer; None if the final value is not finite.
    final: the last reported value (as a Python float).
    band: the half-width of the final band that was used (absolute).
    patience, rel_tol: the parameters used.
    first_nonfinite: first iteration whose reported loss is NaN or ±inf (a blow-up), else None.
    """

    patience_iteration: int | None
    band_iteration: int | None
    final: float
    band: float
    patience: int
    rel_tol: float
    first_nonfinite: int | None

    @property
    def iteration(self) -> int | None:
        """The study's ``loss_freeze_iteration``: the patience rule (what a loss-watching stop sees)."""
        return self.patience_iteration


def loss_freeze_iteration(reported_loss: Any, patience: int = 10, rel_tol: float = 0.0, *,
                          fmt: Any = None, band_ulps: float = 1.0,
                          band: float | None = None) -> LossFreeze:
    """When the loss, as the format reports it, stops making progress.

    Let L_0, ..., L_{n-1} be the reported losses (index = iteration).

    **Patience rule** (Keras ``EarlyStopping`` with a relative ``min_delta``). Keep a reference value r,
    initially +inf. Iteration j *makes progress* when ``L_j < r - rel_tol * |r|`` (just ``L_j < r`` when
    r = +inf or rel_tol = 0); then r <- L_j. NaN never makes progress. The answer is the first iteration
    i that made progress (or i = 0) such that none of the next ``patience`` iterations i+1 .. i+patience
    does; None when no such i exists, i.e. the run ended with progress fewer than `patience` iterations
    ago. With rel_tol = 0 this is: the first i with ``min(L_{i+1..i+patience}) >= min(L_0..L_i)``
    (NaN entries ignored by min and never progress).

    **Final-band rule.** Let F = L_{n-1} and w the band's half-width: ``band`` if given (absolute), else
    ``band_ulps * ulp(F)`` in `fmt`. The answer is the first i with ``|L_j - F| <= w`` for every j >= i
    (differences computed in float64); None if F is not finite. With w = 0 it is the start of the final
    run of identical values. It always exists for a finite F, so it does not say whether the loss had
    frozen at all: the patience rule does.

    `fmt` defaults to the dtype of `reported_loss` (store the reported loss in its format and nothing
    else is needed); give it explicitly (a precision Format, a dtype or its name) when the trace was
    widened. The study uses the patience rule as ``loss_freeze_iteration`` (:attr:`LossFreeze.iteration`)
    and reports the band rule beside it: when the two disagree, the loss paused and moved on again, or
    still wandered within the band at the end.
    """
    if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) or patience < 1:
        raise ValueError(f"patience must be a positive integer, got {patience!r}")
    rel_tol = float(rel_tol)
    if not (rel_tol >= 0 and math.isfinite(rel_tol)):
        raise ValueError(f"rel_tol must be a finite number >= 0, got {rel_tol!r}")
    trace, values = _as_trace(reported_loss, "reported_loss")

    # Patience rule.
    reference = math.inf
    last_progress = 0
    patience_iteration = None
    for j, value in enumerate(values.tolist()):
        if reference == math.inf or rel_tol == 0:
            threshold = reference
        else:
            threshold = reference - rel_tol * abs(reference)
        if value < threshold:
            reference = value
            last_progress = j
        elif j - last_progress >= patience:
            patience_iteration = last_progress
            break

    # Final-band rule.
    final = float(values[-1])
    if band is not None:
        half_width = float(band)
        if not (half_width >= 0 and math.isfinite(half_width)):
            raise ValueError(f"band must be a finite number >= 0, got {band!r}")
    else:
        band_ulps = float(band_ulps)
        if not (band_ulps >= 0 and math.isfinite(band_ulps)):
            raise ValueError(f"band_ulps must be a finite number >= 0, got {band_ulps!r}")
        if band_ulps == 0:
            half_width = 0.0
        else:
            half_width = band_ulps * ulp(final, trace.dtype if fmt is None else fmt) \
                if math.isfinite(final) else math.nan
    band_iteration = None
    if math.isfinite(final):
        with np.errstate(invalid="ignore"):
            outside = ~(np.abs(values - final) <= half_width)
        hits = np.flatnonzero(outside)
        band_iteration = int(hits[-1]) + 1 if hits.size else 0

    return LossFreeze(patience_iteration=patience_iteration, band_iteration=band_iteration,
                      final=final, band=half_width, patience=int(patience), rel_tol=rel_tol,
                      first_nonfinite=_first_nonfinite(values))


# --------------------------------------------------------------------------------------------------
# the floor of a decreasing series

@dataclass(frozen=True)
class Floor:
    """Where a positive series levels off (see :func:`floor`).

    status: "plateau" (levelled off within the run), "decreasing" (still falling at the end) or
        "blew_up" (a NaN or +inf entry).
    value: the floor: the tail quantile for "plateau"; the minimum reached for "decreasing" (an upper
        bound on the floor); +inf for "blew_up".
    iteration: first iteration with series <= factor * value, for "plateau"; None otherwise.
    minimum, minimum_iteration: smallest finite entry and its first iteration (None if there is none).
    first_nonfinite: first iteration holding NaN or +inf, else None.
    tail_start: first iteration of the tail window the floor was measured on.
    """

    status: str
    value: float
    iteration: int | None
    minimum: float | None
    minimum_iteration: int | None
    first_nonfinite: int | None
    tail_start: int

    @property
    def plateaued(self) -> bool:
        return self.status == "plateau"

    @property
    def blew_up(self) -> bool:
        return self.status == "blew_up"


def floor(series: Any, *, factor: float = 2.0, tail: float = 0.25, quantile: float = 0.5) -> Floor:
    """The floor of a non-negative series that decreases to a plateau, and when it gets there.

    Let e_0, ..., e_{n-1} >= 0 (e.g. the exact excess KL of the parameters a run holds), n >= 1.

    * Tail window: the last T = max(ceil(tail * n), min(n, 4)) entries, from ``tail_start = n - T``.
    * Blow-up: if any entry is NaN or +inf, status is "blew_up", value = +inf, iteration = None (a run
      whose parameters became non-finite has no floor; ``first_nonfinite`` says when it happened and
      ``minimum`` how low it had got before).
    * Plateau test: split the window into an early half (its first floor(T/2) entries) and a late half
      (the rest), with medians m_early and m_late. The series has levelled off when
      ``m_late >= m_early / factor`` (it fell by less than `factor` across the window) or m_late = 0 (an
      exact zero can't decrease), or when the late half is one repeated value (a fixed point: the run
      reached it and stayed, however steeply it fell in the early half; two or more entries). A window
      with an empty early half (n = 1) is "decreasing".
    * Plateau: value F = the `quantile` of the window (``method="lower"``: an entry of the series; by
      default the median, which ignores noise on either side), and iteration = the first i with
      ``e_i <= factor * F``. Exact zeros need no special case: F = 0 gives the first exact zero.
    * Not levelled off: status "decreasing", value = min(e), iteration = None.

    Raises ValueError for an empty or multi-dimensional series, negative entries (or -inf), and
    factor < 1, tail outside (0, 1], quantile outside [0, 1].
    """
    factor = float(factor)
    if not (factor >= 1 and math.isfinite(factor)):
        raise ValueError(f"factor must be a finite number >= 1, got {factor!r}")
    if not (0 < float(tail) <= 1):
        raise ValueError(f"tail must be in (0, 1], got {tail!r}")
    if not (0 <= float(quantile) <= 1):
        raise ValueError(f"quantile must be in [0, 1], got {quantile!r}")
    _, values = _as_trace(series, "series")
    with np.errstate(invalid="ignore"):
        negative = np.flatnonzero(values < 0)
    if negative.size:
        i = int(negative[0])
        raise ValueError(f"series must be >= 0 (an excess cannot be negative); entry {i} is {values[i]!r}")

    n = values.size
    window = max(math.ceil(float(tail) * n), min(n, 4))
    tail_start = n - window
    first_nonfinite = _first_nonfinite(values)
    finite = np.isfinite(values)
    if finite.any():
        finite_values = np.where(finite, values, np.inf)
        minimum_iteration = int(np.argmin(finite_values))
        minimum = float(values[minimum_iteration])
    else:
        minimum_iteration, minimum = None, None

    if first_nonfinite is not None:
        return Floor("blew_up", math.inf, None, minimum, minimum_iteration, first_nonfinite, tail_start)

    tail_values = values[tail_start:]
    half = window // 2
    if half == 0:
        plateau = False
    else:
        early = float(np.median(tail_values[:half]))
        late = float(np.median(tail_values[half:]))
        late_half = tail_values[half:]
        fixed_point = late_half.size >= 2 and bool(np.all(late_half == late_half[-1]))
        plateau = late == 0 or late >= early / factor or fixed_point
    if not plateau:
        return Floor("decreasing", minimum, None, minimum, minimum_iteration, None, tail_start)

    value = float(np.quantile(tail_values, float(quantile), method="lower"))
    iteration = int(np.flatnonzero(values <= factor * value)[0])
    return Floor("plateau", value, iteration, minimum, minimum_iteration, None, tail_start)


def first_at_or_below(series: Any, threshold: float) -> int | None:
    """First iteration i with series[i] <= threshold (NaN never qualifies), or None."""
    _, values = _as_trace(series, "series")
    with np.errstate(invalid="ignore"):
        hits = np.flatnonzero(values <= float(threshold))
    return int(hits[0]) if hits.size else None


__all__ = ["LossFreeze", "loss_freeze_iteration", "Floor", "floor", "first_at_or_below", "ulp"]
