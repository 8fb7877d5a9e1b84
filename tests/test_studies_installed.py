"""The studies install with the package: a non-editable install (the files `pip install .` would put
in site-packages, laid out by setuptools' own build_py) lists and runs a study from an unrelated folder,
and writes nothing into the installed package."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A copy of the package as a wheel would install it: setuptools' build_py output plus the
    compiled kernels (build_ext's output; copied from the in-place build instead of recompiling)."""
    lib = tmp_path_factory.mktemp("site-packages")
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(lib)], cwd=REPOSITORY,
                   check=True, capture_output=True, timeout=600)
    for so in (REPOSITORY / "precision" / "_kernels").glob("*.so"):
        shutil.copy2(so, lib / "precision" / "_kernels" / so.name)
    return lib


def run_installed(lib: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PRECISION_STUDIES_DIR"}
    env["PYTHONPATH"] = str(lib)                  # ahead of the editable install's finder
    return subprocess.run([sys.executable, "-c", "import sys, precision.cli as c; sys.exit(c.main())", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_installed_package_has_the_studies(installed):
    assert (installed / "precision" / "studies" / "soft_target" / "train.py").is_file()
    assert not (installed / "studies").exists()          # nothing but the `precision` namespace


def test_installed_package_lists_and_runs_a_study(installed, tmp_path):
    listing = run_installed(installed, tmp_path, "study", "--list")
    assert listing.returncode == 0, listing.stderr
    listed = [line.split()[0] for line in listing.stdout.splitlines() if line.strip()]
    assert set(listed) == set(__import__("precision.studies").studies.available())
    before = sorted(p.relative_to(installed) for p in installed.rglob("*") if "__pycache__" not in p.parts)
    run = run_installed(installed, tmp_path, "study", "soft-target-stall", "--smoke", "--jobs", "2")
    assert run.returncode == 0, run.stderr
    out = tmp_path / "studies" / "results" / "soft-target-stall"
    for name in ("report.md", "summary.csv", "provenance.json"):
        assert (out / name).is_file()
    assert "Verdict (this run):" in run.stdout and str(out / "report.md") in run.stdout
    after = sorted(p.relative_to(installed) for p in installed.rglob("*") if "__pycache__" not in p.parts)
    assert after == before                                # nothing written into the package


def test_verdict_is_computed_from_the_data(tmp_path):
    """Change the measurements and the sentences change with them."""
    from precision.study import SerialExecutor, run_study
    from precision.studies import soft_target

    class Args:
        size, formats, seed = "smoke", ["float32"], 0

    results = run_study(soft_target.build(Args()), tmp_path, executor=SerialExecutor(), progress=False)
    text = " ".join(soft_target.verdict(results).split())
    assert "about where a loss can no longer show an improvement" in text
    shifted = copy.copy(results)
    shifted.results = {cid: dict(r, excess_at_loss_freeze=r["excess_at_loss_freeze"] * 1e6)
                       if results.params[cid]["optimizer"] == "gd" else r for cid, r in results.results.items()}
    changed = " ".join(soft_target.verdict(shifted).split())
    assert "not near L*·u" in changed and changed != text
