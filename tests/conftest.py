"""Shared test settings.

Hypothesis profiles (select with HYPOTHESIS_PROFILE, default "dev"; CI=true selects "ci"):
  ci        bounded for CI: 40 examples per property (never zero)
  dev       100 examples: the everyday local run
  thorough  2000 examples: before a release or after touching kernels/fp.h
"""
import os
import sys

import pytest

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


# the toy study of tests/study_runs.py, for the tests that run, kill and resume studies
@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy study in a temporary PRECISION_STUDIES_DIR; no TOY_* variable leaks in or out."""
    from precision import cli
    from tests.study_runs import write_toy

    studies = write_toy(tmp_path / "studies")
    monkeypatch.setenv(cli.STUDIES_ENV, str(studies))
    monkeypatch.setattr(sys, "path", list(sys.path))  # the CLI puts the studies folder on sys.path
    for name in [name for name in os.environ if name.startswith("TOY_")]:
        monkeypatch.delenv(name)
    yield studies
    sys.modules.pop("toy_faults", None)
