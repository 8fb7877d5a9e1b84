"""Shared test settings.

Hypothesis profiles (select with HYPOTHESIS_PROFILE, default "dev"; CI=true selects "ci"):
  ci        bounded for CI: 40 examples per property (never zero)
  dev       100 examples: the everyday local run
  thorough  2000 examples: before a release or after touching kernels/fp.h
"""
import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=40, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev", max_examples=100, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough", max_examples=2000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
