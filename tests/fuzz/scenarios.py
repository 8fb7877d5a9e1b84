"""Fuzz scenarios: calls that need an object first (an optimizer, running statistics) and check
the contract of each step themselves (tests/fuzz/spec.py: errors before writes, state included).
A constructor that refuses its arguments (ValueError / TypeError) ends the scenario."""
from __future__ import annotations

import warnings

import numpy as np

import precision as pr

from .spec import ContractViolation


def running_stats(num_features, convention, momentum, state_format, accum):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pr.batchnorm.RunningStats(num_features, convention=convention, momentum=momentum,
                                         state_format=state_format, accum=accum)


def _copies(arrays: dict) -> dict:
    return {k: np.array(v, copy=True).tobytes() for k, v in arrays.items()
            if isinstance(v, np.ndarray)}


def _state(opt, param, key) -> dict:
    try:
        state = opt.state_of(param) if key is None else opt.state_of(key=key)
    except (KeyError, TypeError):
        return {}
    return dict(state)


def optimizer_steps(cls, ctor, param, grads, key):
    """``type(cls)(**ctor)`` steps ``param`` with each of ``grads`` in turn; a refused step
    must leave ``param`` and the optimizer's state as they were."""
    opt = getattr(pr.optim, cls)(**ctor)
    for i, grad in enumerate(grads):
        before = _copies({"param": param, **_state(opt, param, key)})
        step_before = _state(opt, param, key).get("step")
        try:
            opt.step(param, grad) if key is None else opt.step(param, grad, key=key)
        except (ValueError, TypeError) as exc:
            after = _copies({"param": param, **_state(opt, param, key)})
            if after != before or _state(opt, param, key).get("step") != step_before:
                changed = sorted(k for k in set(before) | set(after)
                                 if before.get(k) != after.get(k))
                raise ContractViolation(f"{cls}.step (grad {i}) raised {type(exc).__name__}({exc})"
                                        f" after changing {changed or ['step']}") from exc
    return param


def running_stats_update(running, batch_mean, batch_var, count, times):
    """``running.update(batch_mean, batch_var, count)`` ``times`` times; a refused update must
    leave the buffers as they were."""
    for _ in range(times):
        before = _copies({"mean": running.mean, "var": running.var})
        tracked = running.num_batches_tracked
        try:
            running.update(batch_mean, batch_var, count)
        except (ValueError, TypeError) as exc:
            if (_copies({"mean": running.mean, "var": running.var}) != before
                    or running.num_batches_tracked != tracked):
                raise ContractViolation(f"RunningStats.update raised {type(exc).__name__}({exc})"
                                        f" after changing its buffers") from exc
            raise
    return running
